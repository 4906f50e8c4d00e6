/**
 * The chaos soak: a local cloud, N real devices (createDevice, the unmodified Azure SDK, TLS)
 * sending telemetry, a seeded fault schedule drawn from the cloud's whole fault list, then all
 * faults cleared and a quiet period; invariants checked at the end and written to a JSON report.
 *
 * Everything a device logs (pino, debug level), every state snapshot and every error message is
 * scanned for secrets as it is produced (see secrets.ts). Only counters and compact per-device
 * timelines are kept, so memory stays flat and the RSS measurement means something.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BackoffAudit } from './backoff-audit';
import { rssVerdict } from './bounds';
import { startSoakCloud, type SoakCloud } from './cloud';
import { auditCloudGaps, fetchCloudHistories } from './cloud-gap';
import { traceDebugIntoScanner, type DebugTrace } from './debug-trace';
import { FaultRunner } from './faults';
import { Fleet, queuedIn, soakRegistrationIds, type EndState } from './fleet';
import { checkInvariants, type PhaseTimes } from './invariants';
import { DeliveryLedger } from './ledger';
import { auditLongFaults } from './long-fault-audit';
import { planSoak, type SoakOptions, type SoakPlan } from './options';
import { ProcessWatch } from './process-watch';
import { auditRecovery } from './recovery';
import { buildReport, LATE_DEVICES_DETAILED, NOTHING_SCANNED, writeReport, type RunMeasurements, type SoakReport } from './report';
import { RssSampler } from './rss';
import { describeFault } from './schedule';
import { SecretScanner } from './secrets';
import { RunTimers, sleep } from './timing';

// Where test/e2e/client-lifetime.test.ts has always found it.
export { exposeGc } from './rss';

/** Runs one soak. Never throws for a failed invariant: read `report.ok`. */
export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const run = new SoakRun(planSoak(options));
  try {
    await run.startCloudAndFleet();
    await run.boot();
    await run.faultPhase();
    await run.quietPhase();
    await run.drainPhase();
  } catch (error) {
    run.fail(error as Error);
  } finally {
    await run.stopDevices();
  }
  await run.finalizeDeliveries();
  const audits = await run.audit();
  await run.closeCloud();
  const report = run.report(audits);
  if (run.plan.reportPath) writeReport(run.plan.reportPath, report);
  return report;
}

const CLOUD_SYNC_INTERVAL_MS = 250;
const PROGRESS_INTERVAL_MS = 10_000;

/** One run's state, phase by phase. A phase that throws ends the run; what was measured is still reported. */
class SoakRun {
  readonly startedAt = Date.now();
  private readonly watch = new ProcessWatch(this.startedAt);
  private readonly timers = new RunTimers();
  private readonly ledger = new DeliveryLedger();
  private readonly backoffAudit: BackoffAudit;
  private readonly faults: FaultRunner;
  private readonly rss: RssSampler;
  private readonly dataDir: string | undefined;
  private bootMs = 0;
  private quietEnd = 0;
  private drainMs = 0;
  private cloud: SoakCloud | undefined;
  private scanner: SecretScanner | undefined;
  private debugTrace: DebugTrace | undefined;
  private fleet: Fleet | undefined;
  private progress: NodeJS.Timeout | undefined;
  /** State of each device at the end of the run (after the drain). */
  private endStates: EndState[] = [];
  private runError: string | undefined;

  constructor(readonly plan: SoakPlan) {
    const { options, schedule, log } = plan;
    log(`seed ${String(options.seed)}; schedule ${plan.digest}: ${schedule.length} faults over ${options.durationMs / 1000} s`);
    for (const f of schedule) log(`  ${describeFault(f)}`);
    this.watch.attach();
    this.backoffAudit = new BackoffAudit(plan.policy, plan.backoffMax);
    this.faults = new FaultRunner({
      schedule,
      registrationIds: soakRegistrationIds(options.devices),
      reprovision: (index) => this.fleet?.reprovision(index),
      timers: this.timers,
      log,
    });
    this.dataDir = options.dataDir === undefined ? undefined : mkdtempSync(join(options.dataDir, 'hubstate-soak-'));
    this.rss = new RssSampler(options.forceGc !== false, () => this.fleet?.queuedMessages() ?? 0);
  }

