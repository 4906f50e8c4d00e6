/**
 * Model-based failover tests of a device application built on hubstate: the paths come from the
 * fault model (fault-model.ts, via xstate/graph), and `runFailoverPath` replays one against the
 * local cloud (hubstate-cloud) with the application's own device: it injects each fault, then
 * checks the states the device went through, the hub it ended on, that telemetry continues and
 * that every message it accepted arrived (by id), and the application's own invariants; for a
 * long fault (long-faults.ts) also the waits against the device's own policy. A failure does not
 * throw: the report names the path, the step, what was expected and what happened, the missing
 * messages and the device's last log lines.
 *
 * `clock: 'simulated'` gives the device a clock the runner skips ahead (skip-ahead-clock.ts)
 * whenever it only waits in BackingOff: the default policy's minute-long waits take no wall time.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { monotonicNow, type Device, type DeviceOptions, type StateChange } from 'hubstate';
import { REDACTED_PATHS, systemClock } from 'hubstate/internal';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import pino from 'pino';
import { deliveryReport } from './delivery';
import { EXPECTED_LEG, generateFaultPaths, isLongPath, LONG_FAULTS, REFUSING_FAULTS, type Fault, type LongFault, type RefusalCode } from './fault-model';
import { replayLongFault, type PolicyCurve, type RecordedState } from './long-faults';
import { SkipAheadClock } from './skip-ahead-clock';

export interface FailoverPath {
  /** The faults and the dimensions of this run, e.g. `FAILOVER → FAILBACK (CONNACK 3) [X.509]`. */
  name: string;
  /** The model's faults, or the names of the run's `customFaults`. */
  faults: Array<Fault | string>;
  /** The CONNACK code the hubs refuse a moved device with on this run (paths with a refusal only). */
  refusalCode?: RefusalCode;
  identity: 'sas' | 'x509';
  /** MQTT over TCP (8883), or over WebSockets (443); default MQTT. */
  transport?: 'mqtt' | 'mqtt-ws';
  /** Seeds the device's jitter (the policy's `seed`), so a path replays the same way. */
  seed: number;
}

export interface FailoverPathOptions {
  /** Short faults per path (default 2; 1–4). */
  depth?: number;
  /** The codes a refusing path runs under (default [3, 5]: 3 as Azure, 5 the other reading). */
  refusalCodes?: RefusalCode[];
  /** Also run each refusing path (first refusal code) with an X.509 identity from the cloud's enrollment group. */
  x509?: boolean;
  /** Also run each refusing path (first refusal code) over MQTT on WebSockets. */
  websockets?: boolean;
  /** First seed; path i gets seed + i (default 1). */
  seed?: number;
  /**
   * The application's own faults (the names of runFailoverPath's `customFaults`), added to the
   * model as faults that can hit a connected device at any step (at most 8).
   */
  customFaults?: readonly string[];
  /**
   * Also the model's long faults, each a path of its own (a flapping hub, a DPS outage with and
   * without a need for DPS, a disabled device under each refusal code): seconds each with the
   * runner's compressed policy, minutes of waits with the default one (use `clock: 'simulated'`).
   */
  longFaults?: boolean;
}

