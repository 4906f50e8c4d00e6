import { fromPromise } from 'xstate';
import type { Clock } from '../clock';

/**
 * The BackingOff wait: resolves at the absolute deadline `retryAt`. Because the deadline is in
 * context (not a relative timer), a restored snapshot waits only for what is left of it.
 */
export function createWaitUntil(clock: Clock) {
  return fromPromise<void, { retryAt: number }>(
    ({ input, signal }) =>
      new Promise<void>((resolve) => {
        const remaining = Math.max(0, input.retryAt - clock.now());
        const timer = clock.setTimeout(() => resolve(), remaining);
        signal.addEventListener('abort', () => clock.clearTimeout(timer), { once: true });
      }),
  );
}
