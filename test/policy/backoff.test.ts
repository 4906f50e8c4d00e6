import fc from 'fast-check';
import { ConfigError } from '../../src/errors';
import {
  curveCapMs,
  DEFAULT_POLICY,
  fleetMaxDelayMs,
  DPS_REGISTRATIONS_PER_SEC,
  MAX_POLICY_DELAY_MS,
  MAX_RETRY_AFTER_MS,
  nextDelay,
  retryAfterMsFromSeconds,
  nextRandom,
  PRESETS,
  resolvePolicy,
  seedFrom,
  type RetryPolicyInput,
} from '../../src/policy/backoff';
import type { BackoffPolicy, DelayRequest, ErrorClass } from '../../src/policy/types';

const seed = fc.integer({ min: 0, max: 0xffffffff });
const attempt = fc.integer({ min: 1, max: 200 });
const curveClass = fc.constantFrom<ErrorClass>('transient', 'reprovision', 'fatal');
const anyClass = fc.constantFrom<ErrorClass>('transient', 'reprovision', 'fatal', 'throttled');

/** Valid backoff policies (no fixed delay, no fleet) with min <= max. */
const curvePolicy: fc.Arbitrary<BackoffPolicy> = fc
  .record({
    firstRetryMaxMs: fc.integer({ min: 0, max: 10_000 }),
    minDelayMs: fc.integer({ min: 0, max: 30_000 }),
    extra: fc.integer({ min: 0, max: 300_000 }),
    throttledMinDelayMs: fc.integer({ min: 0, max: 30_000 }),
    retryAfterJitterMs: fc.integer({ min: 0, max: 5_000 }),
  })
  // quickRetries high: these properties are about the exponential curve; the slow floor has its own tests.
  .map(({ extra, ...p }) => ({ ...p, quickRetries: 1000, slowRetryMinMs: 60_000, parkedMinDelayMs: 900_000, parkedMaxDelayMs: 1_800_000, maxDelayMs: Math.max(p.minDelayMs, p.throttledMinDelayMs) + extra }));

function delays(policy: BackoffPolicy, req: DelayRequest, state: number, count: number): number[] {
  const out: number[] = [];
  let rng = state;
  for (let i = 0; i < count; i++) {
    const decision = nextDelay(policy, req, rng);
    out.push(decision.delayMs);
    rng = decision.rngState;
  }
  return out;
}

describe('seeded RNG', () => {
  test('values in [0, 1), state is a uint32', () => {
    fc.assert(
      fc.property(seed, (s) => {
        const [value, next] = nextRandom(s);
        expect(value).toBeGreaterThanOrEqual(0);
        expect(value).toBeLessThan(1);
        expect(Number.isInteger(next) && next >= 0 && next <= 0xffffffff).toBe(true);
      }),
    );
  });

  test('determinism: same seed, same sequence; a different seed, another sequence', () => {
    const run = (s: number) => {
      let state = s;
      return Array.from({ length: 20 }, () => {
        const [v, n] = nextRandom(state);
        state = n;
        return v;
      });
    };
    expect(run(42)).toEqual(run(42));
    expect(run(42)).not.toEqual(run(43));
  });

  test('roughly uniform (mean near 0.5 over 10k draws)', () => {
    let state = seedFrom('uniformity');
    let sum = 0;
    for (let i = 0; i < 10_000; i++) {
      const [v, n] = nextRandom(state);
      sum += v;
      state = n;
    }
    expect(Math.abs(sum / 10_000 - 0.5)).toBeLessThan(0.02);
  });

  test('seedFrom: integers kept (uint32), strings hashed stably, distinct ids differ', () => {
    expect(seedFrom(7)).toBe(7);
    expect(seedFrom(-1)).toBe(0xffffffff);
    expect(seedFrom('dev-001')).toBe(seedFrom('dev-001'));
    expect(seedFrom('dev-001')).not.toBe(seedFrom('dev-002'));
    expect(Number.isInteger(seedFrom(1.5))).toBe(true);
  });

  test('JSON round trip of the state continues the same sequence', () => {
    const [, state] = nextRandom(seedFrom('snapshot'));
    const restored = JSON.parse(JSON.stringify({ state })).state as number;
    expect(nextRandom(restored)).toEqual(nextRandom(state));
  });
});

