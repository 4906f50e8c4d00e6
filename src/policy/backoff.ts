/**
 * Retry delays: pure functions of (policy, request, RNG state). The RNG state is a plain uint32
 * kept in machine context, so a run replays exactly from its seed and snapshots stay JSON.
 */
import { ConfigError } from '../errors';
import { firstUnknownKey, unknownKeyExpectation } from '../validate';
import type { BackoffPolicy, DelayDecision, DelayRequest, RetryPolicy } from './types';

// ---------------------------------------------------------------------------------------------
// Seeded RNG (mulberry32)
// ---------------------------------------------------------------------------------------------

/** One mulberry32 step: a value in [0, 1) and the next state (uint32). */
export function nextRandom(state: number): [value: number, nextState: number] {
  const next = ((Number.isFinite(state) ? state : 0) + 0x6d2b79f5) >>> 0;
  let t = next;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  const value = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  return [value, next];
}

/** A uint32 seed from a number (integers kept as is) or a string (FNV-1a hash, e.g. a device id). */
export function seedFrom(input: string | number): number {
  if (typeof input === 'number' && Number.isInteger(input)) return input >>> 0;
  const text = String(input);
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Delays
// ---------------------------------------------------------------------------------------------

/** 2^30 times any sane base is already past every max: stop growing there (no Infinity). */
const MAX_EXPONENT = 30;
/**
 * A retry-after beyond this is not a wait any service means: it is capped (one hour). The one
 * cap on every service-given wait (DPS register/poll/lookup, hub): nextDelay applies it, and
 * `retryAfterMsFromSeconds` at each place a retry-after is read.
 */
export const MAX_RETRY_AFTER_MS = 3_600_000;

/**
 * A `retry-after` value in seconds (header or topic parameter) as ms, capped; undefined if absent,
 * invalid, or rounding to 0 ms (no wait: the back-off curve decides, as with no retry-after).
 */
export function retryAfterMsFromSeconds(value: unknown): number | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  const ms = Math.round(Number(value) * 1000);
  return Number.isFinite(ms) && ms > 0 ? Math.min(ms, MAX_RETRY_AFTER_MS) : undefined;
}

/** The longest delay any policy field may ask for (24 h); no wait hubstate schedules is longer. */
export const MAX_POLICY_DELAY_MS = 86_400_000;

/**
 * DPS at-scale formula (seed 004, "Timing logic when retrying operations"):
 * max_retry_delay_msec = (1.0 / load) · T · 1000 with T = N / cps, and the device waits "a
 * random amount of time, between min_retry_delay_msec [1000] and max_retry_delay_msec".
 */
export function fleetMaxDelayMs(devices: number, ratePerSec: number, load: number): number {
  return ((devices / ratePerSec) / load) * 1000;
}

/** DPS's registration limit per service: 1,000 registrations a minute (DPS quotas and limits). */
export const DPS_REGISTRATIONS_PER_SEC = 1000 / 60;
/**
 * The fleet the dpsAtScale preset assumes when `fleet` is not given in full: 1,000 devices at
 * DPS's 1,000 registrations a minute with load 1, so T = 60 s and retries are uniform in
 * [1 s, 60 s]. Give `fleet: { devices }` (and `ratePerSec`, `load`) for the real fleet.
 */
export const DPS_AT_SCALE_FLEET = Object.freeze({ devices: 1000, ratePerSec: DPS_REGISTRATIONS_PER_SEC, load: 1 });

/** Upper bound of the exponential curve for attempt n: min(max, base · 2^(n-1)). */
export function curveCapMs(baseMs: number, maxDelayMs: number, attempt: number): number {
  const n = Math.max(1, Math.floor(Number.isFinite(attempt) ? attempt : 1));
  return Math.min(maxDelayMs, baseMs * 2 ** Math.min(n - 1, MAX_EXPONENT));
}

/**
 * Draws uniformly in [lo, hi], but a floor above `lo` shifts the window up instead of clamping
 * it: clamping would put every device that got the same 5xx on exactly the floor (lockstep).
 * The shifted window is cut at `ceiling` (never below the floor).
 */
function drawAbove(lo: number, hi: number, floor: number, ceiling: number, rngState: number): DelayDecision {
  let from = lo;
  let to = hi;
  if (floor > from) {
    from = floor;
    to = Math.max(floor, Math.min(floor + (hi - lo), ceiling));
  }
  const [u, next] = nextRandom(rngState);
  return { delayMs: from + u * (to - from), capMs: to, rngState: next };
}

/**
 * The next wait before retrying. Guarantees: never earlier than `retryAfterMs`, never below
 * `req.minDelayMs`, jitter at every attempt (including at the cap), one RNG step per decision.
 */
