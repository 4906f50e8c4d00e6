/**
 * Issue 16 end to end: the device's `resilience` component (dtmi:hubstate:Resilience;1) at the
 * cloud. After a manual failover the device reports, at its first connection to the new hub,
 * the failover counted (hubChanges), the lost connection by class and rule, and the DPS status
 * lookup that found the new hub; `device.stats()` and the `stats` event say the same. While
 * connected, a report after the connection's goes only when something happened. Opted out,
 * the twin never holds the component while the application's own properties still arrive.
 */
import type { LocalCloud } from 'hubstate-cloud';
import type { DeviceOptions } from '../../src/options';
import type { DeviceStats } from '../../src/stats';
import { useLocalCloud, waitFor, waitForState, type DeviceUnderTest } from './harness';

let cloud: LocalCloud;
const devices = useLocalCloud({ hubs: 2, seed: 'resilience-tests' }, (started) => {
  cloud = started;
});

const QUICK = { minDelayMs: 50, maxDelayMs: 300, firstRetryMaxMs: 100, throttledMinDelayMs: 200 };

function launch(registrationId: string, overrides: Partial<DeviceOptions> = {}) {
  return devices.launch(registrationId, { policy: QUICK, twinTimeoutMs: 5000, ...overrides });
}

const hubOf = (dut: DeviceUnderTest) => cloud.hub(dut.device.assignment()!.hubHost);
const resilienceAt = (dut: DeviceUnderTest) => hubOf(dut).getTwin(dut.device.assignment()!.deviceId).reported['resilience'] as Record<string, unknown> | undefined;

test('after a failover the new hub holds the resilience component, the failover counted', async () => {
  const id = 'resilience-failover';
  const dut = launch(id);
  const events: DeviceStats[] = [];
  dut.device.on('stats', (stats) => events.push(stats));
  await waitForState(dut, 'Connected');
  const home = dut.device.assignment()!.hubHost;
  await dut.send({ n: 1 });
  // Delivered before the failover: the count the new hub's report must carry over.
  await waitFor('the message delivered at home', () => dut.device.stats().messages.delivered === 1);
  await waitFor('the first report at home', () => resilienceAt(dut)?.connects === 1);
  expect(resilienceAt(dut)).toMatchObject({ __t: 'c', hubChanges: 0, hubHost: home, recommendedAction: 'none' });

  // No failback during the test: the device stays on the other hub.
  cloud.manualFailover(id, { ttlMs: 120_000 });
  await waitFor('connected to the other hub', () => dut.device.state() === 'Connected' && dut.device.assignment()!.hubHost !== home);
  const away = dut.device.assignment()!.hubHost;
  await waitFor('the report at the new hub', () => resilienceAt(dut)?.hubChanges === 1);
  const reported = resilienceAt(dut)!;
  expect(reported).toMatchObject({ __t: 'c', hubHost: away, recommendedAction: 'none', lastErrorClass: expect.any(String), lastErrorRule: expect.any(String) });
  expect(reported.connects as number).toBeGreaterThanOrEqual(2);
  expect(reported.disconnects as number).toBeGreaterThanOrEqual(1);
  expect(reported.dpsStatusLookups as number).toBeGreaterThanOrEqual(1);
  expect(reported.delivered as number).toBeGreaterThanOrEqual(1);
  expect(Object.values(reported.disconnectsByRule as Record<string, number>).reduce((a, b) => a + b, 0)).toBe(reported.disconnects);

  const stats = dut.device.stats();
  expect(stats).toMatchObject({ hubChanges: 1, hubHost: away, recommendedAction: 'none' });
  expect(stats.connected.percent).toBeGreaterThan(0);
  expect(stats.connected.percent).toBeLessThanOrEqual(100);
  // One event at each connection (no interval has passed at 60 s).
  expect(events[0]).toMatchObject({ hubHost: home, connects: 1, hubChanges: 0 });
  expect(events[events.length - 1]).toMatchObject({ hubChanges: 1, hubHost: away });
});

test('on the interval only when something happened; opted out, never', async () => {
  const reporting = launch('resilience-interval', { resilience: { intervalMs: 1000 } });
  const quiet = launch('resilience-off', { resilience: false });
  await waitForState(reporting, 'Connected');
  await waitForState(quiet, 'Connected');
  await waitFor('a first report', () => resilienceAt(reporting) !== undefined);
  expect(resilienceAt(reporting)).toMatchObject({ connects: 1, outboxMaxDepth: 0 });
  // The first message takes the outbox to a depth it never had: news, reported on the interval.
  await reporting.send({ n: 1 });
  await waitFor('an interval report of the deeper outbox', () => resilienceAt(reporting)?.outboxMaxDepth === 1, 10_000);
  // Then nothing happens: the times in the figures move, but no report goes (each is a billed
  // twin update). Two and a half intervals, and the component at the cloud has not changed.
  const settled = resilienceAt(reporting);
  await new Promise((resolve) => setTimeout(resolve, 2500));
  expect(resilienceAt(reporting)).toEqual(settled);
  expect(reporting.device.stats().connected.ms).toBeGreaterThan(settled!.connectedMs as number);

  quiet.device.reportProperties({ battery: 80 });
  await waitFor('the application’s property', () => hubOf(quiet).getTwin(quiet.device.assignment()!.deviceId).reported['battery'] === 80);
  await new Promise((resolve) => setTimeout(resolve, 1500));
  expect(resilienceAt(quiet)).toBeUndefined();
  expect(quiet.device.stats().connects).toBe(1);
});
