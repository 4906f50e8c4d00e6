/**
 * SAS token renewal with the real SDK: the SDK renews by reconnecting with a new token before the
 * old one expires, and the hub (which enforces expiry) would drop a session that did not. A
 * renewal must lose no message and must not count as a failure in the policy: the device stays
 * Connected throughout and no backoff, lookup or registration happens.
 */
import type { LocalCloud } from 'hubstate-cloud';
import { deliveryReport, keepSending, startDevice, useLocalCloud, waitFor, waitForState } from './harness';

let cloud: LocalCloud;

useLocalCloud({ hubs: 1, seed: 'token-renewal' }, (started) => {
  cloud = started;
});

test('tokens valid 4 s, renewed 2 s before expiry: several renewals, the device never leaves Connected, nothing lost', async () => {
  const dut = startDevice(cloud, 'renewing', { tokenValiditySeconds: 4, tokenRenewalMarginSeconds: 2 });
  await waitForState(dut, 'Connected');
  const hub = cloud.hub(dut.device.assignment()!.hubHost);
  const connectsAtStart = hub.device('renewing')!.connects;
  const registrations = cloud.dps.metrics().registerRequests;
  const lookups = cloud.dps.metrics().lookupRequests;
  const sender = keepSending(dut, { renewing: true });
  try {
    // Each renewal is a new CONNECT with a fresh token; three of them take about 6 s.
    await waitFor('three token renewals', () => hub.device('renewing')!.connects >= connectsAtStart + 3, 30_000);
  } finally {
    await sender.stop();
  }
  await waitFor('every accepted message delivered', () => deliveryReport(cloud, dut.accepted).lost.length === 0);
  expect(dut.accepted.length).toBeGreaterThan(20);
  // Not a failure to the policy: one Connected, no BackingOff, no DPS traffic, no refusal.
  expect(dut.visited()).toEqual(['Idle', 'Provisioning', 'Connecting', 'Connected']);
  expect(dut.device.actor.getSnapshot().context.lastError).toBeNull();
  expect(cloud.dps.metrics().registerRequests).toBe(registrations);
  expect(cloud.dps.metrics().lookupRequests).toBe(lookups);
  expect(hub.refusals('renewing')).toEqual([]);
  await dut.device.stop();
});
