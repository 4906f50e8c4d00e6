/**
 * The soak's verdicts: each invariant compares what the audits measured with its bound, and says
 * both in words next to the verdict (the report must be readable without the code).
 */
import { percentile, SERVER_ERROR_FLOOR_MS, type RssVerdict } from './bounds';
import { TIMER_TOLERANCE_MS, type BackoffAudit } from './backoff-audit';
import type { CloudGapAudit } from './cloud-gap';
import type { DebugTrace } from './debug-trace';
import { ms } from './format';
import type { TelemetryFigures } from './ledger';
import type { DisabledAudit, FlapAudit, ReconnectAudit } from './long-fault-audit';
import type { SoakPlan } from './options';
import type { ProcessWatch } from './process-watch';
import type { RecoveryAudit } from './recovery';
import { sameScheduleAsRecorded } from './replay';
import { describeFault } from './schedule';
import type { ScanReport } from './secrets';

export interface InvariantResult {
  name: string;
  ok: boolean;
  measured: string;
  bound: string;
}

/** When each phase ended (epoch ms, 0: never reached) and how long boot and drain took. */
export interface PhaseTimes {
  bootMs: number;
  phaseStart: number;
  clearAt: number;
  quietEnd: number;
  drainMs: number;
}

export interface InvariantFacts {
  plan: SoakPlan;
  runError: string | undefined;
  phases: PhaseTimes;
  telemetry: TelemetryFigures;
  recovery: RecoveryAudit;
  backoff: BackoffAudit;
  cloudGaps: CloudGapAudit;
  flap: FlapAudit;
  disabled: DisabledAudit;
  reconnect: ReconnectAudit;
  process: ProcessWatch;
  rss: RssVerdict;
  forcedGc: boolean;
  security: ScanReport;
  debugTrace: DebugTrace | undefined;
}

/** Every invariant that applies to this run, in the report's order. */
export function checkInvariants(facts: InvariantFacts): InvariantResult[] {
  return [
    runCompleted,
    zeroLoss,
    everyDeviceRecovered,
    noDelayBelowPolicy,
    noRetryBeforeDeadline,
    dpsRetryAfterHonoured,
    connack3FloorHonoured,
    noRetryStorm,
    flappingHubWithinPolicy,
    disabledDeviceNoDpsStorm,
    backOnLastingSession,
    noUnhandledErrors,
    rssFlat,
    sameScheduleAsEarlierRun,
    noSecretLeaked,
  ].flatMap((check) => check(facts) ?? []);
}

const finiteMs = (v: number, none: string) => (Number.isFinite(v) ? ms(v) : none);

function runCompleted({ runError, phases }: InvariantFacts): InvariantResult {
  return {
    name: 'the run completed',
    ok: runError === undefined,
    measured: runError ?? `boot ${ms(phases.bootMs)}, faults ${ms(phases.clearAt - phases.phaseStart)}, quiet ${ms(phases.quietEnd - phases.clearAt)}, drain ${ms(phases.drainMs)}`,
    bound: 'every device booted; every phase ran',
  };
}

function zeroLoss({ telemetry: t }: InvariantFacts): InvariantResult {
  return {
    name: 'zero accepted telemetry lost',
    ok: t.accepted > 0 && t.lost === 0 && t.dropped === 0,
    measured: `${t.accepted} accepted, ${t.lost} lost, ${t.dropped} dropped, ${t.duplicates} duplicates (counted, allowed), ${t.stillQueued} still queued`,
    bound: '0 lost (by message id, at the local cloud)',
  };
}

function everyDeviceRecovered({ recovery: r, phases, plan }: InvariantFacts): InvariantResult {
  return {
    name: 'every device Connected again after the faults',
    ok: phases.clearAt > 0 && r.late.length === 0,
    measured: `max ${finiteMs(r.maxMs, '∞')}, p50 ${ms(r.p50Ms)}, p95 ${ms(r.p95Ms)}; ${r.late.length} late${r.late.length ? ` (${r.late.slice(0, 5).join(', ')})` : ''}`,
    bound: `≤ ${plan.recovery.formula}`,
  };
}

