/**
 * A fleet: N device machines (`createDevice`) in one process against one DPS (the local cloud or
 * a real one), with the DPS at-scale guidance applied:
 * - staggered first provisioning: batches sized to the registration rate (R devices every second
 *   by default), scheduled on absolute deadlines by ONE timer chain (no per-device timer);
 * - reconnect and retry jitter from the fleet formula: max delay = T / load with T = N / R
 *   (`policy.fleet`), and a hub budget of 2 attempts so a hub that died for good sends each
 *   device to DPS at a time spread over T instead of all at once.
 *
 * `naive: true` builds the baseline the guidance warns about: every device starts at once and
 * every retry comes after exactly 1 s (or exactly retry-after): no stagger, no jitter.
 *
 * Memory: per device there is the machine, a pino child logger, an in-memory outbox and
 * provisioning cache (no file per device), and the SDK client. Progress is sampled by one
 * interval for the whole fleet.
 */
import type { Logger } from 'pino';
import pino from 'pino';
import { MAX_TIMER_MS, seedFrom, systemClock, resolveOptions } from 'hubstate/internal';
import { createDevice, DEVICE_STATES, type Device, type DeviceStateName, type StateChange, ConfigError, type DeviceOptions } from 'hubstate';
import type { RetryPolicyInput, ErrorClass } from 'hubstate';

/** Where the fleet provisions: what `LocalCloud` exposes (or a real DPS without `ca`). */
export interface FleetCloud {
  idScope: string;
  groupKey: string;
  provisioningHost: string;
  ca?: string;
}

export interface FleetOptions {
  cloud: FleetCloud;
  /** Number of devices (N). */
  devices: number;
  /** The DPS registration rate to plan for (R, registrations per second). */
  dpsRatePerSec: number;
  /** No stagger and no jitter: the baseline. Default false. */
  naive?: boolean;
  /**
   * The fleet formula's load factor (> 0): plan for `load × R`. Retry delays spread over
   * max = (N / R) / load, and the first provisioning is staggered at `load × R` per second.
   * Default 0.95: a 5 % margin so a late batch (a busy event loop, GC) does not meet a DPS
   * token bucket that the previous batch emptied.
   */
  load?: number;
  /** Stagger rate of the first provisioning (devices per second). Default `load × dpsRatePerSec`. */
  staggerRatePerSec?: number;
  /**
   * One batch of `staggerRate × batchIntervalMs / 1000` devices starts every `batchIntervalMs`:
   * the batch is the registration rate per interval. Default 100 ms (R/10 per batch: the same
   * rate as R per second, without a burst of R TLS handshakes at once).
   */
  batchIntervalMs?: number;
  /** Consecutive failed attempts on one hub before asking DPS again. Default 2. */
  maxHubAttempts?: number;
  /** Registration ids are `${prefix}${index}`. Default 'fleet-'. */
  prefix?: string;
  /** First index (to run several fleets against one DPS). Default 0. */
  firstIndex?: number;
  /**
   * Run one slice of the fleet: of the `devices` (the whole fleet's N), this process runs those
   * whose index i has `i % count === index` (`index` from 0, as Kubernetes' JOB_COMPLETION_INDEX).
   * Each member keeps the id, start slot and (with `seed`) jitter it has in the unsharded fleet,
   * and the fleet formula still uses the whole N, so `count` shards started together behave like
   * one fleet. Interleaved rather than in blocks so that every shard starts R / count devices a
   * second over the whole window instead of one shard doing all the work at a time.
   */
  shard?: FleetShard;
  /**
   * Seed of the members' jitter: member i gets a seed derived from (seed, i), the same in every
   * shard. Default: none (each device seeds itself from its id and the time).
   */
  seed?: number;
  /** Replaces the computed policy entirely (the fleet then only staggers the starts). */
  policy?: RetryPolicyInput;
  /** Root logger; each device gets a child. Default: silent. */
  logger?: Logger;
  /**
   * Extra device options (keepalive, timeouts, model id ...), or a function of the member's
   * registration id for options that must be each member's own (a provisioning cache).
   */
  deviceOptions?: Partial<DeviceOptions> | ((registrationId: string) => Partial<DeviceOptions>);
}

/** One slice of a fleet: shard `index` (0 ≤ index < count) of `count`. */
export interface FleetShard {
  index: number;
  count: number;
}

