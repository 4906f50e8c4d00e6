/** The soak's options, and the plan derived from them before anything starts: schedule, bounds, defaults. */
import { join } from 'node:path';
import { FAST_DPS_POLL_SEC } from 'hubstate-cloud';
import { resolvePolicy, type RetryPolicyInput } from 'hubstate';
import type { RetryPolicy } from 'hubstate';
import { attemptRateBound, maxBackoff, recoveryBound, type AttemptRateBound, type Bound, type RssTolerance } from './bounds';
import type { RecordedSchedule } from './replay';
import {
  generateSchedule,
  minRetryAfterMs,
  resolveScheduleOptions,
  scheduleDigest,
  type ResolvedScheduleOptions,
  type ScheduledFault,
  type ScheduleOptions,
} from './schedule';

/**
 * The soak's retry policy: the default policy's shape on a shorter time scale, so a fault of a
 * few seconds meets several retries and the fleet recovers within seconds after the faults.
 */
export const SOAK_POLICY: RetryPolicyInput = {
  minDelayMs: 500,
  maxDelayMs: 5000,
  firstRetryMaxMs: 1000,
  throttledMinDelayMs: 1000,
  retryAfterJitterMs: 1000,
  // Compressed like the rest: a connection counts once it has lasted 5 s; parked waits of seconds.
  stableConnectionMs: 5000,
  parkedMinDelayMs: 3000,
  parkedMaxDelayMs: 5000,
  maxHubAttempts: 5,
  // The default policy's shape: the window does not grow (max = window), so a DPS confirmation
  // lasts one window, as the recovery bound assumes.
  hubRetryWindowMs: 30_000,
  hubRetryWindowMaxMs: 30_000,
};

export const DEFAULT_RSS_TOLERANCE: RssTolerance = { growth: 0.1, drift: 1.1 };

export interface SoakOptions {
  devices: number;
  /** Length of the fault phase. */
  durationMs: number;
  /** Integer or string; printed, and enough (with the other options) to replay the schedule. */
  seed: number | string;
  hubs?: number;
  /** Mean gap between fault starts. Default 2000 ms. */
  faultRateMs?: number;
  minFaultMs?: number;
  maxFaultMs?: number;
  /** Quiet period after the faults are cleared. Default: the recovery bound + 5 s. */
  quietMs?: number;
  /**
   * End the quiet period early once the fleet is healthy and has stayed so for 2 × maxBackoff:
   * every device Connected and no accepted message waiting for its PUBACK longer than 2 s (a
   * stalled session keeps its messages pending, so it cannot look healthy). Default false.
   */
  endQuietWhenHealthy?: boolean;
  /** Each device sends one message this often. Default 1000 ms. */
  telemetryIntervalMs?: number;
  policy?: RetryPolicyInput;
  /** MQTT keepalive: a blackholed hub is noticed within ~1.5 × this. Default 2 s. */
  keepaliveSeconds?: number;
  /** The devices' PUBACK timeout: a hub withholding PUBACKs is left after about this long. Default 5 s. */
  publishTimeoutSeconds?: number;
  connectTimeoutMs?: number;
  provisionTimeoutMs?: number;
  /** Devices keep durable SQLite outboxes under this directory. Default: in-memory outboxes. */
  dataDir?: string;
  /** Where the JSON report goes. Default `bench/results/soak-<seed>.json`; null: not written. */
  reportPath?: string | null;
  rssSampleMs?: number;
  /** Full GC before each RSS sample, so the samples show what is retained, not GC timing. Default true. */
  forceGc?: boolean;
  rssTolerance?: RssTolerance;
  bootTimeoutMs?: number;
  /** After the quiet period: how long to wait for the last accepted messages. Default 30 s. */
  drainTimeoutMs?: number;
  /**
   * Where the local cloud runs. 'child-process' (what `npm run soak` uses): the RSS measured is
   * the devices' alone. Default 'in-process'.
   */
  cloudProcess?: 'in-process' | 'child-process';
  /**
   * Run as under `DEBUG=*`: every debug namespace of the devices' process on (the MQTT stack traces
   * each CONNECT, SAS token included) and its output scanned for secrets instead of printed.
   */
  traceDebug?: boolean;
  /** Node flags for the cloud's process (tests pass a TypeScript require hook). */
  cloudExecArgv?: string[];
  /** Progress lines (default: none). */
  log?: (line: string) => void;
  /**
   * The schedule an earlier run recorded (readRecordedSchedule of its report), same seed: adds the
   * invariant 'same seed, same schedule', this run's schedule against that one.
   */
  compareWith?: RecordedSchedule;
}

/** Everything a run needs that follows from its options alone (nothing started yet). */
export interface SoakPlan {
  options: SoakOptions;
  log: (line: string) => void;
  hubs: number;
  policyInput: RetryPolicyInput;
  policy: RetryPolicy;
  scheduleOptions: ScheduleOptions;
  resolvedSchedule: ResolvedScheduleOptions;
  schedule: ScheduledFault[];
  digest: string;
  backoffMax: Bound;
  recovery: Bound;
  /** The smallest retry-after the schedule makes the cloud send (Infinity when none). */
  minRetryAfterMs: number;
  rateBound: AttemptRateBound;
  quietMs: number;
  telemetryIntervalMs: number;
  rssSampleMs: number;
  rssTolerance: RssTolerance;
  drainTimeoutMs: number;
  bootTimeoutMs: number;
  keepaliveSeconds: number;
  publishTimeoutSeconds: number;
  connectTimeoutMs: number;
  provisionTimeoutMs: number;
  /**
   * Back on a lasting session after a flap or a disable: two waits plus the attempts themselves, a
   * DPS leg (up to the provisioning timeout) and a connect that may time out (a loaded machine, a
   * hub rate limit) before the one that lasts.
   */
  reconnectBoundMs: number;
  reportPath: string | null;
  reproduce: string;
}