function noDelayBelowPolicy({ backoff: b, plan }: InvariantFacts): InvariantResult {
  return {
    name: 'no delay below the policy (device side)',
    ok: b.delayViolations.length === 0 && b.entries > 0,
    measured: `${b.entries} BackingOff entries; min margin over the policy minimum ${finiteMs(b.minDelayMarginMs, '-')}; longest delay ${ms(b.longestDelayMs)}`,
    bound: `delay ≥ policyLowerBound(class, attempt, afterLoss, retry-after, rule minimum) and ≤ maxBackoff ${plan.backoffMax.valueMs} ms`,
  };
}

function noRetryBeforeDeadline({ backoff: b }: InvariantFacts): InvariantResult {
  return {
    name: 'no retry before its deadline (device side)',
    ok: b.earlyRetries.length === 0,
    measured: `${b.entries - b.exempt} timed retries, min (retry − retryAt) ${finiteMs(b.minRetrySlackMs, '-')}; ${b.exempt} left early by a user command (exempt)`,
    bound: `retry time ≥ retryAt = failure.at + delay (−${TIMER_TOLERANCE_MS} ms timer tolerance)`,
  };
}

function dpsRetryAfterHonoured({ cloudGaps: g }: InvariantFacts): InvariantResult {
  return {
    name: 'DPS retry-after and 5xx floor honoured (cloud side)',
    ok: g.dpsViolations.length === 0,
    measured: `${g.dpsChecked} gaps after a 429/5xx, min slack ${finiteMs(g.minDpsSlackMs, '-')}; ${g.dpsExempt} exempt (user reprovision in between)`,
    bound: `next DPS request ≥ retry-after after a 429 (throttledMinDelayMs/2 without one); ≥ max(retry-after, ${SERVER_ERROR_FLOOR_MS} ms) after a 5xx`,
  };
}

function connack3FloorHonoured({ cloudGaps: g }: InvariantFacts): InvariantResult {
  return {
    name: 'CONNACK 3 floor honoured (cloud side)',
    ok: g.hubViolations.length === 0,
    measured: `${g.hubChecked} gaps after a CONNACK 3, min slack ${finiteMs(g.minHubSlackMs, '-')}; ${g.hubExempt} exempt (DPS registration or user command in between)`,
    bound: `next hub connect ≥ ${SERVER_ERROR_FLOOR_MS} ms after a CONNACK 3 on the same assignment`,
  };
}

function noRetryStorm({ cloudGaps: { deviceRate, cloudRate }, plan }: InvariantFacts): InvariantResult {
  return {
    name: 'no retry storm (attempts per device per minute)',
    ok: deviceRate.violations === 0 && cloudRate.violations === 0,
    measured: `device side max ${deviceRate.maxCount}/min (bound there ${deviceRate.boundThere}, worst ratio ${deviceRate.worstRatio.toFixed(2)}); cloud side max ${cloudRate.maxCount}/min (worst ratio ${cloudRate.worstRatio.toFixed(2)})`,
    bound: plan.rateBound.formula,
  };
}

function flappingHubWithinPolicy({ flap, plan }: InvariantFacts): InvariantResult {
  return {
    name: 'flapping hub: attempts within the policy (short sessions are attempts on the curve)',
    ok: flap.violations.length === 0,
    measured:
      flap.faults === 0
        ? 'no device.flap fault in the schedule'
        : `${flap.faults} flaps on ${flap.targets} devices, ${flap.sessions} sessions (max ${flap.maxSessionsPerMin.toFixed(1)}/min on one device); worst ratio ${flap.maxRatio.toFixed(2)} (${flap.worst})${flap.violations.length ? `; ${flap.violations.slice(0, 3).join('; ')}` : ''}`,
    bound: `per device over [start, end + maxBackoff]: attempts (device and cloud side) ≤ (1 + L) · base(window) + 2 · U, L = losses of connections that lasted ${plan.policy.stableConnectionMs} ms`,
  };
}

function disabledDeviceNoDpsStorm({ disabled: d }: InvariantFacts): InvariantResult {
  return {
    name: 'disabled device: no DPS storm',
    ok: d.violations.length === 0,
    measured:
      d.faults === 0
        ? 'no device.disable fault in the schedule'
        : `${d.faults} disables on ${d.targets} devices (${(d.disabledMs / 60_000).toFixed(1)} device-minutes): ${d.registrations} registrations + ${d.lookups} lookups, max ${d.maxDps} on one device; worst ratio ${d.maxRatio.toFixed(2)} (${d.worst})${d.violations.length ? `; ${d.violations.slice(0, 3).join('; ')}` : ''}`,
    bound: `per device over the disabled period P: registrations + lookups ≤ (1 + later stable losses) · (2 + quickRetries + ⌈P / min(parkedMinDelayMs, fastest hub cycle)⌉) + 2 · U`,
  };
}