/** Counts per machine state, plus device-side failure counts. */
export interface FleetCounts {
  /** Devices this process runs (the shard's members; the whole fleet when not sharded). */
  total: number;
  started: number;
  byState: Record<DeviceStateName, number>;
  /** Devices that reached Connected at least once. */
  everConnected: number;
  /** Failures observed by the devices, by class (a DPS 429 is a `throttled` one). */
  failures: Record<ErrorClass, number>;
  /** DPS registrations that completed (Provisioning/Reprovisioning → Connecting). */
  assignments: number;
}

export const DEFAULT_LOAD = 0.95;

/** The policy a fleet member uses (see the file header). */
export function fleetPolicy(options: Pick<FleetOptions, 'devices' | 'dpsRatePerSec' | 'naive' | 'load' | 'maxHubAttempts' | 'policy'>): RetryPolicyInput {
  if (options.policy) return options.policy;
  const maxHubAttempts = options.maxHubAttempts ?? 2;
  if (options.naive) return { preset: 'naive', maxHubAttempts, hubRetryWindowMs: 60_000 };
  return {
    preset: 'iotCentral',
    maxHubAttempts,
    fleet: { devices: options.devices, ratePerSec: options.dpsRatePerSec, load: options.load ?? DEFAULT_LOAD },
  };
}

/** The start schedule: how many devices start at which offset (ms) from the fleet start. */
export function staggerSchedule(devices: number, ratePerSec: number, batchIntervalMs = 100, naive = false): Array<{ atMs: number; count: number }> {
  if (naive) return [{ atMs: 0, count: devices }];
  // Cumulative rounding keeps the long-run rate exact when R × interval is not an integer.
  const perBatch = (ratePerSec * batchIntervalMs) / 1000;
  const out: Array<{ atMs: number; count: number }> = [];
  for (let started = 0, k = 0; started < devices; k++) {
    const due = Math.min(devices, Math.max(1, Math.round((k + 1) * perBatch)));
    if (due > started) out.push({ atMs: k * batchIntervalMs, count: due - started });
    started = Math.max(started, due);
  }
  return out;
}

/**
 * When each member of `shard` starts (ms from the fleet start): the slot its global index has in
 * the unsharded fleet's schedule. Member m is global index `m × count + index`.
 */
export function shardStartOffsets(schedule: Array<{ atMs: number; count: number }>, devices: number, shard: FleetShard = { index: 0, count: 1 }): Float64Array {
  const offsets = new Float64Array(shardMemberCount(devices, shard));
  let member = 0;
  let firstOfBatch = 0;
  for (const { atMs, count } of schedule) {
    const end = firstOfBatch + count;
    // The batch's first global index that belongs to this shard, then every count-th.
    for (let g = member * shard.count + shard.index; g < end && member < offsets.length; g += shard.count) offsets[member++] = atMs;
    firstOfBatch = end;
  }
  return offsets;
}

/** How many of the fleet's `devices` belong to `shard`. */
export function shardMemberCount(devices: number, shard: FleetShard = { index: 0, count: 1 }): number {
  return shard.index < devices ? Math.floor((devices - 1 - shard.index) / shard.count) + 1 : 0;
}

/** Checks a shard against the fleet's size; a RangeError naming what is wrong. */
export function validateShard(shard: FleetShard, devices: number): FleetShard {
  if (!Number.isInteger(shard.count) || shard.count < 1 || shard.count > devices) {
    throw new RangeError(`fleet: shard count must be a whole number from 1 to the fleet's ${devices} devices (got ${shard.count})`);
  }
  if (!Number.isInteger(shard.index) || shard.index < 0 || shard.index >= shard.count) {
    throw new RangeError(`fleet: shard index must be a whole number from 0 to ${shard.count - 1} (got ${shard.index})`);
  }
  return shard;
}

function positiveInt(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`fleet: ${name} must be a positive integer (got ${value})`);
  return value;
}

function positive(name: string, value: number): number {
  if (!(value > 0) || !Number.isFinite(value)) throw new RangeError(`fleet: ${name} must be a positive number (got ${value})`);
  return value;
}

