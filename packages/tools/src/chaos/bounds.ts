/**
 * The soak's bounds, derived from the retry policy (and the schedule's retry-after values), as
 * pure functions so the formulas can be read, tested and printed next to the measured figures.
 *
 * These re-derive the policy's guarantees independently of `nextDelay`: a delay the device
 * chose below `policyLowerBoundMs` is a device bug, not a tolerance question.
 */
import { publishCheckIntervalMs, curveCapMs, CLASSIFICATION_TABLE } from 'hubstate/internal';
import type { ErrorClass, RetryPolicy } from 'hubstate';
import type { ScheduledFault } from './schedule';

/** The largest minimum delay the classification table imposes (hub/DPS 5xx, CONNACK 3): 5000 ms. */
export const SERVER_ERROR_FLOOR_MS = CLASSIFICATION_TABLE.reduce((m, row) => Math.max(m, row.minDelayMs ?? 0), 0);

export interface Bound {
  valueMs: number;
  formula: string;
}

/**
 * The longest single wait the device can choose during this schedule:
 * max(maxDelayMs, firstRetryMaxMs, F, RAmax + retryAfterJitterMs, [F + retryAfterJitterMs if a 5xx
 * carries a retry-after]) with F = the table's largest floor (5 s), RAmax the schedule's largest
 * retry-after. (A fixed-delay policy adds fixedDelayMs.)
 */
function withRetryAfterJitter(waitMs: number, policy: RetryPolicy): number {
  return waitMs + Math.max(waitMs / 2, policy.retryAfterJitterMs);
}

export function maxBackoff(policy: RetryPolicy, schedule: readonly ScheduledFault[]): Bound {
  const raMax = schedule.reduce((m, f) => Math.max(m, (f.retryAfterSec ?? 0) * 1000), 0);
  const candidates = [
    policy.maxDelayMs,
    policy.firstRetryMaxMs,
    SERVER_ERROR_FLOOR_MS,
    // Retry-after jitter is proportional: [R, R + max(R/2, retryAfterJitterMs)].
    // A retry-after meets the 5 s floor on a 5xx, and a lookup's retry-after carries into a busy
    // hub's retry (CONNACK 3): the wait is then max(R, floor) plus its proportional jitter.
    raMax > 0 ? withRetryAfterJitter(Math.max(raMax, SERVER_ERROR_FLOOR_MS), policy) : 0,
    policy.fixedDelayMs ?? 0,
    policy.parkedMaxDelayMs,
  ];
  const valueMs = Math.max(...candidates);
  return {
    valueMs,
    formula:
      `max(maxDelayMs ${policy.maxDelayMs}, firstRetryMaxMs ${policy.firstRetryMaxMs}, 5xx/CONNACK-3 floor ${SERVER_ERROR_FLOOR_MS}, ` +
      `max(max retry-after ${raMax}, floor) + max(that/2, retryAfterJitterMs ${policy.retryAfterJitterMs})` +
      `) = ${valueMs} ms`,
  };
}

/**
 * How long after its last PUBACK-less publish a session is abandoned, at the latest: a hub that
 * keeps answering pings but stops acknowledging telemetry is only noticed through the SDK's
 * PUBACK timeout T (the device option `publishTimeoutSeconds`), checked every
 * publishCheckIntervalMs(T), the stamp rounded to whole seconds (+0.5 s).
 */
export function pubackStallMs(publishTimeoutSeconds: number): number {
  return publishTimeoutSeconds * 1000 + 500 + publishCheckIntervalMs(publishTimeoutSeconds);
}

/**
 * Every device Connected again (and staying so) within R after the faults stop:
 * R = 2 × maxBackoff + S, with S = max(0, end of the last hub.withholdPubacks + pubackStallMs(T) −
 * end of the fault phase): a session that was withholding until near the end is only abandoned
 * by the SDK's PUBACK timeout. When devices are moved (failover, failback), at least one hub
 * window + maxBackoff: DPS's confirmation of a hub lasts a window (see the machine's
 * confirmationCurrent), so a device moved right after its lookup learns it one window later.
 */
