/**
 * Every step the application's code takes part in is bounded by the step timeout: a device
 * factory that never resolves, an invariant that never settles, or a custom fault that hangs is a
 * failed report naming what hung, not a run (or a CI job) that never ends.
 */
import { createDevice } from 'hubstate';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { runFailoverPath, type FailoverPath } from 'hubstate-testing';

let cloud: LocalCloud;
beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'bounded-steps', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});
afterAll(async () => {
  await cloud.stop();
});

const never = <T>() => new Promise<T>(() => undefined);
const drop: FailoverPath = { name: 'DROP', faults: ['DROP'], identity: 'sas', seed: 41 };

test('a factory whose promise never resolves: a failed report within the step timeout', async () => {
  const started = Date.now();
  const report = await runFailoverPath(drop, { cloud, device: () => never(), stepTimeoutMs: 1500 });
  expect(Date.now() - started).toBeLessThan(10_000);
  expect(report.ok).toBe(false);
  expect(report.failures).toEqual(['DROP: timed out after 1500 ms waiting for the device factory to return a device']);
});

test('an invariant that never settles: the step fails naming it, and the device is stopped', async () => {
  let device: ReturnType<typeof createDevice> | undefined;
  const started = Date.now();
  const report = await runFailoverPath(drop, {
    cloud,
    device: (connection) => (device = createDevice({ ...connection })),
    invariants: [{ name: 'fan acknowledged', check: () => never() }],
    stepTimeoutMs: 1500,
  });
  expect(Date.now() - started).toBeLessThan(20_000);
  expect(report.ok).toBe(false);
  expect(report.failures).toEqual(["DROP, step 1 (DROP): invariant 'fan acknowledged': timed out after 1500 ms waiting for the invariant 'fan acknowledged'"]);
  expect(device!.state()).toBe('Stopped');
});

test('a custom fault whose inject() never settles: a failed report naming the fault', async () => {
  const path: FailoverPath = { name: 'STUCK', faults: ['STUCK'], identity: 'sas', seed: 42 };
  const report = await runFailoverPath(path, {
    cloud,
    device: (connection) => createDevice({ ...connection }),
    customFaults: { STUCK: { inject: () => never(), expectedLeg: /^Connected$/ } },
    stepTimeoutMs: 1500,
  });
  expect(report.ok).toBe(false);
  expect(report.failures).toEqual(['STUCK: timed out after 1500 ms waiting for the custom fault STUCK to be injected']);
});

test('a factory that returns something other than a device: a failed report saying so', async () => {
  const report = await runFailoverPath(drop, { cloud, device: () => ({}) as never, stepTimeoutMs: 1500 });
  expect(report.ok).toBe(false);
  expect(report.failures).toEqual(["DROP: the device factory returned object, not a hubstate Device (createDevice({ ...connection }))"]);
});
