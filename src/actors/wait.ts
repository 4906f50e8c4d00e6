import { monotonicNow, type Clock } from '../clock';
import type { PromiseWork } from './work';

/**
 * The BackingOff wait: resolves at the absolute deadline `retryAt` (machine time:
 * the clock's monotonicNow, which NTP does not step). Because the deadline is in
 * context (not a relative timer), a restored snapshot waits only for what is left of it.
 */
export function waitUntilWork(clock: Clock): PromiseWork<void, { retryAt: number }> {
  return ({ input, signal }) =>
    new Promise<void>((resolve) => {
      const remaining = Math.max(0, input.retryAt - monotonicNow(clock));
      const timer = clock.setTimeout(() => resolve(), remaining);
      signal.addEventListener('abort', () => clock.clearTimeout(timer), { once: true });
    });
}