export class Fleet {
  readonly devices: Device[] = [];
  /** Epoch ms of the first batch (set by start()). */
  startedAt = 0;
  /** Per device: epoch ms when it was started (0 = not yet). */
  readonly launchedAt: Float64Array;
  /** Per device: epoch ms of its first Connected (0 = not yet). */
  readonly firstConnectedAt: Float64Array;
  /** Per device: epoch ms of its last transition into Connected (0 = never). */
  readonly lastConnectedAt: Float64Array;
  private readonly stateCounts = new Map<DeviceStateName, number>();
  private readonly failureCounts = { transient: 0, throttled: 0, reprovision: 0, parked: 0, fatal: 0 };
  private everConnected = 0;
  private assignments = 0;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private readonly listeners = new Set<() => void>();
  private readonly options: Required<Pick<FleetOptions, 'devices' | 'dpsRatePerSec' | 'batchIntervalMs' | 'prefix' | 'firstIndex' | 'shard'>> & FleetOptions;
  /** The devices this process runs: the shard's members, or all `devices`. */
  readonly memberCount: number;
  private readonly policy: RetryPolicyInput;
  private readonly logger: Logger;

  constructor(options: FleetOptions) {
    this.options = {
      batchIntervalMs: 100,
      prefix: 'fleet-',
      firstIndex: 0,
      ...options,
      shard: options.shard ?? { index: 0, count: 1 },
    };
    positiveInt('devices', this.options.devices);
    positive('dpsRatePerSec', this.options.dpsRatePerSec);
    positive('batchIntervalMs', this.options.batchIntervalMs);
    if (options.staggerRatePerSec !== undefined) positive('staggerRatePerSec', options.staggerRatePerSec);
    if (options.load !== undefined) positive('load', options.load);
    if (!Number.isInteger(this.options.firstIndex) || this.options.firstIndex < 0) {
      throw new RangeError(`fleet: firstIndex must be a non-negative integer (got ${this.options.firstIndex})`);
    }
    validateShard(this.options.shard, this.options.devices);
    if (options.seed !== undefined && !Number.isSafeInteger(options.seed)) throw new RangeError(`fleet: seed must be a safe integer (got ${options.seed})`);
    this.memberCount = shardMemberCount(this.options.devices, this.options.shard);
    this.policy = fleetPolicy(this.options);
    this.logger = options.logger ?? pino({ level: 'silent' });
    this.validateMembers();
    this.launchedAt = new Float64Array(this.memberCount);
    this.firstConnectedAt = new Float64Array(this.memberCount);
    this.lastConnectedAt = new Float64Array(this.memberCount);
    for (const name of DEVICE_STATES) this.stateCounts.set(name, 0);
  }

  /**
   * Every member's options, checked now rather than in a timer callback (where a ConfigError
   * would be an uncaught exception): the ids differ only in their decimal suffix, so the first
   * and the longest (the last) stand for all of them. A bad id is reported as `prefix`. The whole
   * fleet's ids are checked, in every shard: a prefix is refused by all shards or by none.
   */
  private validateMembers(): void {
    for (const globalIndex of new Set([0, this.options.devices - 1])) {
      const registrationId = this.registrationIdOf(globalIndex);
      try {
        resolveOptions(this.optionsOf(globalIndex));
      } catch (error) {
        if (error instanceof ConfigError && error.field === 'registrationId') {
          throw new ConfigError('prefix', `a prefix giving registration ids of up to 128 letters, digits and - . _ : (the id of device ${globalIndex} would be '${registrationId.length > 40 ? `${registrationId.slice(0, 37)}...` : registrationId}', ${registrationId.length} characters)`);
        }
        throw error;
      }
    }
  }

  private optionsOf(globalIndex: number): DeviceOptions {
    const registrationId = this.registrationIdOf(globalIndex);
    const { deviceOptions } = this.options;
    return {
      idScope: this.options.cloud.idScope,
      registrationId,
      groupKey: this.options.cloud.groupKey,
      provisioningHost: this.options.cloud.provisioningHost,
      ...(this.options.cloud.ca ? { ca: this.options.cloud.ca } : {}),
      policy: this.policy,
      logger: this.logger,
      ...(this.options.seed !== undefined ? { seed: seedFrom(`fleet:${this.options.seed}:${globalIndex}`) } : {}),
      ...(typeof deviceOptions === 'function' ? deviceOptions(registrationId) : deviceOptions),
    };
  }

  /** The policy every member uses. */
  get memberPolicy(): RetryPolicyInput {
    return this.policy;
  }

  /** Member `member`'s index in the whole (unsharded) fleet. */
  globalIndex(member: number): number {
    return member * this.options.shard.count + this.options.shard.index;
  }

  /** Member `member`'s registration id: the one it has in the unsharded fleet. */
  registrationId(member: number): string {
    return this.registrationIdOf(this.globalIndex(member));
  }

