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
import { disabledDpsBound, percentile, rssVerdict, type RssVerdict } from './bounds';
import { startSoakCloud, type SoakCloud } from './cloud';
import { auditCloudGaps, dpsLoad, fetchCloudHistories, type CloudGapAudit, type CloudHistory } from './cloud-gap';
import { traceDebugIntoScanner, type DebugTrace } from './debug-trace';
import { FaultRunner } from './faults';
import { Fleet, queuedIn, soakRegistrationIds, type EndState } from './fleet';
import { checkInvariants, type InvariantFacts, type PhaseTimes } from './invariants';
import { DeliveryLedger, type TelemetryFigures } from './ledger';
import { auditLongFaults } from './long-fault-audit';
import { planSoak, reportedOptions, type SoakOptions, type SoakPlan } from './options';
import { ProcessWatch } from './process-watch';
import { auditRecovery, type RecoveryAudit } from './recovery';
import { NOTHING_SCANNED, writeReport, type SoakReport } from './report';
import { RssSampler } from './rss';
import { describeFault, faultsByKind } from './schedule';
import { SecretScanner, type ScanReport } from './secrets';
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
/** Late devices whose cloud identity and timeline the report keeps. */
const LATE_DEVICES_DETAILED = 10;

/** What the audits after the run found, for the invariants and the report's figures. */
interface RunAudits {
  telemetry: TelemetryFigures;
  rss: RssVerdict;
  security: ScanReport;
  cloudGaps: CloudGapAudit;
  histories: Map<string, CloudHistory>;
  longFaults: ReturnType<typeof auditLongFaults>;
  recovery: RecoveryAudit;
  lateIdentities: Map<string, unknown>;
  cloudMetrics: Awaited<ReturnType<SoakCloud['commands']['metrics']>> | undefined;
}

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

  /** Every device Connected, then telemetry from all of them. */
  async boot(): Promise<void> {
    const fleet = this.fleet!;
    this.bootMs = await fleet.boot();
    fleet.startTelemetry(this.timers);
  }

  async faultPhase(): Promise<void> {
    const { plan, fleet, ledger } = this;
    this.progress = this.timers.interval(() => {
      plan.log(
        `+${((Date.now() - this.faults.phaseStart) / 1000).toFixed(0)} s: ${fleet!.connectedCount()}/${fleet!.tracks.length} connected, ` +
          `${fleet!.queuedMessages()} queued, ${ledger.accepted} accepted, ${ledger.acknowledged} acknowledged, rss ${this.rss.latestRssMb()} MB`,
      );
    }, PROGRESS_INTERVAL_MS);
    await this.faults.run(this.cloud!.commands, plan.options.durationMs);
    plan.log(`faults cleared at +${((this.faults.clearAt - this.faults.phaseStart) / 1000).toFixed(1)} s; quiet for ${plan.quietMs / 1000} s (recovery bound ${plan.recovery.valueMs} ms)`);
  }

  /** The quiet period; then producers stop and only the progress line keeps running. */
  async quietPhase(): Promise<void> {
    await this.fleet!.quiet(2 * this.plan.backoffMax.valueMs);
    this.quietEnd = Date.now();
    this.fleet!.stopTelemetry();
    this.timers.clearIntervals(this.progress);
    this.timers.clearTimeouts();
    this.rss.sample();
  }

  async drainPhase(): Promise<void> {
    this.drainMs = await this.fleet!.drain();
    // Judged after the drain: a device that reconnects late (even during the drain) is late.
    this.endStates = this.fleet!.endStates();
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
  async audit(): Promise<RunAudits> {
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
    let cloudMetrics: RunAudits['cloudMetrics'];
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

  report(audits: RunAudits): SoakReport {
    const { plan, startedAt, cloud, watch, debugTrace } = this;
    const phases = this.phaseTimes();
    const tracks = this.fleet?.tracks ?? [];
    const { telemetry, rss, security } = audits;
    const { flap, disabled, reconnect } = audits.longFaults;
    const { recovery, cloudGaps: gaps, cloudMetrics } = audits;
    const facts: InvariantFacts = {
      plan,
      runError: this.runError,
      phases,
      telemetry,
      recovery,
      backoff: this.backoffAudit,
      cloudGaps: gaps,
      flap,
      disabled,
      reconnect,
      process: watch,
      rss,
      forcedGc: this.rss.forcedGc,
      security,
      debugTrace,
    };
    const invariants = checkInvariants(facts);
    const reconnectTimes = reconnect.times.filter(Number.isFinite);
    return {
      ok: invariants.every((i) => i.ok),
      seed: plan.options.seed,
      reproduce: plan.reproduce,
      startedAt: new Date(startedAt).toISOString(),
      options: reportedOptions(plan),
      policy: plan.policy,
      schedule: { digest: plan.digest, faults: plan.schedule.length, byKind: faultsByKind(plan.schedule), list: plan.schedule.map(describeFault) },
      timeline: {
        bootMs: phases.bootMs,
        faultPhaseMs: phases.clearAt && phases.phaseStart ? phases.clearAt - phases.phaseStart : 0,
        quietMs: phases.quietEnd && phases.clearAt ? phases.quietEnd - phases.clearAt : 0,
        drainMs: phases.drainMs,
        totalMs: Date.now() - startedAt,
      },
      invariants,
      figures: {
        telemetry,
        recovery: {
          boundMs: plan.recovery.valueMs,
          maxMs: Number.isFinite(recovery.maxMs) ? recovery.maxMs : null,
          p50Ms: recovery.p50Ms,
          p95Ms: recovery.p95Ms,
          late: recovery.late,
          notConnectedAtEnd: recovery.notConnectedAtEnd,
        },
        backoff: this.backoffAudit.figures(),
        cloudGaps: { dpsChecked: gaps.dpsChecked, dpsExempt: gaps.dpsExempt, dpsViolations: gaps.dpsViolations, hubChecked: gaps.hubChecked, hubExempt: gaps.hubExempt, hubViolations: gaps.hubViolations },
        attemptRate: { bound: plan.rateBound, device: gaps.deviceRate, cloud: gaps.cloudRate },
        flap: { ...flap, violations: flap.violations },
        disabled: { ...disabled, bound: disabledDpsBound(plan.policy, plan.minRetryAfterMs, 60_000).formula + ' (per minute disabled)' },
        reconnect: {
          checked: reconnect.checked,
          exempt: reconnect.exempt,
          exemptBy: reconnect.exemptBy,
          maxMs: Number.isFinite(reconnect.maxMs) ? reconnect.maxMs : null,
          p95Ms: percentile(reconnectTimes, 95),
          worst: reconnect.worst,
          boundMs: plan.reconnectBoundMs,
          violations: reconnect.violations,
        },
        dpsLoad: dpsLoad(audits.histories, tracks.length, { from: phases.phaseStart, to: phases.quietEnd || Infinity }, (phases.quietEnd || Date.now()) - (phases.phaseStart || startedAt)),
        shortSessions: tracks.reduce((n, t) => n + t.shortSessions, 0),
        transitions: this.fleet?.transitions ?? {},
        lateDeviceTimelines: Object.fromEntries(
          recovery.lateTracks
            .slice(0, LATE_DEVICES_DETAILED)
            .map((t) => [t.registrationId, { state: t.state, outbox: queuedIn(t.device), hub: t.device.assignment()?.hubHost ?? null, identity: audits.lateIdentities.get(t.registrationId) ?? null, recent: t.recent }]),
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
      faults: this.faults.outcomes,
      security: debugTrace ? { ...security, debugTrace: debugTrace.counts() } : security,
      rss: { ...rss, forcedGc: this.rss.forcedGc, series: this.rss.series(startedAt) },
      process: { unhandledRejections: watch.unhandledRejections, uncaughtExceptions: watch.uncaughtExceptions, warnings: watch.warnings },
      ...(this.runError !== undefined ? { runError: this.runError } : {}),
    };
  }
}
