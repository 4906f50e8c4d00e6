/**
 * The soak's fault schedule: a pure function of the seed (and the run's shape), generated up
 * front, so a run is reproducible from the seed it prints and two runs can be compared fault by
 * fault. No clock, no I/O: only the seeded RNG of the backoff policy (mulberry32).
 */
import { createHash } from 'node:crypto';
import { nextRandom, seedFrom } from 'hubstate/internal';

/**
 * Every recoverable fault of the local cloud (packages/cloud/README.md):
 * - `hub.crash`: kill() then restart() after the duration (sockets destroyed, ECONNREFUSED);
 * - `hub.refuse3`: every CONNECT answered CONNACK 3 (server unavailable);
 * - `hub.blackhole`: TLS accepted, MQTT never answered, live connections go silent;
 * - `hub.withholdPubacks`: telemetry stored (or not, `store`) but never PUBACKed;
 * - `hub.connectRateLimit`: CONNACK 3 beyond `perSec` new connections;
 * - `dps.down` / `dps.blackhole`: DPS unreachable / silent;
 * - `dps.throttle`: every DPS request answered 429 with `retry-after`;
 * - `dps.failWith`: every DPS request answered 500/503 (with or without `retry-after`);
 * - `dps.rateLimit`: DPS registrations beyond `perSec` answered 429 with `retry-after`;
 * - `device.failover`: IoT Central manual failover, failback by TTL (= the duration);
 * - `device.failback`: manual failover, then an explicit manualFailback after the duration;
 * - `device.expireTokens`: connection dropped, current token refused (CONNACK 5) from then on;
 * - `device.disable`: identity disabled for a period (`longFaultMinMs`–`longFaultMaxMs`), then
 *   enabled; refused with the hub's refusal code (3, like Azure: "server unavailable");
 * - `device.flap`: a flapping hub: for a period (`longFaultMinMs`–`longFaultMaxMs`) the device's hub
 *   accepts each CONNECT and drops the session `holdMs` later (100–1000 ms, far below
 *   stableConnectionMs), again and again;
 * - `device.delete`: identity deleted (recreated when the device registers with DPS again);
 * - `device.disconnect`: server-side disconnect.
 *
 * DPS faults carry `devices`: those devices are asked to reprovision (the user command every
 * device accepts at any time) when the fault starts, so the fault is met, not just scheduled.
 *
 * Left out on purpose, because they are fatal by design and a device must stop on them (the
 * bad-input and E2E suites cover them): DPS 400/401/403/404, enrollment failed/disabled,
 * CONNACK 1, wrong CA.
 */
export const FAULT_KINDS = [
  'hub.crash',
  'hub.refuse3',
  'hub.blackhole',
  'hub.withholdPubacks',
  'hub.connectRateLimit',
  'dps.down',
  'dps.blackhole',
  'dps.throttle',
  'dps.failWith',
  'dps.rateLimit',
  'device.failover',
  'device.failback',
  'device.expireTokens',
  'device.disable',
  'device.delete',
  'device.disconnect',
  'device.flap',
] as const;

export type FaultKind = (typeof FAULT_KINDS)[number];

/** Faults that happen at one instant (duration 0); their targets stay reserved for `settleMs`. */
const INSTANT: ReadonlySet<FaultKind> = new Set(['device.expireTokens', 'device.delete', 'device.disconnect']);

/** Faults that last a period (`longFaultMinMs`–`longFaultMaxMs`): long enough to meet several backoff cycles. */
export const LONG_FAULTS: ReadonlySet<FaultKind> = new Set(['device.disable', 'device.flap']);

