/**
 * The local cloud's X.509 PKI: a per-run root CA and an intermediate CA (the CA of the X.509
 * enrollment group), device certificates they issue, a revocation list, and the chain check DPS
 * and the hubs run on a device's TLS client certificate.
 *
 * Issuing is async (WebCrypto through `@peculiar/x509`); verifying is synchronous (node:crypto
 * `X509Certificate`) so the MQTT authenticate hooks can run it inline.
 */
import { KeyObject, X509Certificate, webcrypto } from 'node:crypto';
import { TLSSocket as TLSSocketClass, type TLSSocket } from 'node:tls';
import * as px from '@peculiar/x509';
import { EmulatorError } from './types';

/** EC P-256 with SHA-256, as the local cloud's TLS certificates (fast to generate, small). */
const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 24 * 60 * 60 * 1000;
/** Backdated so a device whose clock is slightly behind still sees a valid certificate. */
const DEFAULT_BACKDATE_MS = 60 * 60 * 1000;
/** The WebCrypto object `@peculiar/x509` takes (its type is the DOM's, which this build does not include). */
type PxCrypto = NonNullable<Parameters<typeof px.X509CertificateGenerator.create>[1]>;
const crypto = webcrypto as unknown as PxCrypto;
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

/** Why a presented certificate was refused. */
export type CertificateRefusal = 'no-certificate' | 'untrusted' | 'wrong-subject' | 'revoked' | 'expired' | 'not-yet-valid';

/** The outcome of {@link CloudPki.verify} / {@link verifySelfSigned}. */
export type CertificateCheck =
  | { ok: true; commonName: string; thumbprint: string; notAfter: Date }
  | { ok: false; reason: CertificateRefusal; detail: string };

/** A certificate and its key, PEM. `cert` is the leaf followed by its chain (without the root). */
export interface IssuedCertificate {
  cert: string;
  key: string;
  /** SHA-256 thumbprint of the leaf (upper-case hex, no separators). */
  thumbprint: string;
  notBefore: Date;
  notAfter: Date;
}

/** Options of {@link CloudPki.issueDeviceCertificate}. */
export interface IssueOptions {
  /** Lifetime from `notBefore` (default 365 days; fractions allowed). */
  validDays?: number;
  /** Start of validity (default: an hour ago). */
  notBefore?: Date;
}

/** SHA-256 thumbprint, upper-case hex without separators (IoT Hub accepts SHA-1 or SHA-256 thumbprints). */
export function thumbprintOf(cert: X509Certificate | string): string {
  const c = typeof cert === 'string' ? new X509Certificate(cert) : cert;
  return c.fingerprint256.replace(/:/g, '').toUpperCase();
}

/** SHA-1 thumbprint, the form the Azure portal shows. */
function sha1ThumbprintOf(cert: X509Certificate): string {
  return cert.fingerprint.replace(/:/g, '').toUpperCase();
}

/** Normalises a thumbprint given by a caller: hex, separators and case ignored. */
export function normalizeThumbprint(thumbprint: string): string {
  return thumbprint.replace(/[^0-9a-fA-F]/g, '').toUpperCase();
}

/** True when `cert` has this SHA-1 or SHA-256 thumbprint. */
export function hasThumbprint(cert: X509Certificate, thumbprint: string): boolean {
  const t = normalizeThumbprint(thumbprint);
  return t === thumbprintOf(cert) || t === sha1ThumbprintOf(cert);
}

/** The subject's CN (the registration id / device id of an X.509 device). */
export function commonNameOf(cert: X509Certificate): string | undefined {
  for (const line of cert.subject.split('\n')) {
    if (line.startsWith('CN=')) return line.slice(3);
  }
  return undefined;
}

/** Every certificate in a PEM bundle, in order. */
export function parsePemChain(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b) => new X509Certificate(b));
}

/**
 * The client certificate chain a TLS peer presented, leaf first (empty without one). Node links
 * the leaf to the intermediates the peer sent by issuer; what does not link is left out.
 */
export function peerCertificateChain(socket: TLSSocket): X509Certificate[] {
  const chain: X509Certificate[] = [];
  let cur = socket.getPeerCertificate(true);
  const seen = new Set<unknown>();
  while (cur && cur.raw && !seen.has(cur)) {
    seen.add(cur);
    chain.push(new X509Certificate(cur.raw));
    const next = cur.issuerCertificate;
    if (!next || next === cur) break;
    cur = next;
  }
  return chain;
}

