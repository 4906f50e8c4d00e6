/**
 * Key rotation against the local cloud with the real SDK: a key pair where the service refuses
 * one key (an operator regenerated it) is tried once with the other before the failure is
 * classified, the key that worked is kept, and `updateCredentials` replaces the keys at run time.
 * Every accepted message is checked by id.
 */
import { randomBytes } from 'node:crypto';
import { ConfigError } from '../../src/errors';
import type { LocalCloud } from 'hubstate-cloud';
import { deliveryReport, keepSending, startDevice, useLocalCloud, waitFor, waitForState } from './harness';

let cloud: LocalCloud;
const newKey = (): string => randomBytes(32).toString('base64');

useLocalCloud({ hubs: 1, seed: 'key-rotation' }, (started) => {
  cloud = started;
});
// Each test starts from the group enrollment the cloud was created with.
beforeEach(() => cloud.dps.setGroupKeys({ primary: cloud.groupKey }));

function unauthorizedRefusals(deviceId: string): number {
  return cloud.hub('hub-0').refusals(deviceId).filter((r) => r.reason === 'unauthorized').length;
}

test('a regenerated group primary: DPS refuses it, the secondary is tried at once and kept; then updateCredentials moves to the new primary; nothing lost', async () => {
  const oldPrimary = cloud.groupKey;
  const secondary = newKey();
  cloud.dps.setGroupKeys({ primary: oldPrimary, secondary });
  const dut = startDevice(cloud, 'rotate-group', { groupKey: { primary: oldPrimary, secondary } });
  await waitForState(dut, 'Connected');
  const sender = keepSending(dut, { phase: 'rotation' });
  try {
    // The operator regenerates the primary; the identity on the hub keeps its keys until DPS assigns again.
    const newPrimary = newKey();
    cloud.dps.setGroupKeys({ primary: newPrimary, secondary });
    const registrationsBefore = cloud.dps.metrics().registerRequests;
    dut.device.reprovision();
    await waitFor('registered with the secondary key', () => dut.logLines.some((l) => l.includes('DPS refused the primary key; trying the secondary key')));
    await waitFor('connected again', () => dut.device.state() === 'Connected' && dut.states.filter((s) => s.value === 'Connected').length >= 2);
    // Each DPS request: the refused register with the primary, then register + poll(s) with the secondary.
    expect(cloud.dps.metrics().registerRequests - registrationsBefore).toBeGreaterThanOrEqual(2);
    // The hub was never offered the refused key: the device kept the one DPS accepted.
    expect(unauthorizedRefusals('rotate-group')).toBe(0);

    // The application learns the new primary (and drops the old secondary): the next connection uses it.
    cloud.dps.setGroupKeys({ primary: newPrimary });
    dut.device.updateCredentials({ groupKey: { primary: newPrimary } });
    dut.device.reprovision();
    await waitFor('connected a third time', () => dut.device.state() === 'Connected' && dut.states.filter((s) => s.value === 'Connected').length >= 3);
    expect(dut.logLines.filter((l) => l.includes('trying the secondary key'))).toHaveLength(1);
    expect(unauthorizedRefusals('rotate-group')).toBe(0);
  } finally {
    await sender.stop();
  }
  await waitFor('every accepted message delivered', () => deliveryReport(cloud, dut.accepted).lost.length === 0);
  expect(dut.accepted.length).toBeGreaterThan(0);
  await dut.device.stop();
});

test('both keys refused: Failed after one registration per key; updateCredentials brings the device back and delivers what it queued', async () => {
  const dut = startDevice(cloud, 'rotate-both-wrong', { groupKey: { primary: newKey(), secondary: newKey() } });
  await waitForState(dut, 'Failed');
  const failure = dut.device.actor.getSnapshot().context.lastError!;
  expect(failure).toMatchObject({ errorClass: 'fatal', phase: 'dps', rule: 'dps-unauthorized' });
  expect(dut.logLines.filter((l) => l.includes('DPS refused the primary key; trying the secondary key'))).toHaveLength(1);
  const queued = await dut.send({ queued: true });

  expect(() => dut.device.updateCredentials({ groupKey: 'not a key' })).toThrow(ConfigError);
  expect(() => dut.device.updateCredentials({ groupKey: { primary: cloud.groupKey, secondry: cloud.groupKey } as never })).toThrow(/'groupKey\.secondry'.*did you mean 'secondary'/);
  expect(dut.device.state()).toBe('Failed');

  dut.device.updateCredentials({ groupKey: cloud.groupKey });
  await waitForState(dut, 'Connected');
  await waitFor('the queued message delivered', () => deliveryReport(cloud, [queued]).lost.length === 0);
  await dut.device.stop();
});

test('the hub refuses a regenerated primary: the secondary is tried on the same hub at once, without asking DPS', async () => {
  const primary = newKey();
  const secondary = newKey();
  cloud.dps.addIndividualEnrollment('rotate-hub', primary, secondary);
  const dut = startDevice(cloud, 'rotate-hub', { groupKey: undefined, deviceKey: { primary, secondary } });
  await waitForState(dut, 'Connected');
  const first = await dut.send();
  await waitFor('first delivered', () => deliveryReport(cloud, [first]).lost.length === 0);

  const hub = cloud.hub('hub-0');
  const lookupsBefore = cloud.dps.metrics().lookupRequests;
  const registrationsBefore = cloud.dps.metrics().registerRequests;
  hub.addDevice('rotate-hub', newKey(), secondary); // the operator regenerates the primary on the hub
  expect(hub.disconnect('rotate-hub')).toBe(true);
  const during = await dut.send({ during: true });
  await waitFor('back on the hub', () => dut.states.filter((s) => s.value === 'Connected').length >= 2 && dut.device.state() === 'Connected');
  expect(unauthorizedRefusals('rotate-hub')).toBe(1);
  expect(dut.logLines.some((l) => l.includes('the hub refused the primary key; trying the secondary key'))).toBe(true);
  expect(cloud.dps.metrics().lookupRequests).toBe(lookupsBefore);
  expect(cloud.dps.metrics().registerRequests).toBe(registrationsBefore);

  // The kept key holds across the next reconnection: no second refusal.
  expect(hub.disconnect('rotate-hub')).toBe(true);
  await waitFor('back again', () => dut.states.filter((s) => s.value === 'Connected').length >= 3 && dut.device.state() === 'Connected');
  expect(unauthorizedRefusals('rotate-hub')).toBe(1);
  await waitFor('delivered', () => deliveryReport(cloud, [first, during]).lost.length === 0);
  await dut.device.stop();
});
