/** The soak's JSON report: its shape, how it is assembled from what the run measured, and writing it. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { RetryPolicy } from 'hubstate';
import type { BackoffFigures } from './backoff-audit';
import { disabledDpsBound, percentile, type RssVerdict } from './bounds';
import type { SoakCloud } from './cloud';
import { dpsLoad, type CloudGapAudit, type CloudHistory } from './cloud-gap';
import type { DebugTrace } from './debug-trace';
import type { FaultOutcome } from './faults';
import { queuedIn, type Track } from './fleet';
import type { InvariantResult, PhaseTimes } from './invariants';
import type { TelemetryFigures } from './ledger';
import type { auditLongFaults } from './long-fault-audit';
import { reportedOptions, type SoakPlan } from './options';
import type { ProcessWatch } from './process-watch';
import type { RecoveryAudit } from './recovery';
import type { RssSampler } from './rss';
import { describeFault, faultsByKind, type FaultKind } from './schedule';
import type { ScanReport } from './secrets';

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
  rss: RssVerdict & { series: number[][]; forcedGc: boolean };
  process: { unhandledRejections: string[]; uncaughtExceptions: string[]; warnings: string[] };
  runError?: string;
}

/** What the run measured once the devices stopped, taken while the cloud was still up. */
export interface RunMeasurements {
  telemetry: TelemetryFigures;
  rss: RssVerdict;
  security: ScanReport;
  cloudGaps: CloudGapAudit;
  histories: Map<string, CloudHistory>;
  longFaults: ReturnType<typeof auditLongFaults>;
  recovery: RecoveryAudit;
  /** Late devices: what the cloud holds for each (its DPS registration, its identity on each hub). */
  lateIdentities: Map<string, unknown>;
  cloudMetrics: Awaited<ReturnType<SoakCloud['commands']['metrics']>> | undefined;
}

export interface ReportInput {
  plan: SoakPlan;
  startedAt: number;
  phases: PhaseTimes;
  invariants: InvariantResult[];
  measured: RunMeasurements;
  backoff: BackoffFigures;
  tracks: readonly Track[];
  transitions: Record<string, number>;
  cloudMode: SoakCloud['mode'] | undefined;
  faults: FaultOutcome[];
  debugTrace: DebugTrace | undefined;
  rss: RssSampler;
  process: ProcessWatch;
  runError: string | undefined;
}

/** Late devices whose cloud identity and timeline the report keeps. */
export const LATE_DEVICES_DETAILED = 10;

export function buildReport(input: ReportInput): SoakReport {
  const { plan, startedAt, phases, measured, debugTrace, process } = input;
  return {
    ok: input.invariants.every((i) => i.ok),
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
    invariants: input.invariants,
    figures: reportFigures(input),
    faults: input.faults,
    security: debugTrace ? { ...measured.security, debugTrace: debugTrace.counts() } : measured.security,
    rss: { ...measured.rss, forcedGc: input.rss.forcedGc, series: input.rss.series(startedAt) },
    process: { unhandledRejections: process.unhandledRejections, uncaughtExceptions: process.uncaughtExceptions, warnings: process.warnings },
    ...(input.runError !== undefined ? { runError: input.runError } : {}),
  };
}

function reportFigures(input: ReportInput): Record<string, unknown> {
  const { plan, startedAt, phases, measured, tracks } = input;
  const { recovery, cloudGaps: gaps, cloudMetrics } = measured;
  const { flap, disabled, reconnect } = measured.longFaults;
  return {
    telemetry: measured.telemetry,
    recovery: {
      boundMs: plan.recovery.valueMs,
      maxMs: Number.isFinite(recovery.maxMs) ? recovery.maxMs : null,
      p50Ms: recovery.p50Ms,
      p95Ms: recovery.p95Ms,
      late: recovery.late,
      notConnectedAtEnd: recovery.notConnectedAtEnd,
    },
    backoff: input.backoff,
    cloudGaps: { dpsChecked: gaps.dpsChecked, dpsExempt: gaps.dpsExempt, dpsViolations: gaps.dpsViolations, hubChecked: gaps.hubChecked, hubExempt: gaps.hubExempt, hubViolations: gaps.hubViolations },
    attemptRate: { bound: plan.rateBound, device: gaps.deviceRate, cloud: gaps.cloudRate },
    flap: { ...flap, violations: flap.violations },
    disabled: { ...disabled, bound: disabledDpsBound(plan.policy, plan.minRetryAfterMs, 60_000).formula + ' (per minute disabled)' },
    reconnect: {
      checked: reconnect.checked,
      exempt: reconnect.exempt,
      exemptBy: reconnect.exemptBy,
      maxMs: Number.isFinite(reconnect.maxMs) ? reconnect.maxMs : null,
      p95Ms: percentile(reconnect.times.filter(Number.isFinite), 95),
      worst: reconnect.worst,
      boundMs: plan.reconnectBoundMs,
      violations: reconnect.violations,
    },
    // Requests counted over the fault and quiet phases; a run that broke off is rated up to now.
    dpsLoad: dpsLoad(measured.histories, tracks.length, { from: phases.phaseStart, to: phases.quietEnd || Infinity }, (phases.quietEnd || Date.now()) - (phases.phaseStart || startedAt)),
    shortSessions: tracks.reduce((n, t) => n + t.shortSessions, 0),
    transitions: input.transitions,
    lateDeviceTimelines: Object.fromEntries(
      recovery.lateTracks
        .slice(0, LATE_DEVICES_DETAILED)
        .map((t) => [t.registrationId, { state: t.state, outbox: queuedIn(t.device), hub: t.device.assignment()?.hubHost ?? null, identity: measured.lateIdentities.get(t.registrationId) ?? null, recent: t.recent }]),
    ),
    failedStates: tracks.filter((t) => t.failedRules.length > 0).map((t) => `${t.registrationId}: ${t.failedRules.join(', ')}`),
    attemptsTotal: tracks.reduce((n, t) => n + t.attempts.length, 0),
    lossesTotal: tracks.reduce((n, t) => n + t.losses.length, 0),
    userReprovisions: tracks.reduce((n, t) => n + t.userCommands.length, 0),
    cloudProcess: input.cloudMode,
    dps: cloudMetrics?.dps,
    /** Registrations the emulator still holds (aborted by devices after a 429/5xx): cloud-side memory. */
    dpsOpenOperations: cloudMetrics?.dpsOpenOperations ?? null,
    hubs: cloudMetrics?.hubs,
    /** The cloud's own RSS at the end, when it ran in its own process (not part of the RSS invariant). */
    cloudRssMb: input.cloudMode === 'child-process' && cloudMetrics ? Math.round(cloudMetrics.rss / 104857.6) / 10 : null,
  };
}

export function writeReport(path: string, report: SoakReport): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(report, null, 2)}\n`);
}

/** What the scanner reports when the run broke off before it existed: nothing scanned. */
export const NOTHING_SCANNED: ScanReport = {
  scanned: { log: { items: 0, bytes: 0 }, snapshot: { items: 0, bytes: 0 }, error: { items: 0, bytes: 0 }, event: { items: 0, bytes: 0 } },
  hits: {},
  total: 0,
  samples: [],
};