export interface ScheduledFault {
  /** Position in the schedule (0-based, by start time). */
  id: number;
  kind: FaultKind;
  /** Start, in ms from the beginning of the fault phase. */
  atMs: number;
  /** How long it lasts (0 for an instantaneous fault). Always ends within the fault phase. */
  durationMs: number;
  /** Hub index (`hub-<n>`) for hub faults. */
  hub?: number;
  /** Device indexes: the targets of a device fault, or the devices nudged to DPS by a DPS fault. */
  devices?: number[];
  /** `retry-after` of dps.throttle, dps.rateLimit and (optionally) dps.failWith. */
  retryAfterSec?: number;
  /** Status of dps.failWith. */
  status?: 500 | 503;
  /** Rate of dps.rateLimit (registrations/s) and hub.connectRateLimit (connections/s). */
  perSec?: number;
  /** hub.withholdPubacks: whether the hub stores the messages it does not acknowledge. */
  store?: boolean;
  /** device.flap: how long the hub keeps each accepted session before dropping it. */
  holdMs?: number;
}

export interface ScheduleOptions {
  /** Any integer or string; the same seed (and options) always gives the same schedule. */
  seed: number | string;
  /** Length of the fault phase. */
  durationMs: number;
  devices: number;
  hubs: number;
  /** Mean gap between two fault starts (exponential gaps). Default 2000 ms. */
  faultRateMs?: number;
  /** Bounds of a fault's duration. Defaults 1000 and 15000 ms. */
  minFaultMs?: number;
  maxFaultMs?: number;
  /** Bounds of the duration of the long faults (device.disable, device.flap). Defaults 20000 and 90000 ms. */
  longFaultMinMs?: number;
  longFaultMaxMs?: number;
  /** Bounds of device.flap's holdMs. Defaults 100 and 1000 ms. */
  minFlapHoldMs?: number;
  maxFlapHoldMs?: number;
  /** After an instantaneous device fault, its targets get no other device fault for this long. Default 3000 ms. */
  settleMs?: number;
  /** At most this share of the fleet is hit by one device or DPS fault. Default 0.1. */
  maxTargetShare?: number;
  /** `retry-after` bounds (whole seconds) of the 429s and 5xx. Defaults 2 and 4. */
  minRetryAfterSec?: number;
  maxRetryAfterSec?: number;
}

export interface ResolvedScheduleOptions extends Required<ScheduleOptions> {}

export function resolveScheduleOptions(options: ScheduleOptions): ResolvedScheduleOptions {
  const resolved: ResolvedScheduleOptions = {
    seed: options.seed,
    durationMs: options.durationMs,
    devices: options.devices,
    hubs: options.hubs,
    faultRateMs: options.faultRateMs ?? 2000,
    minFaultMs: options.minFaultMs ?? 1000,
    maxFaultMs: options.maxFaultMs ?? 15_000,
    longFaultMinMs: options.longFaultMinMs ?? 20_000,
    longFaultMaxMs: options.longFaultMaxMs ?? 90_000,
    minFlapHoldMs: options.minFlapHoldMs ?? 100,
    maxFlapHoldMs: options.maxFlapHoldMs ?? 1000,
    settleMs: options.settleMs ?? 3000,
    maxTargetShare: options.maxTargetShare ?? 0.1,
    minRetryAfterSec: options.minRetryAfterSec ?? 2,
    maxRetryAfterSec: options.maxRetryAfterSec ?? 4,
  };
  const positive = (name: keyof ResolvedScheduleOptions, integer = false) => {
    const v = resolved[name] as number;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) {
      throw new RangeError(`schedule: ${name} must be a positive ${integer ? 'integer' : 'number'} (got ${String(v)})`);
    }
  };
  positive('durationMs');
  positive('devices', true);
  positive('hubs', true);
  positive('faultRateMs');
  positive('minFaultMs');
  positive('maxFaultMs');
  positive('longFaultMinMs');
  positive('longFaultMaxMs');
  positive('minFlapHoldMs', true);
  positive('maxFlapHoldMs', true);
  positive('settleMs');
  positive('maxTargetShare');
  positive('minRetryAfterSec', true);
  positive('maxRetryAfterSec', true);
  if (resolved.minFaultMs > resolved.maxFaultMs) throw new RangeError('schedule: minFaultMs must be <= maxFaultMs');
  if (resolved.longFaultMinMs > resolved.longFaultMaxMs) throw new RangeError('schedule: longFaultMinMs must be <= longFaultMaxMs');
  if (resolved.minFlapHoldMs > resolved.maxFlapHoldMs) throw new RangeError('schedule: minFlapHoldMs must be <= maxFlapHoldMs');
  if (resolved.minRetryAfterSec > resolved.maxRetryAfterSec) throw new RangeError('schedule: minRetryAfterSec must be <= maxRetryAfterSec');
  if (typeof resolved.seed !== 'number' && typeof resolved.seed !== 'string') throw new RangeError('schedule: seed must be a number or a string');
  return resolved;
}

