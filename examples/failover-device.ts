/**
 * The failover sample device (model `dtmi:Sample:Failover;1`, see dtmi-sample-failover-1.json),
 * written the way we want device makers to write theirs:
 *
 * - declare what the device does (writable property, commands) BEFORE it starts, so nothing the
 *   cloud sent while it was away is missed; hubstate answers every desired change on every
 *   connection and acknowledges it in the Plug and Play shape `{ value, ac, av, ad }`;
 * - never decide about connections: sendTelemetry and reportProperties work in every state.
 *   Telemetry is stamped when read and kept in the durable outbox until the hub acknowledges it;
 *   a reported value waits for the next connection, the latest one winning;
 * - validate input (schemas, ranges) and say why it is refused: the cloud sees 400, not a crash;
 * - numbers as numbers, no secret in a log line, stop cleanly on SIGINT/SIGTERM.
 *
 * Functionally equal to the seed sample (iot-central-high-availability-clients, Node): telemetry
 * every 5 s, battery every 15 s, `echo`, offline `setAlarm`, writable `fanSpeed` — without its
 * defects (fixed 90 s reprovision, telemetry dropped while offline, doubles sent as strings,
 * desired properties registered late never acknowledged, keys in the logs, no SIGTERM).
 */
import {
  CommandError,
  createDevice,
  createLogger,
  PropertyRejectedError,
  type Device,
  type DeviceOptions,
} from '../src';
import model from './dtmi-sample-failover-1.json';

export const MODEL_ID = model['@id'];

export interface Reading {
  temp: number;
  humidity: number;
}

export interface ExampleDeviceOptions {
  /** Everything the device needs to connect (ID scope, registration id, key, data dir, ...). */
  device: Omit<DeviceOptions, 'modelId'>;
  /** Default 5000 (the seed sample's period). */
  telemetryIntervalMs?: number;
  /** Battery report period. Default 15000. */
  reportIntervalMs?: number;
  /** Wait before the first reading (spreads a fleet started at once). Default 0. */
  firstReadingAfterMs?: number;
  /** The sensors. Default: a simulated room. */
  read?: () => Reading;
  /** Each accepted telemetry message (e.g. to count it at the cloud). */
  onTelemetry?: (messageId: string, reading: Reading) => void;
  /** Start the device now (default true); false: the caller calls `device.start()` (readings queue meanwhile). */
  start?: boolean;
}

export interface ExampleDevice {
  device: Device;
  /** The fan speed in effect (set by the cloud through the writable property). */
  fanSpeed(): number;
  /** The alarm time set by the offline command, if any. */
  alarm(): string | undefined;
  /** Stop reading sensors (the device keeps delivering what it holds until stop()). */
  stopSending(): Promise<void>;
  /** stopSending(), then Disconnecting → Stopped (what is not acknowledged stays in the outbox). */
  stop(): Promise<void>;
}

const MAX_FAN_SPEED = 10;

/** A simulated room: smooth, plausible numbers (doubles, not strings). */
function simulatedRoom(): () => Reading {
  let step = 0;
  return () => {
    step++;
    return {
      temp: Math.round((21 + 3 * Math.sin(step / 12)) * 100) / 100,
      humidity: Math.round((45 + 10 * Math.cos(step / 20)) * 100) / 100,
    };
  };
}