export function nextDelay(policy: BackoffPolicy, req: DelayRequest, rngState: number): DelayDecision {
  const retryAfterMs = req.retryAfterMs === undefined ? undefined : Math.min(req.retryAfterMs, MAX_RETRY_AFTER_MS);
  const floor = Math.max(req.minDelayMs ?? 0, retryAfterMs ?? 0);

  // Baseline only (the official sample: a fixed 90 s). Still never earlier than the service asks.
  if (policy.fixedDelayMs !== undefined) {
    const delayMs = Math.max(policy.fixedDelayMs, floor);
    return { delayMs, capMs: delayMs, rngState };
  }

  // Waiting for an operator: long and spread, whatever the attempt, in fleet mode too (its window
  // of seconds would register a disabled device every half minute, all day). A fleet whose
  // at-scale window is longer than the parked one is spread over that instead.
  if (req.errorClass === 'parked') {
    const fleetWindowMs = policy.fleet === undefined ? 0 : fleetMaxDelayMs(policy.fleet.devices, policy.fleet.ratePerSec, policy.fleet.load);
    return drawAbove(policy.parkedMinDelayMs, Math.max(policy.parkedMinDelayMs, policy.parkedMaxDelayMs, fleetWindowMs), floor, Infinity, rngState);
  }

  // Fleet: spread the whole fleet over the window the service can absorb, [min, T/load]. The
  // first retry after losing a working connection may start at 0 (as on the curve below): a fleet
  // whose hub died reaches DPS spread over [0, T/load], at the rate DPS can take. A floor
  // (retry-after, 5xx) shifts the window up instead of clamping it, or a retry-after longer than
  // T/load would bring every throttled device back at the same instant.
  if (policy.fleet !== undefined) {
    const { devices, ratePerSec, load } = policy.fleet;
    const firstAfterLoss = req.afterLoss && req.attempt <= 1 && req.errorClass !== 'throttled';
    const lo = firstAfterLoss ? 0 : policy.minDelayMs;
    const hi = Math.max(lo, fleetMaxDelayMs(devices, ratePerSec, load));
    return drawAbove(lo, hi, floor, Infinity, rngState);
  }

  // The service said when: never earlier, jitter proportional to the wait (a fleet throttled
  // together must not come back within one second of each other).
  if (retryAfterMs !== undefined) {
    const base = Math.max(retryAfterMs, req.minDelayMs ?? 0);
    return drawAbove(base, base + Math.max(base / 2, policy.retryAfterJitterMs), 0, Infinity, rngState);
  }

  const ceiling = Math.max(policy.maxDelayMs, floor);
  // Once the quick retries failed, at least a minute between retries (seed 004).
  const slowFloor = req.attempt > policy.quickRetries ? Math.min(policy.slowRetryMinMs, policy.maxDelayMs) : 0;

  // First retry after losing a working connection: a blip recovers fast, a fleet still spreads.
  if (req.afterLoss && req.attempt <= 1 && req.errorClass !== 'throttled') {
    return drawAbove(0, policy.firstRetryMaxMs, floor, ceiling, rngState);
  }

  // Equal jitter on the exponential curve: [cap/2, cap], so jitter survives at the cap.
  const base = req.errorClass === 'throttled' ? policy.throttledMinDelayMs : policy.minDelayMs;
  const cap = curveCapMs(base, policy.maxDelayMs, req.attempt);
  if (slowFloor > cap / 2) return drawAbove(slowFloor, Math.max(slowFloor, policy.maxDelayMs), floor, ceiling, rngState);
  return drawAbove(cap / 2, cap, floor, ceiling, rngState);
}

// ---------------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------------

/**
 * Defaults from the guidance: stay on a hub at least 15 min (DPS at-scale: 15–30 min; the window
 * decides, the attempt count is only a backstop), three quick retries then at least a minute
 * apart (seed 004: "a gap of at least a minute before a retry"), in [60 s, 90 s] so a fleet
 * stays spread; a connection counts once it has lasted 30 s (AWS IoT SDK's default).
 */
export const DEFAULT_POLICY: RetryPolicy = Object.freeze({
  firstRetryMaxMs: 1000,
  minDelayMs: 1000,
  maxDelayMs: 90_000,
  throttledMinDelayMs: 5000,
  retryAfterJitterMs: 1000,
  quickRetries: 3,
  slowRetryMinMs: 60_000,
  parkedMinDelayMs: 15 * 60_000,
  parkedMaxDelayMs: 30 * 60_000,
  stableConnectionMs: 30_000,
  maxHubAttempts: 100,
  lookupAfterUnreachableMs: 60_000,
  hubRetryWindowMs: 15 * 60_000,
  hubRetryWindowMaxMs: 15 * 60_000,
});

export type PresetName = 'default' | 'iotCentral' | 'dpsAtScale' | 'seedSample' | 'naive';