export function recoveryBound(policy: RetryPolicy, schedule: readonly ScheduledFault[], faultPhaseMs: number, publishTimeoutSeconds: number): Bound {
  const b = maxBackoff(policy, schedule);
  const lastWithholdEnd = schedule
    .filter((f) => f.kind === 'hub.withholdPubacks')
    .reduce((m, f) => Math.max(m, f.atMs + f.durationMs), -Infinity);
  const stallMs = pubackStallMs(publishTimeoutSeconds);
  const stall = Math.max(0, lastWithholdEnd + stallMs - faultPhaseMs);
  const afterFaults = 2 * b.valueMs + stall;
  // A device DPS moved (failover/failback) just after a lookup confirmed its old hub hears
  // "busy" from that hub until the confirmation expires: one hub window, then a retry, then DPS.
  const movesDevices = schedule.some((f) => f.kind === 'device.failover' || f.kind === 'device.failback');
  const moved = movesDevices ? policy.hubRetryWindowMs + b.valueMs : 0;
  const valueMs = Math.max(afterFaults, moved);
  return {
    valueMs,
    formula:
      `max(2 × maxBackoff + PUBACK stall, moved) = max(2 × ${b.valueMs} + ${stall}, ${moved}) = ${valueMs} ms; maxBackoff = ${b.formula}; ` +
      `stall = max(0, last withholdPubacks end + ${stallMs} ms (PUBACK timeout ${publishTimeoutSeconds} s + check interval + 0.5 s) − fault phase end); ` +
      `moved = ${movesDevices ? `hub window ${policy.hubRetryWindowMs} + maxBackoff (a DPS confirmation of the old hub lasts one window)` : '0 (no failover or failback scheduled)'}`,
  };
}

/** What the device knew when it chose a delay (read from its context on entering BackingOff). */
export interface DelayFacts {
  errorClass: ErrorClass;
  /** 1-based: consecutive failures of the step the plan belongs to (hubAttempts or dpsAttempts). */
  attempt: number;
  /** The failure ended a working connection (BackingOff entered from Connected). */
  afterLoss: boolean;
  retryAfterMs?: number;
  minDelayMs?: number;
}

/**
 * The shortest delay the policy allows for this failure (independent re-derivation):
 * floor = max(retry-after, the rule's minimum); fixed policies: max(fixed, floor); fleet: max(minDelayMs, floor);
 * with a retry-after: max(retry-after, minimum); first retry after a loss (not throttled): floor;
 * otherwise max(cap(n)/2, floor) with cap(n) = min(maxDelayMs, base · 2^(n−1)), base = throttledMinDelayMs
 * for the throttled class, else minDelayMs (equal jitter draws in [cap/2, cap]).
 */
export function policyLowerBoundMs(policy: RetryPolicy, f: DelayFacts): number {
  const floor = Math.max(f.retryAfterMs ?? 0, f.minDelayMs ?? 0);
  if (policy.fixedDelayMs !== undefined) return Math.max(policy.fixedDelayMs, floor);
  if (f.errorClass === 'parked') return Math.max(policy.parkedMinDelayMs, floor);
  if (policy.fleet !== undefined) return Math.max(policy.minDelayMs, floor);
  if (f.retryAfterMs !== undefined) return Math.max(f.retryAfterMs, f.minDelayMs ?? 0);
  if (f.afterLoss && f.attempt <= 1 && f.errorClass !== 'throttled') return floor;
  const base = f.errorClass === 'throttled' ? policy.throttledMinDelayMs : policy.minDelayMs;
  return Math.max(curveCapMs(base, policy.maxDelayMs, f.attempt) / 2, floor);
}

/**
 * The smallest wait the policy allows after the n-th consecutive failure that did not end a
 * working connection, over every error class: min(cap_min(n)/2, cap_throttled(n)/2, RAmin).
 */
export function shortestWaitMs(policy: RetryPolicy, attempt: number, minRetryAfterMs: number): number {
  if (policy.fixedDelayMs !== undefined) return policy.fixedDelayMs;
  if (policy.fleet !== undefined) return policy.minDelayMs;
  return Math.min(
    curveCapMs(policy.minDelayMs, policy.maxDelayMs, attempt) / 2,
    curveCapMs(policy.throttledMinDelayMs, policy.maxDelayMs, attempt) / 2,
    minRetryAfterMs,
  );
}