function backOnLastingSession({ reconnect: r, plan }: InvariantFacts): InvariantResult {
  return {
    name: 'back on a lasting session after a flap or a disable',
    ok: r.violations.length === 0,
    measured:
      r.checked + r.exempt === 0
        ? 'nothing to check'
        : `${r.checked} checked: max ${finiteMs(r.maxMs, '∞')}${r.worst ? ` (${r.worst})` : ''}, p95 ${ms(percentile(r.times.filter(Number.isFinite), 95))}; ${r.exempt} exempt (a fault on its hub or on DPS, a user command, or the end of the fault phase within the bound)${r.violations.length ? `; ${r.violations.slice(0, 3).join('; ')}` : ''}`,
    bound: `a session that lasts ${plan.policy.stableConnectionMs} ms starts ≤ 2 × maxBackoff + connect timeout + provisioning timeout = 2 × ${plan.backoffMax.valueMs} + ${plan.connectTimeoutMs} + ${plan.provisionTimeoutMs} = ${plan.reconnectBoundMs} ms after the fault ends`,
  };
}

function noUnhandledErrors({ process: p }: InvariantFacts): InvariantResult {
  return {
    name: 'no unhandled rejection or uncaught exception',
    ok: p.unhandledRejections.length === 0 && p.uncaughtExceptions.length === 0,
    measured: `${p.unhandledRejections.length} unhandled rejections, ${p.uncaughtExceptions.length} uncaught exceptions`,
    bound: '0',
  };
}

function rssFlat({ rss, forcedGc, plan }: InvariantFacts): InvariantResult {
  return {
    name: 'RSS flat over the second half',
    ok: rss.ok,
    measured: `growth ${(rss.growth * 100).toFixed(1)}% (${rss.slopeMbPerMin.toFixed(2)} MB/min), last/third quarter ${rss.drift.toFixed(3)}, max/min ${rss.ratio.toFixed(3)}; mean ${rss.secondHalfMeanMb.toFixed(0)} MB (first half ${rss.firstHalfMeanMb.toFixed(0)} MB), ${rss.samples} samples${forcedGc ? ', full GC before each' : ''}`,
    bound: `one-sided: least-squares growth over the second half ≤ ${plan.rssTolerance.growth * 100}% of its mean, last-quarter mean ≤ ${plan.rssTolerance.drift} × third-quarter mean`,
  };
}

/** Only against an earlier run's recorded schedule: recomputed in this process it could not fail. */
function sameScheduleAsEarlierRun({ plan }: InvariantFacts): InvariantResult | undefined {
  if (!plan.options.compareWith) return undefined;
  return sameScheduleAsRecorded(plan.options.compareWith, { resolved: plan.resolvedSchedule, digest: plan.digest, list: plan.schedule.map(describeFault) });
}

function noSecretLeaked({ security, debugTrace, plan }: InvariantFacts): InvariantResult {
  const traced = debugTrace?.counts();
  return {
    name: 'no secret in logs, snapshots or errors',
    // Under traceDebug the trace must have shown CONNECTs (whose password is the SAS token).
    ok: security.total === 0 && security.scanned.log.items > 0 && security.scanned.snapshot.items > 0 && (traced?.connectWrites ?? 1) > 0,
    measured: `${traced ? `DEBUG=* traced (${traced.lines} lines, ${traced.connectWrites} CONNECT writes); ` : ''}${security.total} hits in ${security.scanned.log.items} log lines, ${security.scanned.snapshot.items} snapshots, ${security.scanned.event.items} events, ${security.scanned.error.items} error messages (${(Object.values(security.scanned).reduce((a, s) => a + s.bytes, 0) / 1048576).toFixed(1)} MB)`,
    bound: `0 occurrences of the group key, any of the ${plan.options.devices} device keys (raw, URL-encoded, base64url), SharedAccessSignature, SharedAccessKey=, sig=`,
  };
}