/** A small seeded random source over `nextRandom` (state threaded explicitly, no globals). */
class Rng {
  constructor(private state: number) {}
  next(): number {
    const [value, state] = nextRandom(this.state);
    this.state = state;
    return value;
  }
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }
  shuffle<T>(items: readonly T[]): T[] {
    const out = items.slice();
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  }
}

/** The uint32 the schedule's RNG starts from. Integers are used as they are, strings hashed. */
export function scheduleSeed(seed: number | string): number {
  return seedFrom(typeof seed === 'number' && Number.isInteger(seed) ? seed : String(seed));
}

/**
 * The fault schedule of a soak: faults start at exponential gaps (mean `faultRateMs`); the first
 * ones go through every kind once (shuffled) so a long enough run meets the whole fault list,
 * then kinds are drawn uniformly. A fault never overlaps another fault of the same kind on the
 * same hub (or DPS), nor another device fault on the same device, and ends within the phase.
 */
export function generateSchedule(options: ScheduleOptions): ScheduledFault[] {
  const o = resolveScheduleOptions(options);
  const rng = new Rng(scheduleSeed(o.seed));
  const coverage = rng.shuffle(FAULT_KINDS);
  /** Busy-until per slot: `${kind}@hub-n`, `${kind}@dps`, `device-n`. */
  const busy = new Map<string, number>();
  const free = (slot: string, at: number) => (busy.get(slot) ?? -1) <= at;
  const maxTargets = Math.max(1, Math.ceil(o.devices * o.maxTargetShare));
  const faults: ScheduledFault[] = [];

  let at = Math.round(-Math.log(1 - rng.next()) * o.faultRateMs);
  while (at < o.durationMs - o.minFaultMs) {
    const fromCoverage = coverage.length > 0;
    const kind = fromCoverage ? coverage.shift()! : rng.pick(FAULT_KINDS);
    const instant = INSTANT.has(kind);
    const room = o.durationMs - at;
    const drawn = LONG_FAULTS.has(kind) ? rng.int(o.longFaultMinMs, o.longFaultMaxMs) : rng.int(o.minFaultMs, o.maxFaultMs);
    const durationMs = instant ? 0 : Math.min(room, drawn);
    const until = at + (instant ? o.settleMs : durationMs);
    const fault: ScheduledFault = { id: faults.length, kind, atMs: at, durationMs };
    let placed = true;

    if (kind.startsWith('hub.')) {
      const candidates = rng.shuffle(Array.from({ length: o.hubs }, (_, i) => i)).filter((h) => free(`${kind}@hub-${h}`, at));
      if (candidates.length === 0) placed = false;
      else {
        fault.hub = candidates[0]!;
        busy.set(`${kind}@hub-${fault.hub}`, until);
      }
    } else if (kind.startsWith('dps.')) {
      if (!free(`${kind}@dps`, at)) placed = false;
      else {
        busy.set(`${kind}@dps`, until);
        fault.devices = rng.shuffle(Array.from({ length: o.devices }, (_, i) => i)).slice(0, rng.int(1, maxTargets)).sort((a, b) => a - b);
      }
    } else {
      if ((kind === 'device.failover' || kind === 'device.failback') && o.hubs < 2) placed = false;
      const candidates = rng.shuffle(Array.from({ length: o.devices }, (_, i) => i)).filter((d) => free(`device-${d}`, at));
      const count = Math.min(candidates.length, rng.int(1, maxTargets));
      if (count === 0) placed = false;
      else {
        fault.devices = candidates.slice(0, count).sort((a, b) => a - b);
        for (const d of fault.devices) busy.set(`device-${d}`, until);
      }
    }

    // Parameters are drawn whether or not the fault was placed, so one refusal does not shift
    // every later draw differently depending on which branch ran (simpler to reason about).
    const retryAfterSec = rng.int(o.minRetryAfterSec, o.maxRetryAfterSec);
    const coin = rng.next();
    const rate = rng.int(1, 3);
    const hold = rng.int(o.minFlapHoldMs, o.maxFlapHoldMs);
    if (kind === 'dps.throttle' || kind === 'dps.rateLimit') fault.retryAfterSec = retryAfterSec;
    if (kind === 'dps.failWith') {
      fault.status = coin < 0.5 ? 500 : 503;
      if (rng.next() < 0.5) fault.retryAfterSec = retryAfterSec;
    }
    if (kind === 'dps.rateLimit') fault.perSec = rate;
    if (kind === 'hub.connectRateLimit') fault.perSec = Math.max(1, Math.ceil((o.devices / 20) * rate));
    if (kind === 'hub.withholdPubacks') fault.store = coin < 0.5;
    if (kind === 'device.flap') fault.holdMs = hold;

    const impossible = (kind === 'device.failover' || kind === 'device.failback') && o.hubs < 2;
    if (placed) faults.push(fault);
    else if (fromCoverage && !impossible) coverage.push(kind); // its turn comes again later
    at += Math.max(1, Math.round(-Math.log(1 - rng.next()) * o.faultRateMs));
  }
  return faults;
}

