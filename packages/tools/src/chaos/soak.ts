/**
 * The chaos soak: a local cloud, N real devices (createDevice, the unmodified Azure SDK, TLS)
 * sending telemetry, a seeded fault schedule drawn from the cloud's whole fault list, then all
 * faults cleared and a quiet period; invariants checked at the end and written to a JSON report.
 *
 * Everything a device logs (pino, debug level), every state snapshot and every error message is
 * scanned for secrets as it is produced (see secrets.ts). Only counters and compact per-device
 * timelines are kept, so memory stays flat and the RSS measurement means something.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createDevice, type Device, type DeviceStateName, type StateChange, createLogger, resolvePolicy, type RetryPolicyInput } from 'hubstate';
import { seedFrom } from 'hubstate/internal';
import type { RetryPolicy } from 'hubstate';
import {
  attemptRateBound,
  checkAttemptRate,
  checkWindow,
  countBetween,
  disabledDpsBound,
  maxBackoff,
  policyLowerBoundMs,
  recoveryBound,
  rssVerdict,
  SERVER_ERROR_FLOOR_MS,
  type RssSample,
  type RssTolerance,
} from './bounds';
import { FAST_DPS_POLL_SEC } from 'hubstate-cloud';
import { startSoakCloud, type HubAttempt, type SoakCloud } from './cloud';
import {
  describeFault,
  faultsByKind,
  generateSchedule,
  minRetryAfterMs,
  resolveScheduleOptions,
  scheduleDigest,
  type FaultKind,
  type ScheduledFault,
  type ScheduleOptions,
} from './schedule';
import { SecretScanner, type ScanReport } from './secrets';
import { traceDebugIntoScanner, type DebugTrace } from './debug-trace';

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
  hubRetryWindowMs: 30_000,
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
}

export interface InvariantResult {
  name: string;
  ok: boolean;
  measured: string;
  bound: string;
}

export interface FaultOutcome {
  id: number;
  kind: FaultKind;
  description: string;
  startedAtMs?: number;
  endedAtMs?: number;
  /** Emulator errors while injecting (e.g. a device already failed over by an overlapping fault). */
  errors: string[];
}

export interface SoakReport {
  ok: boolean;
  seed: number | string;
  reproduce: string;
  startedAt: string;
  options: Record<string, unknown>;
  policy: RetryPolicy;
  schedule: { digest: string; faults: number; byKind: Record<FaultKind, number>; list: string[] };
  timeline: { bootMs: number; faultPhaseMs: number; quietMs: number; drainMs: number; totalMs: number };
  invariants: InvariantResult[];
  figures: Record<string, unknown>;
  faults: FaultOutcome[];
  security: ScanReport & { debugTrace?: ReturnType<DebugTrace['counts']> };
  /** series: [seconds since start, RSS MB, heap used MB (after a full GC), messages queued, external MB, open fds, heap committed MB]. */
  rss: ReturnType<typeof rssVerdict> & { series: number[][]; forcedGc: boolean };
  process: { unhandledRejections: string[]; uncaughtExceptions: string[]; warnings: string[] };
  runError?: string;
}

// ---------------------------------------------------------------------------------------------

interface BackoffEntry {
  enteredAt: number;
  failureAt: number;
  retryAt: number;
  delayMs: number;
}

interface Track {
  index: number;
  registrationId: string;
  device: Device;
  state: DeviceStateName;
  connectedSince: number | null;
  attempts: number[];
  /** Losses of stable connections (lasted stableConnectionMs): only those restart the curves. */
  losses: number[];
  /** Sessions that ended before stableConnectionMs (the next attempt on the curve). */
  shortSessions: number;
  /** Entries into Connected, and exits from it (same order). */
  connects: number[];
  disconnects: number[];
  userCommands: number[];
  backoff: BackoffEntry | null;
  accepted: number;
  rejected: number;
  failedRules: string[];
  /** The last transitions (bounded ring), reported for devices that end up late. */
  recent: string[];
}

const RECENT_TRANSITIONS = 40;

const TIMER_TOLERANCE_MS = 2;
const ATTEMPT_STATES: ReadonlySet<DeviceStateName> = new Set(['Provisioning', 'Reprovisioning', 'CheckingAssignment', 'Connecting']);
const USER_EVENTS: ReadonlySet<string> = new Set(['REPROVISION', 'STOP', 'RETRY']);

/** `gc()` even without --expose-gc (V8 flag set at runtime, function taken from a fresh context). */
export function exposeGc(): (() => void) | undefined {
  const existing = (globalThis as { gc?: () => void }).gc;
  if (typeof existing === 'function') return existing;
  try {
    setFlagsFromString('--expose_gc');
    const fn = runInNewContext('gc') as unknown;
    return typeof fn === 'function' ? (fn as () => void) : undefined;
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function until(predicate: () => boolean, timeoutMs: number, stepMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) return false;
    await sleep(stepMs);
  }
  return true;
}

function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = values.slice().sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

const ms = (v: number) => `${Math.round(v)} ms`;

/** Open file descriptors (Linux), or -1: leaked sockets show up here before they show up in RSS. */
function openFds(): number {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return -1;
  }
}

function safeCount(device: Device): number | null {
  try {
    return device.outboxStats().count;
  } catch {
    return null;
  }
}