/** Every path of the fault model, once per refusal code where a hub refuses, and with X.509 if asked. */
export function generateFailoverPaths(options: FailoverPathOptions = {}): FailoverPath[] {
  const codes = options.refusalCodes ?? [3, 5];
  if (codes.length === 0 || codes.some((code) => code !== 3 && code !== 5)) throw new RangeError('refusalCodes: 3 and/or 5');
  const all = generateFaultPaths(options.depth ?? 2, options.customFaults ?? []);
  // The long faults after the short ones: switching them on leaves the short paths' seeds as they were.
  const faultPaths = [...all.filter((faults) => !isLongPath(faults)), ...(options.longFaults === true ? all.filter(isLongPath) : [])];
  const runs = faultPaths.flatMap((faults): Array<Omit<FailoverPath, 'seed'>> => {
    const name = faults.join(' → ');
    if (!faults.some((f) => (REFUSING_FAULTS as readonly string[]).includes(f))) return [{ name, faults, identity: 'sas' as const }];
    // A long fault is about the policy's waits: once per refusal code, not once per identity and transport.
    if (isLongPath(faults)) return codes.map((refusalCode) => ({ name: `${name} (CONNACK ${refusalCode})`, faults, refusalCode, identity: 'sas' as const }));
    const keyed = codes.map((refusalCode) => ({ name: `${name} (CONNACK ${refusalCode})`, faults, refusalCode, identity: 'sas' as const }));
    const certified = options.x509 ? [{ name: `${name} (CONNACK ${codes[0]}) [X.509]`, faults, refusalCode: codes[0], identity: 'x509' as const }] : [];
    const overWebSockets = options.websockets
      ? [{ name: `${name} (CONNACK ${codes[0]}) [WebSockets]`, faults, refusalCode: codes[0], identity: 'sas' as const, transport: 'mqtt-ws' as const }]
      : [];
    return [...keyed, ...certified, ...overWebSockets];
  });
  const first = options.seed ?? 1;
  return runs.map((run, i) => ({ ...run, seed: first + i }));
}

/**
 * The runner's policy unless `policy` is given: the default policy's shape (first retry after a
 * loss, three quick retries on the exponential curve, then a slow floor) at a fraction of its
 * waits (default: 1 s, 1 s, 90 s, 5 s, 60 s, 30 s), so a path with faults seconds apart, or one
 * that goes past the quick retries, lasts seconds.
 */
export const TEST_POLICY = Object.freeze({
  stableConnectionMs: 500,
  firstRetryMaxMs: 300,
  minDelayMs: 200,
  maxDelayMs: 1500,
  throttledMinDelayMs: 1000,
  retryAfterJitterMs: 200,
  slowRetryMinMs: 1000,
  quickRetries: 3,
});

/**
 * What the application's device needs to connect to the local cloud: spread it into
 * `createDevice` options (it also carries a seeded policy, a capturing logger and, in the
 * simulated-clock mode, the clock the runner skips ahead).
 */
export type DeviceConnection = Pick<
  DeviceOptions,
  'idScope' | 'registrationId' | 'provisioningHost' | 'ca' | 'dataDir' | 'seed' | 'policy' | 'logger' | 'keepaliveSeconds' | 'connectTimeoutMs' | 'transport' | 'clock'
> &
  ({ groupKey: string } | { x509: { cert: string; key: string } });

export interface InvariantContext {
  device: Device;
  cloud: LocalCloud;
  /** The fault just recovered from, and its index in the path. */
  fault: Fault | string;
  step: number;
}

export interface Invariant {
  name: string;
  /** Holds after every fault: true, or false / a message saying what is wrong. */
  check(context: InvariantContext): boolean | string | Promise<boolean | string>;
}

/** A fault of the application's own (a command, an operator's action), for paths written by hand. */
export interface CustomFault {
  /** Does what the fault is: a cloud call, a command to the device, ... */
  inject(context: { device: Device; cloud: LocalCloud; deviceId: string; hub: string }): void | Promise<void>;
  /** The device states it must cause, from Connected back to Connected (e.g. EXPECTED_LEG.USER_REPROVISION). */
  expectedLeg: RegExp;
  /** The device ends on another hub (default: the same hub). */
  movesHub?: boolean;
}