  /** The cloud, the secret scanner over its keys, RSS sampling, and the devices (not started). */
  async startCloudAndFleet(): Promise<void> {
    const { plan } = this;
    const cloud = await startSoakCloud({
      hubs: plan.hubs,
      seed: `soak-${String(plan.options.seed)}`,
      mode: plan.options.cloudProcess ?? 'in-process',
      ...(plan.options.cloudExecArgv ? { execArgv: plan.options.cloudExecArgv } : {}),
    });
    this.cloud = cloud;
    cloud.events.on('telemetry', (id: string) => this.ledger.arrive(id));
    this.timers.interval(() => void this.ledger.sync(() => cloud.commands.sync()).catch(() => undefined), CLOUD_SYNC_INTERVAL_MS);

    const scanner = new SecretScanner([
      { kind: 'group key', label: 'group key', value: cloud.info.groupKey },
      ...soakRegistrationIds(plan.options.devices).map((id) => ({ kind: 'device key', label: `device key of ${id}`, value: cloud.deviceKey(id) })),
    ]);
    this.scanner = scanner;
    this.watch.scanner = scanner;
    if (plan.options.traceDebug) this.debugTrace = traceDebugIntoScanner(scanner);

    this.rss.sample();
    this.timers.interval(() => this.rss.sample(), plan.rssSampleMs);
    this.fleet = new Fleet({ plan, cloud, scanner, ledger: this.ledger, backoffAudit: this.backoffAudit, dataDir: this.dataDir, startedAt: this.startedAt });
  }

  /** The cloud and the fleet, for the phases after startCloudAndFleet. */
  private started(): { cloud: SoakCloud; fleet: Fleet } {
    if (!this.cloud || !this.fleet) throw new Error('soak: a phase ran before the cloud and the fleet were started');
    return { cloud: this.cloud, fleet: this.fleet };
  }

  /** Every device Connected, then telemetry from all of them. */
  async boot(): Promise<void> {
    const { fleet } = this.started();
    this.bootMs = await fleet.boot();
    fleet.startTelemetry(this.timers);
  }

  async faultPhase(): Promise<void> {
    const { plan, ledger } = this;
    const { cloud, fleet } = this.started();
    this.progress = this.timers.interval(() => {
      plan.log(
        `+${((Date.now() - this.faults.phaseStart) / 1000).toFixed(0)} s: ${fleet.connectedCount()}/${fleet.tracks.length} connected, ` +
          `${fleet.queuedMessages()} queued, ${ledger.accepted} accepted, ${ledger.acknowledged} acknowledged, rss ${this.rss.latestRssMb()} MB`,
      );
    }, PROGRESS_INTERVAL_MS);
    await this.faults.run(cloud.commands, plan.options.durationMs);
    plan.log(`faults cleared at +${((this.faults.clearAt - this.faults.phaseStart) / 1000).toFixed(1)} s; quiet for ${plan.quietMs / 1000} s (recovery bound ${plan.recovery.valueMs} ms)`);
  }

  /** The quiet period; then producers stop and only the progress line keeps running. */
  async quietPhase(): Promise<void> {
    const { fleet } = this.started();
    await fleet.quiet(2 * this.plan.backoffMax.valueMs);
    this.quietEnd = Date.now();
    fleet.stopTelemetry();
    this.timers.clearIntervals(this.progress);
    this.timers.clearTimeouts();
    this.rss.sample();
  }

  async drainPhase(): Promise<void> {
    const { fleet } = this.started();
    this.drainMs = await fleet.drain();
    // Judged after the drain: a device that reconnects late (even during the drain) is late.
    this.endStates = fleet.endStates();
    if (this.progress) this.timers.clearInterval(this.progress);
  }

  fail(error: Error): void {
    this.runError = error.message;
    this.scanner?.scan(`${error.message}\n${error.stack ?? ''}`, 'error');
  }

  async stopDevices(): Promise<void> {
    this.timers.clearAll();
    await this.fleet?.stop(this.watch.onException);
    this.debugTrace?.stop();
  }