describe('nextDelay: exponential curve with equal jitter', () => {
  test('property: delay within [cap/2, cap], cap <= maxDelayMs', () => {
    fc.assert(
      fc.property(curvePolicy, curveClass, attempt, fc.boolean(), seed, (policy, errorClass, n, afterLoss, s) => {
        fc.pre(!(afterLoss && n === 1));
        const d = nextDelay(policy, { errorClass, attempt: n, afterLoss }, s);
        expect(d.capMs).toBe(curveCapMs(policy.minDelayMs, policy.maxDelayMs, n));
        expect(d.capMs).toBeLessThanOrEqual(policy.maxDelayMs);
        expect(d.delayMs).toBeGreaterThanOrEqual(d.capMs / 2);
        expect(d.delayMs).toBeLessThanOrEqual(d.capMs);
      }),
    );
  });

  test('property: cap is monotonic non-decreasing in attempt and bounded by max', () => {
    fc.assert(
      fc.property(curvePolicy, attempt, (policy, n) => {
        const a = curveCapMs(policy.minDelayMs, policy.maxDelayMs, n);
        const b = curveCapMs(policy.minDelayMs, policy.maxDelayMs, n + 1);
        expect(b).toBeGreaterThanOrEqual(a);
        expect(b).toBeLessThanOrEqual(policy.maxDelayMs);
      }),
    );
  });

  test('the default curve: three quick retries (1 s, 2 s, 4 s), then at least a minute apart, in [60 s, 90 s]; huge attempts do not overflow', () => {
    const windows = [1, 2, 3, 4, 5, 6].map((n) => {
      const d = nextDelay(DEFAULT_POLICY, { errorClass: 'transient', attempt: n, afterLoss: false }, 1);
      return d.capMs;
    });
    expect(windows).toEqual([1000, 2000, 4000, 90_000, 90_000, 90_000]);
    for (let s = 0; s < 100; s++) {
      for (const n of [4, 5, 50]) {
        const d = nextDelay(DEFAULT_POLICY, { errorClass: 'transient', attempt: n, afterLoss: false }, seedFrom(s));
        expect(d.delayMs).toBeGreaterThanOrEqual(60_000); // seed 004: "a gap of at least a minute"
        expect(d.delayMs).toBeLessThanOrEqual(90_000);
      }
    }
    const huge = nextDelay(DEFAULT_POLICY, { errorClass: 'transient', attempt: 1e9, afterLoss: false }, 1);
    expect(huge.capMs).toBe(90_000);
    expect(Number.isFinite(huge.delayMs)).toBe(true);
  });

  test('jitter is present at the cap: delays at a high attempt over many seeds are not all equal', () => {
    const values = new Set<number>();
    for (let s = 0; s < 200; s++) {
      const d = nextDelay(DEFAULT_POLICY, { errorClass: 'transient', attempt: 50, afterLoss: false }, seedFrom(`dev-${s}`));
      expect(d.capMs).toBe(DEFAULT_POLICY.maxDelayMs);
      values.add(d.delayMs);
    }
    expect(values.size).toBeGreaterThan(150);
    const sorted = [...values].sort((a, b) => a - b);
    // Spread over most of [60 s, 90 s], not bunched.
    expect(sorted[0]!).toBeGreaterThanOrEqual(60_000);
    expect(sorted[sorted.length - 1]! - sorted[0]!).toBeGreaterThan(20_000);
  });

  test('throttled without retry-after: same shape starting at throttledMinDelayMs', () => {
    fc.assert(
      fc.property(curvePolicy, attempt, fc.boolean(), seed, (policy, n, afterLoss, s) => {
        const d = nextDelay(policy, { errorClass: 'throttled', attempt: n, afterLoss }, s);
        expect(d.capMs).toBe(curveCapMs(policy.throttledMinDelayMs, policy.maxDelayMs, n));
        expect(d.delayMs).toBeGreaterThanOrEqual(d.capMs / 2);
        expect(d.delayMs).toBeLessThanOrEqual(d.capMs);
      }),
    );
    expect(nextDelay(DEFAULT_POLICY, { errorClass: 'throttled', attempt: 1, afterLoss: false }, 1).capMs).toBe(5000);
  });

  test('one RNG step per decision (sequence reproducible from the seed)', () => {
    const req: DelayRequest = { errorClass: 'transient', attempt: 3, afterLoss: false };
    const d = nextDelay(DEFAULT_POLICY, req, 99);
    expect(d.rngState).toBe(nextRandom(99)[1]);
    expect(delays(DEFAULT_POLICY, req, 99, 50)).toEqual(delays(DEFAULT_POLICY, req, 99, 50));
  });
});

