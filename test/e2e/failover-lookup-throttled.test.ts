/**
 * A failover while DPS throttles the status lookup (429 + Retry-After 8 s, once), through the real
 * lookup actor and SDK against the local cloud. DPS is not asked again before its wait; a busy
 * hub (CONNACK 3) is retried on its own curve meanwhile, a hub that refused the device outright
 * (CONNACK 5) is not; then the lookup finds the failover hub, and nothing is lost.
 */
import type { LocalCloud } from 'hubstate-cloud';
import { deliveryReport, useLocalCloud, waitFor, waitForState } from './harness';

/** Longer than a busy hub's own 5 s floor, so that CONNACK 3 is retried inside the wait. */
const RETRY_AFTER_SEC = 8;

let cloud: LocalCloud;
const { launch } = useLocalCloud({ hubs: 2, seed: 'failover-lookup-throttled' }, (started) => {
  cloud = started;
});

test.each([
  [3, 'retried meanwhile'],
  [5, 'left alone meanwhile'],
] as const)('refusal code %i, lookup throttled: DPS asked again only after its Retry-After, the old hub %s, then the failover hub', async (refusalCode, _meanwhile) => {
  const id = `fo-lookup-throttled-${refusalCode}`;
  const dut = launch(id);
  await waitForState(dut, 'Connected');
  const home = dut.device.assignment()!.hubHost;
  const homeHub = cloud.hubs.find((hub) => hub.host === home)!;
  const before = await dut.send({ n: 'before' });
  await waitFor('delivered at home', () => deliveryReport(cloud, [before]).lost.length === 0);

  const refusedBefore = homeHub.metrics().refusedConnects;
  cloud.dps.throttle({ retryAfterSec: RETRY_AFTER_SEC, count: 1, target: 'lookup' });
  cloud.manualFailover(id, { ttlMs: null, refusalCode });
  const during = await dut.send({ n: 'during' });
  await waitFor('connected to the failover hub', () => dut.device.state() === 'Connected' && dut.device.assignment()!.hubHost !== home, 20_000);
  await waitFor('delivered after the failover', () => deliveryReport(cloud, [before, during]).lost.length === 0);

  const lookups = cloud.dps.lookups(id);
  expect(lookups.map((l) => l.status)).toEqual([429, 200]);
  expect(lookups[0]!.retryAfterSec).toBe(RETRY_AFTER_SEC);
  // The lookup's answer was sent at [1], the request came some ms before: allow for it.
  expect(lookups[1]!.at - lookups[0]!.at).toBeGreaterThanOrEqual(RETRY_AFTER_SEC * 1000 - 100);
  // No registration: the lookup said where the device is.
  expect(cloud.dps.attempts(id)).toHaveLength(1);
  const refusedAtHome = homeHub.metrics().refusedConnects - refusedBefore;
  // The refusal that asked, then: the hub's own curve (at least one more), or one try once DPS may be asked.
  if (refusalCode === 3) expect(refusedAtHome).toBeGreaterThanOrEqual(3);
  else expect(refusedAtHome).toBe(2);
  cloud.manualFailback(id);
});
