import { createHmac } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { writeFileAtomic } from './files';

/** What is cached after a DPS assignment: where to connect. Never a key. */
export interface CachedAssignment {
  hubHost: string;
  deviceId: string;
  assignedAt: number;
}

/** The provisioning cache: lets a restarted device go straight to its hub, without DPS. */
export interface ProvisioningCache {
  load(): CachedAssignment | null;
  save(assignment: CachedAssignment): void;
  clear(): void;
}

/**
 * Which provisioning a cached assignment answers. A cache written for another ID scope, DPS,
 * registration id or credential (another app, a rotated key, a copied data directory) is not
 * used: the device provisions instead.
 */
export interface CacheScope {
  idScope: string;
  provisioningHost: string;
  registrationId: string;
  /** `credentialFingerprint` of the device key: a hash, never the key. */
  credential: string;
}

/**
 * A fingerprint of a device key for the cache: HMAC-SHA256 keyed with the key itself over a fixed
 * label, 128 bits in hex. It tells two keys apart and reveals nothing about either.
 */
export function credentialFingerprint(deviceKey: string): string {
  return createHmac('sha256', Buffer.from(deviceKey, 'base64')).update('hubstate provisioning cache').digest('hex').slice(0, 32);
}

/** Scopes compare case-insensitively (DPS ids and host names are). */
function differingFields(cached: CacheScope, current: CacheScope): Array<keyof CacheScope> {
  const fields: Array<keyof CacheScope> = ['idScope', 'provisioningHost', 'registrationId', 'credential'];
  return fields.filter((field) => String(cached[field]).toLowerCase() !== current[field].toLowerCase());
}

function isCacheScope(value: unknown): value is CacheScope {
  const v = value as Partial<CacheScope> | null;
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof v.idScope === 'string' &&
    typeof v.provisioningHost === 'string' &&
    typeof v.registrationId === 'string' &&
    typeof v.credential === 'string'
  );
}

function isCachedAssignment(value: unknown): value is CachedAssignment {
  const v = value as Partial<CachedAssignment> | null;
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof v.hubHost === 'string' &&
    v.hubHost.length > 0 &&
    typeof v.deviceId === 'string' &&
    v.deviceId.length > 0 &&
    typeof v.assignedAt === 'number'
  );
}

/**
 * A JSON file per registration id in the data directory, written atomically with mode 0600.
 *
 * With a `scope`, the file is version 2: `{ version: 2, for: CacheScope, hubHost, deviceId,
 * assignedAt }`, and a file written for another scope is ignored (warning) so the device
 * provisions. A version 1 file (`{ hubHost, deviceId, assignedAt }`, before scopes) is used as
 * it was and rewritten as version 2 for the current scope: an upgrade costs no registration.
 * Without a `scope` (direct use of this class) files are version 1, as before.
 */
export class FileProvisioningCache implements ProvisioningCache {
  readonly path: string;

  constructor(
    dataDir: string,
    registrationId: string,
    private readonly logger: Logger,
    private readonly scope?: CacheScope,
  ) {
    this.path = join(dataDir, `assignment-${encodeURIComponent(registrationId)}.json`);
  }

  load(): CachedAssignment | null {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch {
      return null;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined; // a corrupt cache costs one DPS registration, never the device
    }
    const written = isCachedAssignment(parsed) ? (parsed as { for?: unknown }).for : undefined;
    if (!isCachedAssignment(parsed) || (written !== undefined && !isCacheScope(written))) {
      this.logger.warn({ path: this.path }, 'provisioning cache unreadable; ignoring it and provisioning through DPS');
      return null;
    }
    const assignment: CachedAssignment = { hubHost: parsed.hubHost, deviceId: parsed.deviceId, assignedAt: parsed.assignedAt };
    if (!this.scope) return assignment;
    if (written === undefined) {
      this.migrate(assignment);
      return assignment;
    }
    const differing = differingFields(written, this.scope);
    if (differing.length > 0) {
      const { idScope, provisioningHost, registrationId } = written;
      this.logger.warn(
        { path: this.path, differing, cachedFor: { idScope, provisioningHost, registrationId } },
        'provisioning cache written for another scope, DPS or credential; ignoring it and provisioning through DPS',
      );
      return null;
    }
    return assignment;
  }

  save(assignment: CachedAssignment): void {
    writeFileAtomic(this.path, JSON.stringify(this.fileContent(assignment)));
  }

  private fileContent({ hubHost, deviceId, assignedAt }: CachedAssignment): object {
    return this.scope ? { version: 2, for: this.scope, hubHost, deviceId, assignedAt } : { hubHost, deviceId, assignedAt };
  }

  /** A version 1 file: trusted as before, and rewritten for the current scope. */
  private migrate(assignment: CachedAssignment): void {
    try {
      this.save(assignment);
      this.logger.info({ path: this.path }, 'provisioning cache migrated to version 2 (scoped)');
    } catch (error) {
      this.logger.warn({ path: this.path, err: (error as Error).message }, 'could not migrate the provisioning cache; using it as it is');
    }
  }

  clear(): void {
    rmSync(this.path, { force: true });
  }
}

/** For devices without storage and for tests. */
export class MemoryProvisioningCache implements ProvisioningCache {
  constructor(private assignment: CachedAssignment | null = null) {}
  load(): CachedAssignment | null {
    return this.assignment;
  }
  save(assignment: CachedAssignment): void {
    this.assignment = { ...assignment };
  }
  clear(): void {
    this.assignment = null;
  }
}