describe('nextDelay: first retry after a loss', () => {
  test('property: transient/reprovision with afterLoss && attempt 1 → within [0, firstRetryMaxMs]', () => {
    fc.assert(
      fc.property(curvePolicy, fc.constantFrom<ErrorClass>('transient', 'reprovision'), seed, (policy, errorClass, s) => {
        const d = nextDelay(policy, { errorClass, attempt: 1, afterLoss: true }, s);
        expect(d.delayMs).toBeGreaterThanOrEqual(0);
        expect(d.delayMs).toBeLessThanOrEqual(policy.firstRetryMaxMs);
      }),
    );
  });

  test('default: under 1 s and spread out over a fleet', () => {
    const values = Array.from({ length: 100 }, (_, i) => nextDelay(DEFAULT_POLICY, { errorClass: 'transient', attempt: 1, afterLoss: true }, seedFrom(i + 1000)).delayMs);
    expect(Math.max(...values)).toBeLessThanOrEqual(1000);
    expect(Math.max(...values) - Math.min(...values)).toBeGreaterThan(800);
  });

  test('the second attempt after a loss is back on the curve', () => {
    const d = nextDelay(DEFAULT_POLICY, { errorClass: 'transient', attempt: 2, afterLoss: true }, 5);
    expect(d.capMs).toBe(2000);
  });
});

