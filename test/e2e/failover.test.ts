/**
 * Failover paths against the local cloud with the real SDK: manual failover and failback by TTL,
 * a hub crash and restart, a hub gone beyond the budget, a disabled device, a blackholed hub,
 * and the user-initiated reprovision. Every message sent before, during and after each fault must
 * arrive at some hub (checked by id).
 */
import type { LocalCloud } from 'hubstate-cloud';
import { deliveryReport, expectAllDelivered, hubNameOf, keepSending, useLocalCloud, waitFor, waitForState } from './harness';

let cloud: LocalCloud;
const { launch } = useLocalCloud({ hubs: 2, seed: 'failover-tests' }, (started) => {
  cloud = started;
});

/** Telemetry before, during and after the fault: `{ n }`, counting. */
const counting = (n: number) => ({ n });

// Azure refuses a moved device with CONNACK 3 (the local cloud's default); 5 is the other reading
// of the evidence. The device must fail over the same way under both.
describe.each([3, 5] as const)('refusal code %i', (refusalCode) => {
  test('manual failover: the old hub refuses → DPS status lookup → the other hub; failback by TTL returns; nothing lost, no registration', async () => {
    const id = `fo-manual-${refusalCode}`;
    const dut = launch(id);
    await waitForState(dut, 'Connected');
    const sender = keepSending(dut, counting, 50);
    const home = hubNameOf(cloud, dut)!;
    await waitFor('some telemetry at home', () => cloud.telemetry({ deviceId: id, hub: home }).length >= 3);
    const registrations = cloud.dps.attempts(id).length;

    cloud.manualFailover(id, { ttlMs: 3000, refusalCode });
    await waitFor('moved to the failover hub', () => dut.device.state() === 'Connected' && hubNameOf(cloud, dut) !== home);
    const away = hubNameOf(cloud, dut)!;
    await waitFor('telemetry at the failover hub', () => cloud.telemetry({ deviceId: id, hub: away }).length >= 3);

    await waitFor('failback by TTL', () => dut.device.state() === 'Connected' && hubNameOf(cloud, dut) === home, 20_000);
    await waitFor('telemetry at home again', () => dut.accepted.length > 0 && cloud.deliveredIds(id).has(dut.accepted[dut.accepted.length - 1]));
    await sender.stop();
    await expectAllDelivered(cloud, dut);

    const path = dut.visited();
    const connectedAt = path.map((s, i) => (s === 'Connected' ? i : -1)).filter((i) => i >= 0);
    expect(connectedAt).toHaveLength(3);
    // Each leg as IoT Hub does it: the hub drops the socket (transient: one short retry), the
    // reconnect is refused (CONNACK 3 or 5), DPS is asked where the device belongs (status
    // lookup, not a registration) and names the other hub.
    const leg = ['Connected', 'BackingOff', 'Connecting', 'CheckingAssignment', 'Connecting', 'Connected'];
    expect(path.slice(connectedAt[0], connectedAt[1] + 1)).toEqual(leg);
    expect(path.slice(connectedAt[1], connectedAt[2] + 1)).toEqual(leg);
    for (const wait of dut.states.filter((s) => s.value === 'BackingOff')) expect(wait.delayMs).toBeLessThanOrEqual(1000);
    expect(cloud.dps.attempts(id)).toHaveLength(registrations);
    expect(cloud.dps.lookups(id)).toHaveLength(2);
    const refusals = cloud.hubs.flatMap((h) => h.refusals(id));
    expect(refusals.map((r) => [r.code, r.reason])).toEqual([
      [refusalCode, 'moved'],
      [refusalCode, 'moved'],
    ]);
    expect(cloud.dps.registration(id)?.substatus).toBe('reprovisionedToInitialAssignment');
  });

  test('device disabled on its hub: asks DPS once, then backs off on the hub (no registration storm) until it is enabled', async () => {
    const id = `fo-disabled-${refusalCode}`;
    // Retries at least 2 s apart after the quick ones (a minute by default) keep the test short.
    const dut = launch(id, { policy: { slowRetryMinMs: 2000, maxDelayMs: 6000 } });
    await waitForState(dut, 'Connected');
    const hub = cloud.hub(dut.device.assignment()!.hubHost);
    const registrations = cloud.dps.attempts(id).length;
    hub.disableDevice(id, 'operator', refusalCode);
    await waitFor('refused three times', () => hub.refusals(id).length >= 3, 30_000);
    // DPS confirms the hub once; from then on the refusals are the hub's own trouble.
    expect(cloud.dps.lookups(id)).toHaveLength(1);
    expect(cloud.dps.attempts(id)).toHaveLength(registrations);
    expect(dut.visited()).not.toContain('Reprovisioning');
    expect(hub.refusals(id).every((r) => r.code === refusalCode && r.reason === 'disabled')).toBe(true);
    const id2 = await dut.send({ whileDisabled: true });
    hub.enableDevice(id);
    await waitFor('connected again', () => dut.device.state() === 'Connected' && dut.states.filter((s) => s.value === 'Connected').length === 2, 30_000);
    await waitFor('delivery after re-enable', () => deliveryReport(cloud, [id2]).lost.length === 0);
  });
});

