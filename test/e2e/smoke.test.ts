import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { deliveryReport, startDevice, waitFor, waitForState } from './harness';

let cloud: LocalCloud;
beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});
afterAll(async () => {
  await cloud.stop();
});

test('first boot: DPS → hub, telemetry delivered by id', async () => {
  const dut = startDevice(cloud, 'smoke-1');
  await waitForState(dut, 'Connected');
  const ids = [await dut.send(), await dut.send(), await dut.send()];
  await waitFor('delivery', () => deliveryReport(cloud, ids).lost.length === 0);
  expect(dut.visited()).toEqual(['Idle', 'Provisioning', 'Connecting', 'Connected']);
  await dut.device.stop();
  expect(dut.device.state()).toBe('Stopped');
});
