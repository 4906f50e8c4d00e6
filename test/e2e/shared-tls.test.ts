/**
 * One TLS context per CA for all connections of the process (src/actors/tls.ts): devices that
 * provision, connect, fail over and reconnect build no new context for the CA, and verification
 * is what it was: a device that trusts another CA is refused (fatal), never connected.
 */
import tls from 'node:tls';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { startDevice, waitFor, waitForState, type DeviceUnderTest } from './harness';

let cloud: LocalCloud;
let other: LocalCloud;
const contextsForCa = new Map<string, number>();
let spy: jest.SpyInstance;
/** Contexts built for a trust list holding `ca` (`ca` is added to Node's default roots: src/options.ts trustedCaPem). */
const contextsFor = (ca: string) => [...contextsForCa].filter(([list]) => list.includes(ca.trim())).reduce((n, [, count]) => n + count, 0);

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'shared-tls', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  other = await startLocalCloud({ hubs: 1, seed: 'shared-tls-other', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  const create = tls.createSecureContext.bind(tls);
  spy = jest.spyOn(tls, 'createSecureContext').mockImplementation((options) => {
    // Client contexts only: the emulator's servers bring a key.
    if (typeof options?.ca === 'string' && options.key === undefined) contextsForCa.set(options.ca, (contextsForCa.get(options.ca) ?? 0) + 1);
    return create(options);
  });
});
afterAll(async () => {
  spy.mockRestore();
  await Promise.all([cloud.stop(), other.stop()]);
});

test('four devices, a failover and a hub restart: 12+ TLS connections, one context for the CA', async () => {
  const devices: DeviceUnderTest[] = Array.from({ length: 4 }, (_, i) => startDevice(cloud, `shared-tls-${i}`));
  await Promise.all(devices.map((d) => waitForState(d, 'Connected')));
  cloud.manualFailover('shared-tls-0');
  await waitFor('failed over', () => devices[0]!.states.filter((s) => s.value === 'Connected').length >= 2, 20_000);
  const hub = cloud.hub(devices[1]!.device.assignment()!.hubHost);
  await hub.kill();
  await hub.restart();
  await waitFor('all back', () => devices.every((d) => d.device.state() === 'Connected'), 20_000);
  const dpsMetrics = cloud.dps.metrics();
  const connects = cloud.hubs.reduce((n, h) => n + h.metrics().connects, 0) + dpsMetrics.registerRequests + dpsMetrics.lookupRequests;
  expect(connects).toBeGreaterThanOrEqual(10);
  expect(contextsFor(cloud.ca)).toBe(1);
  await Promise.all(devices.map((d) => d.device.stop()));
}, 60_000);

test('the shared context still verifies: a device trusting another CA fails fatally on TLS and never connects', async () => {
  const dut = startDevice(cloud, 'shared-tls-wrong-ca', { ca: other.ca });
  await waitForState(dut, 'Failed', 20_000);
  expect(dut.states.some((s) => s.value === 'Connected')).toBe(false);
  expect(dut.device.actor.getSnapshot().context.lastError?.errorClass).toBe('fatal');
  expect(contextsFor(other.ca)).toBeLessThanOrEqual(1);
  await dut.device.stop();
});
