/**
 * Targeted tests from mutation testing (issue 12 §9, `npm run mutation`): each one pins a
 * behaviour of src/policy/backoff.ts that a surviving mutant changed without any test noticing.
 * See bench/results/mutation.md for the mutants and the ones left as equivalent.
 */
import { ConfigError } from '../../src/errors';
import { DEFAULT_POLICY, DPS_REGISTRATIONS_PER_SEC, fleetMaxDelayMs, MAX_POLICY_DELAY_MS, nextDelay, nextRandom, PRESETS, resolvePolicy, seedFrom, type RetryPolicyInput } from '../../src/policy/backoff';
import type { BackoffPolicy, DelayRequest } from '../../src/policy/types';

/** The published mulberry32 (Tommy Ettinger), written independently of src/policy/backoff.ts. */
function referenceMulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a 32-bit, written independently. */
function referenceFnv1a(text: string): number {
  let hash = 2166136261;
  for (const ch of text) {
    hash ^= ch.charCodeAt(0);
    hash = Math.imul(hash, 16777619) >>> 0;
  }
  return hash >>> 0;
}

function manyDelays(policy: BackoffPolicy, req: DelayRequest, count = 300): number[] {
  const out: number[] = [];
  let state = seedFrom('mutants');
  for (let i = 0; i < count; i++) {
    const decision = nextDelay(policy, req, state);
    out.push(decision.delayMs);
    state = decision.rngState;
  }
  return out;
}

function configError(input: unknown): ConfigError {
  try {
    resolvePolicy(input as RetryPolicyInput);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw new Error(`expected a ConfigError, got ${String(error)}`);
  }
  throw new Error('expected a ConfigError, got a policy');
}

describe('RNG and seeds are the published algorithms (a run replays from its seed across versions)', () => {
  test('nextRandom is mulberry32: same values, and the state is the mulberry32 state', () => {
    for (const seed of [0, 1, 42, 0xdeadbeef, 0xffffffff]) {
      const reference = referenceMulberry32(seed);
      let state = seed;
      for (let i = 0; i < 5; i++) {
        const [value, next] = nextRandom(state);
        expect(value).toBe(reference());
        expect(next).toBe((state + 0x6d2b79f5) >>> 0);
        state = next;
      }
    }
  });

  test('seedFrom hashes strings with FNV-1a (every character, nothing past the end)', () => {
    expect(seedFrom('')).toBe(0x811c9dc5);
    expect(seedFrom('a')).toBe(0xe40c292c);
    for (const id of ['dev-1', 'thermostat-0042', 'ünïcode']) expect(seedFrom(id)).toBe(referenceFnv1a(id));
  });

  test('a non-integer number is hashed as its text, not truncated', () => {
    expect(seedFrom(1.5)).toBe(seedFrom('1.5'));
    expect(seedFrom(1.5)).not.toBe(1);
  });
});

describe('nextDelay windows', () => {
  const base: BackoffPolicy = { ...DEFAULT_POLICY };

  test('first retry after a loss: uniform in [0, firstRetryMaxMs] even when firstRetryMaxMs > maxDelayMs', () => {
    const policy: BackoffPolicy = { ...base, firstRetryMaxMs: 10_000, maxDelayMs: 2000, minDelayMs: 500 };
    const decision = nextDelay(policy, { errorClass: 'transient', attempt: 1, afterLoss: true }, 7);
    expect(decision.capMs).toBe(10_000);
    const delays = manyDelays(policy, { errorClass: 'transient', attempt: 1, afterLoss: true });
    expect(Math.max(...delays)).toBeGreaterThan(2000);
    expect(Math.max(...delays)).toBeLessThanOrEqual(10_000);
  });

  test('fleet: a throttled first retry after a loss does not start at 0 (throttling is never a blip)', () => {
    const policy: BackoffPolicy = { ...base, minDelayMs: 1000, fleet: { devices: 500, ratePerSec: 50, load: 1 } };
    const throttled = manyDelays(policy, { errorClass: 'throttled', attempt: 1, afterLoss: true });
    expect(Math.min(...throttled)).toBeGreaterThanOrEqual(1000);
    // The same request as a transient failure does start at 0 (the control).
    const transient = manyDelays(policy, { errorClass: 'transient', attempt: 1, afterLoss: true });
    expect(Math.min(...transient)).toBeLessThan(1000);
  });

  test('parked: spread over the whole [parkedMinDelayMs, parkedMaxDelayMs] window, not piled on its start', () => {
    const delays = manyDelays(base, { errorClass: 'parked', attempt: 1, afterLoss: false });
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(base.parkedMinDelayMs);
    expect(Math.max(...delays)).toBeLessThanOrEqual(base.parkedMaxDelayMs);
    expect(Math.max(...delays)).toBeGreaterThan(base.parkedMinDelayMs + (base.parkedMaxDelayMs - base.parkedMinDelayMs) / 2);
    expect(nextDelay(base, { errorClass: 'parked', attempt: 1, afterLoss: false }, 1).capMs).toBe(base.parkedMaxDelayMs);
  });

  test('parked under a fleet policy (dpsAtScale): still the parked window, stretched to the fleet window only when that is longer', () => {
    const atScale = resolvePolicy({ preset: 'dpsAtScale' });
    for (const afterLoss of [false, true]) {
      const delays = manyDelays(atScale, { errorClass: 'parked', attempt: 1, afterLoss });
      expect(Math.min(...delays)).toBeGreaterThanOrEqual(atScale.parkedMinDelayMs);
      expect(Math.max(...delays)).toBeLessThanOrEqual(atScale.parkedMaxDelayMs);
    }
    // 1,000,000 devices at 1,000 a minute: T = 1,000 min, longer than the parked 30 min.
    const huge = resolvePolicy({ preset: 'dpsAtScale', fleet: { devices: 1_000_000, ratePerSec: DPS_REGISTRATIONS_PER_SEC, load: 1 } });
    const windowMs = fleetMaxDelayMs(1_000_000, huge.fleet!.ratePerSec, 1);
    const delays = manyDelays(huge, { errorClass: 'parked', attempt: 1, afterLoss: false });
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(huge.parkedMinDelayMs);
    expect(Math.max(...delays)).toBeLessThanOrEqual(windowMs);
    expect(Math.max(...delays)).toBeGreaterThan(windowMs / 2);
  });
});

