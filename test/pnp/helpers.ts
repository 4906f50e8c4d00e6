/**
 * Plug and Play tests: a real device against the local cloud, with its handlers registered before
 * it starts (as an application would), and small readers of the twin at the cloud.
 */
import { createDevice, type Device, type DeviceStateName, type StateChange } from '../../src/device';
import type { DeviceOptions } from '../../src/options';
import type { LocalCloud } from 'hubstate-cloud';
import { testDeviceOptions, waitFor } from '../e2e/harness';

export { waitFor } from '../e2e/harness';

export interface PnpDevice {
  device: Device;
  registrationId: string;
  dataDir: string;
  states: StateChange[];
  logLines: string[];
  waitForState(state: DeviceStateName, timeoutMs?: number): Promise<void>;
  hub(): ReturnType<LocalCloud['hub']>;
  /** The reported section of the twin at the device's current hub. */
  reported(): Record<string, unknown>;
}

/** Fast reconnects: these tests are about Plug and Play, not backoff. */
export const QUICK_POLICY = { minDelayMs: 50, maxDelayMs: 300, firstRetryMaxMs: 100, throttledMinDelayMs: 200, stableConnectionMs: 500 };

export function startPnpDevice(
  cloud: LocalCloud,
  registrationId: string,
  setup: (device: Device) => void,
  overrides: Partial<DeviceOptions> = {},
): PnpDevice {
  const logLines: string[] = [];
  const options = testDeviceOptions(cloud, registrationId, logLines, { twinTimeoutMs: 5000, policy: QUICK_POLICY, ...overrides });
  const dataDir = options.dataDir!;
  const device = createDevice(options);
  const states: StateChange[] = [];
  device.on('state', (change) => states.push(change));
  setup(device);
  device.start();
  const hub = () => cloud.hub(device.assignment()!.hubHost);
  return {
    device,
    registrationId,
    dataDir,
    states,
    logLines,
    waitForState: (state, timeoutMs) =>
      waitFor(`${registrationId} to reach ${state} (now ${device.state()})`, () => device.state() === state, timeoutMs),
    hub,
    reported: () => hub().getTwin(device.assignment()!.deviceId).reported,
  };
}

/** The value at `path` (dot-separated) in `root`, or undefined. */
export function at(root: unknown, path: string): unknown {
  let node = root;
  for (const key of path.split('.')) {
    if (typeof node !== 'object' || node === null) return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

/** A deferred promise (handlers that finish when the test says so). */
export function deferred<T = void>() {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
