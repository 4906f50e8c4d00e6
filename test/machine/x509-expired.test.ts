/**
 * An expired (or not yet valid) device certificate is classified `parked`: the machine waits the
 * long parked delay and tries again (a renewed certificate may have arrived) instead of Failed.
 * The failures here are the ones the actors build (toFailure of DeviceCertificateExpiredError).
 */
import { DeviceCertificateExpiredError } from '../../src/actors/x509';
import { classify, toFailure } from '../../src/policy/classify';
import { expectParkedThenRegistersAgain, FakeCloud, MACHINE_TEST_POLICY as policy, startMachine } from '../support/fake-actors';


const expired = () => new DeviceCertificateExpiredError(new Date('2026-01-01T00:00:00Z'), new Date('2026-02-01T00:00:00Z'), true);
const notYet = () => new DeviceCertificateExpiredError(new Date('2030-01-01T00:00:00Z'), new Date('2031-01-01T00:00:00Z'), false);

test.each([
  ['expired', expired],
  ['not yet valid', notYet],
])('the rule: %s → parked, in every phase', (_name, make) => {
  for (const phase of ['dps', 'dps-lookup', 'hub-connect'] as const) {
    expect(classify(make(), phase)).toMatchObject({ errorClass: 'parked', rule: 'device-certificate-expired' });
  }
});

test('at the hub: parked on that hub (long wait, the hub budget untouched), then connects once the certificate is good', async () => {
  const cloud = new FakeCloud();
  const device = startMachine(cloud, { cached: true });
  await cloud.flush();
  for (let i = 0; i < 3; i++) {
    await cloud.failOpen(toFailure(expired(), 'hub-connect', cloud.clock.now()));
    expect(device.value()).toBe('BackingOff');
    expect(device.context()).toMatchObject({ retryStep: 'Connecting', hubAttempts: 0 });
    expect(device.context().lastError).toMatchObject({ errorClass: 'parked', rule: 'device-certificate-expired' });
    expect(device.context().delayMs).toBeGreaterThanOrEqual(policy.parkedMinDelayMs);
    expect(device.context().delayMs).toBeLessThanOrEqual(policy.parkedMaxDelayMs);
    await cloud.advance(device.context().delayMs!);
  }
  await cloud.connect();
  expect(device.value()).toBe('Connected');
  expect(device.states).not.toContain('Failed');
});

test('at DPS: parked, registers again after the long wait; Failed is never reached', async () => {
  const cloud = new FakeCloud();
  const device = startMachine(cloud);
  await cloud.flush();
  await cloud.failProvision(toFailure(expired(), 'dps', cloud.clock.now()));
  expect(cloud.calls.provision).toBe(1);
  await expectParkedThenRegistersAgain(cloud, device);
  expect(device.states).not.toContain('Failed');
});