/** Throws only for options that contradict each other (a comparison with another seed's run). */
export function planSoak(options: SoakOptions): SoakPlan {
  if (options.compareWith && options.compareWith.seed !== options.seed) {
    throw new Error(`compareWith: ${options.compareWith.source} is seed ${String(options.compareWith.seed)}, this run is seed ${String(options.seed)}`);
  }
  const hubs = options.hubs ?? 2;
  const policyInput = options.policy ?? SOAK_POLICY;
  const policy = resolvePolicy(policyInput);
  const scheduleOptions: ScheduleOptions = {
    seed: options.seed,
    durationMs: options.durationMs,
    devices: options.devices,
    hubs,
    ...(options.faultRateMs !== undefined ? { faultRateMs: options.faultRateMs } : {}),
    ...(options.minFaultMs !== undefined ? { minFaultMs: options.minFaultMs } : {}),
    ...(options.maxFaultMs !== undefined ? { maxFaultMs: options.maxFaultMs } : {}),
  };
  const schedule = generateSchedule(scheduleOptions);
  const backoffMax = maxBackoff(policy, schedule);
  const publishTimeoutSeconds = options.publishTimeoutSeconds ?? 5;
  const recovery = recoveryBound(policy, schedule, options.durationMs, publishTimeoutSeconds);
  const raMin = minRetryAfterMs(schedule);
  const connectTimeoutMs = options.connectTimeoutMs ?? 5000;
  const provisionTimeoutMs = options.provisionTimeoutMs ?? 10_000;
  return {
    options,
    log: options.log ?? (() => undefined),
    hubs,
    policyInput,
    policy,
    scheduleOptions,
    resolvedSchedule: resolveScheduleOptions(scheduleOptions),
    schedule,
    digest: scheduleDigest(schedule),
    backoffMax,
    recovery,
    minRetryAfterMs: raMin,
    rateBound: attemptRateBound(policy, raMin),
    quietMs: options.quietMs ?? recovery.valueMs + 5000,
    telemetryIntervalMs: options.telemetryIntervalMs ?? 1000,
    rssSampleMs: options.rssSampleMs ?? 1000,
    rssTolerance: options.rssTolerance ?? DEFAULT_RSS_TOLERANCE,
    drainTimeoutMs: options.drainTimeoutMs ?? 30_000,
    bootTimeoutMs: options.bootTimeoutMs ?? 30_000 + 100 * options.devices,
    keepaliveSeconds: options.keepaliveSeconds ?? 2,
    publishTimeoutSeconds,
    connectTimeoutMs,
    provisionTimeoutMs,
    reconnectBoundMs: 2 * backoffMax.valueMs + connectTimeoutMs + provisionTimeoutMs,
    reportPath: options.reportPath === undefined ? join('bench', 'results', `soak-${String(options.seed)}.json`) : options.reportPath,
    reproduce:
      `npm run soak -- --seed ${String(options.seed)} --devices ${options.devices} --duration ${options.durationMs / 1000}` +
      (hubs !== 2 ? ` --hubs ${hubs}` : '') +
      (options.faultRateMs !== undefined ? ` --fault-rate ${options.faultRateMs}` : '') +
      (options.cloudProcess !== 'child-process' ? ' --cloud-in-process' : ''),
  };
}

/** The report's `options`: what was asked and what the defaults made of it. */
export function reportedOptions(plan: SoakPlan): Record<string, unknown> {
  const { options, resolvedSchedule } = plan;
  return {
    devices: options.devices,
    hubs: plan.hubs,
    durationMs: options.durationMs,
    quietMs: plan.quietMs,
    endQuietWhenHealthy: options.endQuietWhenHealthy === true,
    cloudProcess: options.cloudProcess ?? 'in-process',
    telemetryIntervalMs: plan.telemetryIntervalMs,
    faultRateMs: resolvedSchedule.faultRateMs,
    minFaultMs: resolvedSchedule.minFaultMs,
    maxFaultMs: resolvedSchedule.maxFaultMs,
    keepaliveSeconds: plan.keepaliveSeconds,
    publishTimeoutSeconds: plan.publishTimeoutSeconds,
    longFaultMinMs: resolvedSchedule.longFaultMinMs,
    longFaultMaxMs: resolvedSchedule.longFaultMaxMs,
    // The local cloud's Azure-like defaults (a disabled or refused device gets CONNACK 3, retry-after
    // in whole seconds), and the one compression on the cloud side: DPS's 'assigning' poll.
    cloud: {
      hubRefusalCode: 3,
      dpsRetryAfterSec: `${resolvedSchedule.minRetryAfterSec}-${resolvedSchedule.maxRetryAfterSec} (whole seconds)`,
      lookupRetryAfterSec: 1,
      dpsPollRetryAfterSec: FAST_DPS_POLL_SEC,
    },
    outbox: options.dataDir ? 'sqlite' : 'memory',
    node: process.version,
  };
}
