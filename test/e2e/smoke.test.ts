import type { LocalCloud } from 'hubstate-cloud';
import { deliveryReport, startDevice, useLocalCloud, waitFor, waitForState } from './harness';

let cloud: LocalCloud;
useLocalCloud({ hubs: 2 }, (started) => {
  cloud = started;
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
