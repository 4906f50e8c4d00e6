/**
 * Work started and not yet settled (handlers, closes), so a shutdown can wait for all of it. The
 * set is made on first use: most devices never run a writable-property handler or an offline
 * command, and an empty Set still holds its own hash table (~150 bytes).
 */
export class PendingWork {
  #running: Set<Promise<unknown>> | undefined;

  /**
   * Tracks `work` until it settles. `work` handles (logs) its own failures: a rejection is not
   * reported from here, and `settled()` waits for it like for a success.
   */
  track(work: Promise<unknown>): void {
    const running = (this.#running ??= new Set());
    running.add(work);
    const forget = () => running.delete(work);
    work.then(forget, forget);
  }

  get size(): number {
    return this.#running?.size ?? 0;
  }

  /** Resolves when everything tracked so far, and anything tracked meanwhile, has settled. */
  async settled(): Promise<void> {
    while (this.#running && this.#running.size > 0) await Promise.allSettled([...this.#running]);
  }
}