export const PRESETS: Readonly<Record<PresetName, Readonly<RetryPolicy>>> = Object.freeze({
  default: DEFAULT_POLICY,
  /**
   * IoT Central: an unreachable hub endpoint means "reprovision now" (its failover moves devices
   * between hubs), so leave an unreachable hub after 60 s, not after a few quick attempts (a
   * fleet-wide blip would otherwise be a registration storm against 200 registrations/min). A
   * moved device does not wait for this: the status lookup sends it on at the first refusal.
   * While DPS keeps naming the same hub, the window doubles up to the default 15 min
   * (`hubRetryWindowMaxMs`), so a sustained outage costs DPS about what the default policy does.
   */
  iotCentral: Object.freeze({ ...DEFAULT_POLICY, hubRetryWindowMs: 60_000 }),
  /**
   * DPS at scale (seed 004): stay on the cached hub up to 30 min so a hub outage does not turn
   * into a fleet-wide DPS storm (the window, not the attempt count, decides), and every delay
   * from the at-scale formula: uniform in [min_retry_delay = 1 s, (1/load) · N/cps · 1000 ms],
   * for a default fleet of 1,000 devices at DPS's 1,000 registrations a minute (T = 60 s);
   * `fleet: { devices, ratePerSec?, load? }` overrides it field by field.
   */
  dpsAtScale: Object.freeze({ ...DEFAULT_POLICY, maxHubAttempts: 1000, hubRetryWindowMs: 30 * 60_000, fleet: DPS_AT_SCALE_FLEET }),
  /** The official sample's strategy (fixed 90 s, DPS after every loss). Benchmark baseline only. */
  // maxHubAttempts stays at the default: with 1, the hub budget (checked before
  // reprovisionOnLoss) sent the device to DPS at once after a loss, skipping the 90 s wait.
  seedSample: Object.freeze({ ...DEFAULT_POLICY, fixedDelayMs: 90_000, reprovisionOnLoss: true }),
  /**
   * A naive client: every retry after exactly 1 s, or exactly retry-after when the service gives
   * one (what the SDK itself does with a DPS 429); no jitter. Fleet benchmark baseline only.
   */
  naive: Object.freeze({ ...DEFAULT_POLICY, fixedDelayMs: 1000 }),
});

export type RetryPolicyInput = { preset?: PresetName } & Partial<RetryPolicy>;

const DELAY_FIELDS = ['firstRetryMaxMs', 'minDelayMs', 'maxDelayMs', 'throttledMinDelayMs', 'retryAfterJitterMs', 'slowRetryMinMs', 'parkedMinDelayMs', 'parkedMaxDelayMs', 'stableConnectionMs', 'lookupAfterUnreachableMs'] as const;
const KNOWN_FIELDS: ReadonlySet<string> = new Set([
  'preset',
  ...DELAY_FIELDS,
  'fleet',
  'fixedDelayMs',
  'quickRetries',
  'maxHubAttempts',
  'hubRetryWindowMs',
  'hubRetryWindowMaxMs',
  'reprovisionOnLoss',
]);
const FLEET_FIELDS: ReadonlySet<string> = new Set(['devices', 'ratePerSec', 'load']);

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function requireNonNegative(field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > MAX_POLICY_DELAY_MS) {
    throw new ConfigError(`policy.${field}`, `a number of milliseconds from 0 to ${MAX_POLICY_DELAY_MS} (24 h)`);
  }
  return value;
}

function requireNonNegativeInteger(field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 1000) {
    throw new ConfigError(`policy.${field}`, 'an integer from 0 to 1000');
  }
  return value;
}

function requirePositive(field: string, value: unknown, integer: boolean, max: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > max || (integer && !Number.isInteger(value))) {
    throw new ConfigError(`policy.${field}`, `${integer ? 'an integer from 1' : 'a number > 0 and'} to ${max}`);
  }
  return value;
}

/** Upper bounds of the count-like policy fields. */
export const POLICY_BOUNDS = Object.freeze({
  maxHubAttempts: 1_000_000,
  'fleet.devices': 100_000_000,
  'fleet.ratePerSec': 1_000_000,
  'fleet.load': 1000,
});

/**
 * A complete, validated policy: a preset (default 'default') with the given fields on top.
 * Throws ConfigError('policy.<field>', …) for anything invalid or unknown.
 */
