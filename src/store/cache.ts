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

/** A JSON file per registration id in the data directory, written atomically with mode 0600. */
export class FileProvisioningCache implements ProvisioningCache {
  readonly path: string;

  constructor(
    dataDir: string,
    registrationId: string,
    private readonly logger: Logger,
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
    try {
      const parsed: unknown = JSON.parse(text);
      if (isCachedAssignment(parsed)) {
        return { hubHost: parsed.hubHost, deviceId: parsed.deviceId, assignedAt: parsed.assignedAt };
      }
    } catch {
      // fall through: a corrupt cache costs one DPS registration, never the device
    }
    this.logger.warn({ path: this.path }, 'provisioning cache unreadable; ignoring it and provisioning through DPS');
    return null;
  }

  save(assignment: CachedAssignment): void {
    const { hubHost, deviceId, assignedAt } = assignment;
    writeFileAtomic(this.path, JSON.stringify({ hubHost, deviceId, assignedAt }));
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
