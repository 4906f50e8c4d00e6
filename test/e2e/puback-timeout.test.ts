/**
 * A hub that keeps the connection (it answers pings and twin requests) but withholds PUBACKs is
 * seen only by the SDK's PUBACK timeout: 30 s checked every 10 s by default, so a device stays
 * "Connected" to a hub that stores nothing for 30–40 s. `publishTimeoutSeconds` shortens that:
 * the session ends at T..T + check interval, the device reconnects, and the messages the hub
 * dropped are sent again from the outbox (checked by id at the cloud).
 */
import { publishCheckIntervalMs } from '../../src/actors/hub';
import type { LocalCloud } from 'hubstate-cloud';
import type { Failure } from '../../src/policy/types';
import { deliveryReport, startDevice, useLocalCloud, waitFor, waitForState } from './harness';

let cloud: LocalCloud;

useLocalCloud({ hubs: 1, seed: 'puback-timeout' }, (started) => {
  cloud = started;
});

test('withheld PUBACKs end the session after publishTimeoutSeconds (not 30–40 s); nothing accepted is lost', async () => {
  const T = 2;
  const dut = startDevice(cloud, 'pt-withheld', { publishTimeoutSeconds: T });
  const left: Array<{ at: number; failure: Failure | null }> = [];
  dut.device.on('state', (change) => {
    if (change.previous === 'Connected') left.push({ at: Date.now(), failure: dut.device.actor.getSnapshot().context.lastError });
  });
  await waitForState(dut, 'Connected');
  let sending = true;
  const sender = (async () => {
    for (let n = 0; sending; n++) {
      await dut.send({ n });
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  await waitFor('some telemetry delivered', () => cloud.telemetry({ deviceId: 'pt-withheld' }).length >= 5);

  const hub = cloud.hubs[0]!;
  hub.withholdPubacks(true, { store: false }); // processed and dropped: only the outbox can save them
  const withheldAt = Date.now();
  await waitFor('the device to leave Connected', () => left.length > 0, 20_000);
  const stallMs = left[0]!.at - withheldAt;
  hub.withholdPubacks(false);
  await waitFor('Connected again', () => dut.device.state() === 'Connected' && left.length > 0, 20_000);
  const backMs = Date.now() - withheldAt;
  sending = false;
  await sender;
  await waitFor('every accepted message delivered', () => deliveryReport(cloud, dut.accepted).lost.length === 0, 20_000);

  // The SDK's own bound (see README, Options): T − 1.5 s .. T + 0.5 s + the check interval.
  const bound = T * 1000 + 500 + publishCheckIntervalMs(T);
  console.log(
    `withheld PUBACKs, publishTimeoutSeconds ${T} (check every ${publishCheckIntervalMs(T)} ms): left Connected after ${stallMs} ms, ` +
      `Connected again after ${backMs} ms; ${dut.accepted.length} accepted, duplicates ${deliveryReport(cloud, dut.accepted).duplicates}`,
  );
  // The SDK's PUBACK timeout did it, not keepalive (the hub still answers pings).
  expect(left[0]!.failure).toMatchObject({ name: 'TimeoutError', message: 'Message not acknowledged', errorClass: 'transient' });
  // Plus scheduling slack on a loaded machine (1.5 s); either way far below the default 28.5–40.5 s.
  expect(stallMs).toBeGreaterThanOrEqual(T * 1000 - 1500);
  expect(stallMs).toBeLessThanOrEqual(bound + 1500);
  expect(deliveryReport(cloud, dut.accepted).lost).toEqual([]);
  // The device's own account (issue 16): the loss by its rule, the unacknowledged messages resent.
  await waitFor('every message counted delivered', () => dut.device.stats().messages.delivered === dut.accepted.length);
  const stats = dut.device.stats();
  expect(stats.disconnects.byRule['timeout']).toBeGreaterThanOrEqual(1);
  expect(stats.messages.resent).toBeGreaterThanOrEqual(1);
  expect(stats.messages.dropped).toBe(0);
  await dut.device.stop();
});