describe('resolvePolicy validation', () => {
  test('every documented option is accepted', () => {
    expect(resolvePolicy({ fixedDelayMs: 5 }).fixedDelayMs).toBe(5);
    expect(resolvePolicy({ quickRetries: 7 }).quickRetries).toBe(7);
    expect(resolvePolicy({ maxHubAttempts: 9 }).maxHubAttempts).toBe(9);
    expect(resolvePolicy({ hubRetryWindowMs: 1234 }).hubRetryWindowMs).toBe(1234);
    expect(resolvePolicy({ reprovisionOnLoss: true }).reprovisionOnLoss).toBe(true);
  });

  test('null and non-objects are a ConfigError, never a TypeError', () => {
    expect(configError(null)).toMatchObject({ field: 'policy', expected: 'an object' });
    expect(configError({ fleet: null })).toMatchObject({ field: 'policy.fleet', expected: 'an object { devices, ratePerSec, load }' });
  });

  test('unknown keys name the key', () => {
    expect(configError({ maxDelay: 1 })).toMatchObject({ field: 'policy.maxDelay', expected: "no such option (unknown key; did you mean 'maxDelayMs'?)" });
    expect(configError({ fleet: { devices: 1, ratePerSec: 1, load: 1, rate: 2 } })).toMatchObject({
      field: 'policy.fleet.rate',
      expected: "no such option (unknown key; did you mean 'ratePerSec'?)",
    });
  });

  test('an unknown preset lists the presets', () => {
    const names = Object.keys(PRESETS).map((k) => `'${k}'`).join(', ');
    expect(names).toContain("'default', 'iotCentral'");
    expect(configError({ preset: 'fast' })).toMatchObject({ field: 'policy.preset', expected: `one of ${names}` });
  });

  test('each delay field is checked under its own name', () => {
    for (const field of ['firstRetryMaxMs', 'minDelayMs', 'maxDelayMs', 'throttledMinDelayMs', 'retryAfterJitterMs', 'slowRetryMinMs', 'parkedMinDelayMs', 'parkedMaxDelayMs', 'stableConnectionMs', 'lookupAfterUnreachableMs', 'hubRetryWindowMs', 'hubRetryWindowMaxMs', 'fixedDelayMs'] as const) {
      expect(configError({ [field]: -1 })).toMatchObject({ field: `policy.${field}`, expected: 'a number of milliseconds from 0 to 86400000 (24 h)' });
      expect(configError({ [field]: MAX_POLICY_DELAY_MS + 1 })).toMatchObject({ field: `policy.${field}` });
    }
    expect(configError({ minDelayMs: '5' })).toMatchObject({ field: 'policy.minDelayMs' });
  });

  test('quickRetries: an integer from 0 to 1000, both ends included', () => {
    expect(resolvePolicy({ quickRetries: 0 }).quickRetries).toBe(0);
    expect(resolvePolicy({ quickRetries: 1000 }).quickRetries).toBe(1000);
    expect(configError({ quickRetries: -1 })).toMatchObject({ field: 'policy.quickRetries', expected: 'an integer from 0 to 1000' });
    expect(configError({ quickRetries: 1001 })).toMatchObject({ field: 'policy.quickRetries', expected: 'an integer from 0 to 1000' });
    expect(configError({ quickRetries: '3' })).toMatchObject({ field: 'policy.quickRetries' });
  });

  test('positive fields: integer or finite as documented', () => {
    expect(configError({ maxHubAttempts: 0 })).toMatchObject({ field: 'policy.maxHubAttempts', expected: 'an integer from 1 to 1000000' });
    expect(configError({ fleet: { devices: 10, ratePerSec: Infinity, load: 1 } })).toMatchObject({
      field: 'policy.fleet.ratePerSec',
      expected: 'a number > 0 and to 1000000',
    });
    // ratePerSec and load may be fractions; devices may not.
    expect(resolvePolicy({ fleet: { devices: 10, ratePerSec: 2.5, load: 0.5 } }).fleet).toEqual({ devices: 10, ratePerSec: 2.5, load: 0.5 });
    expect(configError({ fleet: { devices: 10.5, ratePerSec: 1, load: 1 } })).toMatchObject({ field: 'policy.fleet.devices' });
  });

  test('min/max pairs: equal is fine, inverted is a ConfigError naming the bound', () => {
    expect(resolvePolicy({ minDelayMs: 5000, maxDelayMs: 5000, throttledMinDelayMs: 5000 }).minDelayMs).toBe(5000);
    expect(configError({ minDelayMs: 6000, maxDelayMs: 5000, throttledMinDelayMs: 100 })).toMatchObject({
      field: 'policy.minDelayMs',
      expected: '<= policy.maxDelayMs (5000)',
    });
    expect(resolvePolicy({ parkedMinDelayMs: 60_000, parkedMaxDelayMs: 60_000 }).parkedMaxDelayMs).toBe(60_000);
    expect(configError({ parkedMinDelayMs: 60_001, parkedMaxDelayMs: 60_000 })).toMatchObject({
      field: 'policy.parkedMinDelayMs',
      expected: '<= policy.parkedMaxDelayMs (60000)',
    });
    expect(configError({ throttledMinDelayMs: 9000, maxDelayMs: 8000, minDelayMs: 100 })).toMatchObject({
      field: 'policy.throttledMinDelayMs',
      expected: '<= policy.maxDelayMs (8000)',
    });
  });

  test('reprovisionOnLoss must be a boolean', () => {
    expect(configError({ reprovisionOnLoss: 'yes' })).toMatchObject({ field: 'policy.reprovisionOnLoss', expected: 'a boolean' });
  });

  test('the message names the option and what was expected', () => {
    expect(configError({ quickRetries: 2000 }).message).toBe("invalid option 'policy.quickRetries': expected an integer from 0 to 1000");
  });
});

