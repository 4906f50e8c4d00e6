import { createHmac } from 'node:crypto';
import type { X509Identity } from './x509';

/** How the device proves itself: a group enrollment key (derived per device) or its own key. */
export type Credential = { groupKey: string } | { deviceKey: string } | { x509: X509Identity };

/** DPS group enrollment: device key = base64(HMAC-SHA256(base64decode(groupKey), registrationId)). */
export function deriveDeviceKey(groupKey: string, registrationId: string): string {
  return createHmac('sha256', Buffer.from(groupKey, 'base64')).update(registrationId, 'utf8').digest('base64');
}

/** The key this device signs with; the group key itself never leaves this function's caller. */
export function deviceKeyOf(credential: Credential, registrationId: string): string {
  if ('x509' in credential) throw new TypeError('an X.509 identity has no symmetric key');
  return 'deviceKey' in credential ? credential.deviceKey : deriveDeviceKey(credential.groupKey, registrationId);
}

/** A symmetric key as configured: one key, or the primary and secondary of an enrollment. */
export type KeyPair = { primary: string; secondary?: string };

/** What the device was configured with: each key as a pair (a lone key is a primary). */
export type CredentialOptions = { groupKey: KeyPair } | { deviceKey: KeyPair } | { x509: X509Identity };

/** Which of the pair a credential is: logs and events name it, never the key. */
export type KeySlot = 'primary' | 'secondary';

/** The credential of one slot of `options`, if that slot has a key. */
function credentialIn(options: CredentialOptions, slot: KeySlot): Credential | undefined {
  // A certificate has no second key: its renewal is a new certificate (updateCredentials).
  if ('x509' in options) return slot === 'primary' ? { x509: options.x509 } : undefined;
  const pair = 'groupKey' in options ? options.groupKey : options.deviceKey;
  const key = pair[slot];
  if (key === undefined) return undefined;
  return 'groupKey' in options ? { groupKey: key } : { deviceKey: key };
}

/**
 * The device's credentials at run time: which key it signs with now, the other one to try when
 * a service refuses this one (a rotated key), and runtime replacement. Which key worked lives
 * here, in memory only: the provisioning cache never holds key material.
 */
export class Credentials {
  private options: CredentialOptions;

  private slot: KeySlot = 'primary';

  private replacements = 0;

  constructor(options: CredentialOptions | Credential) {
    this.options = Credentials.normalize(options);
  }

  private static normalize(options: CredentialOptions | Credential): CredentialOptions {
    if ('x509' in options) return { x509: options.x509 };
    if ('groupKey' in options) return { groupKey: typeof options.groupKey === 'string' ? { primary: options.groupKey } : options.groupKey };
    return { deviceKey: typeof options.deviceKey === 'string' ? { primary: options.deviceKey } : options.deviceKey };
  }

  /** The credential to sign with now. */
  current(): Credential {
    return credentialIn(this.options, this.slot)!;
  }

  /** Changes at each `replace`: an answer to an attempt of an older generation says nothing about these keys. */
  get generation(): number {
    return this.replacements;
  }

  /** Which key `current()` is. */
  get currentSlot(): KeySlot {
    return this.slot;
  }

  /** The other key of the pair, if there is one. */
  alternate(): { slot: KeySlot; credential: Credential } | undefined {
    const slot: KeySlot = this.slot === 'primary' ? 'secondary' : 'primary';
    const credential = credentialIn(this.options, slot);
    return credential ? { slot, credential } : undefined;
  }

  /** The service accepted `slot`: sign with it from now on. */
  use(slot: KeySlot): void {
    if (credentialIn(this.options, slot)) this.slot = slot;
  }

  /** Replaces the keys (validated by the caller); the next connection starts with the primary. */
  replace(options: CredentialOptions): void {
    this.options = Credentials.normalize(options);
    this.slot = 'primary';
    this.replacements++;
  }
}

/** Names of the rules that mean "the service refused this key" (see src/policy/classify.ts). */
const KEY_REFUSAL_RULES = /^(?:dps-unauthorized|hub-unauthorized|connack-[45]-(?:first|after)-connect)$/;

/** True when `failure` is a refusal of the credential, which the other key of a pair may pass. */
export function isKeyRefusal(failure: unknown): boolean {
  if (typeof failure !== 'object' || failure === null) return false;
  const { rule, phase, code } = failure as { rule?: unknown; phase?: unknown; code?: unknown };
  // A lookup's 401 is classified with its other 4xx ("no answer for this device"), but it is the
  // service refusing the token all the same.
  return KEY_REFUSAL_RULES.test(String(rule)) || (phase === 'dps-lookup' && code === 401);
}

/**
 * Runs `attempt` with the current key; when the service refuses that key and the pair has
 * another, runs it once more with the other before the failure is classified for the machine,
 * and keeps the one that worked. When both are refused, the second refusal (the newer answer)
 * is the one the machine classifies.
 */
export async function withEitherKey<T>(
  credentials: Credentials,
  attempt: (credential: Credential) => Promise<T>,
  onSwitch: (from: KeySlot, to: KeySlot) => void,
): Promise<T> {
  const generation = credentials.generation;
  try {
    return await attempt(credentials.current());
  } catch (failure) {
    if (!isKeyRefusal(failure)) throw failure;
    // Replaced while that attempt ran (updateCredentials): the refusal was of the old keys.
    if (credentials.generation !== generation) return attempt(credentials.current());
    const other = credentials.alternate();
    if (!other) throw failure;
    onSwitch(credentials.currentSlot, other.slot);
    const result = await attempt(other.credential);
    // Only a success of this generation's key says which key to keep.
    if (credentials.generation === generation) credentials.use(other.slot);
    return result;
  }
}