/** Validity window of one certificate at `now` (ms). */
function validityProblem(cert: X509Certificate, now: number): CertificateCheck | undefined {
  const from = new Date(cert.validFrom).getTime();
  const to = new Date(cert.validTo).getTime();
  const name = commonNameOf(cert) ?? cert.subject;
  if (now < from) return { ok: false, reason: 'not-yet-valid', detail: `certificate '${name}' is not valid before ${cert.validFrom}` };
  if (now > to) return { ok: false, reason: 'expired', detail: `certificate '${name}' expired ${cert.validTo}` };
  return undefined;
}

function signedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
}

/**
 * Checks a self-signed device certificate (an individual enrollment or a hub identity registered
 * by thumbprint): thumbprint one of `thumbprints`, validity window, not revoked.
 */
export function verifySelfSigned(
  chain: readonly X509Certificate[],
  thumbprints: readonly string[],
  opts: { now?: number; isRevoked?: (cert: X509Certificate) => boolean } = {},
): CertificateCheck {
  const leaf = chain[0];
  if (!leaf) return { ok: false, reason: 'no-certificate', detail: 'no client certificate presented' };
  if (!thumbprints.some((t) => hasThumbprint(leaf, t))) return { ok: false, reason: 'untrusted', detail: 'thumbprint not registered' };
  if (opts.isRevoked?.(leaf)) return { ok: false, reason: 'revoked', detail: 'certificate revoked' };
  const time = validityProblem(leaf, opts.now ?? Date.now());
  if (time) return time;
  return { ok: true, commonName: commonNameOf(leaf) ?? '', thumbprint: thumbprintOf(leaf), notAfter: new Date(leaf.validTo) };
}

async function pemKey(key: CryptoKey): Promise<string> {
  return KeyObject.from(key).export({ type: 'pkcs8', format: 'pem' }).toString();
}

function randomSerial(): string {
  // Positive (high bit clear), 16 bytes: RFC 5280 allows up to 20 octets.
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = bytes[0]! & 0x7f | 0x01;
  return Buffer.from(bytes).toString('hex');
}

