import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../errors';
import { isDeviceId, isHubHost } from '../assignment';
import { readStoreFile, writeFileAtomic } from './files';
import type { PartLogger } from '../logger';

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
 * label, 128 bits in hex. It tells two keys apart and reveals nothing about either. It is written
 * in the file in the clear, so it says which key a cache was written for; it authenticates
 * nothing (see `cacheMacKey`).
 */
export function credentialFingerprint(deviceKey: string): string {
  return createHmac('sha256', Buffer.from(deviceKey, 'base64')).update('hubstate provisioning cache').digest('hex').slice(0, 32);
}

/**
 * The key that authenticates the cache: HKDF-SHA256 of the device key (for a group enrollment,
 * the derived device key) with a fixed label, 256 bits. Never written anywhere. Without the device
 * key nobody can write a cache this device accepts, even in a directory it shares.
 */
export function cacheMacKey(deviceKey: string): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(deviceKey, 'base64'), Buffer.alloc(0), 'hubstate provisioning cache MAC v3', 32));
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

/** The shape of an assignment (the hub host is checked apart, to say so in the warning). */
function isCachedAssignment(value: unknown): value is CachedAssignment {
  const v = value as Partial<CachedAssignment> | null;
  return (
    typeof v === 'object' &&
    v !== null &&
    !Array.isArray(v) &&
    typeof v.hubHost === 'string' &&
    v.hubHost.length > 0 &&
    isDeviceId(v.deviceId) &&
    typeof v.assignedAt === 'number' &&
    Number.isFinite(v.assignedAt) &&
    v.assignedAt >= 0
  );
}

/** The version of the authenticated file format. */
const VERSION = 3;

/** What the MAC covers: every field of the file but the MAC, in a fixed order, as written. */
function macInput(scope: CacheScope, { hubHost, deviceId, assignedAt }: CachedAssignment): string {
  const { idScope, provisioningHost, registrationId, credential } = scope;
  return JSON.stringify(['hubstate provisioning cache', VERSION, idScope, provisioningHost, registrationId, credential, hubHost, deviceId, assignedAt]);
}

function computeMac(key: Buffer, scope: CacheScope, assignment: CachedAssignment): Buffer {
  return createHmac('sha256', key).update(macInput(scope, assignment)).digest();
}

/** Bounded, so that a long planted value cannot flood the log (pino escapes it anyway). */
const shown = (value: string) => (value.length > 80 ? `${value.slice(0, 80)}…` : value);

/**
 * A JSON file per registration id in the data directory, written atomically with mode 0600, read
 * only if it is a regular file of ours (never through a symlink: a refused file is a warning).
 *
 * A device passes a `scope` and a `macKey` (`cacheMacKey` of its device key): the file is then
 * version 3, `{ version: 3, for: CacheScope, hubHost, deviceId, assignedAt, mac }`, the MAC an
 * HMAC-SHA256 over all the other fields. A file is used only if it reads as an assignment, its
 * hub host is a host[:port] (`isHubHost`), it was written for this scope (ID scope, DPS,
 * registration id, credential fingerprint: else a warning naming what differs) and its MAC is
 * right. Anything else is ignored with a warning and the device provisions through DPS: a bad
 * cache costs one registration, never the device, and is never trusted.
 *
 * Files of earlier versions carry no MAC: version 1 (`{ hubHost, deviceId, assignedAt }`) and
 * version 2 (with `for`, keyed by the fingerprint, which is written in the clear and so can be
 * copied into a planted file) are ignored with a warning and re-provisioned once, not migrated:
 * signing one would authenticate whatever was planted there before the upgrade. The new
 * assignment is then saved as version 3.
 *
 * Without a `scope` (direct use of this class, tests) files are version 1, unauthenticated, and
 * only their shape and hub host are checked.
 */
export class FileProvisioningCache implements ProvisioningCache {
  readonly path: string;

  constructor(
    dataDir: string,
    registrationId: string,
    private readonly logger: PartLogger,
    private readonly scope?: CacheScope,
    private readonly macKey?: Buffer,
  ) {
    if (scope !== undefined && (!Buffer.isBuffer(macKey) || macKey.length < 16)) {
      throw new ConfigError('macKey', 'cacheMacKey(deviceKey) with a scope: a scoped cache is always authenticated');
    }
    this.path = join(dataDir, `assignment-${encodeURIComponent(registrationId)}.json`);
  }

  /** The cached assignment, or null (after a warning) when there is none worth trusting. Never throws. */
  load(): CachedAssignment | null {
    try {
      return this.read();
    } catch (error) {
      this.logger.warn({ path: this.path, err: (error as Error).message }, 'provisioning cache refused; ignoring it and provisioning through DPS');
      return null;
    }
  }

  private read(): CachedAssignment | null {
    const text = readStoreFile(this.path);
    if (text === null) return null;
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
    if (!isHubHost(assignment.hubHost)) {
      this.logger.warn(
        { path: this.path, hubHost: shown(assignment.hubHost) },
        'provisioning cache names an invalid hub host (expected host[:port]); ignoring it and provisioning through DPS',
      );
      return null;
    }
    if (!this.scope) return assignment;
    const { version, mac } = parsed as { version?: unknown; mac?: unknown };
    if (written === undefined || version !== VERSION) {
      this.logger.warn(
        { path: this.path, version: typeof version === 'number' ? version : 1 },
        'provisioning cache of an earlier (unauthenticated) or unknown version; ignoring it and provisioning through DPS (once: the new assignment is saved authenticated)',
      );
      return null;
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
    const expected = computeMac(this.macKey!, written, assignment);
    const given = typeof mac === 'string' && /^[0-9a-f]{64}$/.test(mac) ? Buffer.from(mac, 'hex') : undefined;
    if (given === undefined || !timingSafeEqual(given, expected)) {
      this.logger.warn(
        { path: this.path, mac: given === undefined ? 'missing' : 'wrong' },
        'provisioning cache not authenticated (MAC missing or wrong: not written by this device); ignoring it and provisioning through DPS',
      );
      return null;
    }
    return assignment;
  }

  save(assignment: CachedAssignment): void {
    writeFileAtomic(this.path, JSON.stringify(this.fileContent(assignment)));
  }

  private fileContent(assignment: CachedAssignment): object {
    const { hubHost, deviceId, assignedAt } = assignment;
    if (!this.scope) return { hubHost, deviceId, assignedAt };
    const mac = computeMac(this.macKey!, this.scope, { hubHost, deviceId, assignedAt }).toString('hex');
    return { version: VERSION, for: this.scope, hubHost, deviceId, assignedAt, mac };
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