export interface RunFailoverOptions {
  /** Builds the application's device from the connection (started or not: the runner starts it if it is Idle). */
  device(connection: DeviceConnection): Device | Promise<Device>;
  /** A local cloud to reuse (one per test file is enough); default: a fresh one for this path, stopped after. */
  cloud?: LocalCloud;
  invariants?: Invariant[];
  /** The application's own faults, by the name a path uses. */
  customFaults?: Record<string, CustomFault>;
  /**
   * The retry policy the connection carries (default TEST_POLICY, compressed). The checks read
   * the policy the device actually runs (from its machine), whatever its factory made of it.
   */
  policy?: DeviceOptions['policy'];
  /** The connection's policy.stableConnectionMs (default TEST_POLICY's, 500 ms); a `policy` given wins. */
  stableConnectionMs?: number;
  /**
   * 'simulated': the device gets a clock (connection.clock) that runs at wall speed and that the
   * runner skips to the deadline of every BackingOff wait (nothing is in flight then), and to the
   * end of the stable-connection wait before each fault; every time the checks read (waits,
   * recovery) is on that clock. The Azure SDK's own timers (keepalive, token renewal) stay real.
   * Default 'real'.
   */
  clock?: 'real' | 'simulated';
  /**
   * Per step, in wall time: the fault's recovery, and the telemetry after it (default 30 s; the
   * policy's waits are added in real time). It also bounds each call of the application's code
   * (the factory, an invariant, a custom fault's inject) and the device's stop().
   */
  stepTimeoutMs?: number;
  /** A step whose recovery (fault injected → Connected again, on the run's clock) takes longer fails (default: only reported). */
  recoveryBoundMs?: number;
}

export interface StepReport {
  fault: Fault | string;
  /** The states from Connected back to Connected. */
  states: string[];
  expected: string;
  hubBefore: string;
  hubAfter: string;
  /** Fault injected → Connected again, on the run's clock (simulated time in that mode). */
  recoveryMs: number;
  /** The same in wall time. */
  wallMs: number;
  /** The waits the device chose (BackingOff), in ms. */
  waits: number[];
  /** What a long fault did, in a line (sessions of a flapping hub, the waits chosen). */
  notes: string[];
  failures: string[];
}

export interface FailoverReport {
  path: string;
  /** The device's registration id (and device id) on this run. */
  registrationId: string;
  ok: boolean;
  steps: StepReport[];
  /** Telemetry the runner sent through the device (accepted into its outbox). */
  accepted: number;
  /** Accepted ids that never reached a hub. */
  lost: string[];
  /** Ids that reached a hub more than once (allowed: at-least-once; counted). */
  duplicates: number;
  /** Everything that went wrong, each naming the path and the step. */
  failures: string[];
  /** The device's last log lines (keys and SAS tokens redacted by hubstate's logger) when something failed. */
  logTail: string[];
  /** The run's clock: 'simulated' with the time it skipped, or 'real'. */
  clock: { mode: 'real' | 'simulated'; skippedMs: number };
}

/** The 200 last lines are kept: enough to explain a step, bounded for a long path. */
const LOG_TAIL_LINES = 200;
const PROBE_INTERVAL_MS = 40;
/** How long a failed path's last messages may take to arrive before they are counted lost. */
const FAILED_PATH_DELIVERY_WAIT_MS = 5000;
/** A wait's timer may fire a millisecond or two early against the clock it was read on. */
const WAIT_SLACK_MS = 5;

/** Replays one path against the local cloud with the application's device; never throws for a failed check. */
export async function runFailoverPath(path: FailoverPath, options: RunFailoverOptions): Promise<FailoverReport> {
  const cloud = options.cloud ?? (await startLocalCloud({ hubs: 2, dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } }));
  const run = new PathRun(path, cloud, options);
  try {
    await run.replay();
  } catch (error) {
    run.fail(`${path.name}: ${(error as Error).message}`);
  } finally {
    await run.finish();
    if (!options.cloud) await cloud.stop();
  }
  return run.report();
}

let runsStarted = 0;

/** Something of the application's did not settle within the step timeout. */
class StepTimeoutError extends Error {
  override name = 'StepTimeoutError';
}

/** Enough of a hubstate Device for the runner (a factory may return anything). */
function isDevice(value: unknown): value is Device {
  const device = value as Partial<Device> | null | undefined;
  return typeof device === 'object' && device !== null && typeof device.on === 'function' && typeof device.state === 'function' && typeof device.start === 'function' && typeof device.sendTelemetry === 'function' && typeof device.stop === 'function' && typeof device.actor?.getSnapshot === 'function';
}

/**
 * The run's clock: the device's machine time (what its retryAt and connectedAt are on), with the
 * cloud's wall-clock stamps converted to it; or one the runner skips ahead.
 */
