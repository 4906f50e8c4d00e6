/** Waiting, and the soak's own timers (so a phase can cancel what it started). */

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `predicate` every `stepMs` until it holds (true) or `timeoutMs` passed (false). */
export async function until(predicate: () => boolean, timeoutMs: number, stepMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) return false;
    await sleep(stepMs);
  }
  return true;
}

/** Every timeout and interval the run started, so each phase can cancel them and nothing outlives the run. */
export class RunTimers {
  private readonly timeouts = new Set<NodeJS.Timeout>();
  private readonly intervals = new Set<NodeJS.Timeout>();

  timeout(fn: () => void, ms: number): void {
    const timer = setTimeout(() => {
      this.timeouts.delete(timer);
      fn();
    }, ms);
    this.timeouts.add(timer);
  }

  interval(fn: () => void, ms: number): NodeJS.Timeout {
    const timer = setInterval(fn, ms);
    this.intervals.add(timer);
    return timer;
  }

  clearTimeouts(): void {
    for (const t of this.timeouts) clearTimeout(t);
    this.timeouts.clear();
  }

  clearInterval(timer: NodeJS.Timeout): void {
    clearInterval(timer);
    this.intervals.delete(timer);
  }

  clearIntervals(except?: NodeJS.Timeout): void {
    for (const i of [...this.intervals]) if (i !== except) this.clearInterval(i);
  }

  clearAll(): void {
    this.clearTimeouts();
    this.clearIntervals();
  }
}