/** Runs one soak. Never throws for a failed invariant: read `report.ok`. */
export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const log = options.log ?? (() => undefined);
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
  const resolvedSchedule = resolveScheduleOptions(scheduleOptions);
  const schedule = generateSchedule(scheduleOptions);
  const digest = scheduleDigest(schedule);
  const again = scheduleDigest(generateSchedule(scheduleOptions));
  const otherSeed = typeof options.seed === 'number' ? options.seed + 1 : `${options.seed}+1`;
  const otherDigest = scheduleDigest(generateSchedule({ ...scheduleOptions, seed: otherSeed }));

  const backoffMax = maxBackoff(policy, schedule);
  const publishTimeoutSeconds = options.publishTimeoutSeconds ?? 5;
  const recovery = recoveryBound(policy, schedule, options.durationMs, publishTimeoutSeconds);
  const raMin = minRetryAfterMs(schedule);
  const rateBound = attemptRateBound(policy, raMin);
  const quietMs = options.quietMs ?? recovery.valueMs + 5000;
  const telemetryIntervalMs = options.telemetryIntervalMs ?? 1000;
  const rssSampleMs = options.rssSampleMs ?? 1000;
  const rssTolerance = options.rssTolerance ?? DEFAULT_RSS_TOLERANCE;
  const drainTimeoutMs = options.drainTimeoutMs ?? 30_000;
  const bootTimeoutMs = options.bootTimeoutMs ?? 30_000 + 100 * options.devices;
  const reportPath =
    options.reportPath === undefined ? join('bench', 'results', `soak-${String(options.seed)}.json`) : options.reportPath;
  const reproduce =
    `npm run soak -- --seed ${String(options.seed)} --devices ${options.devices} --duration ${options.durationMs / 1000}` +
    (hubs !== 2 ? ` --hubs ${hubs}` : '') +
    (options.faultRateMs !== undefined ? ` --fault-rate ${options.faultRateMs}` : '') +
    (options.cloudProcess !== 'child-process' ? ' --cloud-in-process' : '');

  log(`seed ${String(options.seed)}; schedule ${digest}: ${schedule.length} faults over ${options.durationMs / 1000} s`);
  for (const f of schedule) log(`  ${describeFault(f)}`);

  // --- process-level failures ----------------------------------------------------------------
  const startedAt = Date.now();
  const unhandledRejections: string[] = [];
  const uncaughtExceptions: string[] = [];
  const warnings: string[] = [];
  // Kept with the top of the stack: a report must be enough to find where it came from.
  const describeError = (error: unknown) =>
    `at +${Date.now() - startedAt} ms: ` +
    (error instanceof Error ? (error.stack ?? `${error.name}: ${error.message}`).split('\n').slice(0, 8).join('\n') : String(error));
  const onRejection = (reason: unknown) => {
    const text = describeError(reason);
    unhandledRejections.push(text.slice(0, 1500));
    scanner?.scan(text, 'error');
  };
  const onException = (error: Error) => {
    const text = describeError(error);
    uncaughtExceptions.push(text.slice(0, 1500));
    scanner?.scan(text, 'error');
  };
  const onWarning = (warning: Error) => {
    if (warnings.length < 50) warnings.push(`${warning.name}: ${warning.message}`.slice(0, 300));
  };
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  process.on('warning', onWarning);

  let scanner: SecretScanner | undefined;
  let debugTrace: DebugTrace | undefined;
  let cloud: SoakCloud | undefined;
  const tracks: Track[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const intervals = new Set<NodeJS.Timeout>();
  const ownDataDir = options.dataDir === undefined ? undefined : mkdtempSync(join(options.dataDir, 'hubstate-soak-'));
  const rssSamples: RssSample[] = [];
  const gc = options.forceGc === false ? undefined : exposeGc();
  const forcedGc = gc !== undefined;
  const sampleRss = () => {
    gc?.();
    const m = process.memoryUsage();
    const queued = tracks.reduce((n, t) => n + (safeCount(t.device) ?? 0), 0);
    rssSamples.push({ at: Date.now(), rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, queued, external: m.external, fds: openFds() });
  };


  // Delivery accounting, bounded: only messages in flight are remembered. A message is final
  // when its device reports it `delivered` (PUBACK): the hub stores before it acknowledges, so
  // its arrival count cannot change after that (a resend needs the message still in the outbox).
  // With the cloud in another process its `telemetry` events travel separately from the PUBACK,
  // so a delivered id waits for the next `sync()` with the cloud (every event emitted before the
  // sync has then arrived) before it is finalized.
  /** Accepted, not yet acknowledged: id → when accepted and how many times the cloud stored it. */
  const pending = new Map<string, { at: number; arrivals: number }>();
  /** Stored by the cloud before (or without) the device's acceptance being recorded. */
  const orphanArrivals = new Map<string, number>();
  let acceptedTotal = 0;
  let arrivedDistinct = 0;
  let finalized = 0;
  let duplicates = 0;
  let lost = 0;
  const lostSamples: string[] = [];
  const accept = (id: string) => {
    acceptedTotal++;
    const early = orphanArrivals.get(id) ?? 0;
    orphanArrivals.delete(id);
    if (early > 0) arrivedDistinct++;
    pending.set(id, { at: Date.now(), arrivals: early });
  };
  const arrive = (id: string) => {
    const p = pending.get(id);
    if (p) {
      if (p.arrivals === 0) arrivedDistinct++;
      p.arrivals++;
    } else orphanArrivals.set(id, (orphanArrivals.get(id) ?? 0) + 1);
  };
  let deliveredUnsynced: string[] = [];
  let syncing: Promise<void> | undefined;
  const syncDeliveries = (): Promise<void> => {
    if (syncing || !cloud) return syncing ?? Promise.resolve();
    const theCloud = cloud;
    const batch = deliveredUnsynced;
    deliveredUnsynced = [];
    syncing = theCloud.commands.sync().then(
      () => {
        for (const id of batch) finalize(id);
        syncing = undefined;
      },
      (error: unknown) => {
        deliveredUnsynced = batch.concat(deliveredUnsynced);
        syncing = undefined;
        throw error;
      },
    );
    return syncing;
  };
  const finalize = (id: string) => {
    const p = pending.get(id);
    if (!p) return;
    pending.delete(id);
    finalized++;
    if (p.arrivals === 0) {
      lost++; // acknowledged but never stored: the cloud lost it
      if (lostSamples.length < 10) lostSamples.push(`${id} (acknowledged, never stored)`);
    } else duplicates += p.arrivals - 1;
  };
  let dropped = 0;
  const droppedReasons: Record<string, number> = {};
  const droppedSamples: string[] = [];
  const rejectReasons: Record<string, number> = {};
  const transitions: Record<string, number> = {};
  const backoffRules: Record<string, number> = {};
  const delayViolations: string[] = [];
  const earlyRetries: string[] = [];
  let backoffs = 0;
  let backoffsExempt = 0;
  let minRetrySlackMs = Infinity;
  let minDelayMarginMs = Infinity;
  let maxDelaySeen = 0;
  const faultOutcomes: FaultOutcome[] = schedule.map((f) => ({ id: f.id, kind: f.kind, description: describeFault(f), errors: [] }));

  let bootMs = 0;
  let phaseStart = 0;
  let clearAt = 0;
  let quietEnd = 0;
  let drainMs = 0;
  let producing = false;
  let runError: string | undefined;
  /** State and last Connected entry of each device at the end of the run (after the drain). */
  let endStates: Array<{ state: DeviceStateName; connectedSince: number | null }> = [];

  try {
    cloud = await startSoakCloud({
      hubs,
      seed: `soak-${String(options.seed)}`,
      mode: options.cloudProcess ?? 'in-process',
      ...(options.cloudExecArgv ? { execArgv: options.cloudExecArgv } : {}),
    });
    const theCloud = cloud;
    const commands = theCloud.commands;
    theCloud.events.on('telemetry', arrive);
    intervals.add(setInterval(() => void syncDeliveries().catch(() => undefined), 250));

    const registrationIds = Array.from({ length: options.devices }, (_, i) => `soak-${i}`);
    scanner = new SecretScanner([
      { kind: 'group key', label: 'group key', value: theCloud.info.groupKey },
      ...registrationIds.map((id) => ({ kind: 'device key', label: `device key of ${id}`, value: theCloud.deviceKey(id) })),
    ]);
    const theScanner = scanner;
    if (options.traceDebug) debugTrace = traceDebugIntoScanner(theScanner);
    const logger = createLogger({ level: 'debug', destination: { write: (line: string) => theScanner.scan(line, 'log') } });

    sampleRss();
    intervals.add(setInterval(sampleRss, rssSampleMs));

    // --- devices ---------------------------------------------------------------------------------
    for (const [index, registrationId] of registrationIds.entries()) {
      // Half the fleet holds the group key, half only its derived device key: both must stay secret.
      const credential = index % 2 === 0 ? { groupKey: theCloud.info.groupKey } : { deviceKey: theCloud.deviceKey(registrationId) };
      const device = createDevice({
        idScope: theCloud.info.idScope,
        registrationId,
        ...credential,
        modelId: 'dtmi:Sample:Failover;1',
        provisioningHost: theCloud.info.provisioningHost,
        ca: theCloud.info.ca,
        policy: policyInput,
        seed: seedFrom(`${String(options.seed)}:${index}`),
        keepaliveSeconds: options.keepaliveSeconds ?? 2,
        publishTimeoutSeconds,
        connectTimeoutMs: options.connectTimeoutMs ?? 5000,
        provisionTimeoutMs: options.provisionTimeoutMs ?? 10_000,
        closeTimeoutMs: 2000,
        logger,
        ...(ownDataDir ? { dataDir: join(ownDataDir, registrationId) } : {}),
      });
      const track: Track = {
        index,
        registrationId,
        device,
        state: 'Idle',
        connectedSince: null,
        attempts: [],
        losses: [],
        shortSessions: 0,
        connects: [],
        disconnects: [],
        userCommands: [],
        backoff: null,
        accepted: 0,
        rejected: 0,
        failedRules: [],
        recent: [],
      };
      device.on('state', (change) => onState(track, change));
      device.on('dropped', (d) => {
        dropped++;
        const reason = (d as { reason?: string }).reason ?? 'unknown';
        droppedReasons[reason] = (droppedReasons[reason] ?? 0) + 1;
        const detail = (d as { detail?: string }).detail;
        if (droppedSamples.length < 10) droppedSamples.push(`${registrationId} +${Date.now() - startedAt} ms: ${reason}${detail ? ` (${detail.slice(0, 300)})` : ''}`);
      });
      device.on('delivered', (messageId) => deliveredUnsynced.push(messageId));
      tracks.push(track);
    }

    function onState(track: Track, change: StateChange): void {
      const now = Date.now();
      const snapshot = track.device.actor.getSnapshot();
      const ctx = snapshot.context;
      track.state = change.value;
      transitions[`${change.previous}→${change.value}`] = (transitions[`${change.previous}→${change.value}`] ?? 0) + 1;

      if (change.previous === 'BackingOff' && track.backoff) {
        const b = track.backoff;
        track.backoff = null;
        if (change.event.startsWith('xstate.done.actor.')) {
          const slack = now - b.retryAt;
          minRetrySlackMs = Math.min(minRetrySlackMs, slack);
          if (slack < -TIMER_TOLERANCE_MS && earlyRetries.length < 50) {
            earlyRetries.push(`${track.registrationId}: retried ${-slack} ms before retryAt (delay ${Math.round(b.delayMs)} ms)`);
          }
        } else backoffsExempt++;
      }
      if (change.previous === 'Connected') track.disconnects.push(now);
      if (change.previous === 'Connected' && !USER_EVENTS.has(change.event)) {
        // Only a connection that lasted is a success that restarts the curves (the device's own
        // rule, policy.stableConnectionMs); a shorter session is the next attempt on the curve, so
        // a flapping hub earns no extra attempts in the rate bounds.
        if (track.connectedSince !== null && now - track.connectedSince >= policy.stableConnectionMs) track.losses.push(now);
        else track.shortSessions++;
      }
      if (ATTEMPT_STATES.has(change.value)) track.attempts.push(now);
      if (change.value === 'Connected') {
        track.connectedSince = now;
        track.connects.push(now);
      }
      if (change.value === 'Failed') track.failedRules.push(ctx.lastError?.rule ?? 'unknown');

      if (change.value === 'BackingOff' && ctx.lastError && ctx.delayMs !== null && ctx.retryAt !== null) {
        backoffs++;
        const failure = ctx.lastError;
        backoffRules[failure.rule] = (backoffRules[failure.rule] ?? 0) + 1;
        // A failed registration that goes back to the old hub is still a DPS plan (dpsAttempts).
        const hubPlan = ctx.retryStep === 'Connecting' && failure.phase !== 'dps';
        // The wait before a status lookup is the first-retry spread, whatever the loss: no floor
        // (it is DPS that is asked, not the hub that refused).
        const lower = ctx.retryStep === 'CheckingAssignment' ? 0 : policyLowerBoundMs(policy, {
          errorClass: failure.errorClass,
          attempt: hubPlan ? ctx.hubAttempts : ctx.dpsAttempts,
          afterLoss: change.previous === 'Connected',
          ...(failure.retryAfterMs !== undefined ? { retryAfterMs: failure.retryAfterMs } : {}),
          ...(failure.minDelayMs !== undefined ? { minDelayMs: failure.minDelayMs } : {}),
        });
        minDelayMarginMs = Math.min(minDelayMarginMs, ctx.delayMs - lower);
        maxDelaySeen = Math.max(maxDelaySeen, ctx.delayMs);
        const problems: string[] = [];
        if (ctx.delayMs < lower - 1e-6) problems.push(`delay ${ctx.delayMs.toFixed(1)} ms < policy minimum ${lower.toFixed(1)} ms`);
        if (ctx.delayMs > backoffMax.valueMs + 1e-6) problems.push(`delay ${ctx.delayMs.toFixed(1)} ms > maxBackoff ${backoffMax.valueMs} ms`);
        if (Math.abs(ctx.retryAt - (failure.at + ctx.delayMs)) > 1) problems.push(`retryAt ≠ failure.at + delay`);
        if (problems.length > 0 && delayViolations.length < 50) {
          delayViolations.push(`${track.registrationId} (${failure.rule}, ${failure.errorClass}, attempt ${hubPlan ? ctx.hubAttempts : ctx.dpsAttempts}): ${problems.join('; ')}`);
        }
        track.backoff = { enteredAt: now, failureAt: failure.at, retryAt: ctx.retryAt, delayMs: ctx.delayMs };
      }

      const e = ctx.lastError;
      track.recent.push(
        `+${now - startedAt} ${change.previous}→${change.value} on ${change.event}` +
          (change.value === 'BackingOff' ? ` delay ${Math.round(ctx.delayMs ?? 0)} retryAt +${(ctx.retryAt ?? 0) - startedAt} step ${ctx.retryStep}` : '') +
          (e && (change.value === 'BackingOff' || change.value === 'Reprovisioning' || change.value === 'Failed') ? ` [${e.rule}/${e.errorClass} at +${e.at - startedAt}: ${e.message.slice(0, 120)}]` : '') +
          (change.hubHost ? ` hub ${change.hubHost}` : ''),
      );
      if (track.recent.length > RECENT_TRANSITIONS) track.recent.shift();
      theScanner.scan(JSON.stringify(change), 'event');
      theScanner.scan(JSON.stringify(track.device.actor.getPersistedSnapshot()), 'snapshot');
      if (ctx.lastError) theScanner.scan(ctx.lastError.message, 'error');
    }

    // --- boot ------------------------------------------------------------------------------------
    const bootStart = Date.now();
    for (const t of tracks) t.device.start();
    const booted = await until(() => tracks.every((t) => t.state === 'Connected'), bootTimeoutMs, 100);
    bootMs = Date.now() - bootStart;
    log(`boot: ${tracks.filter((t) => t.state === 'Connected').length}/${tracks.length} connected in ${bootMs} ms`);
    if (!booted) throw new Error(`boot: not every device connected within ${bootTimeoutMs} ms`);

    // --- telemetry ---------------------------------------------------------------------------
    producing = true;
    for (const t of tracks) {
      let n = 0;
      const send = () => {
        if (!producing) return;
        t.device.sendTelemetry({ device: t.index, n: n++, temp: 20 + (n % 10) / 10 }).then(
          ({ messageId }) => {
            accept(messageId);
            t.accepted++;
          },
          (error: Error) => {
            t.rejected++;
            const reason = (error as { reason?: string }).reason ?? error.name;
            rejectReasons[reason] = (rejectReasons[reason] ?? 0) + 1;
            theScanner.scan(error.message, 'error');
          },
        );
      };
      const first = setTimeout(() => {
        timers.delete(first);
        send();
        intervals.add(setInterval(send, telemetryIntervalMs));
      }, Math.floor((t.index * telemetryIntervalMs) / tracks.length));
      timers.add(first);
    }

    // --- faults --------------------------------------------------------------------------------
    // Device faults run one call per target: one that cannot apply (e.g. a device failed over by
    // an overlapping fault) is recorded and does not stop the others.
    const attempt = async (outcome: FaultOutcome, what: () => Promise<unknown>): Promise<void> => {
      try {
        await what();
      } catch (error) {
        if (outcome.errors.length < 20) outcome.errors.push((error as Error).message);
      }
    };
    const forEachTarget = (outcome: FaultOutcome, targets: string[], what: (id: string) => Promise<unknown>) =>
      Promise.all(targets.map((id) => attempt(outcome, () => what(id))));
    const nudge = (f: ScheduledFault) => {
      for (const i of f.devices ?? []) {
        tracks[i]!.userCommands.push(Date.now());
        tracks[i]!.device.reprovision();
      }
    };
    const reverts = new Map<number, () => Promise<unknown>>();

    const inject = async (f: ScheduledFault, outcome: FaultOutcome): Promise<void> => {
      const targets = (f.devices ?? []).map((i) => registrationIds[i]!);
      const hub = f.hub ?? -1;
      switch (f.kind) {
        case 'hub.crash':
          await commands.hubKill(hub);
          reverts.set(f.id, () => commands.hubRestart(hub));
          break;
        case 'hub.refuse3':
          await commands.hubRefuse(hub, 3);
          reverts.set(f.id, () => commands.hubRefuse(hub, null));
          break;
        case 'hub.blackhole':
          await commands.hubBlackhole(hub, true);
          reverts.set(f.id, () => commands.hubBlackhole(hub, false));
          break;
        case 'hub.withholdPubacks':
          await commands.hubWithholdPubacks(hub, true, f.store ?? true);
          reverts.set(f.id, () => commands.hubWithholdPubacks(hub, false));
          break;
        case 'hub.connectRateLimit':
          await commands.hubConnectRateLimit(hub, f.perSec!);
          reverts.set(f.id, () => commands.hubConnectRateLimit(hub, null));
          break;
        case 'dps.down':
          await commands.dpsDown();
          reverts.set(f.id, () => commands.dpsUp());
          nudge(f);
          break;
        case 'dps.blackhole':
          await commands.dpsBlackhole(true);
          reverts.set(f.id, () => commands.dpsBlackhole(false));
          nudge(f);
          break;
        case 'dps.throttle':
          await commands.dpsThrottle(f.retryAfterSec!);
          reverts.set(f.id, () => commands.dpsThrottle(null));
          nudge(f);
          break;
        case 'dps.failWith':
          await commands.dpsFailWith({ status: f.status!, ...(f.retryAfterSec !== undefined ? { retryAfterSec: f.retryAfterSec } : {}) });
          reverts.set(f.id, () => commands.dpsFailWith(null));
          nudge(f);
          break;
        case 'dps.rateLimit':
          await commands.dpsRateLimit(f.perSec!, f.retryAfterSec!);
          reverts.set(f.id, () => commands.dpsRateLimit(null));
          nudge(f);
          break;
        case 'device.failover':
          await forEachTarget(outcome, targets, (id) => commands.failover(id, f.durationMs));
          break;
        case 'device.failback':
          await forEachTarget(outcome, targets, (id) => commands.failover(id));
          reverts.set(f.id, () => forEachTarget(outcome, targets, (id) => commands.failback(id)));
          break;
        case 'device.expireTokens':
          await forEachTarget(outcome, targets, (id) => commands.expireTokens(id));
          break;
        case 'device.disable': {
          const disabled: Array<[string, string]> = [];
          await forEachTarget(outcome, targets, async (id) => disabled.push([await commands.disableDevice(id), id]));
          reverts.set(f.id, () => Promise.all(disabled.map(([hubName, id]) => attempt(outcome, () => commands.enableDevice(hubName, id)))));
          break;
        }
        case 'device.delete':
          await forEachTarget(outcome, targets, (id) => commands.deleteDevice(id));
          break;
        case 'device.disconnect':
          await forEachTarget(outcome, targets, (id) => commands.disconnectDevice(id));
          break;
        case 'device.flap':
          await commands.flap(targets, f.holdMs!);
          reverts.set(f.id, () => commands.flap(targets, null));
          break;
      }
    };

    phaseStart = Date.now();
    log(`faults: ${schedule.length} scheduled over ${options.durationMs / 1000} s`);
    const running = new Set<Promise<void>>();
    const keep = (p: Promise<void>) => {
      running.add(p);
      void p.finally(() => running.delete(p));
    };
    for (const f of schedule) {
      const outcome = faultOutcomes[f.id]!;
      let started: Promise<void> = Promise.resolve();
      const startTimer = setTimeout(() => {
        timers.delete(startTimer);
        outcome.startedAtMs = Date.now() - phaseStart;
        started = inject(f, outcome).catch((error: unknown) => {
          outcome.errors.push((error as Error).message);
        });
        keep(started);
      }, f.atMs);
      timers.add(startTimer);
      if (f.durationMs > 0) {
        const endTimer = setTimeout(() => {
          timers.delete(endTimer);
          keep(
            started.then(async () => {
              const revert = reverts.get(f.id);
              reverts.delete(f.id);
              try {
                await revert?.();
              } catch (error) {
                outcome.errors.push((error as Error).message);
              }
              outcome.endedAtMs = Date.now() - phaseStart;
            }),
          );
        }, f.atMs + f.durationMs);
        timers.add(endTimer);
      }
    }
    const progress = setInterval(() => {
      const connected = tracks.filter((t) => t.state === 'Connected').length;
      const queued = tracks.reduce((n, t) => n + t.device.outboxStats().count, 0);
      const rss = rssSamples.length ? Math.round(rssSamples[rssSamples.length - 1]!.rss / 1048576) : 0;
      log(`+${((Date.now() - phaseStart) / 1000).toFixed(0)} s: ${connected}/${tracks.length} connected, ${queued} queued, ${acceptedTotal} accepted, ${acceptedTotal - pending.size} acknowledged, rss ${rss} MB`);
    }, 10_000);
    intervals.add(progress);

    await sleep(options.durationMs);
    // Faults due exactly at the end must not start after the clear-all.
    for (const t of [...timers]) {
      clearTimeout(t);
      timers.delete(t);
    }
    await Promise.all([...running]);

    // --- clear everything ------------------------------------------------------------------------
    for (const [id, revert] of [...reverts]) {
      reverts.delete(id);
      try {
        await revert();
      } catch (error) {
        faultOutcomes[id]!.errors.push((error as Error).message);
      }
      faultOutcomes[id]!.endedAtMs = Date.now() - phaseStart;
    }
    await commands.clearAll();
    clearAt = Date.now();
    log(`faults cleared at +${((clearAt - phaseStart) / 1000).toFixed(1)} s; quiet for ${quietMs / 1000} s (recovery bound ${recovery.valueMs} ms)`);

    // --- quiet -----------------------------------------------------------------------------------
    if (options.endQuietWhenHealthy) {
      const settleMs = 2 * backoffMax.valueMs;
      let healthySince: number | null = null;
      await until(() => {
        const now = Date.now();
        let healthy = tracks.every((t) => t.state === 'Connected');
        if (healthy) for (const p of pending.values()) if (now - p.at > 2000) healthy = false;
        if (!healthy) healthySince = null;
        else healthySince ??= now;
        return healthySince !== null && now - healthySince >= settleMs;
      }, quietMs, 100);
    } else await sleep(quietMs);
    quietEnd = Date.now();
    producing = false;
    for (const i of [...intervals]) {
      if (i === progress) continue;
      clearInterval(i);
      intervals.delete(i);
    }
    for (const t of [...timers]) clearTimeout(t);
    sampleRss();

    // --- drain -----------------------------------------------------------------------------------
    const drainStart = Date.now();
    await until(
      () => tracks.every((t) => t.device.outboxStats().count === 0) && [...pending.values()].every((p) => p.arrivals > 0),
      drainTimeoutMs,
      200,
    );
    drainMs = Date.now() - drainStart;
    // Judged after the drain: a device that reconnects late (even during the drain) is late.
    endStates = tracks.map((t) => ({ state: t.state, connectedSince: t.connectedSince }));
    clearInterval(progress);
    intervals.delete(progress);
  } catch (error) {
    runError = (error as Error).message;
    scanner?.scan(`${(error as Error).message}\n${(error as Error).stack ?? ''}`, 'error');
  } finally {
    producing = false;
    for (const t of timers) clearTimeout(t);
    for (const i of intervals) clearInterval(i);
    // Final snapshots are part of what must not leak.
    for (const t of tracks) {
      try {
        scanner?.scan(JSON.stringify(t.device.actor.getPersistedSnapshot()), 'snapshot');
      } catch (error) {
        onException(error as Error);
      }
    }
    // Bounded: a device that cannot stop must not hang the report (each close has its own timeout).
    let guard: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled(tracks.map((t) => t.device.stop())),
      new Promise<void>((resolve) => (guard = setTimeout(resolve, 15_000))),
    ]);
    clearTimeout(guard);
    debugTrace?.stop();
  }

  // Every delivery reported so far becomes final once the cloud's events before it are in.
  try {
    await syncing?.catch(() => undefined);
    await syncDeliveries();
  } catch (error) {
    runError ??= `cloud sync: ${(error as Error).message}`;
  }

  // --- cloud-side checks (data stays readable after the devices stop) ---------------------------
  const cloudHistory = async (id: string) => {
    const none = { answers: [], registers: [], hubAttempts: [] as HubAttempt[] };
    try {
      return (await cloud?.commands.history(id)) ?? none;
    } catch (error) {
      runError ??= `cloud history: ${(error as Error).message}`;
      return none;
    }
  };
  const dpsGapViolations: string[] = [];
  const hubGapViolations: string[] = [];
  let dpsGapsChecked = 0;
  let dpsGapsExempt = 0;
  let hubGapsChecked = 0;
  let hubGapsExempt = 0;
  let minDpsSlackMs = Infinity;
  let minHubSlackMs = Infinity;
  const cloudRate = { maxCount: 0, boundThere: rateBound.base, worstRatio: 0, violations: 0, worstDevice: '' };
  const deviceRate = { maxCount: 0, boundThere: rateBound.base, worstRatio: 0, violations: 0, worstDevice: '' };
  const userCommandBetween = (t: Track, from: number, to: number) => t.userCommands.some((c) => c > from && c <= to);
  /** Per device, what the cloud saw: registrations, status lookups, accepted hub connects (by hub). */
  const seen = new Map<string, { registers: number[]; lookups: number[]; connects: number[]; hubConnects: HubAttempt[] }>();
  for (const t of tracks) {
    const id = t.registrationId;
    const { answers, registers, hubAttempts: hub } = await cloudHistory(id);
    const accepted = hub.filter((h) => h.code === undefined);
    seen.set(id, { registers, lookups: answers.filter((a) => a.request === 'lookup').map((a) => a.at), connects: accepted.map((h) => h.at), hubConnects: accepted });
    for (let i = 0; i + 1 < answers.length; i++) {
      const a = answers[i]!;
      if (a.status !== 429 && a.status < 500) continue;
      const ra = a.retryAfterSec !== undefined ? a.retryAfterSec * 1000 : undefined;
      const required = a.status === 429 ? (ra ?? policy.throttledMinDelayMs / 2) : Math.max(ra ?? 0, SERVER_ERROR_FLOOR_MS);
      const next = answers[i + 1]!;
      if (userCommandBetween(t, a.at, next.at)) {
        dpsGapsExempt++;
        continue;
      }
      dpsGapsChecked++;
      const slack = next.at - a.at - required;
      minDpsSlackMs = Math.min(minDpsSlackMs, slack);
      if (slack < -TIMER_TOLERANCE_MS && dpsGapViolations.length < 50) {
        dpsGapViolations.push(`${id}: DPS ${a.status} (retry-after ${ra ?? '-'} ms) at ${a.at - startedAt} ms, next ${next.request} ${next.at - a.at} ms later (< ${required} ms)`);
      }
    }
    for (let i = 0; i + 1 < hub.length; i++) {
      const a = hub[i]!;
      if (a.code !== 3) continue;
      const next = hub[i + 1]!;
      // The floor is for the hub that said 3: a device that DPS (registration or status lookup)
      // sent to another hub owes that hub nothing.
      if (next.hub !== a.hub || registers.some((r) => r > a.at && r <= next.at) || userCommandBetween(t, a.at, next.at)) {
        hubGapsExempt++;
        continue;
      }
      hubGapsChecked++;
      const slack = next.at - a.at - SERVER_ERROR_FLOOR_MS;
      minHubSlackMs = Math.min(minHubSlackMs, slack);
      if (slack < -TIMER_TOLERANCE_MS && hubGapViolations.length < 50) {
        hubGapViolations.push(`${id}: CONNACK 3 from ${a.hub} at ${a.at - startedAt} ms, next connect ${next.at - a.at} ms later (< ${SERVER_ERROR_FLOOR_MS} ms)`);
      }
    }
    const fold = (into: typeof cloudRate, times: number[]) => {
      const r = checkAttemptRate(times, t.losses, t.userCommands, rateBound, backoffMax.valueMs);
      into.violations += r.violations;
      if (r.maxCount > into.maxCount) {
        into.maxCount = r.maxCount;
        into.boundThere = r.boundThere;
      }
      if (r.worstRatio > into.worstRatio) {
        into.worstRatio = r.worstRatio;
        into.worstDevice = id;
      }
    };
    fold(deviceRate, t.attempts);
    fold(cloudRate, [...registers, ...hub.map((h) => h.at)].sort((x, y) => x - y));
  }

  // --- flapping hub and disabled device: per fault, per target ----------------------------------
  // Each long device fault is checked over its own period [start, end]: attempts (flap) or DPS
  // requests (disable) against bounds derived from the policy, and the device must be back on a
  // session that lasts (stableConnectionMs) within 2 × maxBackoff of the fault's end, unless a
  // fault on its hub or on DPS overlapped that time (exempt, counted).
  // Two waits plus the attempts themselves: a DPS leg (up to the provisioning timeout) and a
  // connect that may time out (a loaded machine, a hub rate limit) before the one that lasts.
  const connectTimeoutMs = options.connectTimeoutMs ?? 5000;
  const provisionTimeoutMs = options.provisionTimeoutMs ?? 10_000;
  const reconnectBoundMs = 2 * backoffMax.valueMs + connectTimeoutMs + provisionTimeoutMs;
  const flap = { faults: 0, targets: 0, sessions: 0, maxSessionsPerMin: 0, maxRatio: 0, worst: '', violations: [] as string[] };
  const disabled = { faults: 0, targets: 0, dpsRequests: 0, registrations: 0, lookups: 0, hubConnectsRefused: 0, maxDps: 0, maxRatio: 0, worst: '', violations: [] as string[], disabledMs: 0 };
  const reconnect = { checked: 0, exempt: 0, exemptBy: {} as Record<string, number>, maxMs: 0, worst: '', violations: [] as string[], times: [] as number[] };
  const faultWindow = (f: ScheduledFault) => {
    const o = faultOutcomes[f.id]!;
    if (o.startedAtMs === undefined || phaseStart === 0) return undefined;
    const from = phaseStart + o.startedAtMs;
    // An instant fault (duration 0) has no end of its own: its window is its start.
    const to = f.durationMs === 0 ? from : o.endedAtMs !== undefined ? phaseStart + o.endedAtMs : clearAt || from + f.durationMs;
    return { from, to };
  };
  const hubOf = (id: string, at: number): string | undefined => {
    const list = seen.get(id)?.hubConnects ?? [];
    let hub: string | undefined;
    for (const h of list) if (h.at <= at) hub = h.hub;
    return hub;
  };
  const checkReconnect = (f: ScheduledFault, t: Track, end: number) => {
    // The first session alive after the end that lasted stableConnectionMs (or still runs).
    let back: number | undefined;
    for (let i = 0; i < t.connects.length; i++) {
      const c = t.connects[i]!;
      const left = t.disconnects.find((d) => d >= c) ?? Infinity;
      if (left > end && left - c >= policy.stableConnectionMs) {
        back = Math.max(c, end);
        break;
      }
    }
    const waited = back === undefined ? Infinity : back - end;
    const hub = hubOf(t.registrationId, end);
    const h = seen.get(t.registrationId);
    const askedDps = countBetween(h?.registers ?? [], end, end + reconnectBoundMs) + countBetween(h?.lookups ?? [], end, end + reconnectBoundMs) > 0;
    const blocker = schedule.find((g) => {
      if (g.id === f.id) return false;
      const w = faultWindow(g);
      if (!w || w.to < end || w.from > end + reconnectBoundMs) return false;
      // A DPS fault only matters to a device that asked DPS meanwhile.
      if (g.kind.startsWith('dps.')) return askedDps;
      return (g.kind.startsWith('hub.') && hub === `hub-${g.hub}`) || (g.devices?.includes(t.index) === true && g.kind.startsWith('device.'));
    });
    const why = blocker
      ? blocker.kind
      : t.userCommands.some((c) => c >= end && c <= end + reconnectBoundMs)
        ? 'user command'
        : clearAt > 0 && end + reconnectBoundMs > clearAt
          ? 'end of the fault phase'
          : undefined;
    if (why !== undefined) {
      reconnect.exempt++;
      reconnect.exemptBy[why] = (reconnect.exemptBy[why] ?? 0) + 1;
      return;
    }
    reconnect.checked++;
    reconnect.times.push(waited);
    if (waited > reconnect.maxMs) {
      reconnect.maxMs = waited;
      reconnect.worst = `${t.registrationId} after fault #${f.id} (${f.kind})`;
    }
    if (waited > reconnectBoundMs && reconnect.violations.length < 50) {
      reconnect.violations.push(`${t.registrationId}: not back on a lasting session ${Number.isFinite(waited) ? ms(waited) : 'at all'} after fault #${f.id} (${f.kind}) ended (bound ${ms(reconnectBoundMs)})`);
    }
  };
  for (const f of schedule) {
    if (f.kind !== 'device.flap' && f.kind !== 'device.disable') continue;
    const w = faultWindow(f);
    if (!w) continue;
    if (f.kind === 'device.flap') {
      flap.faults++;
      // Attempts right after the end still follow the flap's curve: the window runs maxBackoff on.
      const to = w.to + backoffMax.valueMs;
      const bound = attemptRateBound(policy, raMin, to - w.from);
      for (const i of f.devices ?? []) {
        const t = tracks[i]!;
        const h = seen.get(t.registrationId);
        flap.targets++;
        const sessions = countBetween(t.connects, w.from, w.to);
        flap.sessions += sessions;
        flap.maxSessionsPerMin = Math.max(flap.maxSessionsPerMin, (sessions * 60_000) / Math.max(1, w.to - w.from));
        const device = checkWindow(t.attempts, t.losses, t.userCommands, bound, w.from, to);
        const cloudSide = checkWindow([...(h?.registers ?? []), ...(h?.connects ?? [])].sort((x, y) => x - y), t.losses, t.userCommands, bound, w.from, to);
        for (const [side, r] of [['device', device], ['cloud', cloudSide]] as const) {
          const ratio = r.count / r.limit;
          if (ratio > flap.maxRatio) {
            flap.maxRatio = ratio;
            flap.worst = `${t.registrationId} in fault #${f.id}: ${r.count} attempts (${side} side) in ${ms(to - w.from)}, bound ${r.limit}`;
          }
          if (r.count > r.limit && flap.violations.length < 50) flap.violations.push(`${t.registrationId} in fault #${f.id} (${side} side): ${r.count} attempts in ${ms(to - w.from)} > ${r.limit}`);
        }
        checkReconnect(f, t, w.to);
      }
    } else {
      disabled.faults++;
      const bound = disabledDpsBound(policy, raMin, w.to - w.from);
      for (const i of f.devices ?? []) {
        const t = tracks[i]!;
        const h = seen.get(t.registrationId);
        disabled.targets++;
        disabled.disabledMs += w.to - w.from;
        const registrations = countBetween(h?.registers ?? [], w.from, w.to);
        const lookups = countBetween(h?.lookups ?? [], w.from, w.to);
        disabled.registrations += registrations;
        disabled.lookups += lookups;
        disabled.dpsRequests += registrations + lookups;
        disabled.maxDps = Math.max(disabled.maxDps, registrations + lookups);
        // The disable itself ends a stable session (the first loss); only later ones add a cycle.
        const laterLosses = Math.max(0, countBetween(t.losses, w.from, w.to) - 1);
        const limit = (1 + laterLosses) * bound.value + 2 * countBetween(t.userCommands, w.from, w.to);
        const ratio = (registrations + lookups) / limit;
        if (ratio > disabled.maxRatio) {
          disabled.maxRatio = ratio;
          disabled.worst = `${t.registrationId} in fault #${f.id}: ${registrations} registrations + ${lookups} lookups in ${ms(w.to - w.from)}, bound ${limit}`;
        }
        if (registrations + lookups > limit && disabled.violations.length < 50) {
          disabled.violations.push(`${t.registrationId} in fault #${f.id}: ${registrations} registrations + ${lookups} lookups in ${ms(w.to - w.from)} > ${limit} (${bound.formula})`);
        }
        checkReconnect(f, t, w.to);
      }
    }
  }
  // Whole-run DPS load per device (registrations and status lookups the cloud saw), per hour.
  const runHours = Math.max(1e-9, ((quietEnd || Date.now()) - (phaseStart || startedAt)) / 3_600_000);
  const registrationsTotal = [...seen.values()].reduce((n, h) => n + countBetween(h.registers, phaseStart, quietEnd || Infinity), 0);
  const lookupsTotal = [...seen.values()].reduce((n, h) => n + countBetween(h.lookups, phaseStart, quietEnd || Infinity), 0);
  const perDeviceHour = (n: number) => Math.round((n / Math.max(1, tracks.length) / runHours) * 10) / 10;

  // --- delivery ------------------------------------------------------------------------------------
  // Messages never acknowledged: stored at least once counts as arrived, never stored is lost.
  let arrivedUnacknowledged = 0;
  for (const [id, p] of pending) {
    if (p.arrivals === 0) {
      lost++;
      if (lostSamples.length < 10) lostSamples.push(id);
    } else {
      arrivedUnacknowledged++;
      duplicates += p.arrivals - 1;
    }
  }
  const unknownArrivals = [...orphanArrivals.values()].reduce((a, b) => a + b, 0);
  const stillQueued = tracks.reduce((n, t) => {
    try {
      return n + t.device.outboxStats().count;
    } catch {
      return n;
    }
  }, 0);

  // --- recovery ------------------------------------------------------------------------------------
  // Recovered = Connected at the end of the run; recovery time = its last entry into Connected
  // after the clear (0 if it stayed connected through it). A reconnect after the clear counts.
  const recoveries = tracks.map((_, i) => {
    const end = endStates[i];
    if (clearAt === 0 || !end || end.state !== 'Connected' || end.connectedSince === null) return Infinity;
    return Math.max(0, end.connectedSince - clearAt);
  });
  const notConnectedAtEnd = recoveries.filter((r) => !Number.isFinite(r)).length;
  const finite = recoveries.filter((r) => Number.isFinite(r));
  const recoveryMax = finite.length === recoveries.length && finite.length > 0 ? Math.max(...finite) : Infinity;
  const lateDevices = tracks
    .map((t, i) => ({ t, r: recoveries[i]!, end: endStates[i] }))
    .filter(({ r }) => !(r <= recovery.valueMs))
    .map(({ t, r, end }) => `${t.registrationId} (${Number.isFinite(r) ? ms(r) : (end?.state ?? t.state)})`);

  const rss = rssVerdict(rssSamples.filter((s) => quietEnd === 0 || s.at <= quietEnd), rssTolerance);
  const security = scanner?.report() ?? {
    scanned: { log: { items: 0, bytes: 0 }, snapshot: { items: 0, bytes: 0 }, error: { items: 0, bytes: 0 }, event: { items: 0, bytes: 0 } },
    hits: {},
    total: 0,
    samples: [],
  };

  // What the cloud holds for a late device: its DPS registration and its identity on each hub.
  const lateIdentities = new Map<string, unknown>();
  for (const t of tracks.filter((_, i) => !(recoveries[i]! <= recovery.valueMs)).slice(0, 10)) {
    try {
      lateIdentities.set(t.registrationId, await cloud?.commands.identity(t.registrationId));
    } catch (error) {
      lateIdentities.set(t.registrationId, `unavailable: ${(error as Error).message}`);
    }
  }
  let cloudMetrics: Awaited<ReturnType<SoakCloud['commands']['metrics']>> | undefined;
  try {
    cloudMetrics = await cloud?.commands.metrics();
  } catch (error) {
    runError ??= `cloud metrics: ${(error as Error).message}`;
  }
  try {
    await cloud?.stop();
  } catch (error) {
    onException(error as Error);
  }
  // Let late socket callbacks surface while the listeners are still attached.
  await sleep(200);
  process.off('unhandledRejection', onRejection);
  process.off('uncaughtException', onException);
  process.off('warning', onWarning);
  if (ownDataDir) rmSync(ownDataDir, { recursive: true, force: true });

  const invariants: InvariantResult[] = [
    {
      name: 'the run completed',
      ok: runError === undefined,
      measured: runError ?? `boot ${ms(bootMs)}, faults ${ms(clearAt - phaseStart)}, quiet ${ms(quietEnd - clearAt)}, drain ${ms(drainMs)}`,
      bound: 'every device booted; every phase ran',
    },
    {
      name: 'zero accepted telemetry lost',
      ok: acceptedTotal > 0 && lost === 0 && dropped === 0,
      measured: `${acceptedTotal} accepted, ${lost} lost, ${dropped} dropped, ${duplicates} duplicates (counted, allowed), ${stillQueued} still queued`,
      bound: '0 lost (by message id, at the local cloud)',
    },
    {
      name: 'every device Connected again after the faults',
      ok: clearAt > 0 && lateDevices.length === 0,
      measured: `max ${Number.isFinite(recoveryMax) ? ms(recoveryMax) : '∞'}, p50 ${ms(percentile(finite, 50))}, p95 ${ms(percentile(finite, 95))}; ${lateDevices.length} late${lateDevices.length ? ` (${lateDevices.slice(0, 5).join(', ')})` : ''}`,
      bound: `≤ ${recovery.formula}`,
    },
    {
      name: 'no delay below the policy (device side)',
      ok: delayViolations.length === 0 && backoffs > 0,
      measured: `${backoffs} BackingOff entries; min margin over the policy minimum ${Number.isFinite(minDelayMarginMs) ? ms(minDelayMarginMs) : '-'}; longest delay ${ms(maxDelaySeen)}`,
      bound: `delay ≥ policyLowerBound(class, attempt, afterLoss, retry-after, rule minimum) and ≤ maxBackoff ${backoffMax.valueMs} ms`,
    },
    {
      name: 'no retry before its deadline (device side)',
      ok: earlyRetries.length === 0,
      measured: `${backoffs - backoffsExempt} timed retries, min (retry − retryAt) ${Number.isFinite(minRetrySlackMs) ? ms(minRetrySlackMs) : '-'}; ${backoffsExempt} left early by a user command (exempt)`,
      bound: `retry time ≥ retryAt = failure.at + delay (−${TIMER_TOLERANCE_MS} ms timer tolerance)`,
    },
    {
      name: 'DPS retry-after and 5xx floor honoured (cloud side)',
      ok: dpsGapViolations.length === 0,
      measured: `${dpsGapsChecked} gaps after a 429/5xx, min slack ${Number.isFinite(minDpsSlackMs) ? ms(minDpsSlackMs) : '-'}; ${dpsGapsExempt} exempt (user reprovision in between)`,
      bound: `next DPS request ≥ retry-after after a 429 (throttledMinDelayMs/2 without one); ≥ max(retry-after, ${SERVER_ERROR_FLOOR_MS} ms) after a 5xx`,
    },
    {
      name: 'CONNACK 3 floor honoured (cloud side)',
      ok: hubGapViolations.length === 0,
      measured: `${hubGapsChecked} gaps after a CONNACK 3, min slack ${Number.isFinite(minHubSlackMs) ? ms(minHubSlackMs) : '-'}; ${hubGapsExempt} exempt (DPS registration or user command in between)`,
      bound: `next hub connect ≥ ${SERVER_ERROR_FLOOR_MS} ms after a CONNACK 3 on the same assignment`,
    },
    {
      name: 'no retry storm (attempts per device per minute)',
      ok: deviceRate.violations === 0 && cloudRate.violations === 0,
      measured: `device side max ${deviceRate.maxCount}/min (bound there ${deviceRate.boundThere}, worst ratio ${deviceRate.worstRatio.toFixed(2)}); cloud side max ${cloudRate.maxCount}/min (worst ratio ${cloudRate.worstRatio.toFixed(2)})`,
      bound: rateBound.formula,
    },
    {
      name: 'flapping hub: attempts within the policy (short sessions are attempts on the curve)',
      ok: flap.violations.length === 0,
      measured: flap.faults === 0
        ? 'no device.flap fault in the schedule'
        : `${flap.faults} flaps on ${flap.targets} devices, ${flap.sessions} sessions (max ${flap.maxSessionsPerMin.toFixed(1)}/min on one device); worst ratio ${flap.maxRatio.toFixed(2)} (${flap.worst})${flap.violations.length ? `; ${flap.violations.slice(0, 3).join('; ')}` : ''}`,
      bound: `per device over [start, end + maxBackoff]: attempts (device and cloud side) ≤ (1 + L) · base(window) + 2 · U, L = losses of connections that lasted ${policy.stableConnectionMs} ms`,
    },
    {
      name: 'disabled device: no DPS storm',
      ok: disabled.violations.length === 0,
      measured: disabled.faults === 0
        ? 'no device.disable fault in the schedule'
        : `${disabled.faults} disables on ${disabled.targets} devices (${(disabled.disabledMs / 60_000).toFixed(1)} device-minutes): ${disabled.registrations} registrations + ${disabled.lookups} lookups, max ${disabled.maxDps} on one device; worst ratio ${disabled.maxRatio.toFixed(2)} (${disabled.worst})${disabled.violations.length ? `; ${disabled.violations.slice(0, 3).join('; ')}` : ''}`,
      bound: `per device over the disabled period P: registrations + lookups ≤ (1 + later stable losses) · (2 + quickRetries + ⌈P / min(parkedMinDelayMs, fastest hub cycle)⌉) + 2 · U`,
    },
    {
      name: 'back on a lasting session after a flap or a disable',
      ok: reconnect.violations.length === 0,
      measured: reconnect.checked + reconnect.exempt === 0
        ? 'nothing to check'
        : `${reconnect.checked} checked: max ${Number.isFinite(reconnect.maxMs) ? ms(reconnect.maxMs) : '∞'}${reconnect.worst ? ` (${reconnect.worst})` : ''}, p95 ${ms(percentile(reconnect.times.filter(Number.isFinite), 95))}; ${reconnect.exempt} exempt (a fault on its hub or on DPS, a user command, or the end of the fault phase within the bound)${reconnect.violations.length ? `; ${reconnect.violations.slice(0, 3).join('; ')}` : ''}`,
      bound: `a session that lasts ${policy.stableConnectionMs} ms starts ≤ 2 × maxBackoff + connect timeout + provisioning timeout = 2 × ${backoffMax.valueMs} + ${connectTimeoutMs} + ${provisionTimeoutMs} = ${reconnectBoundMs} ms after the fault ends`,
    },
    {
      name: 'no unhandled rejection or uncaught exception',
      ok: unhandledRejections.length === 0 && uncaughtExceptions.length === 0,
      measured: `${unhandledRejections.length} unhandled rejections, ${uncaughtExceptions.length} uncaught exceptions`,
      bound: '0',
    },
    {
      name: 'RSS flat over the second half',
      ok: rss.ok,
      measured: `growth ${(rss.growth * 100).toFixed(1)}% (${rss.slopeMbPerMin.toFixed(2)} MB/min), last/third quarter ${rss.drift.toFixed(3)}, max/min ${rss.ratio.toFixed(3)}; mean ${rss.secondHalfMeanMb.toFixed(0)} MB (first half ${rss.firstHalfMeanMb.toFixed(0)} MB), ${rss.samples} samples${forcedGc ? ', full GC before each' : ''}`,
      bound: `one-sided: least-squares growth over the second half ≤ ${rssTolerance.growth * 100}% of its mean, last-quarter mean ≤ ${rssTolerance.drift} × third-quarter mean`,
    },
    {
      name: 'same seed, same schedule',
      ok: digest === again && digest !== otherDigest,
      measured: `${digest} twice; seed ${String(otherSeed)} gives ${otherDigest}`,
      bound: 'equal for the same seed, different for another seed',
    },
    {
      name: 'no secret in logs, snapshots or errors',
      // Under traceDebug the trace must have shown CONNECTs (whose password is the SAS token).
      ok: security.total === 0 && security.scanned.log.items > 0 && security.scanned.snapshot.items > 0 && (debugTrace?.counts().connectWrites ?? 1) > 0,
      measured: `${debugTrace ? `DEBUG=* traced (${debugTrace.counts().lines} lines, ${debugTrace.counts().connectWrites} CONNECT writes); ` : ''}${security.total} hits in ${security.scanned.log.items} log lines, ${security.scanned.snapshot.items} snapshots, ${security.scanned.event.items} events, ${security.scanned.error.items} error messages (${(Object.values(security.scanned).reduce((a, s) => a + s.bytes, 0) / 1048576).toFixed(1)} MB)`,
      bound: `0 occurrences of the group key, any of the ${options.devices} device keys (raw, URL-encoded, base64url), SharedAccessSignature, SharedAccessKey=, sig=`,
    },
  ];

  const report: SoakReport = {
    ok: invariants.every((i) => i.ok),
    seed: options.seed,
    reproduce,
    startedAt: new Date(startedAt).toISOString(),
    options: {
      devices: options.devices,
      hubs,
      durationMs: options.durationMs,
      quietMs,
      endQuietWhenHealthy: options.endQuietWhenHealthy === true,
      cloudProcess: options.cloudProcess ?? 'in-process',
      telemetryIntervalMs,
      faultRateMs: resolvedSchedule.faultRateMs,
      minFaultMs: resolvedSchedule.minFaultMs,
      maxFaultMs: resolvedSchedule.maxFaultMs,
      keepaliveSeconds: options.keepaliveSeconds ?? 2,
      publishTimeoutSeconds,
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
    },
    policy,
    schedule: { digest, faults: schedule.length, byKind: faultsByKind(schedule), list: schedule.map(describeFault) },
    timeline: {
      bootMs,
      faultPhaseMs: clearAt && phaseStart ? clearAt - phaseStart : 0,
      quietMs: quietEnd && clearAt ? quietEnd - clearAt : 0,
      drainMs,
      totalMs: Date.now() - startedAt,
    },
    invariants,
    figures: {
      telemetry: {
        accepted: acceptedTotal,
        arrivedDistinct,
        acknowledged: finalized,
        arrivedUnacknowledged,
        lost,
        lostSamples,
        duplicates,
        unknownArrivals,
        rejected: rejectReasons,
        dropped,
        droppedReasons,
        droppedSamples,
        stillQueued,
      },
      recovery: {
        boundMs: recovery.valueMs,
        maxMs: Number.isFinite(recoveryMax) ? recoveryMax : null,
        p50Ms: percentile(finite, 50),
        p95Ms: percentile(finite, 95),
        late: lateDevices,
        notConnectedAtEnd,
      },
      backoff: {
        entries: backoffs,
        exempt: backoffsExempt,
        maxBackoffMs: backoffMax.valueMs,
        maxBackoffFormula: backoffMax.formula,
        longestDelayMs: maxDelaySeen,
        minMarginOverPolicyMs: Number.isFinite(minDelayMarginMs) ? minDelayMarginMs : null,
        minRetrySlackMs: Number.isFinite(minRetrySlackMs) ? minRetrySlackMs : null,
        delayViolations,
        earlyRetries,
        byRule: backoffRules,
      },
      cloudGaps: { dpsChecked: dpsGapsChecked, dpsExempt: dpsGapsExempt, dpsViolations: dpsGapViolations, hubChecked: hubGapsChecked, hubExempt: hubGapsExempt, hubViolations: hubGapViolations },
      attemptRate: { bound: rateBound, device: deviceRate, cloud: cloudRate },
      flap: { ...flap, violations: flap.violations },
      disabled: { ...disabled, bound: disabledDpsBound(policy, raMin, 60_000).formula + ' (per minute disabled)' },
      reconnect: { checked: reconnect.checked, exempt: reconnect.exempt, exemptBy: reconnect.exemptBy, maxMs: Number.isFinite(reconnect.maxMs) ? reconnect.maxMs : null, p95Ms: percentile(reconnect.times.filter(Number.isFinite), 95), worst: reconnect.worst, boundMs: reconnectBoundMs, violations: reconnect.violations },
      dpsLoad: {
        registrations: registrationsTotal,
        lookups: lookupsTotal,
        hours: Math.round(runHours * 1000) / 1000,
        registrationsPerDevicePerHour: perDeviceHour(registrationsTotal),
        lookupsPerDevicePerHour: perDeviceHour(lookupsTotal),
      },
      shortSessions: tracks.reduce((n, t) => n + t.shortSessions, 0),
      transitions,
      lateDeviceTimelines: Object.fromEntries(
        tracks
          .filter((_, i) => !(recoveries[i]! <= recovery.valueMs))
          .slice(0, 10)
          .map((t) => [t.registrationId, { state: t.state, outbox: safeCount(t.device), hub: t.device.assignment()?.hubHost ?? null, identity: lateIdentities.get(t.registrationId) ?? null, recent: t.recent }]),
      ),
      failedStates: tracks.filter((t) => t.failedRules.length > 0).map((t) => `${t.registrationId}: ${t.failedRules.join(', ')}`),
      attemptsTotal: tracks.reduce((n, t) => n + t.attempts.length, 0),
      lossesTotal: tracks.reduce((n, t) => n + t.losses.length, 0),
      userReprovisions: tracks.reduce((n, t) => n + t.userCommands.length, 0),
      cloudProcess: cloud?.mode,
      dps: cloudMetrics?.dps,
      /** Registrations the emulator still holds (aborted by devices after a 429/5xx): cloud-side memory. */
      dpsOpenOperations: cloudMetrics?.dpsOpenOperations ?? null,
      hubs: cloudMetrics?.hubs,
      /** The cloud's own RSS at the end, when it ran in its own process (not part of the RSS invariant). */
      cloudRssMb: cloud?.mode === 'child-process' && cloudMetrics ? Math.round(cloudMetrics.rss / 104857.6) / 10 : null,
    },
    faults: faultOutcomes,
    security: debugTrace ? { ...security, debugTrace: debugTrace.counts() } : security,
    rss: {
      ...rss,
      forcedGc,
      series: rssSamples.map((s) => [
        Math.round((s.at - startedAt) / 100) / 10,
        Math.round(s.rss / 104857.6) / 10,
        Math.round(s.heapUsed / 104857.6) / 10,
        s.queued ?? 0,
        Math.round((s.external ?? 0) / 104857.6) / 10,
        s.fds ?? -1,
        Math.round((s.heapTotal ?? 0) / 104857.6) / 10,
      ]),
    },
    process: { unhandledRejections, uncaughtExceptions, warnings },
    ...(runError !== undefined ? { runError } : {}),
  };
  if (reportPath) {
    mkdirSync(dirname(reportPath), { recursive: true });
    writeFileSync(reportPath, `${JSON.stringify(report, null, 2)}\n`);
  }
  return report;
}