interface RunClock {
  now(): number;
  fromWall(wallAt: number): number;
  skipping?: SkipAheadClock;
}

const wallClock: RunClock = { now: () => monotonicNow(systemClock), fromWall: (wallAt) => wallAt - (systemClock.now() - monotonicNow(systemClock)) };

class PathRun {
  private readonly states: RecordedState[] = [];
  private readonly logLines: string[] = [];
  private readonly accepted: string[] = [];
  private readonly steps: StepReport[] = [];
  private readonly failures: string[] = [];
  private device: Device | undefined;
  private sending = false;
  private producer: Promise<void> = Promise.resolve();
  private readonly registrationId: string;
  private readonly clock: RunClock;
  /** Why the simulated clock's last skip was refused (null: it was not). */
  private blockedSkip: string | null = null;

  constructor(
    private readonly path: FailoverPath,
    private readonly cloud: LocalCloud,
    private readonly options: RunFailoverOptions,
  ) {
    // Unique in this process and across runs sharing a cloud: a path may be replayed twice.
    this.registrationId = `path-${path.seed}-${Date.now().toString(36)}-${++runsStarted}`;
    if (options.clock !== undefined && options.clock !== 'real' && options.clock !== 'simulated') throw new RangeError(`clock: 'real' or 'simulated', got ${String(options.clock)}`);
    if (options.clock === 'simulated') {
      const skipping = new SkipAheadClock();
      this.clock = { now: () => skipping.now(), fromWall: (wallAt) => skipping.fromWall(wallAt), skipping };
    } else this.clock = wallClock;
  }

  fail(message: string): void {
    this.failures.push(message);
  }

  async replay(): Promise<void> {
    const connection = await this.connection();
    // A device made after the factory timed out is nobody's: stop it.
    const device = await this.bounded('the device factory to return a device', () => this.options.device(connection), (late) => void (late as Device | undefined)?.stop?.().catch(() => undefined));
    if (!isDevice(device)) throw new Error(`the device factory returned ${device === null ? 'null' : typeof device}, not a hubstate Device (createDevice({ ...connection }))`);
    this.device = device;
    if (device.registrationId !== this.registrationId) {
      throw new Error(`the device's registration id is ${device.registrationId}, not the connection's ${this.registrationId}: spread the connection into createDevice's options (delivery is checked and faults are injected by it)`);
    }
    device.on('state', (change) => this.record(device, change));
    if (device.state() === 'Idle') device.start();
    await this.until('the device to connect', () => device.state() === 'Connected');
    this.startSending(device);
    const home = this.hubOf(device);
    // Where the device must be: home, or away after a failover; unknown after a custom move.
    let expected: 'home' | 'away' | 'unknown' = 'home';
    for (const [step, fault] of this.path.faults.entries()) {
      await this.untilConnectionStable(device);
      const report = await this.injectAndRecover(device, fault);
      if (fault === 'FAILOVER') expected = expected === 'unknown' ? expected : 'away';
      else if (fault === 'FAILBACK') expected = expected === 'unknown' ? expected : 'home';
      else if (this.options.customFaults?.[fault]?.movesHub) expected = 'unknown';
      if (expected !== 'unknown' && (report.hubAfter === home) !== (expected === 'home')) {
        report.failures.push(`on ${report.hubAfter}, expected ${expected === 'away' ? 'the failover hub' : `its home hub ${home}`}`);
      }
      await this.checkTelemetryContinues(report);
      await this.checkInvariants(device, fault, step, report);
      this.steps.push(report);
      for (const failure of report.failures) this.fail(`${this.path.name}, step ${step + 1} (${fault}): ${failure}`);
      if (report.failures.length > 0) return;
    }
  }

  /** Each state change on the run's clock; a BackingOff with its deadline and the failure's time. */
  private record(device: Device, change: StateChange): void {
    const entry: RecordedState = { ...change, at: this.clock.now() };
    if (change.value === 'BackingOff') {
      const { retryAt, lastError } = device.actor.getSnapshot().context;
      if (retryAt !== null) entry.retryAt = retryAt;
      if (lastError) entry.failedAt = lastError.at;
    }
    this.states.push(entry);
  }

