/** Telemetry kept by all hubs of a local cloud: bounded, oldest dropped first. */
import type { TelemetryRecord } from './types';
import { RingBuffer } from './util';

/** Filter for stored telemetry. */
export interface TelemetryFilter {
  hub?: string;
  deviceId?: string;
}

function matches(r: TelemetryRecord, f: TelemetryFilter): boolean {
  return (f.hub === undefined || r.hub === f.hub) && (f.deviceId === undefined || r.deviceId === f.deviceId);
}

/** @internal Shared store; records are numbered in arrival order across hubs. */
export class TelemetryStore {
  private ring: RingBuffer<TelemetryRecord>;
  private seq = 0;

  constructor(readonly capacity: number) {
    this.ring = new RingBuffer(capacity);
  }

  add(r: Omit<TelemetryRecord, 'seq'>): TelemetryRecord {
    const record: TelemetryRecord = { seq: ++this.seq, ...r };
    this.ring.push(record);
    return record;
  }

  /** Records dropped because the store was full. */
  get dropped(): number {
    return this.ring.dropped;
  }

  list(f: TelemetryFilter = {}): TelemetryRecord[] {
    const all = this.ring.toArray();
    return f.hub === undefined && f.deviceId === undefined ? all : all.filter((r) => matches(r, f));
  }

  clear(f: TelemetryFilter = {}): void {
    if (f.hub === undefined && f.deviceId === undefined) {
      this.ring.clear();
      return;
    }
    const keep = this.ring.toArray().filter((r) => !matches(r, f));
    this.ring.clear();
    for (const r of keep) this.ring.push(r);
  }
}
