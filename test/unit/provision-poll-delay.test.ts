/**
 * The provision actor's bounds, as pure functions: when a refused status poll is sent again
 * (uniform in [R, 1.5 R], never earlier than R, seeded), and the hard cap on one registration.
 */
import {
  DEFAULT_POLL_RETRY_AFTER_MS,
  MAX_POLL_RETRY_AFTER_MS,
  hardDeadlineOf,
  throttledPollDelay,
  type PollRetry,
} from '../../src/actors/provision';

/** `n` consecutive decisions from one seed, threading the RNG state as the actor does. */
function draws(status: number, retryAfterMs: number | undefined, n: number, seed = 1): PollRetry[] {
  const out: PollRetry[] = [];
  let state = seed;
  for (let i = 1; i <= n; i++) {
    const retry = throttledPollDelay(status, retryAfterMs, i, state)!;
    out.push(retry);
    state = retry.rngState;
  }
  return out;
}

describe('throttledPollDelay', () => {
  test('429 with retry-after R: uniform in [R, 1.5 R], never earlier, spread over the window', () => {
    const delays = draws(429, 1000, 2000).map((d) => d.delayMs);
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(1000);
    expect(Math.max(...delays)).toBeLessThanOrEqual(1500);
    // Spread: each fifth of the window gets a fair share (uniform, not clamped to an end).
    const buckets = [0, 0, 0, 0, 0];
    for (const d of delays) buckets[Math.min(4, Math.floor((d - 1000) / 100))]!++;
    for (const count of buckets) expect(count).toBeGreaterThan(300);
  });

  test('no retry-after: R is the SDK default of 2 s', () => {
    expect(DEFAULT_POLL_RETRY_AFTER_MS).toBe(2000);
    for (const d of draws(429, undefined, 200)) {
      expect(d.baseMs).toBe(2000);
      expect(d.delayMs).toBeGreaterThanOrEqual(2000);
      expect(d.delayMs).toBeLessThanOrEqual(3000);
    }
  });

  test('5xx: R is at least the classification floor for a busy service (5 s), whatever retry-after says', () => {
    for (const status of [500, 503]) {
      for (const d of draws(status, 200, 100)) {
        expect(d.baseMs).toBe(5000);
        expect(d.delayMs).toBeGreaterThanOrEqual(5000);
        expect(d.delayMs).toBeLessThanOrEqual(7500);
      }
      expect(throttledPollDelay(status, 8000, 1, 1)!.baseMs).toBe(8000);
    }
  });

  test('a retry-after beyond the cap is not waited out in the actor (never polled earlier either): undefined', () => {
    expect(MAX_POLL_RETRY_AFTER_MS).toBe(60_000);
    expect(throttledPollDelay(429, 60_000, 1, 1)).toBeDefined();
    expect(throttledPollDelay(429, 60_001, 1, 1)).toBeUndefined();
    expect(throttledPollDelay(503, 120_000, 1, 1)).toBeUndefined();
  });

  test('seeded: the same seed replays the same waits, different seeds (devices) draw apart', () => {
    expect(draws(429, 1000, 20, 7)).toEqual(draws(429, 1000, 20, 7));
    const a = draws(429, 1000, 20, 7).map((d) => d.delayMs);
    const b = draws(429, 1000, 20, 8).map((d) => d.delayMs);
    expect(a).not.toEqual(b);
    // One RNG step per decision: the state moves on every time.
    const states = draws(429, 1000, 20, 7).map((d) => d.rngState);
    expect(new Set(states).size).toBe(20);
  });
});

describe('hardDeadlineOf', () => {
  test('10 × the deadline, at most 15 min, never below the deadline', () => {
    expect(hardDeadlineOf(10_000)).toBe(100_000);
    expect(hardDeadlineOf(60_000)).toBe(600_000); // the default provisionTimeoutMs
    expect(hardDeadlineOf(5 * 60_000)).toBe(15 * 60_000);
    expect(hardDeadlineOf(20 * 60_000)).toBe(20 * 60_000);
    expect(hardDeadlineOf(300)).toBe(3000);
  });
});
