/** A bounded poll for tests: wait for a condition instead of sleeping a fixed time. */

/** Options of {@link waitFor}. */
export interface WaitForOptions {
  /** Give up after this long. Default 5000 ms. */
  timeoutMs?: number;
  /** Poll interval. Default 10 ms. */
  intervalMs?: number;
  /** Included in the timeout error. */
  message?: string;
}

/**
 * Resolves with the first truthy value `condition` returns (it may be async); rejects after
 * `timeoutMs`. Errors thrown by the condition count as "not yet"; the last one is reported.
 */
export async function waitFor<T>(condition: () => T | Promise<T>, opts: WaitForOptions = {}): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const intervalMs = opts.intervalMs ?? 10;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await condition();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const why = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new Error(`waitFor timed out after ${timeoutMs} ms${opts.message ? `: ${opts.message}` : ''}${why}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
