/**
 * The system clock's two readings: wall time (Date.now(), which NTP steps) and machine time
 * (performance.now(), which it does not). Durations and deadlines are measured on the second.
 */
import { SimulatedClock } from 'xstate';
import { monotonicNow, systemClock, wallTimeOf } from '../../src/clock';

const HOUR_MS = 3_600_000;

describe('systemClock', () => {
  afterEach(() => jest.restoreAllMocks());

  test('its monotonic reading ignores a step of Date.now (6 h back, then 1 h forward); its wall reading follows it', () => {
    const realNow = Date.now.bind(Date);
    let stepMs = 0;
    jest.spyOn(Date, 'now').mockImplementation(() => realNow() + stepMs);
    const wallBefore = systemClock.now();
    const before = monotonicNow(systemClock);
    stepMs = -6 * HOUR_MS;
    const wallBack = systemClock.now();
    const back = monotonicNow(systemClock);
    stepMs = HOUR_MS;
    const wallForward = systemClock.now();
    const forward = monotonicNow(systemClock);
    expect(wallBack - wallBefore).toBeLessThan(-6 * HOUR_MS + 1000);
    expect(wallForward - wallBefore).toBeGreaterThanOrEqual(HOUR_MS);
    expect(back).toBeGreaterThanOrEqual(before);
    expect(back - before).toBeLessThan(1000);
    expect(forward).toBeGreaterThanOrEqual(back);
    expect(forward - before).toBeLessThan(1000);
  });

  test('a machine time reads as a date on the wall clock as it is now: after a 6 h step back, 6 h earlier', () => {
    const realNow = Date.now.bind(Date);
    let stepMs = 0;
    jest.spyOn(Date, 'now').mockImplementation(() => realNow() + stepMs);
    const at = monotonicNow(systemClock);
    const wallAt = systemClock.now();
    expect(Math.abs(wallTimeOf(systemClock, at) - wallAt)).toBeLessThan(1000);
    stepMs = -6 * HOUR_MS;
    expect(Math.abs(wallTimeOf(systemClock, at) - (wallAt - 6 * HOUR_MS))).toBeLessThan(1000);
  });

  test('a long (chained) timer is not fired early by a step of Date.now forward: its deadline is on the monotonic clock', () => {
    jest.useFakeTimers();
    try {
      const fired = jest.fn();
      const delay = 30 * 86_400_000;
      systemClock.setTimeout(fired, delay);
      const realNow = Date.now.bind(Date);
      jest.spyOn(Date, 'now').mockImplementation(() => realNow() + 40 * 86_400_000);
      jest.advanceTimersByTime(delay - 1000);
      expect(fired).not.toHaveBeenCalled();
      jest.advanceTimersByTime(1000);
      expect(fired).toHaveBeenCalledTimes(1);
    } finally {
      jest.useRealTimers();
    }
  });
});

describe('monotonicNow on a clock without it (XState SimulatedClock)', () => {
  test('reads its now(), and wallTimeOf is the identity', () => {
    const clock = new SimulatedClock();
    clock.set(5_000);
    expect(monotonicNow(clock)).toBe(5_000);
    clock.increment(250);
    expect(monotonicNow(clock)).toBe(5_250);
    expect(wallTimeOf(clock, 4_000)).toBe(4_000);
  });
});