  /**
   * Simulated clock: while the runner waits for something and the device only waits in
   * BackingOff (nothing in flight: the hub client is closed, DPS is not being asked), the clock
   * skips to the wait's deadline. Skips happen only between two checks of what the runner waits
   * for, so a fault that acts while the device backs off (a disabled device enabled again) acts
   * in that wait, as it would in real time.
   */
  private skipWhileWaiting(): void {
    const skipping = this.clock.skipping;
    const device = this.device;
    if (!skipping || !device || device.state() !== 'BackingOff') return;
    this.checkClockUsed(device, skipping);
    const { retryAt } = device.actor.getSnapshot().context;
    if (retryAt !== null && retryAt > skipping.now()) this.skipTo(skipping, retryAt, 'the end of the BackingOff wait');
  }

  /**
   * A device on the runner's clock has a timer on it whenever it waits (BackingOff, or a
   * connection not stable yet): none means the application's factory left connection.clock out.
   */
  private checkClockUsed(device: Device, skipping: SkipAheadClock): void {
    const { connectionStable } = device.actor.getSnapshot().context;
    const waiting = device.state() === 'BackingOff' || (device.state() === 'Connected' && !connectionStable);
    if (waiting && skipping.pendingTimers === 0) {
      throw new Error("clock 'simulated', but the device does not wait on the runner's clock (give createDevice the connection's clock)");
    }
  }

  private async connection(): Promise<DeviceConnection> {
    const identity =
      this.path.identity === 'x509'
        ? { x509: await this.cloud.issueDeviceCertificate(this.registrationId).then(({ cert, key }) => ({ cert, key })) }
        : { groupKey: this.cloud.groupKey };
    const policy = this.options.policy ?? { ...TEST_POLICY, ...(this.options.stableConnectionMs !== undefined ? { stableConnectionMs: this.options.stableConnectionMs } : {}) };
    return {
      idScope: this.cloud.idScope,
      registrationId: this.registrationId,
      provisioningHost: this.cloud.provisioningHost,
      ca: this.cloud.ca,
      dataDir: mkdtempSync(join(tmpdir(), 'hubstate-path-')),
      seed: this.path.seed,
      transport: this.path.transport ?? 'mqtt',
      keepaliveSeconds: 2,
      connectTimeoutMs: 5000,
      policy,
      ...(this.clock.skipping ? { clock: this.clock.skipping } : {}),
      logger: pino(
        { level: 'debug', redact: { paths: REDACTED_PATHS, censor: '[redacted]' } },
        new Writable({
          write: (chunk: Buffer, _encoding, done) => {
            this.logLines.push(chunk.toString().trimEnd());
            if (this.logLines.length > LOG_TAIL_LINES) this.logLines.splice(0, this.logLines.length - LOG_TAIL_LINES);
            done();
          },
        }),
      ),
      ...identity,
    };
  }

  /** The policy the device runs (its machine's), whatever the factory did with the connection's. */
  private policyOf(device: Device): PolicyCurve {
    return device.actor.getSnapshot().context.policy;
  }

