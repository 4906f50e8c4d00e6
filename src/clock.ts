/**
 * The one clock the device side reads. Structurally compatible with XState's SimulatedClock,
 * so tests drive every delay (backoff deadlines, timeouts) with `clock.increment(ms)`.
 *
 * Two readings: `now()` is the wall clock (epoch ms, what NTP steps): for dates — token expiry,
 * what is written to disk, logged or reported. `monotonicNow()` never steps: for durations and
 * deadlines (backoff, the hub window, timeouts). A clock without it (a SimulatedClock) is read by
 * `monotonicNow(clock)` on `now()`: its time never steps.
 */
export interface Clock {
  /** Wall time, epoch ms. */
  now(): number;
  /**
   * Machine time, ms: never goes back, does not move when the wall clock is stepped. Only its
   * differences mean something; turn a reading into a date with `wallTimeOf`.
   */
  monotonicNow?(): number;
  setTimeout(fn: (...args: unknown[]) => void, timeout: number): unknown;
  clearTimeout(id: unknown): void;
}

/**
 * Node's longest timer: `setTimeout` turns anything beyond 2^31 − 1 ms (about 24.8 days), and
 * Infinity, into 1 ms (with a TimeoutOverflowWarning). The system clock chains longer waits.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Epoch ms of performance.now()'s zero, read once: the wall clock at the process's start. (Fake
 * timers replace `performance` without a timeOrigin: then the wall clock at this module's load.)
 */
const MONOTONIC_ORIGIN = Number.isFinite(performance.timeOrigin) ? performance.timeOrigin : Date.now() - performance.now();

/** The system clock's machine time (see systemClock), whole ms as Date.now() gives. */
function systemMonotonicNow(): number {
  return Math.floor(MONOTONIC_ORIGIN + performance.now());
}

/** A system timer that may be a chain of Node timers: `current` is the one running now. */
interface LongTimer {
  current: NodeJS.Timeout | undefined;
}

/**
 * The machine time of `clock`: its `monotonicNow()`, else its `now()` (a simulated clock, which
 * nothing steps). Every duration and deadline the device computes is a difference of these.
 */
export function monotonicNow(clock: Clock): number {
  return clock.monotonicNow ? clock.monotonicNow() : clock.now();
}

/** The wall time (epoch ms) at which `clock`'s machine time read `at`: for showing it as a date. */
export function wallTimeOf(clock: Clock, at: number): number {
  return clock.now() - (monotonicNow(clock) - at);
}

/**
 * Node's timers, safe for any delay: a delay beyond MAX_TIMER_MS waits in steps of at most
 * MAX_TIMER_MS until its deadline (read on the monotonic clock), so it never fires early; Infinity
 * never fires; NaN and negative delays fire at once, as Node does.
 *
 * Its machine time is `performance.now()` from the process's time origin: it reads as epoch ms
 * while the wall clock has not been stepped since the start (so a test tool that compares it
 * with Date.now() stays close), but NTP stepping the wall clock does not move it.
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  monotonicNow: systemMonotonicNow,
  setTimeout: (fn, timeout) => {
    const delay = Number.isNaN(timeout) || timeout < 0 ? 0 : timeout;
    const timer: LongTimer = { current: undefined };
    if (delay === Infinity) return timer;
    if (delay <= MAX_TIMER_MS) {
      timer.current = setTimeout(fn, delay);
      return timer;
    }
    const deadline = systemMonotonicNow() + delay;
    const step = (): void => {
      const left = deadline - systemMonotonicNow();
      if (!(left > 0)) {
        timer.current = undefined;
        fn();
        return;
      }
      timer.current = setTimeout(step, Math.min(left, MAX_TIMER_MS));
    };
    step();
    return timer;
  },
  clearTimeout: (id) => {
    const timer = id as LongTimer | undefined;
    if (timer?.current !== undefined) clearTimeout(timer.current);
    if (timer) timer.current = undefined;
  },
};

/** Resolves after `ms` on `clock`, or rejects with `onTimeout()` — whichever `work` loses to. */
export function withDeadline<T>(clock: Clock, work: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = clock.setTimeout(() => reject(onTimeout()), ms);
    work.then(
      (value) => {
        clock.clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clock.clearTimeout(timer);
        reject(error);
      },
    );
  });
}
