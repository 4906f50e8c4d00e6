/**
 * `hubstate run`: one real device (IoT Central / DPS + IoT Hub) from flags, environment or a
 * JSON file, logging with pino (redacted) to stdout or a file. The device is the example app
 * (examples/failover-device.ts, model dtmi:Sample:Failover;1: telemetry, battery, writable
 * fanSpeed, commands); with another `--model-id` it only sends sample telemetry.
 * SIGINT / SIGTERM (via the `signal` passed in): STOP → Disconnecting → Stopped; what was not
 * delivered stays in the durable outbox under the data directory and is sent on the next run.
 */
import pino from 'pino';
import { MODEL_ID, startExampleDevice } from 'hubstate/examples/failover-device';
import { createDevice, type Device, type StateChange, MessageRejectedError, createLogger } from 'hubstate';
import { prepareRunPaths } from './files';
import type { RunConfig } from './run-config';
import { aborted, sleepUnless } from './shutdown';

export interface RunIo {
  /** Human lines (stderr); the logs go to stdout or the log file. */
  err: NodeJS.WritableStream;
  signal?: AbortSignal;
  /** The log file, already opened by prepareRunPaths (else runDevice prepares the paths itself). */
  logFd?: number;
}

/** A plausible sample reading: slow sine waves with a little noise. */
export function sampleReading(n: number): { temperature: number; humidity: number } {
  const round = (x: number) => Math.round(x * 100) / 100;
  return { temperature: round(21 + 3 * Math.sin(n / 30) + Math.random() * 0.2), humidity: round(45 + 10 * Math.sin(n / 50) + Math.random()) };
}

/** Runs until the signal aborts, `durationSeconds` pass, or the device fails. Returns the exit code. */
export async function runDevice(config: RunConfig, io: RunIo): Promise<number> {
  // The log file is created 0600 (openLogFile), whatever the umask.
  const logFd = io.logFd ?? prepareRunPaths(config).logFd;
  const logger = createLogger({
    level: config.logLevel,
    destination: pino.destination({ dest: logFd ?? 1, sync: true }),
  });
  for (const warning of config.warnings) io.err.write(`hubstate: warning: ${warning}\n`);

  const secrets = [config.device.groupKey, config.device.deviceKey].filter((k): k is string => typeof k === 'string');
  const bridge = config.inspect
    ? await (require('./inspect') as typeof import('./inspect')).startInspectorBridge({ port: config.inspectPort || undefined, secrets })
    : undefined;
  if (bridge) {
    io.err.write(`hubstate: inspector: open ${bridge.url} in a browser with internet access (it embeds https://stately.ai/inspect)\n`);
  }

  // The example app when its model is wanted (the default); plain sample telemetry otherwise.
  const { modelId: requestedModel, ...deviceOptions } = config.device;
  const useExample = requestedModel === undefined || requestedModel === MODEL_ID;
  let n = 0;
  let example: ReturnType<typeof startExampleDevice> | undefined;
  let device: Device;
  if (useExample) {
    example = startExampleDevice({
      device: { ...deviceOptions, logger, inspect: bridge?.inspect },
      telemetryIntervalMs: config.intervalMs,
      onTelemetry: () => n++,
      start: false,
    });
    device = example.device;
  } else {
    device = createDevice({ ...config.device, logger, inspect: bridge?.inspect });
  }
  const { registrationId, idScope, provisioningHost, dataDir } = config.device;
  const modelId = useExample ? MODEL_ID : requestedModel;
  logger.info(
    { registrationId, idScope, provisioningHost, dataDir, modelId, app: useExample ? 'example' : 'sample-telemetry', policy: config.device.policy },
    'hubstate run: starting',
  );
  io.err.write(`hubstate: device ${registrationId} starting (data ${dataDir}, logs ${config.logFile ?? 'stdout'})\n`);

  let failed: StateChange | undefined;
  const failedOrStopped = new Promise<void>((resolve) => {
    device.on('state', (change) => {
      if (change.value === 'Failed') {
        failed = change;
        resolve();
      }
    });
  });
  device.start();

  const stop = new AbortController();
  const stopSending = () => stop.abort();
  io.signal?.addEventListener('abort', stopSending, { once: true });
  const durationTimer =
    config.durationSeconds !== undefined ? setTimeout(stopSending, config.durationSeconds * 1000) : undefined;
  void failedOrStopped.then(stopSending);

  let rejected = 0;
  let delivered = 0;
  device.on('delivered', () => delivered++);
  const producer = (async () => {
    if (example) {
      await aborted(stop.signal);
      await example.stopSending();
      return;
    }
    while (!stop.signal.aborted) {
      try {
        await device.sendTelemetry(sampleReading(n++));
      } catch (error) {
        if (!(error instanceof MessageRejectedError)) throw error;
        rejected++;
        logger.warn({ reason: error.reason }, 'sample telemetry rejected');
      }
      await sleepUnless(config.intervalMs, stop.signal);
    }
  })();

  await aborted(stop.signal);
  if (durationTimer) clearTimeout(durationTimer);
  await producer;
  const queuedBefore = device.outboxStats().count;
  const deliveredBefore = delivered;
  await device.stop();
  // Stopping may still receive PUBACKs for messages in flight; the rest stays in the outbox.
  const kept = queuedBefore - (delivered - deliveredBefore);
  logger.info({ kept, captured: n, delivered, rejected }, 'hubstate run: stopped; undelivered telemetry stays in the outbox');
  logger.flush();
  if (bridge) await bridge.stop();

  if (failed) {
    const lastError = device.actor.getSnapshot().context.lastError;
    io.err.write(
      `hubstate: the device failed${lastError ? ` (${lastError.errorClass}, ${lastError.rule}: ${lastError.message})` : ''}; ` +
        'it will not retry by itself: check the configuration\n',
    );
    return 1;
  }
  io.err.write(`hubstate: stopped (${kept} message(s) kept in the outbox for the next run)\n`);
  return 0;
}