describe('policy bounds (mutation run of 03:00, after the bounded validation)', () => {
  test('maxHubAttempts: 1000000 is the largest accepted', () => {
    expect(resolvePolicy({ maxHubAttempts: 1_000_000 }).maxHubAttempts).toBe(1_000_000);
    expect(configError({ maxHubAttempts: 1_000_001 })).toMatchObject({ field: 'policy.maxHubAttempts', expected: 'an integer from 1 to 1000000' });
  });

  test('a fractional fleet field that is NaN is refused, not passed on as NaN', () => {
    expect(configError({ fleet: { devices: 10, ratePerSec: NaN, load: 1 } })).toMatchObject({ field: 'policy.fleet.ratePerSec' });
    expect(configError({ fleet: { devices: 10, ratePerSec: 1, load: NaN } })).toMatchObject({ field: 'policy.fleet.load' });
  });

  test('the at-scale window may be exactly 24 h; one device more is refused, with the window in seconds', () => {
    // (1/load) · N/cps · 1000 ms = 86400 / 1 / 1 · 1000 = 86 400 000 ms.
    expect(resolvePolicy({ fleet: { devices: 86_400, ratePerSec: 1, load: 1 } }).fleet).toEqual({ devices: 86_400, ratePerSec: 1, load: 1 });
    expect(configError({ fleet: { devices: 86_401, ratePerSec: 1, load: 1 } })).toMatchObject({
      field: 'policy.fleet',
      expected: 'a fleet whose at-scale window (1/load) · N/cps is at most 24 h (got 86401 s)',
    });
  });

  test("dpsAtScale: a fleet field given as undefined keeps the preset's value", () => {
    // As a JavaScript caller may write it (the type asks for the whole fleet).
    const input = { preset: 'dpsAtScale', fleet: { devices: undefined, load: 2 } } as unknown as RetryPolicyInput;
    expect(resolvePolicy(input).fleet).toEqual({
      devices: 1000,
      ratePerSec: DPS_REGISTRATIONS_PER_SEC,
      load: 2,
    });
  });
});

describe('throttled is never a blip (deterministic; a fast-check property in backoff.test.ts finds this only on some seeds)', () => {
  test('a throttled first retry after a loss is on the throttled curve, not in [0, firstRetryMaxMs]', () => {
    const delays = manyDelays(DEFAULT_POLICY, { errorClass: 'throttled', attempt: 1, afterLoss: true });
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(DEFAULT_POLICY.throttledMinDelayMs / 2);
    expect(Math.max(...delays)).toBeLessThanOrEqual(DEFAULT_POLICY.throttledMinDelayMs);
    // A transient one is the blip window.
    expect(Math.max(...manyDelays(DEFAULT_POLICY, { errorClass: 'transient', attempt: 1, afterLoss: true }))).toBeLessThanOrEqual(DEFAULT_POLICY.firstRetryMaxMs);
  });
});
