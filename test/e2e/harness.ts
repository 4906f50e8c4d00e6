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
import { deliveryReport } from 'hubstate-testing';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud, type LocalCloudOptions } from 'hubstate-cloud';

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

export interface CloudDevices {
  /** Starts a device (startDevice) that is stopped after the test, whatever it asserted. */
  launch(registrationId: string, overrides?: Partial<DeviceOptions>, logLines?: string[]): DeviceUnderTest;
  /** Stops a launched device now (a restart within the test); it is not stopped again after it. */
  release(dut: DeviceUnderTest): Promise<void>;
}

/**
 * A fresh local cloud for a test file: started before its tests (DPS polls answered fast unless
 * `options.dps` says otherwise), stopped after them. `onStart` receives it (the file's `cloud`).
 */
export function useLocalCloud(options: LocalCloudOptions, onStart: (cloud: LocalCloud) => void | Promise<void>): CloudDevices {
  let cloud: LocalCloud | undefined;
  const running: DeviceUnderTest[] = [];
  beforeAll(async () => {
    cloud = await startLocalCloud({ ...options, dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC, ...options.dps } });
    await onStart(cloud);
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((dut) => dut.device.stop()));
  });
  afterAll(async () => {
    await cloud?.stop();
  });
  return {
    launch(registrationId, overrides = {}, logLines = []) {
      if (!cloud) throw new Error('useLocalCloud: launch() before the cloud started (call it inside a test)');
      const dut = startDevice(cloud, registrationId, overrides, logLines);
      running.push(dut);
      return dut;
    },
    async release(dut) {
      const at = running.indexOf(dut);
      if (at >= 0) running.splice(at, 1);
      await dut.device.stop();
    },
  };
}

/** Waits until every message `dut` sent has arrived at some hub, then checks none is lost. */
export async function expectAllDelivered(cloud: LocalCloud, dut: DeviceUnderTest, timeoutMs = 30_000): Promise<void> {
  await waitFor(`all ${dut.accepted.length} messages of ${dut.registrationId} delivered`, () => deliveryReport(cloud, dut.accepted).lost.length === 0, timeoutMs);
  expect(deliveryReport(cloud, dut.accepted).lost).toEqual([]);
}

/** The name of the hub `dut` is assigned to (undefined before its first assignment). */
export function hubNameOf(cloud: LocalCloud, dut: DeviceUnderTest): string | undefined {
  return cloud.hubs.find((hub) => hub.host === dut.device.assignment()?.hubHost)?.name;
}

/**
 * Sends telemetry every `everyMs` until stopped: `data`, or `data(n)` for the n-th message.
 * `stop()` waits for the last send and rethrows its error; `abandon()` (for a failed test's
 * cleanup) waits without rethrowing.
 */
export function keepSending(dut: DeviceUnderTest, data: Record<string, unknown> | ((n: number) => Record<string, unknown>), everyMs = 40) {
  let sending = true;
  const loop = (async () => {
    for (let n = 0; sending; n++) {
      await dut.send(typeof data === 'function' ? data(n) : data);
      await new Promise((resolve) => setTimeout(resolve, everyMs));
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
export { deliveryReport };
