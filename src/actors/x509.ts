/**
 * The device's X.509 identity: validation of the `x509` option, and what the rest of the device
 * needs from the certificate (its CN, thumbprint and lifetime; a cache fingerprint and MAC key).
 * The private key never leaves the identity object except into the TLS options of a connection.
 */
import { X509Certificate, createHash, createPrivateKey, hkdfSync, type KeyObject } from 'node:crypto';
import { ConfigError } from '../errors';
import { firstUnknownKey, unknownKeyExpectation } from '../validate';

/** `x509` option: PEM certificate (the leaf first, its chain after it allowed), PEM private key. */
export interface X509Identity {
  cert: string;
  key: string;
  /** For an encrypted private key. */
  passphrase?: string;
}

const X509_KEYS = ['cert', 'key', 'passphrase'] as const;
/** A leaf plus a few intermediates is a few KB; anything this large is not a device certificate. */
const MAX_PEM_BYTES = 64 * 1024;
const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;
const DAY_MS = 24 * 60 * 60 * 1000;

/** Every certificate in the PEM, leaf first. */
function certificates(pem: string): X509Certificate[] {
  return (pem.match(PEM_CERT) ?? []).map((block) => new X509Certificate(block));
}

/** The device certificate (the first of the PEM). */
export function leafCertificate(identity: X509Identity): X509Certificate {
  return certificates(identity.cert)[0]!;
}

function privateKey(identity: X509Identity): KeyObject {
  return createPrivateKey(identity.passphrase === undefined ? identity.key : { key: identity.key, passphrase: identity.passphrase });
}

/** The subject's CN: the registration id DPS reads from an X.509 certificate. */
export function commonName(cert: X509Certificate): string | undefined {
  for (const line of cert.subject.split('\n')) if (line.startsWith('CN=')) return line.slice(3);
  return undefined;
}

/**
 * Checks the `x509` option: an object `{ cert, key, passphrase? }`, `cert` PEM certificates that
 * parse (the first one the device's, not a CA), `key` a PEM private key that opens (with the
 * passphrase when it is encrypted) and belongs to that certificate. A typed ConfigError names the
 * field; no message quotes the key.
 */
export function resolveX509Identity(value: unknown, field = 'x509'): X509Identity {
  const plainObject = typeof value === 'object' && value !== null && [Object.prototype, null].includes(Object.getPrototypeOf(value));
  if (!plainObject) throw new ConfigError(field, '{ cert, key, passphrase? } with PEM certificate and private key');
  const unknown = firstUnknownKey(value, X509_KEYS);
  if (unknown !== undefined) throw new ConfigError(`${field}.${unknown}`, unknownKeyExpectation(unknown, X509_KEYS));
  const { cert, key, passphrase } = value as Record<string, unknown>;
  if (typeof cert !== 'string' || Buffer.byteLength(cert) > MAX_PEM_BYTES) throw new ConfigError(`${field}.cert`, `PEM certificates, at most ${MAX_PEM_BYTES} bytes`);
  let chain: X509Certificate[];
  try {
    chain = certificates(cert);
  } catch (error) {
    throw new ConfigError(`${field}.cert`, `PEM certificates that parse as X.509 (${(error as Error).message})`);
  }
  const leaf = chain[0];
  if (!leaf) throw new ConfigError(`${field}.cert`, 'a PEM certificate (-----BEGIN CERTIFICATE-----)');
  if (leaf.ca) throw new ConfigError(`${field}.cert`, 'the device certificate first (this one is a CA certificate)');
  if (!commonName(leaf)) throw new ConfigError(`${field}.cert`, 'a certificate with a CN (the registration id)');
  if (typeof key !== 'string' || Buffer.byteLength(key) > MAX_PEM_BYTES || !key.includes('PRIVATE KEY-----')) {
    throw new ConfigError(`${field}.key`, 'a PEM private key');
  }
  if (passphrase !== undefined && typeof passphrase !== 'string') throw new ConfigError(`${field}.passphrase`, 'a string');
  const identity: X509Identity = { cert, key, ...(passphrase === undefined ? {} : { passphrase }) };
  let keyObject: KeyObject;
  try {
    keyObject = privateKey(identity);
  } catch {
    // Node's message for a wrong passphrase or a malformed key never contains the key itself,
    // but it is not needed either.
    throw new ConfigError(passphrase === undefined ? `${field}.key` : `${field}.passphrase`, 'a private key that opens (the passphrase of an encrypted key)');
  }
  if (!leaf.checkPrivateKey(keyObject)) throw new ConfigError(`${field}.key`, "the private key of the certificate (this key does not match it)");
  return identity;
}

