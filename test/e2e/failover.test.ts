/**
 * Failover paths against the local cloud with the real SDK: manual failover and failback by TTL,
 * a hub crash and restart, a hub gone beyond the budget, a disabled device, a blackholed hub,
 * and the user-initiated reprovision. Every message sent before, during and after each fault must
 * arrive at some hub (checked by id; duplicates counted, not hidden).
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from '../../src/emulator';
import { deliveryReport, startDevice, waitFor, waitForState, type DeviceUnderTest } from './harness';

let cloud: LocalCloud;
const running: DeviceUnderTest[] = [];

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'failover-tests', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((dut) => dut.device.stop()));
});
afterAll(async () => {
  await cloud.stop();
});

function launch(registrationId: string, overrides: Parameters<typeof startDevice>[2] = {}) {
  const dut = startDevice(cloud, registrationId, overrides);
  running.push(dut);
  return dut;
}

/** Telemetry every `everyMs` until stopped: before, during and after the fault. */
function keepSending(dut: DeviceUnderTest, everyMs = 50) {
  let on = true;
  const loop = (async () => {
    let n = 0;
    while (on) {
      await dut.send({ n: n++ });
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
  })();
  return async () => {
    on = false;
    await loop;
  };
}

async function expectAllDelivered(dut: DeviceUnderTest) {
  await waitFor(`all ${dut.accepted.length} messages of ${dut.registrationId} delivered`, () => deliveryReport(cloud, dut.accepted).lost.length === 0, 30_000);
  const { duplicates } = deliveryReport(cloud, dut.accepted);
  if (duplicates > 0) console.log(`${dut.registrationId}: ${duplicates} duplicate(s) of ${dut.accepted.length} (same message id)`);
  return duplicates;
}

const hubName = (dut: DeviceUnderTest) => cloud.hubs.find((h) => h.host === dut.device.assignment()?.hubHost)?.name;

test('manual failover: the old hub refuses (CONNACK 5) → Reprovisioning → the other hub; failback by TTL returns; nothing lost', async () => {
  const dut = launch('fo-manual');
  await waitForState(dut, 'Connected');
  const stop = keepSending(dut);
  const home = hubName(dut)!;
  await waitFor('some telemetry at home', () => cloud.telemetry({ deviceId: 'fo-manual', hub: home }).length >= 3);

  cloud.manualFailover('fo-manual', { ttlMs: 3000 });
  await waitFor('moved to the failover hub', () => dut.device.state() === 'Connected' && hubName(dut) !== home);
  const away = hubName(dut)!;
  await waitFor('telemetry at the failover hub', () => cloud.telemetry({ deviceId: 'fo-manual', hub: away }).length >= 3);

  await waitFor('failback by TTL', () => dut.device.state() === 'Connected' && hubName(dut) === home, 20_000);
  await waitFor('telemetry at home again', () => dut.accepted.length > 0 && cloud.deliveredIds('fo-manual').has(dut.accepted[dut.accepted.length - 1]));
  await stop();
  await expectAllDelivered(dut);

  const path = dut.visited();
  const connectedAt = path.map((s, i) => (s === 'Connected' ? i : -1)).filter((i) => i >= 0);
  expect(connectedAt).toHaveLength(3);
  // Each leg as IoT Hub does it: the hub drops the socket (transient: one short retry), the
  // reconnect is refused with CONNACK 5 (reprovision class), DPS assigns the other hub.
  const leg = ['Connected', 'BackingOff', 'Connecting', 'Reprovisioning', 'Connecting', 'Connected'];
  expect(path.slice(connectedAt[0], connectedAt[1] + 1)).toEqual(leg);
  expect(path.slice(connectedAt[1], connectedAt[2] + 1)).toEqual(leg);
  for (const wait of dut.states.filter((s) => s.value === 'BackingOff')) expect(wait.delayMs).toBeLessThanOrEqual(1000);
  expect(dut.states.filter((s) => s.value === 'Reprovisioning').map((s) => s.errorClass)).toEqual(['reprovision', 'reprovision']);
  expect(cloud.dps.registration('fo-manual')?.substatus).toBe('reprovisionedToInitialAssignment');
});

test('hub crash and restart: back off and return to the same hub, without DPS', async () => {
  const dut = launch('fo-crash');
  await waitForState(dut, 'Connected');
  const stop = keepSending(dut);
  const home = hubName(dut)!;
  const registrations = cloud.dps.metrics().registerRequests;

  await cloud.hub(home).kill();
  await waitForState(dut, 'BackingOff');
  await waitFor('two failed reconnects', () => dut.states.filter((s) => s.value === 'BackingOff').length >= 2, 20_000);
  await cloud.hub(home).restart();
  await waitFor('reconnected', () => dut.device.state() === 'Connected' && dut.states.filter((s) => s.value === 'Connected').length === 2, 30_000);
  await stop();
  await expectAllDelivered(dut);

  expect(hubName(dut)).toBe(home);
  expect(cloud.dps.metrics().registerRequests).toBe(registrations);
  expect(dut.visited()).not.toContain('Reprovisioning');
  const waits = dut.states.filter((s) => s.value === 'BackingOff');
  expect(waits[0].delayMs).toBeLessThanOrEqual(1000); // the first retry after a loss is short
  for (const wait of waits) expect(wait.errorClass).toBe('transient');
});

test('hub gone beyond the budget: after maxHubAttempts the device asks DPS and lands on the other hub', async () => {
  const dut = launch('fo-gone', { policy: { maxHubAttempts: 3, maxDelayMs: 2000, throttledMinDelayMs: 1000 } });
  await waitForState(dut, 'Connected');
  const stop = keepSending(dut);
  const home = hubName(dut)!;
  await cloud.hub(home).kill();
  try {
    await waitFor('connected elsewhere', () => dut.device.state() === 'Connected' && hubName(dut) !== home, 30_000);
    await stop();
    await expectAllDelivered(dut);
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

test('device disabled on its hub: reprovisions, and backs off (no registration storm) while it stays disabled', async () => {
  const dut = launch('fo-disabled');
  await waitForState(dut, 'Connected');
  const hub = cloud.hub(dut.device.assignment()!.hubHost);
  const before = cloud.dps.attempts('fo-disabled').length;
  hub.disableDevice('fo-disabled');
  await waitFor('two refused fresh assignments', () => dut.states.filter((s) => s.value === 'BackingOff' && s.errorClass === 'reprovision').length >= 2, 20_000);
  const refused = dut.states.filter((s) => s.value === 'BackingOff' && s.errorClass === 'reprovision');
  expect(refused[1].delayMs!).toBeGreaterThan(refused[0].delayMs! / 2);
  expect(cloud.dps.attempts('fo-disabled').length - before).toBeLessThanOrEqual(4);
  const id = await dut.send({ whileDisabled: true });
  hub.enableDevice('fo-disabled');
  await waitForState(dut, 'Connected', 30_000);
  await waitFor('delivery after re-enable', () => deliveryReport(cloud, [id]).lost.length === 0);
});

test('blackholed hub: keepalive detects the silent hub; the device returns when it answers again', async () => {
  const dut = launch('fo-blackhole', { keepaliveSeconds: 1, connectTimeoutMs: 2000 });
  await waitForState(dut, 'Connected');
  const hub = cloud.hub(dut.device.assignment()!.hubHost);
  const stop = keepSending(dut, 100);
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
  await stop();
  await expectAllDelivered(dut);
});

test('user-initiated reprovision: Connected → Reprovisioning → Connecting → Connected, nothing lost', async () => {
  const dut = launch('fo-user');
  await waitForState(dut, 'Connected');
  const stop = keepSending(dut);
  const registrations = cloud.dps.registration('fo-user')!.registrations;
  dut.device.reprovision();
  await waitFor('reconnected', () => dut.device.state() === 'Connected' && dut.states.filter((s) => s.value === 'Connected').length === 2);
  await stop();
  await expectAllDelivered(dut);
  expect(dut.visited().slice(-4)).toEqual(['Connected', 'Reprovisioning', 'Connecting', 'Connected']);
  expect(cloud.dps.registration('fo-user')!.registrations).toBe(registrations + 1);
});
