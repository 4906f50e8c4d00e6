/**
 * The status lookup is documented for devices (REST reference, seed 004), but one reading of the
 * evidence is that only service credentials may call it (see the local cloud README). Under that
 * reading the device's lookup is answered 401 and it must still fail over: by registering.
 */
import type { LocalCloud } from 'hubstate-cloud';
import { deliveryReport, useLocalCloud, waitFor, waitForState } from './harness';

let cloud: LocalCloud;
const { launch } = useLocalCloud({ hubs: 2, seed: 'failover-lookup-refused', dps: { lookupCredentials: 'service' } }, (started) => {
  cloud = started;
});

test.each([3, 5] as const)('refusal code %i, lookup refused (401): the device re-registers and lands on the failover hub, nothing lost', async (refusalCode) => {
  const id = `fo-lookup-refused-${refusalCode}`;
  const dut = launch(id);
  await waitForState(dut, 'Connected');
  const home = dut.device.assignment()!.hubHost;
  const before = await dut.send({ n: 'before' });
  await waitFor('delivered at home', () => deliveryReport(cloud, [before]).lost.length === 0);

  cloud.manualFailover(id, { ttlMs: null, refusalCode });
  const during = await dut.send({ n: 'during' });
  await waitFor('connected to the failover hub', () => dut.device.state() === 'Connected' && dut.device.assignment()!.hubHost !== home, 20_000);
  await waitFor('delivered after the failover', () => deliveryReport(cloud, [before, during]).lost.length === 0);

  const path = dut.visited();
  expect(path.slice(path.indexOf('Connected'))).toEqual([
    'Connected',
    'BackingOff',
    'Connecting',
    'CheckingAssignment',
    'Reprovisioning',
    'Connecting',
    'Connected',
  ]);
  expect(cloud.dps.lookups(id).map((l) => l.status)).toEqual([401]);
  expect(cloud.dps.registration(id)?.substatus).toBe('deviceDataMigrated');
  cloud.manualFailback(id);
});
