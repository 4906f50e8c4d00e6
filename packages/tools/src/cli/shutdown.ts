/**
 * SIGINT / SIGTERM for the long-running commands (`run`, `demo`): the first signal asks the
 * command to stop (STOP → Disconnecting → Stopped, the outbox keeps what was not delivered);
 * if it has not finished within `graceMs` the process exits anyway (code 1). A second signal
 * exits at once. Nothing is lost by a forced exit: the SQLite outbox commits every accepted
 * message before `sendTelemetry` resolves.
 */

export const DEFAULT_GRACE_MS = 10_000;

export interface Shutdown {
  /** Aborted on the first SIGINT / SIGTERM; `signal.reason` is the signal name. */
  signal: AbortSignal;
  /** Remove the handlers and the deadline (call when the command has finished). */
  dispose(): void;
}

const EXIT_ON_SECOND: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

export function installShutdown(options: { graceMs?: number; err?: NodeJS.WritableStream } = {}): Shutdown {
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
  const err = options.err ?? process.stderr;
  const controller = new AbortController();
  let deadline: NodeJS.Timeout | undefined;

  const onSignal = (signal: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      err.write(`hubstate: ${signal} again, exiting now\n`);
      process.exit(EXIT_ON_SECOND[signal] ?? 1);
    }
    err.write(`hubstate: ${signal}: stopping (Disconnecting -> Stopped, at most ${Math.round(graceMs / 1000)} s)\n`);
    deadline = setTimeout(() => {
      err.write(`hubstate: not stopped after ${Math.round(graceMs / 1000)} s, exiting anyway (undelivered telemetry stays in the outbox)\n`);
      process.exit(1);
    }, graceMs);
    controller.abort(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  return {
    signal: controller.signal,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      if (deadline) clearTimeout(deadline);
    },
  };
}

/** Resolves when `signal` aborts (never rejects). */
export function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}

/** `setTimeout` as a promise that ends early (resolving) when `signal` aborts. `Infinity`: until then. */
export function sleepUnless(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    // setTimeout would turn anything beyond 2^31-1 ms (and Infinity) into 1 ms.
    const timer = Number.isFinite(ms) ? setTimeout(done, Math.min(ms, 2 ** 31 - 1)) : undefined;
    signal?.addEventListener('abort', done, { once: true });
  });
}