/** How many attempts fit in `windowMs` (one at 0, then after each gap) for a gap sequence. */
function greedyCount(windowMs: number, gap: (i: number) => number, cap = 100_000): number {
  let t = 0;
  let n = 1;
  for (let i = 1; n < cap; i++) {
    t += gap(i);
    if (t > windowMs) break;
    n++;
  }
  return n;
}

export interface AttemptRateBound {
  windowMs: number;
  /** Hub connects in one window of consecutive failures, the curve restarting whenever the budget is spent. */
  hub: number;
  /** DPS registrations in one window: the DPS curve, plus one per spent hub budget. */
  dps: number;
  /** hub + dps: the bound for a window in which no connection was lost and no user command came. */
  base: number;
  formula: string;
}

/**
 * Attempts (DPS registrations + hub connects) one device may make in a window, by the policy:
 * - hub: greedy count of the gap pattern w(1) … w(M−1), 0 (budget spent → DPS → hub at once),
 *   repeated; w(n) = shortestWaitMs(n), M = maxHubAttempts (a run also ends after hubRetryWindowMs);
 * - dps: greedy count of w(1), w(2), … (dpsAttempts only resets on a connection) + one per spent hub budget.
 * Per window: attempts ≤ (1 + L) · (hub + dps) + 2 · U, L = connections lost in the window (each
 * restarts the curves: a blip is retried at once, by design), U = user reprovision commands.
 */
export function attemptRateBound(policy: RetryPolicy, minRetryAfterMs: number, windowMs = 60_000): AttemptRateBound {
  const M = policy.maxHubAttempts;
  let runStart = 0;
  let runAttempt = 0;
  let t = 0;
  let cycles = 0;
  const hub = greedyCount(windowMs, () => {
    runAttempt++;
    const spent = runAttempt >= M || t - runStart >= policy.hubRetryWindowMs;
    if (spent) {
      cycles++;
      runAttempt = 0;
      runStart = t;
      return 0;
    }
    const g = shortestWaitMs(policy, runAttempt, minRetryAfterMs);
    t += g;
    return g;
  });
  const dps = greedyCount(windowMs, (i) => shortestWaitMs(policy, i, minRetryAfterMs)) + cycles;
  return {
    windowMs,
    hub,
    dps,
    base: hub + dps,
    formula:
      `per ${windowMs / 1000} s: (1 + L) × (hub ${hub} + dps ${dps}) + 2 × U; ` +
      `w(n) = min(cap_min(n)/2, cap_throttled(n)/2, min retry-after ${Number.isFinite(minRetryAfterMs) ? minRetryAfterMs : '∞'} ms), M = ${M}`,
  };
}

/** Max count of `times` in any window [t − windowMs, t] ending at one of them (times sorted). */
export function maxInWindow(times: readonly number[], windowMs: number): { count: number; at: number } {
  let best = { count: 0, at: 0 };
  let lo = 0;
  for (let hi = 0; hi < times.length; hi++) {
    while (times[hi]! - times[lo]! > windowMs) lo++;
    if (hi - lo + 1 > best.count) best = { count: hi - lo + 1, at: times[hi]! };
  }
  return best;
}

/** Count of sorted `times` within [from, to]. */
export function countBetween(times: readonly number[], from: number, to: number): number {
  let n = 0;
  for (const t of times) if (t >= from && t <= to) n++;
  return n;
}

export interface RateCheck {
  /** Most attempts seen in one window. */
  maxCount: number;
  /** The bound that applied to that window. */
  boundThere: number;
  /** Worst count/bound over all windows (≤ 1 passes). */
  worstRatio: number;
  worstAt: number;
  violations: number;
}

/**
 * Checks every window ending at an attempt: count ≤ (1 + L) · base + 2 · U, with L and U counted
 * from `windowMs + slackMs` before the window's end (a loss just before the window can still
 * cause attempts inside it).
 */