  private async injectAndRecover(device: Device, fault: Fault | string): Promise<StepReport> {
    const mark = this.states.length;
    const hubBefore = this.hubOf(device);
    const since = () => this.states.slice(mark);
    const started = this.clock.now();
    const wallStarted = Date.now();
    const deviceId = device.assignment()!.deviceId;
    const hub = this.cloud.hub(hubBefore);
    const custom = this.options.customFaults?.[fault];
    const long = (LONG_FAULTS as readonly string[]).includes(fault) ? (fault as LongFault) : undefined;
    const longResult = { failures: [] as string[], notes: [] as string[] };
    if (custom) await this.bounded(`the custom fault ${fault} to be injected`, () => custom.inject({ device, cloud: this.cloud, deviceId, hub: hubBefore }));
    else if (long) {
      const result = await replayLongFault(long, {
        device,
        cloud: this.cloud,
        deviceId,
        hubName: hubBefore,
        policy: this.policyOf(device),
        ...(this.path.refusalCode !== undefined ? { refusalCode: this.path.refusalCode } : {}),
        now: () => this.clock.now(),
        fromWall: (wallAt) => this.clock.fromWall(wallAt),
        since,
        accepted: () => this.accepted,
        lostOf: (ids) => this.lostOf(ids),
        until: (what, condition, policyWaitMs) => this.until(what, condition, policyWaitMs),
        untilConnectionStable: () => this.untilConnectionStable(device),
      });
      longResult.failures.push(...result.failures);
      longResult.notes.push(...result.notes);
    } else
      switch (fault) {
        case 'DROP':
          hub.disconnect(deviceId);
          break;
        case 'CRASH':
          await hub.kill();
          await this.until('two failed reconnects', () => since().filter((s) => s.value === 'BackingOff').length >= 2, this.policyOf(device).maxDelayMs);
          await hub.restart();
          break;
        case 'FAILOVER':
          this.cloud.manualFailover(deviceId, { ttlMinutes: 60, ...(this.path.refusalCode ? { refusalCode: this.path.refusalCode } : {}) });
          break;
        case 'FAILBACK':
          this.cloud.manualFailback(deviceId);
          break;
        case 'USER_REPROVISION':
          device.reprovision();
          break;
        case 'THROTTLED_REPROVISION':
          this.cloud.dps.throttle({ retryAfterSec: 0.3, count: 1 });
          device.reprovision();
          break;
        default:
          throw new Error(`${fault}: no such fault (give it in customFaults)`);
      }
    // A long fault waited for its recovery (and a DPS outage leaves the device Connected throughout).
    if (long) await this.until(`Connected after ${fault}`, () => device.state() === 'Connected');
    else await this.until(`Connected again after ${fault}`, () => since().some((s) => s.value === 'Connected'), this.policyOf(device).maxDelayMs);
    const states = ['Connected', ...since().map((s) => s.value)];
    const leg = custom?.expectedLeg ?? EXPECTED_LEG[fault as Fault];
    const backoffs = since().filter((s) => s.value === 'BackingOff');
    // A short fault ends at its first Connected; a long one (a flapping hub connects again and again) at its last.
    const connectedStates = since().filter((s) => s.value === 'Connected');
    const recoveredAt = (long ? connectedStates.at(-1) : connectedStates[0])?.at ?? this.clock.now();
    const report: StepReport = {
      fault,
      states,
      expected: leg.source,
      hubBefore,
      hubAfter: this.hubOf(device),
      recoveryMs: Math.round(recoveredAt - started),
      wallMs: Date.now() - wallStarted,
      waits: backoffs.map((s) => Math.round(s.delayMs ?? NaN)),
      notes: longResult.notes,
      failures: [],
    };
    if (!leg.test(states.join(' '))) report.failures.push(`states ${states.join(' → ')}, expected /${report.expected}/`);
    report.failures.push(...longResult.failures, ...this.waitsHonoured(mark));
    const bound = this.options.recoveryBoundMs;
    if (bound !== undefined && report.recoveryMs > bound) report.failures.push(`recovered in ${report.recoveryMs} ms, over the bound of ${bound} ms`);
    const refusedAsMoved = fault === 'FAILOVER' || fault === 'FAILBACK';
    const moves = refusedAsMoved || custom?.movesHub === true;
    if (moves !== (report.hubAfter !== hubBefore)) report.failures.push(`${moves ? 'stayed on' : 'left'} ${hubBefore} (now ${report.hubAfter})`);
    if (refusedAsMoved) {
      const refusal = this.cloud.hub(hubBefore).refusals(deviceId).at(-1);
      if (refusal?.reason !== 'moved' || (this.path.refusalCode !== undefined && refusal.code !== this.path.refusalCode)) {
        report.failures.push(`the hub it left did not refuse it as moved with CONNACK ${this.path.refusalCode} (last refusal: ${JSON.stringify(refusal)})`);
      }
    }
    return report;
  }