describe('nextDelay: floors', () => {
  test('property: retry-after is never undercut (any class, any policy, fixed and fleet included)', () => {
    const policies = fc.oneof(
      curvePolicy,
      curvePolicy.map((p) => ({ ...p, fixedDelayMs: 90_000 })),
      curvePolicy.map((p) => ({ ...p, fleet: { devices: 500, ratePerSec: 50, load: 1 } })),
    );
    fc.assert(
      fc.property(policies, anyClass, attempt, fc.boolean(), fc.double({ min: 0, max: 600_000, noNaN: true }), seed, (policy, errorClass, n, afterLoss, retryAfterMs, s) => {
        const d = nextDelay(policy, { errorClass, attempt: n, afterLoss, retryAfterMs }, s);
        expect(d.delayMs).toBeGreaterThanOrEqual(retryAfterMs);
      }),
    );
  });

  test('property: retry-after R → uniform in [R, R + max(R/2, retryAfterJitterMs)], never earlier; absurd R capped at an hour', () => {
    fc.assert(
      fc.property(curvePolicy, anyClass, attempt, fc.integer({ min: 0, max: 600_000 }), seed, (policy, errorClass, n, retryAfterMs, s) => {
        const d = nextDelay(policy, { errorClass, attempt: n, afterLoss: false, retryAfterMs }, s);
        expect(d.delayMs).toBeGreaterThanOrEqual(retryAfterMs);
        expect(d.delayMs).toBeLessThanOrEqual(retryAfterMs + Math.max(retryAfterMs / 2, policy.retryAfterJitterMs));
      }),
    );
    // A fleet throttled together with retry-after 10 s comes back spread over 5 s, not 1 s.
    const back = Array.from({ length: 200 }, (_, i) => nextDelay(DEFAULT_POLICY, { errorClass: 'throttled', attempt: 1, afterLoss: false, retryAfterMs: 10_000 }, seedFrom(i)).delayMs);
    expect(Math.min(...back)).toBeGreaterThanOrEqual(10_000);
    expect(Math.max(...back) - Math.min(...back)).toBeGreaterThan(4000);
    const absurd = nextDelay(DEFAULT_POLICY, { errorClass: 'throttled', attempt: 1, afterLoss: false, retryAfterMs: 10 * 86_400_000 }, 1);
    expect(absurd.delayMs).toBeGreaterThanOrEqual(MAX_RETRY_AFTER_MS);
    expect(absurd.delayMs).toBeLessThanOrEqual(MAX_RETRY_AFTER_MS * 1.5);
  });

  test('property: req.minDelayMs is a floor, and the window shifts instead of collapsing onto it', () => {
    fc.assert(
      fc.property(curvePolicy, anyClass, attempt, fc.boolean(), fc.integer({ min: 0, max: 120_000 }), seed, (policy, errorClass, n, afterLoss, minDelayMs, s) => {
        const d = nextDelay(policy, { errorClass, attempt: n, afterLoss, minDelayMs }, s);
        expect(d.delayMs).toBeGreaterThanOrEqual(minDelayMs);
        expect(d.delayMs).toBeLessThanOrEqual(Math.max(policy.maxDelayMs, minDelayMs));
      }),
    );
    // 5xx right after a loss: a fleet spreads over [5 s, 6 s] instead of all waiting exactly 5 s.
    const values = new Set(Array.from({ length: 50 }, (_, i) => nextDelay(DEFAULT_POLICY, { errorClass: 'transient', attempt: 1, afterLoss: true, minDelayMs: 5000 }, seedFrom(i)).delayMs));
    expect(Math.min(...values)).toBeGreaterThanOrEqual(5000);
    expect(Math.max(...values)).toBeLessThanOrEqual(6000);
    expect(values.size).toBeGreaterThan(40);
  });
});