/** SHA-256 thumbprint of the device certificate, upper-case hex (public: it is in the certificate). */
export function x509Thumbprint(identity: X509Identity): string {
  return leafCertificate(identity).fingerprint256.replace(/:/g, '').toUpperCase();
}

/**
 * The cache's credential fingerprint for a certificate: `x509-` and 128 bits of its SHA-256
 * thumbprint. A renewed certificate is another identity to the cache (the device registers once).
 */
export function x509CacheFingerprint(identity: X509Identity): string {
  return `x509-${x509Thumbprint(identity).slice(0, 32).toLowerCase()}`;
}

/**
 * The key that authenticates the cache for an X.509 device: HKDF-SHA256 of the private key
 * (PKCS#8 DER, decrypted) with a fixed label. The certificate is public and cannot be the secret;
 * the private key is what only this device holds. Never written anywhere.
 */
export function x509CacheMacKey(identity: X509Identity): Buffer {
  const der = privateKey(identity).export({ type: 'pkcs8', format: 'der' });
  const ikm = createHash('sha256').update(der).digest();
  return Buffer.from(hkdfSync('sha256', ikm, Buffer.alloc(0), 'hubstate provisioning cache MAC x509 v1', 32));
}

/** The device certificate's validity window and the whole days left at `now` (negative once expired). */
export function certificateLifetime(identity: X509Identity, now: number): { notBefore: Date; notAfter: Date; daysLeft: number; expired: boolean } {
  const leaf = leafCertificate(identity);
  const notBefore = new Date(leaf.validFrom);
  const notAfter = new Date(leaf.validTo);
  return { notBefore, notAfter, daysLeft: Math.floor((notAfter.getTime() - now) / DAY_MS), expired: now > notAfter.getTime() };
}

/**
 * The device's own certificate is outside its validity window (known locally, before any
 * connection: DPS would answer 401, the hub close the connection, both saying less). Classified
 * `parked` (rule `device-certificate-expired`): a long wait, during which a renewed certificate
 * (`device.updateCredentials({ x509 })`) or a clock that gets set can take effect.
 */
export class DeviceCertificateExpiredError extends Error {
  constructor(
    readonly notBefore: Date,
    readonly notAfter: Date,
    readonly expired: boolean,
  ) {
    super(
      expired
        ? `the device's X.509 certificate expired ${notAfter.toISOString()}`
        : `the device's X.509 certificate is not valid before ${notBefore.toISOString()}`,
    );
    this.name = 'DeviceCertificateExpiredError';
  }
}

/** Throws DeviceCertificateExpiredError unless `now` is within the certificate's validity window. */
export function assertCertificateCurrent(identity: X509Identity, now: number): void {
  const life = certificateLifetime(identity, now);
  if (life.expired || now < life.notBefore.getTime()) throw new DeviceCertificateExpiredError(life.notBefore, life.notAfter, life.expired);
}

/** The `credentials` device event: the certificate's lifetime, never key material. */
export interface CertificateNotice {
  kind: 'certificate-expiring' | 'certificate-expired' | 'certificate-not-yet-valid';
  /** SHA-256 thumbprint of the device certificate. */
  thumbprint: string;
  notBefore: string;
  notAfter: string;
  /** Whole days until notAfter (negative once expired). */
  daysLeft: number;
}

/**
 * What to tell the application about the certificate at `now`: expired, not yet valid, or
 * expiring within `warningDays` (0: only the first two); undefined when nothing is due.
 */
export function certificateNotice(identity: X509Identity, now: number, warningDays: number): CertificateNotice | undefined {
  const life = certificateLifetime(identity, now);
  const base = { thumbprint: x509Thumbprint(identity), notBefore: life.notBefore.toISOString(), notAfter: life.notAfter.toISOString(), daysLeft: life.daysLeft };
  if (life.expired) return { kind: 'certificate-expired', ...base };
  if (now < life.notBefore.getTime()) return { kind: 'certificate-not-yet-valid', ...base };
  if (warningDays > 0 && life.notAfter.getTime() - now <= warningDays * DAY_MS) return { kind: 'certificate-expiring', ...base };
  return undefined;
}