  /**
   * Every wait of the step, on the run's clock: its deadline is the failure's time plus the delay
   * the device chose, and it did not end before the deadline (in the simulated mode: the skip
   * went to the deadline, no further than the next state).
   */
  private waitsHonoured(mark: number): string[] {
    const failures: string[] = [];
    for (let i = mark; i < this.states.length; i++) {
      const wait = this.states[i]!;
      if (wait.value !== 'BackingOff' || wait.retryAt === undefined) continue;
      if (wait.failedAt !== undefined && wait.delayMs !== undefined && Math.abs(wait.retryAt - (wait.failedAt + wait.delayMs)) > 1) {
        failures.push(`a wait's deadline is ${Math.round(wait.retryAt - wait.failedAt)} ms after its failure, the device chose ${Math.round(wait.delayMs)} ms`);
      }
      const next = this.states[i + 1];
      if (next && next.event !== 'REPROVISION' && next.at < wait.retryAt - WAIT_SLACK_MS) {
        failures.push(`left BackingOff ${Math.round(wait.retryAt - next.at)} ms before the wait's deadline (to ${next.value} on ${next.event})`);
      }
    }
    return failures;
  }

  private async checkTelemetryContinues(report: StepReport): Promise<void> {
    const after = this.accepted.length;
    try {
      await this.until('telemetry after the fault', () => this.accepted.length > after + 2 && this.lostOf(this.accepted.slice(after)).length === 0);
    } catch (error) {
      report.failures.push(`${(error as Error).message}; missing: ${this.lostOf(this.accepted.slice(after)).slice(0, 10).join(', ')}`);
    }
  }

  private async checkInvariants(device: Device, fault: Fault | string, step: number, report: StepReport): Promise<void> {
    for (const invariant of this.options.invariants ?? []) {
      let verdict: boolean | string;
      try {
        verdict = await this.bounded(`the invariant '${invariant.name}'`, () => invariant.check({ device, cloud: this.cloud, fault, step }));
      } catch (error) {
        verdict = error instanceof StepTimeoutError ? error.message : `threw ${(error as Error).message}`;
      }
      if (verdict !== true) report.failures.push(`invariant '${invariant.name}': ${verdict === false ? 'does not hold' : verdict}`);
    }
  }

  /** Stops the probe, waits for every accepted message (or the step timeout), stops the device. */
  async finish(): Promise<void> {
    this.sending = false;
    await this.producer.catch((error: unknown) => this.fail(`${this.path.name}: sending telemetry failed: ${(error as Error).message}`));
    // Messages still in flight are not lost yet: wait for them (briefly on a path that already
    // failed, whose device may never deliver them).
    if (this.device) {
      const failedAlready = this.failures.length > 0;
      await this.until('every message delivered', () => this.lostOf(this.accepted).length === 0, 0, undefined, failedAlready ? FAILED_PATH_DELIVERY_WAIT_MS : undefined).catch(() => undefined);
    }
    const device = this.device;
    if (device) await this.bounded('the device to stop', () => device.stop()).catch((error: unknown) => this.fail(`${this.path.name}: ${(error as Error).message}`));
  }

  /** The step timeout (wall time). */
  private get stepTimeoutMs(): number {
    return this.options.stepTimeoutMs ?? 30_000;
  }

