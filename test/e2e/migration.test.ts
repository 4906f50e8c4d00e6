/**
 * Migration off IoT Central (issue 16): the migration tool's `DeviceMove` command, with the real
 * SDK against a local cloud hosting three ID scopes: the device's own (hub-0), one it is enrolled
 * in with the same group key (hub-1, as the tool creates the target enrollment group), and one
 * where it is not enrolled (hub-2, another group key: DPS answers 401).
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type AddedIdScope, type LocalCloud } from 'hubstate-cloud';
import type { MigrationEvent } from '../../src/migration';
import { deliveryReport, keepSending, startDevice, waitFor, waitForState, type DeviceUnderTest } from './harness';

let cloud: LocalCloud;
let target: AddedIdScope;
let notEnrolled: AddedIdScope;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 3, dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  target = cloud.addIdScope({ hubs: ['hub-1'], groupKey: cloud.groupKey });
  notEnrolled = cloud.addIdScope({ hubs: ['hub-2'] });
});
afterAll(async () => {
  await cloud.stop();
});

const options = { migration: true, resilience: false } as const;

function migrationEvents(dut: DeviceUnderTest): MigrationEvent[] {
  const events: MigrationEvent[] = [];
  dut.device.on('migration', (event) => events.push(event));
  return events;
}

const invoke = (hub: string, deviceId: string, name: string, payload: unknown) => cloud.hub(hub).invokeMethod(deviceId, name, payload, { timeoutMs: 10_000, connectTimeoutSec: 10 });

test('DeviceMove: 200, then the device provisions against the new scope and ends Connected on its hub; nothing sent is lost; a reported property follows; a restart stays there', async () => {
  const dut = startDevice(cloud, 'mig-move', options);
  const events = migrationEvents(dut);
  await waitForState(dut, 'Connected');
  expect(dut.device.assignment()?.hubHost).toBe(cloud.hub('hub-0').host);
  dut.device.reportProperties({ firmware: '1.2.3' });
  await waitFor('the property on hub-0', () => cloud.hub('hub-0').getTwin('mig-move').reported['firmware'] === '1.2.3');
  const sender = keepSending(dut, { temp: 20 });
  try {
    await waitFor('some telemetry on hub-0', () => cloud.telemetry({ deviceId: 'mig-move' }).length >= 3);
    const answer = await invoke('hub-0', 'mig-move', 'migration*DeviceMove', { idScope: target.idScope, dpsName: 'dps-target', centralAppName: 'source app' });
    expect(answer.status).toBe(200);
    await waitFor('the move to complete', () => events.some((e) => e.phase === 'completed'), 30_000);
    await waitFor('Connected on hub-1', () => dut.device.state() === 'Connected' && dut.device.assignment()?.hubHost === cloud.hub('hub-1').host, 30_000);
    await waitFor('telemetry on hub-1', () => cloud.telemetry({ deviceId: 'mig-move' }).some((r) => r.hub === 'hub-1'), 20_000);
  } finally {
    await sender.stop();
  }
  expect(events.map((e) => e.phase)).toEqual(['started', 'completed']);
  expect(events[0]).toEqual({ phase: 'started', from: cloud.idScope, to: target.idScope });
  expect(events[1]).toMatchObject({ from: cloud.idScope, to: target.idScope, hubHost: cloud.hub('hub-1').host });
  expect(dut.device.idScope()).toBe(target.idScope);
  expect(cloud.dps.registration('mig-move')).toMatchObject({ idScope: target.idScope, hubName: 'hub-1' });
  // Every accepted message arrives, by id.
  await waitFor('every message delivered', () => deliveryReport(cloud, dut.accepted).lost.length === 0, 20_000);
  expect(dut.accepted.length).toBeGreaterThan(3);
  // The property reported before the move is on the new hub's twin too.
  await waitFor('the property on hub-1', () => cloud.hub('hub-1').getTwin('mig-move').reported['firmware'] === '1.2.3');
  await dut.device.stop();

  // A restart with the same data directory: straight to hub-1 from the cache bound to the new scope.
  const registrationsBefore = cloud.dps.attempts('mig-move').length;
  const again = startDevice(cloud, 'mig-move', { ...options, dataDir: dut.dataDir });
  await waitForState(again, 'Connected');
  expect(again.device.idScope()).toBe(target.idScope);
  expect(again.device.assignment()).toMatchObject({ hubHost: cloud.hub('hub-1').host, source: 'cache' });
  expect(cloud.dps.attempts('mig-move').length).toBe(registrationsBefore);
  expect(again.visited()).toEqual(['Idle', 'Connecting', 'Connected']);
  const id = await again.send();
  await waitFor('delivery after the restart', () => deliveryReport(cloud, [id]).lost.length === 0);
  expect(cloud.telemetry({ deviceId: 'mig-move' }).find((r) => r.messageId === id)?.hub).toBe('hub-1');
  await again.device.stop();
}, 90_000);

test('a move to a scope where the device is not enrolled rolls back to the old scope and ends Connected; nothing sent is lost', async () => {
  const dut = startDevice(cloud, 'mig-refused', options);
  const events = migrationEvents(dut);
  await waitForState(dut, 'Connected');
  const sender = keepSending(dut, { temp: 21 });
  try {
    await waitFor('some telemetry', () => cloud.telemetry({ deviceId: 'mig-refused' }).length >= 3);
    expect((await invoke('hub-0', 'mig-refused', 'migration*DeviceMove', { idScope: notEnrolled.idScope })).status).toBe(200);
    await waitFor('the rollback', () => events.some((e) => e.phase === 'rolled-back'), 30_000);
    await waitFor('Connected again on hub-0', () => dut.device.state() === 'Connected' && dut.states.filter((s) => s.value === 'Connected').length >= 2, 30_000);
  } finally {
    await sender.stop();
  }
  expect(events.map((e) => e.phase)).toEqual(['started', 'rolled-back']);
  expect(events[1]).toEqual({ phase: 'rolled-back', from: cloud.idScope, to: notEnrolled.idScope, reason: 'dps-unauthorized' });
  expect(dut.visited()).not.toContain('Failed');
  expect(dut.device.idScope()).toBe(cloud.idScope);
  expect(dut.device.assignment()?.hubHost).toBe(cloud.hub('hub-0').host);
  expect(dut.logLines.some((line) => /rolled back to/.test(line) && /"level":40/.test(line))).toBe(true);
  await waitFor('every message delivered', () => deliveryReport(cloud, dut.accepted).lost.length === 0, 20_000);
  await dut.device.stop();
  // A restart stays on the old scope (the rollback was persisted).
  const again = startDevice(cloud, 'mig-refused', { ...options, dataDir: dut.dataDir });
  await waitForState(again, 'Connected');
  expect(again.device.idScope()).toBe(cloud.idScope);
  expect(again.device.assignment()).toMatchObject({ hubHost: cloud.hub('hub-0').host, source: 'cache' });
  await again.device.stop();
}, 90_000);

test('a move to an ID scope no DPS hosts (CONNACK 3 at CONNECT) rolls back after three refusals and ends Connected', async () => {
  const dut = startDevice(cloud, 'mig-unknown', options);
  const events = migrationEvents(dut);
  await waitForState(dut, 'Connected');
  const before = await dut.send();
  expect((await invoke('hub-0', 'mig-unknown', 'migration*DeviceMove', { idScope: '0ne00DEAD00' })).status).toBe(200);
  const during = await dut.send();
  // Each refusal waits at least 5 s (CONNACK 3 is also a busy DPS): two waits, then the rollback.
  await waitFor('the rollback', () => events.some((e) => e.phase === 'rolled-back'), 40_000);
  await waitFor('Connected again', () => dut.device.state() === 'Connected' && dut.states.filter((s) => s.value === 'Connected').length >= 2, 20_000);
  expect(events[1]).toEqual({ phase: 'rolled-back', from: cloud.idScope, to: '0ne00DEAD00', reason: 'unknown-id-scope' });
  const refusals = dut.states.filter((s) => s.value === 'BackingOff' && s.previous === 'Reprovisioning');
  expect(refusals).toHaveLength(3);
  expect(dut.visited()).not.toContain('Failed');
  expect(dut.device.idScope()).toBe(cloud.idScope);
  await waitFor('both messages delivered', () => deliveryReport(cloud, [before, during]).lost.length === 0, 20_000);
  await dut.device.stop();
}, 90_000);

test('a bad DeviceMove payload is answered 400 and changes nothing; without the option the command is unknown (404)', async () => {
  const opted = startDevice(cloud, 'mig-bad', options);
  const plain = startDevice(cloud, 'mig-off', { resilience: false });
  await Promise.all([waitForState(opted, 'Connected'), waitForState(plain, 'Connected')]);
  const badPayloads: unknown[] = [undefined, 'scope', [], {}, { idScope: '' }, { idScope: 'not a scope!' }, { idScope: 42 }, { idScope: cloud.idScope, dpsName: 7 }];
  for (const payload of badPayloads) {
    const answer = await invoke('hub-0', 'mig-bad', 'migration*DeviceMove', payload);
    expect({ payload, status: answer.status }).toEqual({ payload, status: 400 });
    expect((answer.payload as { message: string }).message).toMatch(/DeviceMove payload/);
  }
  // The bare name (what the tool sends from an IoT Hub source) is the same command.
  expect((await invoke('hub-0', 'mig-bad', 'DeviceMove', { idScope: 'x y' })).status).toBe(400);
  // The current scope: nothing to do.
  expect(await invoke('hub-0', 'mig-bad', 'migration*DeviceMove', { idScope: cloud.idScope })).toMatchObject({ status: 200 });
  expect(opted.device.idScope()).toBe(cloud.idScope);
  expect(opted.visited()).toEqual(['Idle', 'Provisioning', 'Connecting', 'Connected']);

  const unknown = await invoke('hub-0', 'mig-off', 'migration*DeviceMove', { idScope: target.idScope });
  expect(unknown).toEqual({ status: 404, payload: { message: "unknown command 'migration*DeviceMove'" } });
  expect(plain.device.idScope()).toBe(cloud.idScope);
  expect(plain.visited()).toEqual(['Idle', 'Provisioning', 'Connecting', 'Connected']);
  await Promise.all([opted.device.stop(), plain.device.stop()]);
}, 60_000);