describe('nextDelay: fleet and fixed', () => {
  test('fleetMaxDelayMs: T = N / cps, divided by load', () => {
    expect(fleetMaxDelayMs(1000, 1000 / 60, 1)).toBeCloseTo(60_000);
    expect(fleetMaxDelayMs(500, 50, 0.5)).toBe(20_000);
  });

  test('property: fleet delays within [minDelayMs (0 for the first retry after a loss), fleet max], shifted up by a floor', () => {
    const fleet = fc.record({
      devices: fc.integer({ min: 1, max: 1_000_000 }),
      ratePerSec: fc.double({ min: 0.1, max: 10_000, noNaN: true }),
      load: fc.double({ min: 0.05, max: 1, noNaN: true }),
    });
    fc.assert(
      fc.property(curvePolicy, fleet, anyClass, attempt, fc.boolean(), fc.option(fc.integer({ min: 0, max: 120_000 }), { nil: undefined }), seed, (policy, f, errorClass, n, afterLoss, retryAfterMs, s) => {
        const d = nextDelay({ ...policy, fleet: f }, { errorClass, attempt: n, afterLoss, retryAfterMs }, s);
        const start = afterLoss && n <= 1 && errorClass !== 'throttled' ? 0 : policy.minDelayMs;
        const end = Math.max(start, fleetMaxDelayMs(f.devices, f.ratePerSec, f.load));
        const floor = retryAfterMs ?? 0;
        const lo = Math.max(start, floor);
        const hi = floor > start ? floor + (end - start) : end;
        expect(d.capMs).toBeCloseTo(hi, 6);
        expect(d.delayMs).toBeGreaterThanOrEqual(lo);
        expect(d.delayMs).toBeLessThanOrEqual(hi);
      }),
    );
  });

  test('fleet: 500 devices at 50/s spread over [1 s, 10 s]', () => {
    const policy = { ...DEFAULT_POLICY, fleet: { devices: 500, ratePerSec: 50, load: 1 } };
    const values = Array.from({ length: 500 }, (_, i) => nextDelay(policy, { errorClass: 'throttled', attempt: 1, afterLoss: false }, seedFrom(`dev-${i}`)).delayMs);
    expect(Math.min(...values)).toBeGreaterThanOrEqual(1000);
    expect(Math.max(...values)).toBeLessThanOrEqual(10_000);
    // Roughly 50 per second-wide bucket: no bucket gets more than twice its share.
    const buckets = new Array(9).fill(0) as number[];
    for (const v of values) buckets[Math.min(8, Math.floor((v - 1000) / 1000))]! += 1;
    expect(Math.max(...buckets)).toBeLessThan(2 * (500 / 9));
  });

  test('fleet: the first retry after a loss spreads over [0, T/load] (a dead hub: DPS at the rate it takes)', () => {
    const policy = { ...DEFAULT_POLICY, fleet: { devices: 1000, ratePerSec: 100, load: 1 } };
    const values = Array.from({ length: 1000 }, (_, i) => nextDelay(policy, { errorClass: 'transient', attempt: 1, afterLoss: true }, seedFrom(`dev-${i}`)).delayMs);
    expect(Math.min(...values)).toBeLessThan(100);
    expect(Math.max(...values)).toBeLessThanOrEqual(10_000);
    expect(Math.max(...values)).toBeGreaterThan(9_900);
  });

  test('fleet: a retry-after beyond T/load shifts the window instead of collapsing it (no lockstep)', () => {
    const policy = { ...DEFAULT_POLICY, fleet: { devices: 1000, ratePerSec: 100, load: 1 } };
    const values = Array.from({ length: 200 }, (_, i) => nextDelay(policy, { errorClass: 'throttled', attempt: 1, afterLoss: false, retryAfterMs: 30_000 }, seedFrom(`dev-${i}`)).delayMs);
    expect(Math.min(...values)).toBeGreaterThanOrEqual(30_000);
    expect(Math.max(...values)).toBeLessThanOrEqual(39_000);
    expect(new Set(values.map((v) => Math.floor(v / 1000))).size).toBe(9);
  });

  test('fixedDelayMs: exactly that, no jitter, no RNG step (baseline only)', () => {
    const policy = PRESETS.seedSample;
    for (const errorClass of ['transient', 'reprovision', 'throttled'] as const) {
      for (const n of [1, 2, 10]) {
        expect(nextDelay(policy, { errorClass, attempt: n, afterLoss: n === 1 }, 17)).toEqual({ delayMs: 90_000, capMs: 90_000, rngState: 17 });
      }
    }
    expect(nextDelay(policy, { errorClass: 'throttled', attempt: 1, afterLoss: false, retryAfterMs: 120_000 }, 17).delayMs).toBe(120_000);
  });
});