  /**
   * The application's code (its factory, invariants, custom faults) and the device's stop, bounded
   * by the step timeout: one that never settles fails the path instead of hanging the run.
   * `late` gets what it resolves to after the timeout.
   */
  private async bounded<T>(what: string, work: () => T | Promise<T>, late?: (value: T) => void): Promise<T> {
    const timeoutMs = this.stepTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    const working = Promise.resolve().then(work);
    if (late) void working.then((value) => timedOut && late(value), () => undefined);
    try {
      return await Promise.race([
        working,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            timedOut = true;
            reject(new StepTimeoutError(`timed out after ${timeoutMs} ms waiting for ${what}`));
          }, timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  report(): FailoverReport {
    const { lost, duplicates } = deliveryReport(this.cloud, this.accepted, { deviceId: this.registrationId });
    if (lost.length > 0) this.fail(`${this.path.name}: ${lost.length} of ${this.accepted.length} accepted messages never arrived (first: ${lost.slice(0, 5).join(', ')})`);
    const ok = this.failures.length === 0;
    return {
      path: this.path.name,
      registrationId: this.registrationId,
      ok,
      steps: this.steps,
      accepted: this.accepted.length,
      lost,
      duplicates,
      failures: this.failures,
      logTail: ok ? [] : [...this.logLines],
      clock: { mode: this.clock.skipping ? 'simulated' : 'real', skippedMs: Math.round(this.clock.skipping?.skippedMs ?? 0) },
    };
  }

  private startSending(device: Device): void {
    this.sending = true;
    this.producer = (async () => {
      for (let n = 0; this.sending; n++) {
        const { messageId } = await device.sendTelemetry({ hubstateProbe: n });
        this.accepted.push(messageId);
        await new Promise((resolve) => setTimeout(resolve, PROBE_INTERVAL_MS));
      }
    })();
  }

  /**
   * Until the current connection has lasted the device's stableConnectionMs (its counters reset):
   * the simulated clock skips there as soon as nothing the session does would time out on the way
   * (the twin request after a connect has its deadline on the clock).
   */
  private async untilConnectionStable(device: Device): Promise<void> {
    const context = () => device.actor.getSnapshot().context;
    const skipping = this.clock.skipping;
    const skipToStable = () => {
      const { connectedAt } = context();
      if (!skipping || device.state() !== 'Connected' || connectedAt === null) return;
      this.checkClockUsed(device, skipping);
      this.skipTo(skipping, connectedAt + this.policyOf(device).stableConnectionMs, 'the end of the stable-connection wait');
    };
    await this.until('the connection to last', () => device.state() !== 'Connected' || context().connectionStable, this.policyOf(device).stableConnectionMs, skipToStable);
    if (device.state() !== 'Connected') throw new Error(`left Connected before the fault (now ${device.state()})`);
  }

  /** A skip; one refused is remembered, to explain a timeout it causes. */
  private skipTo(skipping: SkipAheadClock, time: number, what: string): void {
    const from = skipping.now();
    const blockedBy = skipping.nextDeadline();
    if (skipping.skipToIfIdle(time)) this.blockedSkip = null;
    else this.blockedSkip = `the simulated clock could not skip to ${what} (+${Math.round(time - from)} ms): a timer on it is due sooner (+${Math.round(blockedBy - from)} ms) and may be an operation's deadline — a timer of the device that recurs more often than the wait (e.g. resilience.intervalMs shorter than stableConnectionMs) keeps the clock at wall speed`;
  }

  private hubOf(device: Device): string {
    const host = device.assignment()?.hubHost;
    const hub = this.cloud.hubs.find((h) => h.host === host);
    if (!hub) throw new Error(`not on a hub of this cloud (${host ?? 'no assignment'})`);
    return hub.name;
  }

  private lostOf(ids: readonly string[]): string[] {
    return deliveryReport(this.cloud, ids, { deviceId: this.registrationId }).lost;
  }

  /**
   * Polls without racing: resolves as soon as the condition holds, throws after the step timeout
   * (wall time) plus `policyWaitMs`, the waits the device's policy may spend first (none when the
   * clock skips them). Between two checks the simulated clock skips a wait (and `skip` more).
   */
  private async until(what: string, condition: () => boolean, policyWaitMs = 0, skip?: () => void, stepTimeoutMs = this.stepTimeoutMs): Promise<void> {
    const timeoutMs = stepTimeoutMs + (this.clock.skipping ? 0 : policyWaitMs);
    const deadline = Date.now() + timeoutMs;
    this.blockedSkip = null;
    while (!condition()) {
      if (Date.now() > deadline) {
        const blocked = this.blockedSkip === null ? '' : `; ${this.blockedSkip}`;
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (states so far: ${this.states.map((s) => s.value).join(' → ')})${blocked}`);
      }
      this.skipWhileWaiting();
      skip?.();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}