/** CN values go into a DN string: escape what RFC 4514 reserves. */
function dnEscape(value: string): string {
  return value.replace(/([,+"\\<>;=#])/g, '\\$1');
}

interface Authority {
  cert: px.X509Certificate;
  keys: CryptoKeyPair;
  node: X509Certificate;
}

/** A per-run root CA and intermediate CA, device certificates they sign, and a revocation list. */
export class CloudPki {
  private readonly revoked = new Set<string>();

  private constructor(
    private readonly root: Authority,
    private readonly intermediate: Authority,
  ) {}

  /** Generates the root (10 days) and intermediate (9 days) CAs. */
  static async create(name = 'hubstate local cloud'): Promise<CloudPki> {
    const now = Date.now();
    const notBefore = new Date(now - DEFAULT_BACKDATE_MS);
    const rootKeys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
    const rootCert = await px.X509CertificateGenerator.createSelfSigned(
      {
        serialNumber: randomSerial(),
        name: `CN=${dnEscape(`${name} X.509 root CA`)}`,
        notBefore,
        notAfter: new Date(now + 10 * DAY_MS),
        signingAlgorithm: ALGORITHM,
        keys: rootKeys,
        extensions: [
          new px.BasicConstraintsExtension(true, undefined, true),
          new px.KeyUsagesExtension(px.KeyUsageFlags.keyCertSign | px.KeyUsageFlags.cRLSign, true),
          await px.SubjectKeyIdentifierExtension.create(rootKeys.publicKey, false, crypto),
        ],
      },
      crypto,
    );
    const root: Authority = { cert: rootCert, keys: rootKeys, node: new X509Certificate(rootCert.toString('pem')) };
    const intKeys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
    const intCert = await px.X509CertificateGenerator.create(
      {
        serialNumber: randomSerial(),
        subject: `CN=${dnEscape(`${name} X.509 intermediate CA`)}`,
        issuer: rootCert.subject,
        notBefore,
        notAfter: new Date(now + 9 * DAY_MS),
        signingAlgorithm: ALGORITHM,
        publicKey: intKeys.publicKey,
        signingKey: rootKeys.privateKey,
        extensions: [
          new px.BasicConstraintsExtension(true, 0, true),
          new px.KeyUsagesExtension(px.KeyUsageFlags.keyCertSign | px.KeyUsageFlags.cRLSign, true),
          await px.SubjectKeyIdentifierExtension.create(intKeys.publicKey, false, crypto),
          await px.AuthorityKeyIdentifierExtension.create(rootKeys.publicKey, false, crypto),
        ],
      },
      crypto,
    );
    const intermediate: Authority = { cert: intCert, keys: intKeys, node: new X509Certificate(intCert.toString('pem')) };
    return new CloudPki(root, intermediate);
  }

  /** The enrollment group's root CA (PEM): what DPS and the hubs trust for CA-signed devices. */
  get rootCertificate(): string {
    return this.root.node.toString();
  }

  /** The intermediate CA (PEM) that signs device certificates. */
  get intermediateCertificate(): string {
    return this.intermediate.node.toString();
  }

  /**
   * Issues a device certificate, CN = `registrationId`, signed by the intermediate CA.
   * `cert` holds the leaf and the intermediate (the chain a device presents).
   */
  async issueDeviceCertificate(registrationId: string, opts: IssueOptions = {}): Promise<IssuedCertificate> {
    return this.issue(registrationId, opts, this.intermediate);
  }

  /**
   * A self-signed device certificate (CN = `registrationId`), for individual enrollments and hub
   * identities registered by thumbprint. Not trusted by the CA chain.
   */
  async issueSelfSignedCertificate(registrationId: string, opts: IssueOptions = {}): Promise<IssuedCertificate> {
    return this.issue(registrationId, opts);
  }

  private async issue(registrationId: string, opts: IssueOptions, issuer?: Authority): Promise<IssuedCertificate> {
    if (typeof registrationId !== 'string' || registrationId.length === 0 || registrationId.length > 128) {
      throw new EmulatorError('INVALID_ARGUMENT', 'registration id: 1 to 128 characters');
    }
    const validDays = opts.validDays ?? 365;
    if (!Number.isFinite(validDays) || validDays <= 0) throw new EmulatorError('INVALID_ARGUMENT', 'validDays must be a positive number');
    const notBefore = opts.notBefore ?? new Date(Date.now() - DEFAULT_BACKDATE_MS);
    if (!(notBefore instanceof Date) || Number.isNaN(notBefore.getTime())) throw new EmulatorError('INVALID_ARGUMENT', 'notBefore must be a valid Date');
    // X.509 times have whole seconds: round so the certificate says exactly what was asked.
    const nb = new Date(Math.floor(notBefore.getTime() / 1000) * 1000);
    const notAfter = new Date(Math.floor((nb.getTime() + validDays * DAY_MS) / 1000) * 1000);
    const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
    const subject = `CN=${dnEscape(registrationId)}`;
    const extensions: px.Extension[] = [
      new px.BasicConstraintsExtension(false, undefined, true),
      new px.KeyUsagesExtension(px.KeyUsageFlags.digitalSignature | px.KeyUsageFlags.keyAgreement, true),
      new px.ExtendedKeyUsageExtension([px.ExtendedKeyUsage.clientAuth]),
    ];
    let leaf: px.X509Certificate;
    if (issuer) {
      extensions.push(await px.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey, false, crypto));
      leaf = await px.X509CertificateGenerator.create(
        {
          serialNumber: randomSerial(),
          subject,
          issuer: issuer.cert.subject,
          notBefore: nb,
          notAfter,
          signingAlgorithm: ALGORITHM,
          publicKey: keys.publicKey,
          signingKey: issuer.keys.privateKey,
          extensions,
        },
        crypto,
      );
    } else {
      leaf = await px.X509CertificateGenerator.createSelfSigned(
        { serialNumber: randomSerial(), name: subject, notBefore: nb, notAfter, signingAlgorithm: ALGORITHM, keys, extensions },
        crypto,
      );
    }
    const leafPem = leaf.toString('pem');
    const cert = issuer ? `${leafPem}\n${issuer.cert.toString('pem')}\n` : `${leafPem}\n`;
    return { cert, key: await pemKey(keys.privateKey), thumbprint: thumbprintOf(leafPem), notBefore: nb, notAfter };
  }

  /**
   * Adds a certificate to the revocation list: a PEM (its first certificate) or a thumbprint
   * (SHA-1 or SHA-256). Revoking the intermediate refuses every certificate it signed.
   */
  revokeCertificate(certOrThumbprint: string): void {
    if (certOrThumbprint.includes('-----BEGIN CERTIFICATE-----')) {
      const first = parsePemChain(certOrThumbprint)[0]!;
      this.revoked.add(thumbprintOf(first));
      this.revoked.add(sha1ThumbprintOf(first));
      return;
    }
    const t = normalizeThumbprint(certOrThumbprint);
    if (t.length !== 40 && t.length !== 64) throw new EmulatorError('INVALID_ARGUMENT', 'a thumbprint is 40 (SHA-1) or 64 (SHA-256) hex digits');
    this.revoked.add(t);
  }

  /** True when the certificate is on the revocation list. */
  isRevoked(cert: X509Certificate): boolean {
    return this.revoked.has(thumbprintOf(cert)) || this.revoked.has(sha1ThumbprintOf(cert));
  }

  /** Thumbprints on the revocation list (SHA-256 and SHA-1 forms). */
  revokedThumbprints(): string[] {
    return [...this.revoked];
  }

  /**
   * Verifies a presented chain (leaf first) to this root: leaf signed by an intermediate the
   * device sent (or by the root itself), that intermediate signed by the root; every certificate
   * on the path in its validity window and not revoked. Order of refusals: untrusted, revoked,
   * time (a certificate from another CA is untrusted whatever its dates).
   */
  verify(chain: readonly X509Certificate[], now = Date.now()): CertificateCheck {
    const leaf = chain[0];
    if (!leaf) return { ok: false, reason: 'no-certificate', detail: 'no client certificate presented' };
    if (leaf.ca) return { ok: false, reason: 'untrusted', detail: 'a CA certificate is not a device certificate' };
    const root = this.root.node;
    let path: X509Certificate[] | undefined;
    if (signedBy(leaf, root)) path = [leaf, root];
    else {
      for (const candidate of chain.slice(1)) {
        if (candidate.ca && signedBy(leaf, candidate) && signedBy(candidate, root)) {
          path = [leaf, candidate, root];
          break;
        }
      }
    }
    if (!path) return { ok: false, reason: 'untrusted', detail: 'certificate does not chain to the enrollment group CA' };
    for (const c of path) {
      if (this.isRevoked(c)) return { ok: false, reason: 'revoked', detail: `certificate '${commonNameOf(c) ?? c.subject}' revoked` };
    }
    for (const c of path) {
      const time = validityProblem(c, now);
      if (time) return time;
    }
    return { ok: true, commonName: commonNameOf(leaf) ?? '', thumbprint: thumbprintOf(leaf), notAfter: new Date(leaf.validTo) };
  }
}

/**
 * The TLS socket under a connection as the endpoint hands it to aedes or to node's HTTP server
 * (the socket itself, or the endpoint's Gate around it). Undefined for other transports.
 */
export function tlsSocketOf(stream: unknown): TLSSocket | undefined {
  if (stream instanceof TLSSocketClass) return stream;
  const inner = (stream as { socket?: unknown } | null | undefined)?.socket;
  return inner instanceof TLSSocketClass ? inner : undefined;
}

/** The client certificate chain under a connection (empty without a certificate or TLS). */
export function peerChainOf(stream: unknown): X509Certificate[] {
  const socket = tlsSocketOf(stream);
  return socket ? peerCertificateChain(socket) : [];
}

/**
 * How a hub authenticates an X.509 identity (what DPS writes when it assigns one): `ca`, a chain
 * to the enrollment group's CA with CN = device id; `thumbprint`, the leaf's thumbprint (an
 * individual enrollment's, or a self-signed identity's).
 */
export type X509Attestation = { kind: 'ca' } | { kind: 'thumbprint'; thumbprints: string[] };

/**
 * Checks a presented chain against an attestation for `id` (a registration id at DPS, a device
 * id on a hub): `ca` → {@link CloudPki.verify} and CN = id (`sameId` compares); `thumbprint` →
 * the leaf's thumbprint registered, not revoked, in its validity window.
 */
export function checkAttestation(
  pki: CloudPki,
  chain: readonly X509Certificate[],
  attestation: X509Attestation,
  id: string,
  sameId: (a: string, b: string) => boolean = (a, b) => a === b,
  now = Date.now(),
): CertificateCheck {
  if (attestation.kind === 'thumbprint') return verifySelfSigned(chain, attestation.thumbprints, { now, isRevoked: (c) => pki.isRevoked(c) });
  const check = pki.verify(chain, now);
  if (check.ok && !sameId(check.commonName, id)) {
    return { ok: false, reason: 'wrong-subject', detail: `certificate CN '${check.commonName}' is not '${id}'` };
  }
  return check;
}
