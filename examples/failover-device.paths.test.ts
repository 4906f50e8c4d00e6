/**
 * The example device's own model-based failover tests, written as a device maker would write them
 * for their app with hubstate-testing: every single fault of the fault model (both refusal codes
 * where a hub refuses), replayed against the local cloud with the example device itself, and the
 * app's own invariant checked after each fault: it keeps reading its sensors, and every reading it
 * sent before the fault reaches the cloud.
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { generateFailoverPaths, runFailoverPath } from 'hubstate-testing';
import { startExampleDevice, type ExampleDevice } from './failover-device';

const paths = generateFailoverPaths({ depth: 1, refusalCodes: [3, 5], seed: 100 });
let cloud: LocalCloud;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});
afterAll(() => cloud.stop());

/** Polls a condition (no racing sleeps); false after `timeoutMs`. */
async function eventually(condition: () => boolean, timeoutMs = 10_000): Promise<boolean> {
  for (const deadline = Date.now() + timeoutMs; !condition(); ) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return true;
}

test.each(paths.map((p) => [p.name, p] as const))('%s', async (_name, path) => {
  let example: ExampleDevice | undefined;
  const readings: string[] = [];
  const report = await runFailoverPath(path, {
    cloud,
    device: (connection) => {
      example = startExampleDevice({ device: connection, telemetryIntervalMs: 100, reportIntervalMs: 1000, onTelemetry: (id) => readings.push(id) });
      return example.device;
    },
    invariants: [
      {
        name: 'the example keeps reading its sensors, and its readings arrive',
        async check() {
          const before = readings.length;
          if (!(await eventually(() => readings.length >= before + 2))) return `no new reading after the fault (${before} so far)`;
          const sent = readings.slice(0, before);
          const arrived = await eventually(() => sent.every((id) => cloud.deliveredIds().has(id)));
          return arrived || `${sent.filter((id) => !cloud.deliveredIds().has(id)).length} of ${sent.length} readings missing at the cloud`;
        },
      },
    ],
  });
  await example?.stopSending();
  expect(report.failures).toEqual([]);
  expect(report.ok).toBe(true);
  expect(report.steps).toHaveLength(1);
  expect(readings.length).toBeGreaterThan(2);
});
