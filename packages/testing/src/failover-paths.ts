/**
 * Model-based failover tests of a device application built on hubstate: the paths come from the
 * fault model (fault-model.ts, via xstate/graph), and `runFailoverPath` replays one against the
 * local cloud (hubstate-cloud) with the application's own device: it injects each fault, then
 * checks the states the device went through, the hub it ended on, that telemetry continues and
 * that every message it accepted arrived (by id), and the application's own invariants. A failure
 * does not throw: the report names the path, the step, what was expected and what happened, the
 * missing messages and the device's last log lines.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { Device, DeviceOptions, StateChange } from 'hubstate';
import { REDACTED_PATHS } from 'hubstate/internal';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import pino from 'pino';
import { deliveryReport } from './delivery';
import { EXPECTED_LEG, generateFaultSequences, LONG_FAULTS, REFUSING_FAULTS, type Fault, type LongFault, type RefusalCode } from './fault-model';

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
}

/** Every path of the fault model, once per refusal code where a hub refuses, and with X.509 if asked. */
export function generateFailoverPaths(options: FailoverPathOptions = {}): FailoverPath[] {
  const codes = options.refusalCodes ?? [3, 5];
  if (codes.length === 0 || codes.some((code) => code !== 3 && code !== 5)) throw new RangeError('refusalCodes: 3 and/or 5');
  const runs = generateFaultSequences(options.depth ?? 2, options.customFaults ?? []).flatMap((faults): Array<Omit<FailoverPath, 'seed'>> => {
    const name = faults.join(' → ');
    if (!faults.some((f) => (REFUSING_FAULTS as readonly string[]).includes(f))) return [{ name, faults, identity: 'sas' as const }];
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
 * What the application's device needs to connect to the local cloud: spread it into
 * `createDevice` options (it also carries a seeded, test-paced policy and a capturing logger).
 */
export type DeviceConnection = Pick<
  DeviceOptions,
  'idScope' | 'registrationId' | 'provisioningHost' | 'ca' | 'dataDir' | 'seed' | 'policy' | 'logger' | 'keepaliveSeconds' | 'connectTimeoutMs' | 'transport'
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
  /** How long a connection must last before the next fault (the policy's stableConnectionMs; default 500). */
  stableConnectionMs?: number;
  /** Per step: the fault's recovery, and the telemetry after it (default 30 s). */
  stepTimeoutMs?: number;
  /** A step whose recovery (fault injected → Connected again) takes longer fails (default: only reported). */
  recoveryBoundMs?: number;
}

export interface StepReport {
  fault: Fault | string;
  /** The states from Connected back to Connected. */
  states: string[];
  expected: string;
  hubBefore: string;
  hubAfter: string;
  /** Fault injected → Connected again. */
  recoveryMs: number;
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
}

/** The 200 last lines are kept: enough to explain a step, bounded for a long path. */
const LOG_TAIL_LINES = 200;
const PROBE_INTERVAL_MS = 40;

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

class PathRun {
  private readonly states: Array<StateChange & { at: number }> = [];
  private readonly logLines: string[] = [];
  private readonly accepted: string[] = [];
  private readonly steps: StepReport[] = [];
  private readonly failures: string[] = [];
  private device: Device | undefined;
  private sending = false;
  private producer: Promise<void> = Promise.resolve();
  private readonly registrationId: string;

  constructor(
    private readonly path: FailoverPath,
    private readonly cloud: LocalCloud,
    private readonly options: RunFailoverOptions,
  ) {
    // Unique in this process and across runs sharing a cloud: a path may be replayed twice.
    this.registrationId = `path-${path.seed}-${Date.now().toString(36)}-${++runsStarted}`;
  }

  fail(message: string): void {
    this.failures.push(message);
  }

  async replay(): Promise<void> {
    const device = await this.options.device(await this.connection());
    this.device = device;
    device.on('state', (change) => this.states.push({ ...change, at: Date.now() }));
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

  private async connection(): Promise<DeviceConnection> {
    const identity =
      this.path.identity === 'x509'
        ? { x509: await this.cloud.issueDeviceCertificate(this.registrationId).then(({ cert, key }) => ({ cert, key })) }
        : { groupKey: this.cloud.groupKey };
    const stableConnectionMs = this.options.stableConnectionMs ?? 500;
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
      // Faults seconds apart: the retries of a test, not of a fleet (the curve from 0.2 s).
      policy: { stableConnectionMs, firstRetryMaxMs: 300, minDelayMs: 200, retryAfterJitterMs: 200 },
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

  private async injectAndRecover(device: Device, fault: Fault | string): Promise<StepReport> {
    const mark = this.states.length;
    const hubBefore = this.hubOf(device);
    const since = () => this.states.slice(mark);
    const started = Date.now();
    const deviceId = device.assignment()!.deviceId;
    const hub = this.cloud.hub(hubBefore);
    const custom = this.options.customFaults?.[fault];
    if (custom) await custom.inject({ device, cloud: this.cloud, deviceId, hub: hubBefore });
    else switch (fault) {
      case 'DROP':
        hub.disconnect(deviceId);
        break;
      case 'CRASH':
        await hub.kill();
        await this.until('two failed reconnects', () => since().filter((s) => s.value === 'BackingOff').length >= 2);
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
        throw new Error(`${fault}: ${LONG_FAULTS.includes(fault as LongFault) ? 'a long fault (the runner replays short faults only)' : 'no such fault (give it in customFaults)'}`);
    }
    await this.until(`Connected again after ${fault}`, () => since().some((s) => s.value === 'Connected'));
    const states = ['Connected', ...since().map((s) => s.value)];
    const leg = custom?.expectedLeg ?? EXPECTED_LEG[fault as Fault];
    const report: StepReport = {
      fault,
      states,
      expected: leg.source,
      hubBefore,
      hubAfter: this.hubOf(device),
      recoveryMs: Date.now() - started,
      failures: [],
    };
    if (!leg.test(states.join(' '))) report.failures.push(`states ${states.join(' → ')}, expected /${report.expected}/`);
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
        verdict = await invariant.check({ device, cloud: this.cloud, fault, step });
      } catch (error) {
        verdict = `threw ${(error as Error).message}`;
      }
      if (verdict !== true) report.failures.push(`invariant '${invariant.name}': ${verdict === false ? 'does not hold' : verdict}`);
    }
  }

  /** Stops the probe, waits for every accepted message (or the step timeout), stops the device. */
  async finish(): Promise<void> {
    this.sending = false;
    await this.producer.catch((error: unknown) => this.fail(`${this.path.name}: sending telemetry failed: ${(error as Error).message}`));
    if (this.device && this.failures.length === 0) {
      await this.until('every message delivered', () => this.lostOf(this.accepted).length === 0).catch(() => undefined);
    }
    await this.device?.stop();
  }

  report(): FailoverReport {
    const lost = this.lostOf(this.accepted);
    if (lost.length > 0) this.fail(`${this.path.name}: ${lost.length} of ${this.accepted.length} accepted messages never arrived (first: ${lost.slice(0, 5).join(', ')})`);
    const ok = this.failures.length === 0;
    return {
      path: this.path.name,
      registrationId: this.registrationId,
      ok,
      steps: this.steps,
      accepted: this.accepted.length,
      lost,
      duplicates: this.duplicatesOf(this.accepted),
      failures: this.failures,
      logTail: ok ? [] : [...this.logLines],
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

  private async untilConnectionStable(device: Device): Promise<void> {
    const connectedAt = [...this.states].reverse().find((s) => s.value === 'Connected')?.at ?? Date.now();
    const stableMs = (this.options.stableConnectionMs ?? 500) + 200;
    await this.until('the connection to last', () => Date.now() >= connectedAt + stableMs);
    if (device.state() !== 'Connected') throw new Error(`left Connected before the fault (now ${device.state()})`);
  }

  private hubOf(device: Device): string {
    const host = device.assignment()?.hubHost;
    const hub = this.cloud.hubs.find((h) => h.host === host);
    if (!hub) throw new Error(`not on a hub of this cloud (${host ?? 'no assignment'})`);
    return hub.name;
  }

  private lostOf(ids: string[]): string[] {
    return deliveryReport(this.cloud, ids, { deviceId: this.registrationId }).lost;
  }

  private duplicatesOf(ids: string[]): number {
    return deliveryReport(this.cloud, ids, { deviceId: this.registrationId }).duplicates;
  }

  /** Polls without racing: resolves as soon as the condition holds, throws after the step timeout. */
  private async until(what: string, condition: () => boolean): Promise<void> {
    const timeoutMs = this.options.stepTimeoutMs ?? 30_000;
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (states so far: ${this.states.map((s) => s.value).join(' → ')})`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}
