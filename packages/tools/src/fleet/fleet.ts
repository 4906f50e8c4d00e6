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
import { MAX_TIMER_MS, systemClock, resolveOptions } from 'hubstate/internal';
import { createDevice, type Device, type DeviceStateName, type StateChange, ConfigError, type DeviceOptions } from 'hubstate';
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
  /** Replaces the computed policy entirely (the fleet then only staggers the starts). */
  policy?: RetryPolicyInput;
  /** Root logger; each device gets a child. Default: silent. */
  logger?: Logger;
  /** Extra device options (keepalive, timeouts, model id ...). */
  deviceOptions?: Partial<DeviceOptions>;
}

/** Counts per machine state, plus device-side failure counts. */
export interface FleetCounts {
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

const STATE_NAMES: DeviceStateName[] = [
  'Idle',
  'Provisioning',
  'Connecting',
  'Connected',
  'BackingOff',
  'CheckingAssignment',
  'Reprovisioning',
  'Disconnecting',
  'Stopped',
  'Failed',
];

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
  private readonly options: Required<Pick<FleetOptions, 'devices' | 'dpsRatePerSec' | 'batchIntervalMs' | 'prefix' | 'firstIndex'>> & FleetOptions;
  private readonly policy: RetryPolicyInput;
  private readonly logger: Logger;

  constructor(options: FleetOptions) {
    this.options = {
      batchIntervalMs: 100,
      prefix: 'fleet-',
      firstIndex: 0,
      ...options,
    };
    positiveInt('devices', this.options.devices);
    positive('dpsRatePerSec', this.options.dpsRatePerSec);
    positive('batchIntervalMs', this.options.batchIntervalMs);
    if (options.staggerRatePerSec !== undefined) positive('staggerRatePerSec', options.staggerRatePerSec);
    if (options.load !== undefined) positive('load', options.load);
    if (!Number.isInteger(this.options.firstIndex) || this.options.firstIndex < 0) {
      throw new RangeError(`fleet: firstIndex must be a non-negative integer (got ${this.options.firstIndex})`);
    }
    this.policy = fleetPolicy(this.options);
    this.logger = options.logger ?? pino({ level: 'silent' });
    this.validateMembers();
    this.launchedAt = new Float64Array(this.options.devices);
    this.firstConnectedAt = new Float64Array(this.options.devices);
    this.lastConnectedAt = new Float64Array(this.options.devices);
    for (const name of STATE_NAMES) this.stateCounts.set(name, 0);
  }

  /**
   * Every member's options, checked now rather than in a timer callback (where a ConfigError
   * would be an uncaught exception): the ids differ only in their decimal suffix, so the first
   * and the longest (the last) stand for all of them. A bad id is reported as `prefix`.
   */
  private validateMembers(): void {
    for (const index of new Set([0, this.options.devices - 1])) {
      const registrationId = this.registrationId(index);
      try {
        resolveOptions(this.memberOptions(index));
      } catch (error) {
        if (error instanceof ConfigError && error.field === 'registrationId') {
          throw new ConfigError('prefix', `a prefix giving registration ids of up to 128 letters, digits and - . _ : (the id of device ${index} would be '${registrationId.length > 40 ? `${registrationId.slice(0, 37)}...` : registrationId}', ${registrationId.length} characters)`);
        }
        throw error;
      }
    }
  }

  private memberOptions(index: number): DeviceOptions {
    return {
      idScope: this.options.cloud.idScope,
      registrationId: this.registrationId(index),
      groupKey: this.options.cloud.groupKey,
      provisioningHost: this.options.cloud.provisioningHost,
      ...(this.options.cloud.ca ? { ca: this.options.cloud.ca } : {}),
      policy: this.policy,
      logger: this.logger,
      ...this.options.deviceOptions,
    };
  }

  /** The policy every member uses. */
  get memberPolicy(): RetryPolicyInput {
    return this.policy;
  }

  registrationId(index: number): string {
    return `${this.options.prefix}${this.options.firstIndex + index}`;
  }

  /** Starts the schedule; returns at once. */
  start(): void {
    if (this.startedAt !== 0) return;
    this.startedAt = Date.now();
    const staggerRate = this.options.staggerRatePerSec ?? this.options.dpsRatePerSec * (this.options.load ?? DEFAULT_LOAD);
    const schedule = staggerSchedule(this.options.devices, staggerRate, this.options.batchIntervalMs, this.options.naive);
    let step = 0;
    const runBatch = (): void => {
      this.timer = null;
      if (this.stopped) return;
      // Every batch due by now (a slow event loop catches up instead of drifting).
      while (step < schedule.length && this.startedAt + schedule[step]!.atMs <= Date.now()) {
        const { count } = schedule[step++]!;
        for (let i = 0; i < count; i++) this.launch(this.devices.length);
      }
      this.notify();
      if (step < schedule.length) {
        this.timer = setTimeout(runBatch, Math.min(MAX_TIMER_MS, Math.max(0, this.startedAt + schedule[step]!.atMs - Date.now())));
      }
    };
    runBatch();
  }

  private launch(index: number): void {
    const device = createDevice(this.memberOptions(index));
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
    for (const name of STATE_NAMES) byState[name] = this.stateCounts.get(name)!;
    return {
      total: this.options.devices,
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