test('hub crash and restart: back off and return to the same hub, without DPS', async () => {
  const dut = launch('fo-crash');
  await waitForState(dut, 'Connected');
  const sender = keepSending(dut, counting, 50);
  const home = hubNameOf(cloud, dut)!;
  const registrations = cloud.dps.metrics().registerRequests;

  await cloud.hub(home).kill();
  await waitForState(dut, 'BackingOff');
  await waitFor('two failed reconnects', () => dut.states.filter((s) => s.value === 'BackingOff').length >= 2, 20_000);
  await cloud.hub(home).restart();
  await waitFor('reconnected', () => dut.device.state() === 'Connected' && dut.states.filter((s) => s.value === 'Connected').length === 2, 30_000);
  await sender.stop();
  await expectAllDelivered(cloud, dut);

  expect(hubNameOf(cloud, dut)).toBe(home);
  expect(cloud.dps.metrics().registerRequests).toBe(registrations);
  expect(dut.visited()).not.toContain('Reprovisioning');
  const waits = dut.states.filter((s) => s.value === 'BackingOff');
  expect(waits[0].delayMs).toBeLessThanOrEqual(1000); // the first retry after a loss is short
  for (const wait of waits) expect(wait.errorClass).toBe('transient');
});

test('hub gone beyond the budget: after maxHubAttempts the device asks DPS and lands on the other hub', async () => {
  const dut = launch('fo-gone', { policy: { maxHubAttempts: 3, maxDelayMs: 2000, throttledMinDelayMs: 1000 } });
  await waitForState(dut, 'Connected');
  const sender = keepSending(dut, counting, 50);
  const home = hubNameOf(cloud, dut)!;
  await cloud.hub(home).kill();
  try {
    await waitFor('connected elsewhere', () => dut.device.state() === 'Connected' && hubNameOf(cloud, dut) !== home, 30_000);
    await sender.stop();
    await expectAllDelivered(cloud, dut);
    const path = dut.visited();
    const reprovisionAt = path.indexOf('Reprovisioning');
    expect(reprovisionAt).toBeGreaterThan(0);
    // three attempts on the dead hub (the loss plus two reconnects), then DPS
    expect(path.slice(4, reprovisionAt + 1)).toEqual(['BackingOff', 'Connecting', 'BackingOff', 'Connecting', 'Reprovisioning']);
    expect(cloud.dps.registration('fo-gone')?.substatus).toBe('deviceDataReset');
  } finally {
    await cloud.hub(home).restart();
  }
});

test('blackholed hub: keepalive detects the silent hub; the device returns when it answers again', async () => {
  const dut = launch('fo-blackhole', { keepaliveSeconds: 1, connectTimeoutMs: 2000 });
  await waitForState(dut, 'Connected');
  const hub = cloud.hub(dut.device.assignment()!.hubHost);
  const sender = keepSending(dut, counting, 100);
  hub.blackhole(true);
  const since = Date.now();
  try {
    await waitForState(dut, 'BackingOff', 15_000);
    const detectedAfter = Date.now() - since;
    expect(detectedAfter).toBeLessThan(10_000);
    expect(dut.states.find((s) => s.value === 'BackingOff')?.errorClass).toBe('transient');
  } finally {
    hub.blackhole(false);
  }
  await waitFor('reconnected', () => dut.device.state() === 'Connected' && dut.states.filter((s) => s.value === 'Connected').length >= 2, 30_000);
  await sender.stop();
  await expectAllDelivered(cloud, dut);
});

test('user-initiated reprovision: Connected → Reprovisioning → Connecting → Connected, nothing lost', async () => {
  const dut = launch('fo-user');
  await waitForState(dut, 'Connected');
  const sender = keepSending(dut, counting, 50);
  const registrations = cloud.dps.registration('fo-user')!.registrations;
  dut.device.reprovision();
  await waitFor('reconnected', () => dut.device.state() === 'Connected' && dut.states.filter((s) => s.value === 'Connected').length === 2);
  await sender.stop();
  await expectAllDelivered(cloud, dut);
  expect(dut.visited().slice(-4)).toEqual(['Connected', 'Reprovisioning', 'Connecting', 'Connected']);
  expect(cloud.dps.registration('fo-user')!.registrations).toBe(registrations + 1);
});