  private registrationIdOf(globalIndex: number): string {
    return `${this.options.prefix}${this.options.firstIndex + globalIndex}`;
  }

  /** Starts the schedule; returns at once. */
  start(): void {
    if (this.startedAt !== 0) return;
    this.startedAt = Date.now();
    const staggerRate = this.options.staggerRatePerSec ?? this.options.dpsRatePerSec * (this.options.load ?? DEFAULT_LOAD);
    // The whole fleet's schedule; this shard takes its own members' slots in it.
    const schedule = staggerSchedule(this.options.devices, staggerRate, this.options.batchIntervalMs, this.options.naive);
    const startAtMs = shardStartOffsets(schedule, this.options.devices, this.options.shard);
    let next = 0;
    const runBatch = (): void => {
      this.timer = null;
      if (this.stopped) return;
      // One batch per tick, then yield (setTimeout 0 when the next batch is already due): a
      // slow event loop still catches up (a batch each turn of the loop) but the devices
      // already started get their sockets served in between. Launching every due batch at once
      // (as before) held the loop for over 20 s at 10,000 devices (about 1 to 3 ms of CPU a
      // launch), and every DPS exchange behind it timed out.
      if (next < startAtMs.length && this.startedAt + startAtMs[next]! <= Date.now()) {
        const batchAtMs = startAtMs[next]!;
        while (next < startAtMs.length && startAtMs[next] === batchAtMs) this.launch(next++);
      }
      this.notify();
      if (next < startAtMs.length) {
        this.timer = setTimeout(runBatch, Math.min(MAX_TIMER_MS, Math.max(0, this.startedAt + startAtMs[next]! - Date.now())));
      }
    };
    runBatch();
  }

  private launch(index: number): void {
    const device = createDevice(this.optionsOf(this.globalIndex(index)));
    this.devices.push(device);
    this.launchedAt[index] = Date.now();
    this.stateCounts.set('Idle', this.stateCounts.get('Idle')! + 1);
    device.on('state', (change) => this.onState(index, change));
    device.start();
  }

  private onState(index: number, change: StateChange): void {
    this.stateCounts.set(change.previous, this.stateCounts.get(change.previous)! - 1);
    this.stateCounts.set(change.value, this.stateCounts.get(change.value)! + 1);
    if (change.errorClass) this.failureCounts[change.errorClass]++;
    if (change.value === 'Connecting' && (change.previous === 'Provisioning' || change.previous === 'Reprovisioning')) this.assignments++;
    if (change.value === 'Connected') {
      const now = Date.now();
      if (this.firstConnectedAt[index] === 0) {
        this.firstConnectedAt[index] = now;
        this.everConnected++;
      }
      this.lastConnectedAt[index] = now;
    }
    this.notify();
  }

  private notify(): void {
    for (const listener of this.listeners) listener();
  }

  counts(): FleetCounts {
    const byState = {} as Record<DeviceStateName, number>;
    for (const name of DEVICE_STATES) byState[name] = this.stateCounts.get(name)!;
    return {
      total: this.memberCount,
      started: this.devices.length,
      byState,
      everConnected: this.everConnected,
      failures: { ...this.failureCounts },
      assignments: this.assignments,
    };
  }

  /**
   * Resolves when `predicate(counts)` holds (checked on every transition, no polling timer),
   * rejects after `timeoutMs`.
   */
  waitFor(predicate: (counts: FleetCounts) => boolean, timeoutMs: number, what = 'the fleet'): Promise<FleetCounts> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const counts = this.counts();
        if (!predicate(counts)) return;
        systemClock.clearTimeout(timeout);
        this.listeners.delete(check);
        resolve(counts);
      };
      // The system clock: a timeoutMs beyond 2^31 - 1 ms must not reject after 1 ms.
      const timeout = systemClock.setTimeout(() => {
        this.listeners.delete(check);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${JSON.stringify(this.counts().byState)}`));
      }, timeoutMs);
      this.listeners.add(check);
      check();
    });
  }

  /** All N started and Connected right now. */
  allConnected(): Promise<FleetCounts> {
    return this.waitFor((c) => c.byState.Connected === c.total, 10 * 60_000, 'all devices Connected');
  }

  /** Stops every device (bounded closes) and the schedule. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await Promise.all(this.devices.map((d) => d.stop().catch(() => undefined)));
    this.listeners.clear();
  }
}