export function checkAttemptRate(
  attempts: readonly number[],
  losses: readonly number[],
  userCommands: readonly number[],
  bound: AttemptRateBound,
  slackMs: number,
): RateCheck {
  const out: RateCheck = { maxCount: 0, boundThere: bound.base, worstRatio: 0, worstAt: 0, violations: 0 };
  let lo = 0;
  for (let hi = 0; hi < attempts.length; hi++) {
    const end = attempts[hi]!;
    while (end - attempts[lo]! > bound.windowMs) lo++;
    const count = hi - lo + 1;
    const from = end - bound.windowMs - slackMs;
    const limit = (1 + countBetween(losses, from, end)) * bound.base + 2 * countBetween(userCommands, from, end);
    const ratio = count / limit;
    if (count > out.maxCount) {
      out.maxCount = count;
      out.boundThere = limit;
    }
    if (ratio > out.worstRatio) {
      out.worstRatio = ratio;
      out.worstAt = end;
    }
    if (count > limit) out.violations++;
  }
  return out;
}

export interface RssSample {
  at: number;
  rss: number;
  heapUsed: number;
  /** Messages waiting in the devices' outboxes when sampled. */
  queued?: number;
  /** Memory of C++ objects bound to JS (Buffers, TLS): process.memoryUsage().external. */
  external?: number;
  /** Open file descriptors (-1 when unknown). */
  fds?: number;
  /** V8 heap committed (process.memoryUsage().heapTotal). */
  heapTotal?: number;
}

export interface RssTolerance {
  /** Largest allowed least-squares growth over the second half, as a share of its mean. */
  growth: number;
  /** Largest allowed ratio of the last quarter's mean RSS to the third quarter's. */
  drift: number;
}

export interface RssVerdict {
  samples: number;
  firstHalfMeanMb: number;
  secondHalfMeanMb: number;
  secondHalfMinMb: number;
  secondHalfMaxMb: number;
  /** Least-squares slope over the second half, MB per minute. */
  slopeMbPerMin: number;
  /** slope × second-half duration / second-half mean. */
  growth: number;
  /** Mean of the last quarter / mean of the third quarter. */
  drift: number;
  /** max / min over the second half (reported, not judged: GC and load changes move it both ways). */
  ratio: number;
  ok: boolean;
}

/**
 * RSS flat over the second half of the run: no upward trend. Judged one-sided (a leak only
 * grows): the least-squares growth over the second half and the drift from the third to the
 * last quarter must both stay within tolerance. Falling memory (less load in the quiet period,
 * a GC giving pages back) passes.
 */