  /** Every delivery reported so far becomes final once the cloud's events before it are in. */
  async finalizeDeliveries(): Promise<void> {
    const cloud = this.cloud;
    try {
      await this.ledger.syncInProgress();
      await this.ledger.sync(cloud ? () => cloud.commands.sync() : undefined);
    } catch (error) {
      this.runError ??= `cloud sync: ${(error as Error).message}`;
    }
  }

  private phaseTimes(): PhaseTimes {
    return { bootMs: this.bootMs, phaseStart: this.faults.phaseStart, clearAt: this.faults.clearAt, quietEnd: this.quietEnd, drainMs: this.drainMs };
  }

  /** Everything measured, taken while the cloud is still up (its records, late devices' identities). */
  async audit(): Promise<RunMeasurements> {
    const { plan, cloud } = this;
    const phases = this.phaseTimes();
    const tracks = this.fleet?.tracks ?? [];
    const histories = await fetchCloudHistories(cloud, tracks, (message) => (this.runError ??= message));
    const cloudGaps = auditCloudGaps({ tracks, histories, policy: plan.policy, rateBound: plan.rateBound, backoffMax: plan.backoffMax, startedAt: this.startedAt });
    const longFaults = auditLongFaults({
      schedule: plan.schedule,
      tracks,
      histories,
      windowOf: (f) => this.faults.window(f),
      clearAt: this.faults.clearAt,
      policy: plan.policy,
      minRetryAfterMs: plan.minRetryAfterMs,
      backoffMax: plan.backoffMax,
      reconnectBoundMs: plan.reconnectBoundMs,
    });
    const stillQueued = tracks.reduce((n, t) => n + (queuedIn(t.device) ?? 0), 0);
    const telemetry = this.ledger.figures(stillQueued);
    const recovery = auditRecovery(tracks, this.endStates, phases.clearAt, plan.recovery);
    const rss = rssVerdict(this.rss.samples.filter((s) => phases.quietEnd === 0 || s.at <= phases.quietEnd), plan.rssTolerance);
    const security = this.scanner?.report() ?? NOTHING_SCANNED;
    // What the cloud holds for a late device: its DPS registration and its identity on each hub.
    const lateIdentities = new Map<string, unknown>();
    for (const t of recovery.lateTracks.slice(0, LATE_DEVICES_DETAILED)) {
      try {
        lateIdentities.set(t.registrationId, await cloud?.commands.identity(t.registrationId));
      } catch (error) {
        lateIdentities.set(t.registrationId, `unavailable: ${(error as Error).message}`);
      }
    }
    let cloudMetrics: RunMeasurements['cloudMetrics'];
    try {
      cloudMetrics = await cloud?.commands.metrics();
    } catch (error) {
      this.runError ??= `cloud metrics: ${(error as Error).message}`;
    }
    return { telemetry, rss, security, cloudGaps, histories, longFaults, recovery, lateIdentities, cloudMetrics };
  }

  async closeCloud(): Promise<void> {
    try {
      await this.cloud?.stop();
    } catch (error) {
      this.watch.onException(error as Error);
    }
    // Let late socket callbacks surface while the listeners are still attached.
    await sleep(200);
    this.watch.detach();
    if (this.dataDir) rmSync(this.dataDir, { recursive: true, force: true });
  }

  report(measured: RunMeasurements): SoakReport {
    const phases = this.phaseTimes();
    const { longFaults } = measured;
    const invariants = checkInvariants({
      plan: this.plan,
      runError: this.runError,
      phases,
      telemetry: measured.telemetry,
      recovery: measured.recovery,
      backoff: this.backoffAudit,
      cloudGaps: measured.cloudGaps,
      flap: longFaults.flap,
      disabled: longFaults.disabled,
      reconnect: longFaults.reconnect,
      process: this.watch,
      rss: measured.rss,
      forcedGc: this.rss.forcedGc,
      security: measured.security,
      debugTrace: this.debugTrace,
    });
    return buildReport({
      plan: this.plan,
      startedAt: this.startedAt,
      phases,
      invariants,
      measured,
      backoff: this.backoffAudit.figures(),
      tracks: this.fleet?.tracks ?? [],
      transitions: this.fleet?.transitions ?? {},
      cloudMode: this.cloud?.mode,
      faults: this.faults.outcomes,
      debugTrace: this.debugTrace,
      rss: this.rss,
      process: this.watch,
      runError: this.runError,
    });
  }
}
