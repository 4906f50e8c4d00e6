/**
 * The clock of the runner's simulated-clock mode: it runs at wall-clock speed (so the device's
 * timeouts, DPS poll waits and the stable-connection wait all elapse while real sockets talk) and
 * the runner skips it ahead (`increment`, `set`) when the device has nothing in flight and only
 * waits, in BackingOff. A wait of a minute then takes no wall time, and the device still reads it
 * as a minute. A frozen clock (XState's SimulatedClock) would never fire a timeout or a poll wait
 * while a socket is open, unless the runner guessed when to move it.
 *
 * It has the shape the device's `clock` option takes ({ now, setTimeout, clearTimeout }) and
 * SimulatedClock's `increment` and `set`. Only timers set on this clock skip: the Azure SDK's
 * own timers (MQTT keepalive, token renewal) stay on the wall clock.
 */
import { systemClock } from 'hubstate/internal';

interface Timer {
  deadline: number;
  fn: (...args: unknown[]) => void;
  /** The wall-clock timer that fires it (rescheduled at every skip). */
  wall: unknown;
}

/** Timers and skips are bounded by the device's own (a day at most: MAX_POLICY_DELAY_MS). */
const MAX_SKIP_MS = 86_400_000;

export class SkipAheadClock {
  #skippedMs = 0;
  /** The wall-clock times of the skips and the total skipped after each, to read cloud times in this clock. */
  readonly #skips: Array<{ wallAt: number; skippedMs: number }> = [];
  readonly #timers = new Set<Timer>();

  now(): number {
    return Date.now() + this.#skippedMs;
  }

  setTimeout(fn: (...args: unknown[]) => void, timeout: number): unknown {
    const delay = Number.isNaN(timeout) || timeout < 0 ? 0 : timeout;
    const timer: Timer = { deadline: this.now() + delay, fn, wall: undefined };
    this.#timers.add(timer);
    this.#arm(timer);
    return timer;
  }

  clearTimeout(id: unknown): void {
    const timer = id as Timer | undefined;
    if (!timer || !this.#timers.delete(timer)) return;
    systemClock.clearTimeout(timer.wall);
  }

  /** Moves the clock `ms` ahead: every timer whose deadline is passed fires (in deadline order). */
  increment(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0 || ms > MAX_SKIP_MS) throw new RangeError(`increment: 0 to ${MAX_SKIP_MS} ms, got ${ms}`);
    if (ms === 0) return;
    this.#skippedMs += ms;
    this.#skips.push({ wallAt: Date.now(), skippedMs: this.#skippedMs });
    const timers = [...this.#timers].sort((a, b) => a.deadline - b.deadline);
    for (const timer of timers) {
      systemClock.clearTimeout(timer.wall);
      this.#arm(timer);
    }
  }

  /** Moves the clock to `time` (epoch ms of this clock); never back. */
  set(time: number): void {
    this.increment(Math.max(0, time - this.now()));
  }

  /** Total time skipped so far. */
  get skippedMs(): number {
    return this.#skippedMs;
  }

  /** Timers set on this clock and not fired yet (a device that uses the clock has one while it waits). */
  get pendingTimers(): number {
    return this.#timers.size;
  }

  /** The earliest deadline of the timers pending on this clock (Infinity when none). */
  nextDeadline(): number {
    let next = Infinity;
    for (const timer of this.#timers) next = Math.min(next, timer.deadline);
    return next;
  }

  /**
   * Skips to `time` only if no timer but those due at `time` would fire on the way (an operation
   * in flight, a twin request say, has its deadline on this clock and must not time out because
   * of a skip); true when the clock is at `time` now.
   */
  skipToIfIdle(time: number): boolean {
    if (time <= this.now()) return true;
    if (this.nextDeadline() < time - 1) return false;
    this.set(time);
    return true;
  }

  /** A wall-clock time (a cloud record's `at`) read on this clock: the skips made before it added. */
  fromWall(wallAt: number): number {
    let skipped = 0;
    for (const skip of this.#skips) {
      if (skip.wallAt > wallAt) break;
      skipped = skip.skippedMs;
    }
    return wallAt + skipped;
  }

  #arm(timer: Timer): void {
    timer.wall = systemClock.setTimeout(() => {
      // A skip may have re-armed it meanwhile: only a live timer whose deadline is passed fires.
      if (!this.#timers.has(timer)) return;
      if (this.now() < timer.deadline) return this.#arm(timer);
      this.#timers.delete(timer);
      timer.fn();
    }, Math.max(0, timer.deadline - this.now()));
  }
}