export function rssVerdict(samples: readonly RssSample[], tolerance: RssTolerance): RssVerdict {
  const mb = (b: number) => b / (1024 * 1024);
  const empty = { samples: samples.length, firstHalfMeanMb: 0, secondHalfMeanMb: 0, secondHalfMinMb: 0, secondHalfMaxMb: 0, slopeMbPerMin: 0, growth: 0, drift: 1, ratio: 1, ok: false };
  if (samples.length < 8) return empty;
  const start = samples[0]!.at;
  const end = samples[samples.length - 1]!.at;
  const at = (q: number) => start + (end - start) * q;
  const between = (a: number, b: number) => samples.filter((s) => s.at >= at(a) && (b >= 1 ? true : s.at < at(b)));
  const mean = (xs: readonly number[]) => xs.reduce((x, y) => x + y, 0) / Math.max(1, xs.length);
  const first = between(0, 0.5);
  const second = between(0.5, 1);
  const third = between(0.5, 0.75);
  const last = between(0.75, 1);
  const xs = second.map((s) => s.at);
  const ys = second.map((s) => s.rss);
  const mx = mean(xs);
  const my = mean(ys);
  let num = 0;
  let den = 0;
  for (let i = 0; i < xs.length; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  const slope = den > 0 ? num / den : 0; // bytes per ms
  const span = xs.length > 1 ? xs[xs.length - 1]! - xs[0]! : 0;
  const growth = my > 0 ? (slope * span) / my : 0;
  const drift = mean(third.map((s) => s.rss)) > 0 ? mean(last.map((s) => s.rss)) / mean(third.map((s) => s.rss)) : 1;
  const ratio = Math.max(...ys) / Math.max(1, Math.min(...ys));
  return {
    samples: samples.length,
    firstHalfMeanMb: mb(mean(first.map((s) => s.rss))),
    secondHalfMeanMb: mb(my),
    secondHalfMinMb: mb(Math.min(...ys)),
    secondHalfMaxMb: mb(Math.max(...ys)),
    slopeMbPerMin: mb(slope * 60_000),
    growth,
    drift,
    ratio,
    ok: growth <= tolerance.growth && drift <= tolerance.drift && third.length > 0 && last.length > 0,
  };
}

/**
 * Hub attempts of one cycle that spends the hub budget the fastest: w(1) + … + w(M−1), or the
 * hub retry window if that comes first (the budget is spent at M attempts or after the window).
 */
export function fastestHubCycleMs(policy: RetryPolicy, minRetryAfterMs: number): number {
  let sum = 0;
  for (let n = 1; n < policy.maxHubAttempts && sum < policy.hubRetryWindowMs; n++) sum += shortestWaitMs(policy, n, minRetryAfterMs);
  return Math.min(sum, policy.hubRetryWindowMs);
}

export interface DisabledDpsBound {
  periodMs: number;
  /** DPS requests (registrations + status lookups) one device may make while disabled, without user commands. */
  value: number;
  formula: string;
}

/**
 * A disabled identity (refused at every CONNECT, whatever the code) must not make its device
 * storm DPS. Over a disabled period P, DPS requests (registrations + status lookups) per device
 * ≤ 2 + Q + ⌈P / C⌉ (+ 2 per user reprovision), where
 * - 2: the status lookup after the refusal (DPS confirms the hub: not asked again until a
 *   connection lasts) and the lookup after the hub stayed unreachable (once per failure run);
 * - Q = quickRetries: registrations on the DPS curve once a fresh assignment is refused;
 * - C = min(parkedMinDelayMs, fastest hub cycle): after the quick retries a refused fresh assignment
 *   is parked (≥ parkedMinDelayMs before the next registration), and a hub budget can only be spent
 *   again after a whole cycle of hub attempts (fastestHubCycleMs).
 * With the default policy (parked 15–30 min, 15 min window) that is ≤ 9 per hour; the soak's
 * compressed policy (parked 3–5 s) allows far more, and a device that registers on every refusal
 * (one per hub attempt) still exceeds it.
 */
export function disabledDpsBound(policy: RetryPolicy, minRetryAfterMs: number, periodMs: number): DisabledDpsBound {
  const cycle = Math.max(1, Math.min(policy.parkedMinDelayMs, fastestHubCycleMs(policy, minRetryAfterMs)));
  const value = 2 + policy.quickRetries + Math.ceil(periodMs / cycle);
  return {
    periodMs,
    value,
    formula: `2 + quickRetries ${policy.quickRetries} + ⌈P ${Math.round(periodMs)} ms / min(parkedMinDelayMs ${policy.parkedMinDelayMs}, fastest hub cycle ${Math.round(fastestHubCycleMs(policy, minRetryAfterMs))}) ms⌉ = ${value}`,
  };
}

/**
 * Attempts (device side: entries into Provisioning/Reprovisioning/CheckingAssignment/Connecting;
 * cloud side: DPS registrations + hub connects) in one window [from, to]: ≤ (1 + L) · base + 2 · U,
 * with base = attemptRateBound over the window's length, L = losses of *stable* connections (those
 * that lasted stableConnectionMs; a shorter session is the next attempt on the curve and allows
 * nothing more), U = user reprovision commands.
 */
export function checkWindow(
  attempts: readonly number[],
  stableLosses: readonly number[],
  userCommands: readonly number[],
  bound: AttemptRateBound,
  from: number,
  to: number,
): { count: number; limit: number } {
  const count = countBetween(attempts, from, to);
  const limit = (1 + countBetween(stableLosses, from, to)) * bound.base + 2 * countBetween(userCommands, from, to);
  return { count, limit };
}

/** The p-th percentile (nearest rank) of `values`; 0 when there are none. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = values.slice().sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}
