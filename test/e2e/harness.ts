/**
 * End-to-end harness: a real device (createDevice, the unmodified Azure SDK, real TLS) against
 * the local cloud. Every log line of the device is captured so tests can assert on it (and
 * grep it for secrets); every state change is recorded with its time.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { createDevice, type Device, type DeviceStateName, type StateChange } from '../../src/device';
import { REDACTED_PATHS } from '../../src/logger';
import type { DeviceOptions } from '../../src/options';
import type { LocalCloud } from 'hubstate-cloud';

export interface DeviceUnderTest {
  device: Device;
  registrationId: string;
  states: Array<StateChange & { at: number }>;
  logLines: string[];
  accepted: string[];
  dataDir: string;
  /** Sends one telemetry message and remembers its id. */
  send(data?: Record<string, unknown>): Promise<string>;
  visited(): DeviceStateName[];
}

export function newDataDir(): string {
  return mkdtempSync(join(tmpdir(), 'hubstate-e2e-'));
}

/** A pino logger at debug level that writes every line into `lines` (for secret greps). */
export function capturingLogger(lines: string[]) {
  return pino(
    { level: 'debug', redact: { paths: REDACTED_PATHS, censor: '[redacted]' } },
    { write: (line: string) => lines.push(line) },
  );
}

/** Options for a test device of `cloud`: fast timeouts, a fresh data directory, a fixed seed. */
export function testDeviceOptions(
  cloud: LocalCloud,
  registrationId: string,
  logLines: string[],
  overrides: Partial<DeviceOptions> = {},
): DeviceOptions {
  return {
    idScope: cloud.idScope,
    registrationId,
    groupKey: cloud.groupKey,
    modelId: 'dtmi:Sample:Failover;1',
    provisioningHost: cloud.provisioningHost,
    ca: cloud.ca,
    dataDir: overrides.dataDir ?? newDataDir(),
    keepaliveSeconds: 2,
    connectTimeoutMs: 5000,
    provisionTimeoutMs: 10_000,
    closeTimeoutMs: 2000,
    seed: 1,
    logger: capturingLogger(logLines),
    ...overrides,
    // Tests inject faults seconds apart: a connection counts as a success after 1 s here (30 s by
    // default), or every later fault would meet the minute-apart retries of a flapping hub.
    policy: { stableConnectionMs: 1000, ...overrides.policy },
  };
}

export function startDevice(
  cloud: LocalCloud,
  registrationId: string,
  overrides: Partial<DeviceOptions> = {},
  logLines: string[] = [],
): DeviceUnderTest {
  const options = testDeviceOptions(cloud, registrationId, logLines, overrides);
  const dataDir = options.dataDir!;
  const device = createDevice(options);
  const states: DeviceUnderTest['states'] = [];
  device.on('state', (change) => states.push({ ...change, at: Date.now() }));
  const accepted: string[] = [];
  device.start();
  return {
    device,
    registrationId,
    states,
    logLines,
    accepted,
    dataDir,
    async send(data = { temp: 21.5 }) {
      const { messageId } = await device.sendTelemetry(data);
      accepted.push(messageId);
      return messageId;
    },
    visited: () => ['Idle' as DeviceStateName, ...states.map((s) => s.value)],
  };
}

/**
 * Sends telemetry every 40 ms until stopped. `stop()` waits for the last send and rethrows its
 * error; `abandon()` (for a failed test's cleanup) waits without rethrowing.
 */
export function keepSending(dut: DeviceUnderTest, data: Record<string, unknown>) {
  let sending = true;
  const loop = (async () => {
    while (sending) {
      await dut.send(data);
      await new Promise((resolve) => setTimeout(resolve, 40));
    }
  })();
  loop.catch(() => undefined); // observed by stop() or abandon()
  return {
    stop: async () => {
      sending = false;
      await loop;
    },
    abandon: async () => {
      sending = false;
      await loop.catch(() => undefined);
    },
  };
}

/** Poll a condition without racing: resolves as soon as it holds, fails after `timeoutMs`. */
export async function waitFor(what: string, predicate: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export function waitForState(dut: DeviceUnderTest, state: DeviceStateName, timeoutMs?: number): Promise<void> {
  return waitFor(`${dut.registrationId} to reach ${state} (now ${dut.device.state()})`, () => dut.device.state() === state, timeoutMs);
}

/** Every accepted id arrived at some hub: the toolkit's delivery check (duplicates reported, not hidden). */
export { deliveryReport } from 'hubstate-testing';
