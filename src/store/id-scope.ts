/**
 * The ID scope a device moved to (the built-in `DeviceMove` command, see src/migration.ts), kept
 * in the data directory so that a restart provisions against it, not against the configured one.
 *
 * One JSON file per registration id, written like the provisioning cache (src/store/cache.ts):
 * atomically, mode 0600, never read through a symlink, authenticated with an HMAC keyed by the
 * cache's MAC key (derived from the device key, never written), and bound to what it was written
 * for: the configured ID scope, the DPS host, the registration id and the credential fingerprint.
 * A file written for another configuration (the operator changed `idScope`: the configuration
 * wins), unreadable, or with a wrong MAC is ignored with a warning: the configured scope is used.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { readStoreFile, writeFileAtomic } from './files';
import type { PartLogger } from '../logger';

/** What is persisted: the scope in use, and the scope a move not yet confirmed by DPS came from. */
export interface PersistedIdScope {
  idScope: string;
  /** Set from the move until DPS accepts the device under `idScope`: where a refusal rolls back to. */
  pendingFrom: string | null;
}

export interface IdScopeStore {
  load(): PersistedIdScope | null;
  /** Throws the fs error: a move that cannot be persisted is not made. */
  save(value: PersistedIdScope): void;
  clear(): void;
}

/** What a persisted scope is bound to (compared case-insensitively, as DPS compares scopes and hosts). */
export interface IdScopeBinding {
  /** The `idScope` option the device was created with. */
  configuredIdScope: string;
  provisioningHost: string;
  registrationId: string;
  /** `credentialFingerprint` (or the X.509 one) of the boot credential: a hash, never a key. */
  credential: string;
}

/** An ID scope as DPS writes it and `createDevice` accepts it. */
export const ID_SCOPE_PATTERN = /^[A-Za-z0-9]{1,64}$/;

const VERSION = 1;

function macOf(key: Buffer, binding: IdScopeBinding, value: PersistedIdScope): string {
  const { configuredIdScope, provisioningHost, registrationId, credential } = binding;
  const input = JSON.stringify(['hubstate id scope', VERSION, configuredIdScope, provisioningHost, registrationId, credential, value.idScope, value.pendingFrom]);
  return createHmac('sha256', key).update(input).digest('hex');
}

function sameBinding(a: unknown, b: IdScopeBinding): boolean {
  const written = a as Partial<IdScopeBinding> | null;
  if (typeof written !== 'object' || written === null) return false;
  return (['configuredIdScope', 'provisioningHost', 'registrationId', 'credential'] as const).every(
    (field) => typeof written[field] === 'string' && written[field]!.toLowerCase() === b[field].toLowerCase(),
  );
}

export class FileIdScopeStore implements IdScopeStore {
  readonly path: string;

  constructor(
    dataDir: string,
    private readonly binding: IdScopeBinding,
    private readonly macKey: Buffer,
    private readonly logger: PartLogger,
  ) {
    this.path = join(dataDir, `id-scope-${encodeURIComponent(binding.registrationId)}.json`);
  }

  /** The persisted scope, or null (after a warning when a file was there but not trusted). Never throws. */
  load(): PersistedIdScope | null {
    let text: string | null;
    try {
      text = readStoreFile(this.path);
    } catch (error) {
      this.logger.warn({ path: this.path, err: (error as Error).message }, 'persisted ID scope refused; using the configured idScope');
      return null;
    }
    if (text === null) return null;
    let parsed: { version?: unknown; for?: unknown; idScope?: unknown; pendingFrom?: unknown; mac?: unknown } | undefined;
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch {
      parsed = undefined;
    }
    const valid =
      typeof parsed === 'object' &&
      parsed !== null &&
      parsed.version === VERSION &&
      typeof parsed.idScope === 'string' &&
      ID_SCOPE_PATTERN.test(parsed.idScope) &&
      (parsed.pendingFrom === null || (typeof parsed.pendingFrom === 'string' && ID_SCOPE_PATTERN.test(parsed.pendingFrom))) &&
      typeof parsed.mac === 'string';
    if (!valid) {
      this.logger.warn({ path: this.path }, 'persisted ID scope unreadable; using the configured idScope');
      return null;
    }
    if (!sameBinding(parsed!.for, this.binding)) {
      this.logger.warn({ path: this.path }, 'persisted ID scope written for another idScope, DPS or credential; using the configured idScope');
      return null;
    }
    const value: PersistedIdScope = { idScope: parsed!.idScope as string, pendingFrom: parsed!.pendingFrom as string | null };
    const expected = Buffer.from(macOf(this.macKey, this.binding, value), 'hex');
    const given = /^[0-9a-f]{64}$/.test(parsed!.mac as string) ? Buffer.from(parsed!.mac as string, 'hex') : undefined;
    if (given === undefined || !timingSafeEqual(given, expected)) {
      this.logger.warn({ path: this.path }, 'persisted ID scope not authenticated (not written by this device); using the configured idScope');
      return null;
    }
    return value;
  }

  save(value: PersistedIdScope): void {
    const content = { version: VERSION, for: this.binding, idScope: value.idScope, pendingFrom: value.pendingFrom, mac: macOf(this.macKey, this.binding, value) };
    writeFileAtomic(this.path, JSON.stringify(content));
  }

  clear(): void {
    rmSync(this.path, { force: true });
  }
}

/** Without a data directory: the move lasts until the process ends. */
export class MemoryIdScopeStore implements IdScopeStore {
  private value: PersistedIdScope | null = null;
  load(): PersistedIdScope | null {
    return this.value && { ...this.value };
  }
  save(value: PersistedIdScope): void {
    this.value = { ...value };
  }
  clear(): void {
    this.value = null;
  }
}
