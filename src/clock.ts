/**
 * The one clock the device side reads. Structurally compatible with XState's SimulatedClock,
 * so tests drive every delay (backoff deadlines, timeouts) with `clock.increment(ms)`.
 */
export interface Clock {
  now(): number;
  setTimeout(fn: (...args: unknown[]) => void, timeout: number): unknown;
  clearTimeout(id: unknown): void;
}

/**
 * Node's longest timer: `setTimeout` turns anything beyond 2^31 − 1 ms (about 24.8 days), and
 * Infinity, into 1 ms (with a TimeoutOverflowWarning). The system clock chains longer waits.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A system timer that may be a chain of Node timers: `current` is the one running now. */
interface LongTimer {
  current: NodeJS.Timeout | undefined;
}

/**
 * Node's timers, safe for any delay: a delay beyond MAX_TIMER_MS waits in steps of at most
 * MAX_TIMER_MS until its deadline (read on Date.now()), so it never fires early; Infinity never
 * fires; NaN and negative delays fire at once, as Node does.
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, timeout) => {
    const delay = Number.isNaN(timeout) || timeout < 0 ? 0 : timeout;
    const timer: LongTimer = { current: undefined };
    if (delay === Infinity) return timer;
    if (delay <= MAX_TIMER_MS) {
      timer.current = setTimeout(fn, delay);
      return timer;
    }
    const deadline = Date.now() + delay;
    const step = (): void => {
      const left = deadline - Date.now();
      if (left <= 0) {
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