export function resolvePolicy(input?: RetryPolicyInput): RetryPolicy {
  if (input === undefined) return { ...DEFAULT_POLICY };
  if (!isPlainObject(input)) throw new ConfigError('policy', 'an object');
  const unknown = firstUnknownKey(input, KNOWN_FIELDS);
  if (unknown !== undefined) throw new ConfigError(`policy.${unknown}`, unknownKeyExpectation(unknown, [...KNOWN_FIELDS]));
  const presetName = input.preset ?? 'default';
  if (!Object.prototype.hasOwnProperty.call(PRESETS, presetName)) {
    throw new ConfigError('policy.preset', `one of ${Object.keys(PRESETS).map((k) => `'${k}'`).join(', ')}`);
  }
  const { preset: _preset, ...overrides } = input;
  const merged: Record<string, unknown> = { ...PRESETS[presetName as PresetName] };
  for (const [key, value] of Object.entries(overrides)) {
    if (value !== undefined) merged[key] = value;
  }

  const policy: RetryPolicy = {
    firstRetryMaxMs: requireNonNegative('firstRetryMaxMs', merged.firstRetryMaxMs),
    minDelayMs: requireNonNegative('minDelayMs', merged.minDelayMs),
    maxDelayMs: requireNonNegative('maxDelayMs', merged.maxDelayMs),
    throttledMinDelayMs: requireNonNegative('throttledMinDelayMs', merged.throttledMinDelayMs),
    retryAfterJitterMs: requireNonNegative('retryAfterJitterMs', merged.retryAfterJitterMs),
    quickRetries: requireNonNegativeInteger('quickRetries', merged.quickRetries),
    slowRetryMinMs: requireNonNegative('slowRetryMinMs', merged.slowRetryMinMs),
    parkedMinDelayMs: requireNonNegative('parkedMinDelayMs', merged.parkedMinDelayMs),
    parkedMaxDelayMs: requireNonNegative('parkedMaxDelayMs', merged.parkedMaxDelayMs),
    stableConnectionMs: requireNonNegative('stableConnectionMs', merged.stableConnectionMs),
    lookupAfterUnreachableMs: requireNonNegative('lookupAfterUnreachableMs', merged.lookupAfterUnreachableMs),
    maxHubAttempts: requirePositive('maxHubAttempts', merged.maxHubAttempts, true, POLICY_BOUNDS.maxHubAttempts),
    hubRetryWindowMs: requireNonNegative('hubRetryWindowMs', merged.hubRetryWindowMs),
    hubRetryWindowMaxMs: requireNonNegative('hubRetryWindowMaxMs', merged.hubRetryWindowMaxMs),
  };
  if (policy.minDelayMs > policy.maxDelayMs) {
    throw new ConfigError('policy.minDelayMs', `<= policy.maxDelayMs (${policy.maxDelayMs})`);
  }
  if (policy.parkedMinDelayMs > policy.parkedMaxDelayMs) {
    throw new ConfigError('policy.parkedMinDelayMs', `<= policy.parkedMaxDelayMs (${policy.parkedMaxDelayMs})`);
  }
  if (policy.throttledMinDelayMs > policy.maxDelayMs) {
    throw new ConfigError('policy.throttledMinDelayMs', `<= policy.maxDelayMs (${policy.maxDelayMs})`);
  }
  if (merged.fixedDelayMs !== undefined) policy.fixedDelayMs = requireNonNegative('fixedDelayMs', merged.fixedDelayMs);
  if (merged.reprovisionOnLoss !== undefined) {
    if (typeof merged.reprovisionOnLoss !== 'boolean') throw new ConfigError('policy.reprovisionOnLoss', 'a boolean');
    policy.reprovisionOnLoss = merged.reprovisionOnLoss;
  }
  if (merged.fleet !== undefined) {
    const given = overrides.fleet;
    const base = PRESETS[presetName as PresetName].fleet;
    if (given !== undefined && !isPlainObject(given)) throw new ConfigError('policy.fleet', 'an object { devices, ratePerSec, load }');
    if (given !== undefined) {
      const unknownFleet = firstUnknownKey(given, FLEET_FIELDS);
      if (unknownFleet !== undefined) throw new ConfigError(`policy.fleet.${unknownFleet}`, unknownKeyExpectation(unknownFleet, [...FLEET_FIELDS]));
    }
    // A preset with a fleet of its own (dpsAtScale) takes the given fields on top of it; otherwise
    // all three are required.
    const fleet: Record<string, unknown> = { ...base };
    for (const [key, value] of Object.entries(given ?? {})) if (value !== undefined) fleet[key] = value;
    policy.fleet = {
      devices: requirePositive('fleet.devices', fleet.devices, true, POLICY_BOUNDS['fleet.devices']),
      ratePerSec: requirePositive('fleet.ratePerSec', fleet.ratePerSec, false, POLICY_BOUNDS['fleet.ratePerSec']),
      load: requirePositive('fleet.load', fleet.load, false, POLICY_BOUNDS['fleet.load']),
    };
    const windowMs = fleetMaxDelayMs(policy.fleet.devices, policy.fleet.ratePerSec, policy.fleet.load);
    if (windowMs > MAX_POLICY_DELAY_MS) {
      throw new ConfigError('policy.fleet', `a fleet whose at-scale window (1/load) · N/cps is at most 24 h (got ${Math.round(windowMs / 1000)} s)`);
    }
  }
  return policy;
}
