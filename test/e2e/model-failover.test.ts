/**
 * Model-based failover suite: every two-fault sequence generated from the fault model
 * (test/e2e/fault-model.ts, via xstate/graph) is replayed against the local cloud with the real
 * SDK. Each path asserts the sequence of states the device went through, that it ended on the
 * right hub, and that every message sent before, during and after the faults arrived.
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from '../../src/emulator';
import { EXPECTED_LEG, generateFaultSequences, type Fault } from './fault-model';
import { deliveryReport, startDevice, waitFor, waitForState, type DeviceUnderTest } from './harness';

let cloud: LocalCloud;
const STABLE_CONNECTION_MS = 1000;
const sequences = generateFaultSequences();
const duplicatesByPath: Record<string, number> = {};

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'model-failover', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});
afterAll(async () => {
  console.log(`model-based failover paths: ${sequences.length}; duplicates per path: ${JSON.stringify(duplicatesByPath)}`);
  await cloud.stop();
});

const hubOf = (dut: DeviceUnderTest) => cloud.hubs.find((h) => h.host === dut.device.assignment()?.hubHost)!.name;

async function inject(fault: Fault, dut: DeviceUnderTest, mark: number): Promise<void> {
  const deviceId = dut.device.assignment()!.deviceId;
  const hub = cloud.hub(hubOf(dut));
  const since = () => dut.states.slice(mark);
  switch (fault) {
    case 'DROP':
      hub.disconnect(deviceId);
      break;
    case 'CRASH':
      await hub.kill();
      await waitFor('two failed reconnects', () => since().filter((s) => s.value === 'BackingOff').length >= 2);
      await hub.restart();
      break;
    case 'FAILOVER':
      cloud.manualFailover(deviceId, { ttlMinutes: 60 });
      break;
    case 'FAILBACK':
      cloud.manualFailback(deviceId);
      break;
    case 'USER_REPROVISION':
      dut.device.reprovision();
      break;
    case 'THROTTLED_REPROVISION':
      cloud.dps.throttle({ retryAfterSec: 0.3, count: 1 });
      dut.device.reprovision();
      break;
  }
  await waitFor(`Connected again after ${fault}`, () => since().some((s) => s.value === 'Connected'), 30_000);
}

test('the fault model yields every allowed two-fault sequence', () => {
  expect(sequences).toHaveLength(25);
  expect(sequences).toContainEqual(['FAILOVER', 'FAILBACK']);
  expect(sequences).not.toContainEqual(['FAILBACK', 'FAILOVER']);
});

/**
 * The model's faults hit a device whose connection has lasted (the harness's stableConnectionMs):
 * a second fault inside that second is a flapping hub, which the policy rightly answers with
 * minute-apart retries (test/machine/hour-of-refusals.test.ts covers that).
 */
async function untilConnectionStable(dut: DeviceUnderTest): Promise<void> {
  const connectedAt = [...dut.states].reverse().find((s) => s.value === 'Connected')!.at;
  await waitFor('the connection to last', () => Date.now() >= connectedAt + STABLE_CONNECTION_MS + 200);
  expect(dut.device.state()).toBe('Connected');
}

test.each(sequences.map((faults, i) => [faults.join(' → '), faults, i] as const))('%s', async (_name, faults, index) => {
  const dut = startDevice(cloud, `mb-${index}`, { seed: index + 1, policy: { stableConnectionMs: STABLE_CONNECTION_MS } });
  let sending = true;
  let producer: Promise<void> = Promise.resolve();
  try {
    await waitForState(dut, 'Connected');
    producer = (async () => {
      while (sending) {
        await dut.send({ path: index });
        await new Promise((resolve) => setTimeout(resolve, 40));
      }
    })();
    const home = hubOf(dut);
    let failedOver = false;
    for (const fault of faults) {
      await untilConnectionStable(dut);
      const mark = dut.states.length;
      const hubBefore = hubOf(dut);
      await inject(fault, dut, mark);
      const leg = ['Connected', ...dut.states.slice(mark).map((s) => s.value)].join(' ');
      expect(leg).toMatch(EXPECTED_LEG[fault]);
      if (fault === 'FAILOVER') failedOver = true;
      if (fault === 'FAILBACK') failedOver = false;
      if (fault === 'FAILOVER' || fault === 'FAILBACK') expect(hubOf(dut)).not.toBe(hubBefore);
      else expect(hubOf(dut)).toBe(hubBefore);
      expect(hubOf(dut) === home).toBe(!failedOver);
      // telemetry continues on the hub the device is on now
      const after = dut.accepted.length;
      await waitFor('telemetry after the fault', () => dut.accepted.length > after + 2 && deliveryReport(cloud, dut.accepted.slice(after)).lost.length === 0);
    }
    sending = false;
    await producer;
    await waitFor('every message delivered', () => deliveryReport(cloud, dut.accepted).lost.length === 0, 30_000);
    duplicatesByPath[faults.join('>')] = deliveryReport(cloud, dut.accepted).duplicates;
  } finally {
    sending = false;
    await producer.catch(() => undefined); // a failed path must not leave a producer behind
    await dut.device.stop();
  }
});