export function startExampleDevice(options: ExampleDeviceOptions): ExampleDevice {
  // The model's `migration` component: IoT Central's migration tool can move the device to
  // another ID scope (the built-in DeviceMove; `migration: false` in options.device turns it off).
  const device = createDevice({ migration: true, ...options.device, modelId: MODEL_ID });
  const log = options.device.logger;
  const read = options.read ?? simulatedRoom();
  let fanSpeed = 0;
  let alarm: string | undefined;
  let battery = 100;

  // Writable property: checked (integer, 0..10), applied, acknowledged. The default is reported
  // once (203) so the cloud knows the fan's state before anyone sets it.
  device.onWritableProperty(
    'fanSpeed',
    (value) => {
      const speed = value as number;
      if (speed < 0 || speed > MAX_FAN_SPEED) throw new PropertyRejectedError(`fanSpeed must be between 0 and ${MAX_FAN_SPEED}`);
      fanSpeed = speed;
      log?.info({ fanSpeed }, 'fan speed set');
    },
    { schema: 'integer', default: fanSpeed },
  );

  // Synchronous command: the caller waits for the answer.
  device.onCommand('echo', ({ payload }) => {
    const message = payload as string;
    if (message.length > 1024) throw new CommandError(400, 'message longer than 1024 characters');
    return { payload: message };
  }, { schema: 'string' });

  // Offline command (IoT Central queues it as C2D with `method-name`): nobody waits for a result.
  device.onCommand('setAlarm', ({ payload }) => {
    alarm = payload as string;
    log?.info({ alarm }, 'alarm set');
  }, { schema: 'time' });

  if (options.start ?? true) device.start();

  // Periodic work, stoppable at any moment (no sleep outlives stopSending()).
  let sending = true;
  const wakers = new Set<() => void>();
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        wakers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      wakers.add(wake);
    });
  const every = (firstAfterMs: number, periodMs: number, work: () => Promise<void> | void) =>
    (async () => {
      await sleep(firstAfterMs);
      while (sending) {
        try {
          await work();
        } catch (error) {
          // e.g. a full outbox with 'reject-new': this reading is refused, the device goes on.
          log?.warn({ err: (error as Error).message }, 'periodic work failed');
        }
        if (sending) await sleep(periodMs);
      }
    })();

  const loops = [
    every(options.firstReadingAfterMs ?? 0, options.telemetryIntervalMs ?? 5000, async () => {
      const reading = read();
      const { messageId } = await device.sendTelemetry({ temp: reading.temp, humidity: reading.humidity });
      options.onTelemetry?.(messageId, reading);
    }),
    every(options.firstReadingAfterMs ?? 0, options.reportIntervalMs ?? 15_000, () => {
      battery = Math.max(0, Math.round((battery - 0.1) * 100) / 100);
      device.reportProperties({ battery });
    }),
  ];

  const stopSending = async () => {
    sending = false;
    for (const wake of [...wakers]) wake();
    await Promise.all(loops);
  };

  return {
    device,
    fanSpeed: () => fanSpeed,
    alarm: () => alarm,
    stopSending,
    async stop() {
      await stopSending();
      await device.stop();
    },
  };
}

/**
 * The example as `hubstate test-failover --app` loads it (and hubstate-testing's runner takes
 * it): the connection the runner gives (local cloud, seeded policy, logger, clock) in, the device
 * out, reading its sensors every 100 ms; the readings stop when the runner stops the device.
 */
export function createFailoverDevice(connection: Omit<DeviceOptions, 'modelId'>): Device {
  const example = startExampleDevice({ device: connection, telemetryIntervalMs: 100, reportIntervalMs: 1000 });
  example.device.on('state', (change) => {
    if (change.value === 'Stopped') void example.stopSending();
  });
  return example.device;
}

/**
 * `node dist/examples/failover-device.js` with HUBSTATE_ID_SCOPE, HUBSTATE_REGISTRATION_ID,
 * HUBSTATE_DEVICE_KEY (or HUBSTATE_GROUP_KEY), optional HUBSTATE_DATA_DIR, HUBSTATE_PROVISIONING_HOST.
 */
async function main(): Promise<void> {
  const env = process.env;
  const logger = createLogger();
  const example = startExampleDevice({
    device: {
      idScope: env.HUBSTATE_ID_SCOPE ?? '',
      registrationId: env.HUBSTATE_REGISTRATION_ID ?? '',
      ...(env.HUBSTATE_DEVICE_KEY ? { deviceKey: env.HUBSTATE_DEVICE_KEY } : { groupKey: env.HUBSTATE_GROUP_KEY }),
      ...(env.HUBSTATE_PROVISIONING_HOST ? { provisioningHost: env.HUBSTATE_PROVISIONING_HOST } : {}),
      dataDir: env.HUBSTATE_DATA_DIR ?? './hubstate-data',
      logger,
    },
  });
  example.device.on('state', (change) => logger.info({ state: change.value }, 'device state'));
  const shutdown = (signal: string) => {
    logger.info({ signal }, 'stopping');
    example.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
}

if (require.main === module) {
  main().catch((error: Error) => {
    // ConfigError names the field that is wrong; it never contains a key.
    process.stderr.write(`${error.message}\n`);
    process.exit(2);
  });
}
