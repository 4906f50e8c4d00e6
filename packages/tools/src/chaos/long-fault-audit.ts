/**
 * Flapping hub and disabled device, per fault and per target. Each long device fault is checked
 * over its own period [start, end]: attempts (flap) or DPS requests (disable) against bounds
 * derived from the policy, and the device must be back on a session that lasts
 * (stableConnectionMs) within the reconnect bound of the fault's end, unless a fault on its hub or
 * on DPS overlapped that time (exempt, counted).
 */
import type { RetryPolicy } from 'hubstate';
import { attemptRateBound, checkWindow, countBetween, disabledDpsBound, type Bound } from './bounds';
import type { CloudHistory } from './cloud-gap';
import type { Track } from './fleet';
import { ms } from './format';
import type { ScheduledFault } from './schedule';

const MAX_SAMPLES = 50;

type FaultWindow = { from: number; to: number };

export interface FlapAudit {
  faults: number;
  targets: number;
  sessions: number;
  maxSessionsPerMin: number;
  maxRatio: number;
  worst: string;
  violations: string[];
}

export interface DisabledAudit {
  faults: number;
  targets: number;
  dpsRequests: number;
  registrations: number;
  lookups: number;
  hubConnectsRefused: number;
  maxDps: number;
  maxRatio: number;
  worst: string;
  violations: string[];
  disabledMs: number;
}

export interface ReconnectAudit {
  checked: number;
  exempt: number;
  exemptBy: Record<string, number>;
  maxMs: number;
  worst: string;
  violations: string[];
  times: number[];
}

export interface LongFaultInput {
  schedule: readonly ScheduledFault[];
  tracks: readonly Track[];
  histories: ReadonlyMap<string, CloudHistory>;
  /** A fault's actual window, undefined if it never started. */
  windowOf: (f: ScheduledFault) => FaultWindow | undefined;
  /** When every fault was cleared (0: never). */
  clearAt: number;
  policy: RetryPolicy;
  minRetryAfterMs: number;
  backoffMax: Bound;
  reconnectBoundMs: number;
}

export function auditLongFaults(input: LongFaultInput): { flap: FlapAudit; disabled: DisabledAudit; reconnect: ReconnectAudit } {
  const flap: FlapAudit = { faults: 0, targets: 0, sessions: 0, maxSessionsPerMin: 0, maxRatio: 0, worst: '', violations: [] };
  const disabled: DisabledAudit = { faults: 0, targets: 0, dpsRequests: 0, registrations: 0, lookups: 0, hubConnectsRefused: 0, maxDps: 0, maxRatio: 0, worst: '', violations: [], disabledMs: 0 };
  const reconnect: ReconnectAudit = { checked: 0, exempt: 0, exemptBy: {}, maxMs: 0, worst: '', violations: [], times: [] };
  for (const f of input.schedule) {
    if (f.kind !== 'device.flap' && f.kind !== 'device.disable') continue;
    const w = input.windowOf(f);
    if (!w) continue;
    const targets = (f.devices ?? []).map((i) => input.tracks[i]!);
    if (f.kind === 'device.flap') auditFlap(input, flap, f, w, targets);
    else auditDisabled(input, disabled, f, w, targets);
    for (const t of targets) checkReconnect(input, reconnect, f, t, w.to);
  }
  return { flap, disabled, reconnect };
}

function auditFlap(input: LongFaultInput, flap: FlapAudit, f: ScheduledFault, w: FaultWindow, targets: readonly Track[]): void {
  flap.faults++;
  // Attempts right after the end still follow the flap's curve: the window runs maxBackoff on.
  const to = w.to + input.backoffMax.valueMs;
  const bound = attemptRateBound(input.policy, input.minRetryAfterMs, to - w.from);
  for (const t of targets) {
    const h = input.histories.get(t.registrationId);
    flap.targets++;
    const sessions = countBetween(t.connects, w.from, w.to);
    flap.sessions += sessions;
    flap.maxSessionsPerMin = Math.max(flap.maxSessionsPerMin, (sessions * 60_000) / Math.max(1, w.to - w.from));
    const device = checkWindow(t.attempts, t.losses, t.userCommands, bound, w.from, to);
    const cloudAttempts = [...(h?.registers ?? []), ...(h?.hubConnects ?? []).map((c) => c.at)].sort((x, y) => x - y);
    const cloudSide = checkWindow(cloudAttempts, t.losses, t.userCommands, bound, w.from, to);
    for (const [side, r] of [['device', device], ['cloud', cloudSide]] as const) {
      const ratio = r.count / r.limit;
      if (ratio > flap.maxRatio) {
        flap.maxRatio = ratio;
        flap.worst = `${t.registrationId} in fault #${f.id}: ${r.count} attempts (${side} side) in ${ms(to - w.from)}, bound ${r.limit}`;
      }
      if (r.count > r.limit && flap.violations.length < MAX_SAMPLES) flap.violations.push(`${t.registrationId} in fault #${f.id} (${side} side): ${r.count} attempts in ${ms(to - w.from)} > ${r.limit}`);
    }
  }
}

function auditDisabled(input: LongFaultInput, disabled: DisabledAudit, f: ScheduledFault, w: FaultWindow, targets: readonly Track[]): void {
  disabled.faults++;
  const bound = disabledDpsBound(input.policy, input.minRetryAfterMs, w.to - w.from);
  for (const t of targets) {
    const h = input.histories.get(t.registrationId);
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
    if (registrations + lookups > limit && disabled.violations.length < MAX_SAMPLES) {
      disabled.violations.push(`${t.registrationId} in fault #${f.id}: ${registrations} registrations + ${lookups} lookups in ${ms(w.to - w.from)} > ${limit} (${bound.formula})`);
    }
  }
}

/** The hub the device was last accepted on at `at`, by the cloud's records. */
function hubAt(history: CloudHistory | undefined, at: number): string | undefined {
  let hub: string | undefined;
  for (const h of history?.hubConnects ?? []) if (h.at <= at) hub = h.hub;
  return hub;
}

/** Back on a session that lasts within the reconnect bound after the fault's end, or a reason it could not be. */
function checkReconnect(input: LongFaultInput, reconnect: ReconnectAudit, f: ScheduledFault, t: Track, end: number): void {
  const { reconnectBoundMs, clearAt } = input;
  // The first session alive after the end that lasted stableConnectionMs (or still runs).
  let back: number | undefined;
  for (const c of t.connects) {
    const left = t.disconnects.find((d) => d >= c) ?? Infinity;
    if (left > end && left - c >= input.policy.stableConnectionMs) {
      back = Math.max(c, end);
      break;
    }
  }
  const waited = back === undefined ? Infinity : back - end;
  const h = input.histories.get(t.registrationId);
  const hub = hubAt(h, end);
  const askedDps = countBetween(h?.registers ?? [], end, end + reconnectBoundMs) + countBetween(h?.lookups ?? [], end, end + reconnectBoundMs) > 0;
  const blocker = input.schedule.find((g) => {
    if (g.id === f.id) return false;
    const w = input.windowOf(g);
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
  if (waited > reconnectBoundMs && reconnect.violations.length < MAX_SAMPLES) {
    reconnect.violations.push(`${t.registrationId}: not back on a lasting session ${Number.isFinite(waited) ? ms(waited) : 'at all'} after fault #${f.id} (${f.kind}) ended (bound ${ms(reconnectBoundMs)})`);
  }
}