describe('policies', () => {
  test('DEFAULT_POLICY values', () => {
    expect(DEFAULT_POLICY).toEqual({
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
    expect(Object.isFrozen(DEFAULT_POLICY)).toBe(true);
  });

  test('presets', () => {
    expect(PRESETS.default).toEqual(DEFAULT_POLICY);
    // Leave an unreachable hub after 60 s, not after 3 quick attempts (a fleet-wide blip would be a registration storm).
    expect(PRESETS.iotCentral).toMatchObject({ maxHubAttempts: 100, hubRetryWindowMs: 60_000, hubRetryWindowMaxMs: 15 * 60_000 });
    expect(PRESETS.dpsAtScale).toMatchObject({ maxHubAttempts: 1000, hubRetryWindowMs: 30 * 60_000, fleet: { devices: 1000, load: 1 } });
    expect(PRESETS.seedSample).toMatchObject({ fixedDelayMs: 90_000, reprovisionOnLoss: true });
    // The hub budget is checked before reprovisionOnLoss: a budget of 1 would skip the 90 s wait.
    expect(PRESETS.seedSample.maxHubAttempts).toBeGreaterThan(1);
    expect(PRESETS.naive).toMatchObject({ fixedDelayMs: 1000 });
    expect(PRESETS.naive.reprovisionOnLoss).toBeUndefined();
    for (const preset of Object.keys(PRESETS) as Array<keyof typeof PRESETS>) {
      expect(resolvePolicy({ preset })).toEqual(PRESETS[preset]);
    }
  });

  test('resolvePolicy: defaults, overrides on a preset, JSON-safe fresh object', () => {
    expect(resolvePolicy()).toEqual(DEFAULT_POLICY);
    expect(resolvePolicy({})).toEqual(DEFAULT_POLICY);
    const p = resolvePolicy({ preset: 'iotCentral', maxDelayMs: 30_000, fleet: { devices: 200, ratePerSec: 200 / 60, load: 1 } });
    expect(p).toMatchObject({ hubRetryWindowMs: 60_000, maxDelayMs: 30_000, fleet: { devices: 200 } });
    expect(JSON.parse(JSON.stringify(p))).toEqual(p);
    p.maxDelayMs = 1;
    expect(PRESETS.iotCentral.maxDelayMs).toBe(90_000);
    expect(resolvePolicy({ maxDelayMs: undefined })).toEqual(DEFAULT_POLICY);
  });

  const invalid: Array<[string, unknown, string]> = [
    ['not an object', 'fast', 'policy'],
    ['an array', [], 'policy'],
    ['unknown key', { maxDelay: 5 }, 'policy.maxDelay'],
    ['unknown preset', { preset: 'turbo' }, 'policy.preset'],
    ['negative delay', { minDelayMs: -1 }, 'policy.minDelayMs'],
    ['NaN delay', { maxDelayMs: NaN }, 'policy.maxDelayMs'],
    ['infinite delay', { firstRetryMaxMs: Infinity }, 'policy.firstRetryMaxMs'],
    ['string delay', { retryAfterJitterMs: '1000' }, 'policy.retryAfterJitterMs'],
    ['min > max', { minDelayMs: 10_000, maxDelayMs: 5000 }, 'policy.minDelayMs'],
    ['throttled min > max', { throttledMinDelayMs: 100_000 }, 'policy.throttledMinDelayMs'],
    ['fractional quick retries', { quickRetries: 1.5 }, 'policy.quickRetries'],
    ['negative stable time', { stableConnectionMs: -1 }, 'policy.stableConnectionMs'],
    ['fractional attempts', { maxHubAttempts: 2.5 }, 'policy.maxHubAttempts'],
    ['zero attempts', { maxHubAttempts: 0 }, 'policy.maxHubAttempts'],
    ['infinite attempts (not JSON-safe)', { maxHubAttempts: Infinity }, 'policy.maxHubAttempts'],
    ['negative window', { hubRetryWindowMs: -5 }, 'policy.hubRetryWindowMs'],
    ['non-boolean reprovisionOnLoss', { reprovisionOnLoss: 'yes' }, 'policy.reprovisionOnLoss'],
    ['negative fixed delay', { fixedDelayMs: -1 }, 'policy.fixedDelayMs'],
    ['fleet not an object', { fleet: 5 }, 'policy.fleet'],
    ['fleet unknown key', { fleet: { devices: 1, ratePerSec: 1, load: 1, burst: 2 } }, 'policy.fleet.burst'],
    ['fleet fractional devices', { fleet: { devices: 1.5, ratePerSec: 1, load: 1 } }, 'policy.fleet.devices'],
    ['fleet zero rate', { fleet: { devices: 10, ratePerSec: 0, load: 1 } }, 'policy.fleet.ratePerSec'],
    ['fleet missing load', { fleet: { devices: 10, ratePerSec: 1 } }, 'policy.fleet.load'],
  ];

  test.each(invalid)('resolvePolicy rejects %s', (_title, input, field) => {
    let thrown: unknown;
    try {
      resolvePolicy(input as RetryPolicyInput);
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(ConfigError);
    expect((thrown as ConfigError).field).toBe(field);
    expect((thrown as ConfigError).message).toContain(field);
  });

  test('property: every resolved policy gives delays within bounds', () => {
    const input = fc.record(
      {
        preset: fc.constantFrom('default', 'iotCentral', 'dpsAtScale') as fc.Arbitrary<'default' | 'iotCentral' | 'dpsAtScale'>,
        minDelayMs: fc.integer({ min: 0, max: 5000 }),
        maxDelayMs: fc.integer({ min: 5000, max: 600_000 }),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(input, attempt, seed, (i, n, s) => {
        const policy = resolvePolicy(i);
        const d = nextDelay(policy, { errorClass: 'transient', attempt: n, afterLoss: false }, s);
        // dpsAtScale draws from the at-scale formula's window instead of the curve.
        const top = policy.fleet ? Math.max(policy.minDelayMs, fleetMaxDelayMs(policy.fleet.devices, policy.fleet.ratePerSec, policy.fleet.load)) : policy.maxDelayMs;
        expect(d.delayMs).toBeLessThanOrEqual(top);
      }),
    );
  });
});

/**
 * Issue 12 §3: dpsAtScale uses the at-scale formula for its delays, not only the window. Seed 004
 * ("Timing logic when retrying operations"): min_retry_delay_msec = 1000, max_retry_delay_msec =
 * (1.0 / load) * T * 1000 with T = N / cps, and a random delay between the two.
 */
describe('dpsAtScale: the DPS at-scale formula (seed 004)', () => {
  const req = (n: number): DelayRequest => ({ errorClass: 'transient', attempt: n, afterLoss: false });

  test("the seed's numbers: min 1000 ms, max (1/load) · (N/cps) · 1000 ms", () => {
    // DPS: 1,000 registrations a minute. 1,000 devices, load 1 → T = 60 s → max 60,000 ms.
    expect(fleetMaxDelayMs(1000, DPS_REGISTRATIONS_PER_SEC, 1)).toBeCloseTo(60_000, 6);
    // IoT Central's 200 registrations a minute (the seed's batch example), 200 devices: T = 60 s.
    expect(fleetMaxDelayMs(200, 200 / 60, 1)).toBeCloseTo(60_000, 6);
    // load 2 halves the window; load 0.5 doubles it.
    expect(fleetMaxDelayMs(1000, DPS_REGISTRATIONS_PER_SEC, 2)).toBeCloseTo(30_000, 6);
    expect(fleetMaxDelayMs(1000, DPS_REGISTRATIONS_PER_SEC, 0.5)).toBeCloseTo(120_000, 6);
  });

  test('the preset draws every retry (the 1st, the 5th, the 50th) uniformly in [1 s, 60 s], not on the curve', () => {
    const policy = resolvePolicy({ preset: 'dpsAtScale' });
    expect(policy.minDelayMs).toBe(1000);
    for (const n of [1, 5, 50]) {
      const d = delays(policy, req(n), 42, 2000);
      expect(Math.min(...d)).toBeGreaterThanOrEqual(1000);
      expect(Math.max(...d)).toBeLessThanOrEqual(60_000);
      // Uniform: spread over the whole window (the old preset stayed on the curve: [0.5 s, 1 s] at n = 1).
      expect(Math.min(...d)).toBeLessThan(2000);
      expect(Math.max(...d)).toBeGreaterThan(59_000);
      const mean = d.reduce((a, b) => a + b, 0) / d.length;
      expect(mean).toBeGreaterThan(28_000);
      expect(mean).toBeLessThan(33_000);
    }
  });

  test('the real fleet: fleet.devices on top of the preset (ratePerSec and load kept): 50,000 devices → [1 s, 50 min]', () => {
    const policy = resolvePolicy({ preset: 'dpsAtScale', fleet: { devices: 50_000 } } as RetryPolicyInput);
    expect(policy.fleet).toEqual({ devices: 50_000, ratePerSec: DPS_REGISTRATIONS_PER_SEC, load: 1 });
    const d = delays(policy, req(3), 7, 1000);
    expect(Math.max(...d)).toBeLessThanOrEqual(3_000_000);
    expect(Math.max(...d)).toBeGreaterThan(2_900_000);
    // A retry-after still wins: never earlier than the service asked.
    const throttled = nextDelay(policy, { errorClass: 'throttled', attempt: 1, afterLoss: false, retryAfterMs: 4_000_000 }, 1);
    expect(throttled.delayMs).toBeGreaterThanOrEqual(MAX_RETRY_AFTER_MS);
  });

  test('other presets still need a complete fleet', () => {
    expect(() => resolvePolicy({ fleet: { devices: 5 } } as RetryPolicyInput)).toThrow(/policy\.fleet\.ratePerSec/);
  });
});

describe('policy bounds (issue 13 §3): every number has an upper bound', () => {
  test.each([
    ['maxDelayMs 1e300', { maxDelayMs: 1e300 }, 'policy.maxDelayMs'],
    ['maxDelayMs just over 24 h', { maxDelayMs: MAX_POLICY_DELAY_MS + 1 }, 'policy.maxDelayMs'],
    ['hubRetryWindowMs 1e12', { hubRetryWindowMs: 1e12 }, 'policy.hubRetryWindowMs'],
    ['parkedMaxDelayMs 1e10', { parkedMaxDelayMs: 1e10 }, 'policy.parkedMaxDelayMs'],
    ['fixedDelayMs 3e9', { fixedDelayMs: 3e9 }, 'policy.fixedDelayMs'],
    ['maxHubAttempts 1e9', { maxHubAttempts: 1e9 }, 'policy.maxHubAttempts'],
    ['fleet.devices 1e12', { fleet: { devices: 1e12, ratePerSec: 1, load: 1 } }, 'policy.fleet.devices'],
    ['fleet.load 1e6', { fleet: { devices: 10, ratePerSec: 1, load: 1e6 } }, 'policy.fleet.load'],
    ['fleet window over 24 h', { fleet: { devices: 10_000_000, ratePerSec: 1, load: 1 } }, 'policy.fleet'],
  ])('%s → ConfigError', (_t, input, field) => {
    let thrown: unknown;
    try {
      resolvePolicy(input as RetryPolicyInput);
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(ConfigError);
    expect((thrown as ConfigError).field).toBe(field);
  });

  test('at the bound is accepted', () => {
    expect(resolvePolicy({ maxDelayMs: MAX_POLICY_DELAY_MS }).maxDelayMs).toBe(MAX_POLICY_DELAY_MS);
  });

  test('an unknown key names the nearest known one', () => {
    expect(() => resolvePolicy({ maxDelay: 5 } as RetryPolicyInput)).toThrow(/did you mean 'maxDelayMs'/);
  });

  test('retry-after values are read once, capped at MAX_RETRY_AFTER_MS', () => {
    expect(retryAfterMsFromSeconds('3000000')).toBe(MAX_RETRY_AFTER_MS);
    expect(retryAfterMsFromSeconds(2)).toBe(2000);
    expect(retryAfterMsFromSeconds('0.5')).toBe(500);
    for (const bad of [undefined, null, '', 'soon', '-1', '0', '0.0001', 'Infinity', NaN]) expect(retryAfterMsFromSeconds(bad)).toBeUndefined();
  });
});