/** A short fingerprint of a schedule (sha256 of its JSON, 16 hex digits). */
export function scheduleDigest(schedule: readonly ScheduledFault[]): string {
  return createHash('sha256').update(JSON.stringify(schedule)).digest('hex').slice(0, 16);
}

/** Faults per kind, in FAULT_KINDS order (kinds that never occur are listed with 0). */
export function faultsByKind(schedule: readonly ScheduledFault[]): Record<FaultKind, number> {
  const counts = Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])) as Record<FaultKind, number>;
  for (const f of schedule) counts[f.kind]++;
  return counts;
}

/** The largest `retry-after` the schedule can make the cloud send, in ms (0 when none). */
export function maxRetryAfterMs(schedule: readonly ScheduledFault[]): number {
  return schedule.reduce((m, f) => Math.max(m, (f.retryAfterSec ?? 0) * 1000), 0);
}

/** The smallest `retry-after` the schedule can make the cloud send, in ms (Infinity when none). */
export function minRetryAfterMs(schedule: readonly ScheduledFault[]): number {
  return schedule.reduce((m, f) => (f.retryAfterSec !== undefined ? Math.min(m, f.retryAfterSec * 1000) : m), Infinity);
}

/** One line per fault, for logs: `+12.3s hub.crash hub-1 for 7.5s`. */
export function describeFault(f: ScheduledFault): string {
  const parts = [`+${(f.atMs / 1000).toFixed(1)}s`, f.kind];
  if (f.hub !== undefined) parts.push(`hub-${f.hub}`);
  if (f.devices) parts.push(f.kind.startsWith('dps.') ? `(nudges ${f.devices.length} device(s) to DPS)` : `${f.devices.length} device(s)`);
  if (f.status) parts.push(String(f.status));
  if (f.retryAfterSec !== undefined) parts.push(`retry-after ${f.retryAfterSec}s`);
  if (f.perSec !== undefined) parts.push(`${f.perSec}/s`);
  if (f.store !== undefined) parts.push(f.store ? 'stored' : 'not stored');
  if (f.holdMs !== undefined) parts.push(`sessions dropped after ${f.holdMs} ms`);
  if (f.durationMs > 0) parts.push(`for ${(f.durationMs / 1000).toFixed(1)}s`);
  return parts.join(' ');
}
