/**
 * Shared access signature (SAS) helpers shared by the emulated DPS and IoT Hubs.
 *
 * Formats (measured against the real Azure Node SDK, see azure-sdk-facts.md):
 * - token: `SharedAccessSignature sr={sr}&sig={urlEncoded base64 sig}&se={expiry seconds}[&skn={keyName}]`
 * - signed string: `{sr}\n{se}` where `{sr}` is exactly the text that appears in the token
 * - hub:  `sr = encodeURIComponent(host + '/devices/' + deviceId)` (host includes `:port`), no `skn`
 * - DPS:  `sr = idScope + '/registrations/' + registrationId` (NOT URL-encoded), `skn=registration`
 * - signature: base64(HMAC-SHA256(base64decode(key), signedString))
 *
 * Nothing here logs or returns key material in error values.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

/** base64(HMAC-SHA256(base64decode(keyBase64), data)). */
export function hmacSha256Base64(keyBase64: string, data: string): string {
  return createHmac('sha256', Buffer.from(keyBase64, 'base64')).update(data, 'utf8').digest('base64');
}

/**
 * Device key for a symmetric-key group enrollment:
 * base64(HMAC-SHA256(base64decode(groupKey), registrationId)).
 */
export function deriveDeviceKey(groupKeyBase64: string, registrationId: string): string {
  return hmacSha256Base64(groupKeyBase64, registrationId);
}

/** Decoded resource of a hub token: `{host}/devices/{deviceId}` (host with `:port` when present). */
export function hubResource(host: string, deviceId: string): string {
  return `${host}/devices/${deviceId}`;
}

/** Resource of a DPS token: `{idScope}/registrations/{registrationId}`. */
export function dpsResource(idScope: string, registrationId: string): string {
  return `${idScope}/registrations/${registrationId}`;
}

/** Parameters of {@link createSasToken}. */
export interface SasTokenParams {
  /** `sr` exactly as it must appear in the token (and in the signed string). */
  sr: string;
  /** base64 key. */
  keyBase64: string;
  /** Expiry, seconds since the epoch. */
  expiresAtSec: number;
  /** Optional key name (`skn`). */
  keyName?: string;
}

/** Builds a SAS token the way azure-iot-common's `SharedAccessSignature.create` does. */
export function createSasToken(p: SasTokenParams): string {
  const se = Math.floor(p.expiresAtSec);
  const sig = encodeURIComponent(hmacSha256Base64(p.keyBase64, `${p.sr}\n${se}`));
  let token = `SharedAccessSignature sr=${p.sr}&sig=${sig}`;
  if (p.keyName) token += `&skn=${encodeURIComponent(p.keyName)}`;
  return `${token}&se=${se}`;
}

/** A hub device token as the device SDK builds it (sr URL-encoded, no skn). */
export function hubSasToken(host: string, deviceId: string, keyBase64: string, expiresAtSec: number): string {
  return createSasToken({ sr: encodeURIComponent(hubResource(host, deviceId)), keyBase64, expiresAtSec });
}

/** A DPS registration token as the provisioning SDK builds it (sr raw, skn=registration). */
export function dpsSasToken(idScope: string, registrationId: string, keyBase64: string, expiresAtSec: number): string {
  return createSasToken({ sr: dpsResource(idScope, registrationId), keyBase64, expiresAtSec, keyName: 'registration' });
}

/** A parsed SAS token. `sr` is raw (as in the token); `sig` is URL-decoded. */
export interface ParsedSas {
  sr: string;
  sig: string;
  se: number;
  skn?: string;
}

const SAS_PREFIX = 'SharedAccessSignature ';

/** Parses a SAS token; returns undefined when it is not one. */
export function parseSasToken(token: string): ParsedSas | undefined {
  if (!token.startsWith(SAS_PREFIX)) return undefined;
  const fields = new Map<string, string>();
  for (const part of token.slice(SAS_PREFIX.length).split('&')) {
    const eq = part.indexOf('=');
    if (eq <= 0) return undefined;
    fields.set(part.slice(0, eq), part.slice(eq + 1));
  }
  const sr = fields.get('sr');
  const sigRaw = fields.get('sig');
  const seRaw = fields.get('se');
  if (!sr || !sigRaw || !seRaw || !/^\d+$/.test(seRaw)) return undefined;
  let sig: string;
  let skn: string | undefined;
  try {
    sig = decodeURIComponent(sigRaw);
    const sknRaw = fields.get('skn');
    skn = sknRaw === undefined ? undefined : decodeURIComponent(sknRaw);
  } catch {
    return undefined;
  }
  return { sr, sig, se: Number(seRaw), ...(skn === undefined ? {} : { skn }) };
}

/** Why a token was rejected. */
export type SasRejection = 'malformed' | 'resource-mismatch' | 'expired' | 'revoked' | 'bad-signature';

/** Result of {@link verifySasToken}. */
export type SasVerification = { ok: true; token: ParsedSas; keyIndex: number } | { ok: false; reason: SasRejection };

/** Options of {@link verifySasToken}. */
export interface VerifySasOptions {
  /** Candidate keys (base64); the token is valid when one of them signed it. */
  keys: readonly string[];
  /** Expected decoded resource; compared case-insensitively, as the services do. */
  resource: string;
  /** Current time in seconds (defaults to now). */
  nowSec?: number;
  /** Tokens with `se <= revokedThroughSec` are rejected (emulated early expiry). */
  revokedThroughSec?: number;
}

function safeDecode(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

/** Checks shape, resource, expiry and signature of a SAS token. */
export function verifySasToken(token: string | undefined, opts: VerifySasOptions): SasVerification {
  if (!token) return { ok: false, reason: 'malformed' };
  const parsed = parseSasToken(token);
  if (!parsed) return { ok: false, reason: 'malformed' };
  const decoded = safeDecode(parsed.sr);
  if (decoded === undefined || decoded.toLowerCase() !== opts.resource.toLowerCase()) {
    return { ok: false, reason: 'resource-mismatch' };
  }
  const now = opts.nowSec ?? Math.floor(Date.now() / 1000);
  if (parsed.se <= now) return { ok: false, reason: 'expired' };
  if (opts.revokedThroughSec !== undefined && parsed.se <= opts.revokedThroughSec) return { ok: false, reason: 'revoked' };
  const given = Buffer.from(parsed.sig, 'base64');
  const signed = `${parsed.sr}\n${parsed.se}`;
  for (let i = 0; i < opts.keys.length; i++) {
    const expected = Buffer.from(hmacSha256Base64(opts.keys[i]!, signed), 'base64');
    if (given.length === expected.length && timingSafeEqual(given, expected)) return { ok: true, token: parsed, keyIndex: i };
  }
  return { ok: false, reason: 'bad-signature' };
}
