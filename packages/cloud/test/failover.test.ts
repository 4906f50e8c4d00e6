import { errors } from 'azure-iot-common';
import { FAST_DPS_POLL_SEC, startLocalCloud, waitFor, type FailoverInfo, type LocalCloud } from '../src';
import { closeQuietly, connectDevice, deviceClient, nextDisconnect, openError, provision, provisionAndConnect } from './helpers';

let cloud: LocalCloud;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'failover-test', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});

afterAll(async () => {
  await cloud?.stop();
});

// Azure refuses a moved device with CONNACK 3 (the default); 5 stays selectable per failover.
const refusedAs = { 3: errors.ServiceUnavailableError, 5: errors.UnauthorizedError } as const;

test.each([3, 5] as const)('manual failover: old hub refuses (CONNACK %i), registration and twin move, TTL fails back', async (refusalCode) => {
  const id = `fo-dev-1-${refusalCode}`;
  const { client, host } = await provisionAndConnect(cloud, id, { modelId: 'dtmi:Sample:Failover;1' });
  const original = cloud.hub(host);
  const other = cloud.hubs.find((h) => h !== original)!;
  const twin = await client.getTwin();
  await new Promise<void>((resolve, reject) => twin.properties.reported.update({ battery: 77 }, (e?: Error) => (e ? reject(e) : resolve())));
  original.updateDesired(id, { fanSpeed: 2 });

  const dropped = nextDisconnect(client);
  const info = cloud.manualFailover(id, { ttlMs: 1500, ...(refusalCode === 5 ? { refusalCode } : {}) });
  expect(info).toMatchObject({ deviceId: id, fromHub: original.name, toHub: other.name, refusalCode });
  await dropped;
  await closeQuietly(client);

  // Old hub: disabled (moved away) → CONNACK 3 (ServiceUnavailableError) or 5 (UnauthorizedError),
  // recorded as a refusal of a moved device, not as an overloaded hub.
  expect(original.device(id)).toMatchObject({ status: 'disabled', disabledReason: 'failover', connected: false });
  expect(await openError(await deviceClient(cloud, original.host, id, cloud.deviceKey(id)))).toBeInstanceOf(refusedAs[refusalCode]);
  expect(original.refusals(id).at(-1)).toMatchObject({ code: refusalCode, reason: 'moved' });

  // DPS now answers with the failover hub; identity, model and twin were migrated.
  expect(cloud.dps.registration(id)).toMatchObject({ assignedHub: other.host, hubName: other.name, substatus: 'deviceDataMigrated' });
  const again = await provision(cloud, id);
  expect(again.assignedHub).toBe(other.host);
  expect(again.result).toMatchObject({ substatus: 'deviceDataMigrated' });
  const moved = await connectDevice(cloud, other.host, id, { modelId: 'dtmi:Sample:Failover;1' });
  expect(other.getTwin(id)).toMatchObject({ desired: { fanSpeed: 2 }, reported: { battery: 77 } });
  expect(other.device(id)).toMatchObject({ status: 'enabled', connected: true, modelId: 'dtmi:Sample:Failover;1' });

  // TTL: failback re-enables the original hub and disables + disconnects the failover hub.
  const back = nextDisconnect(moved, 4000);
  const failback = await new Promise<FailoverInfo>((resolve) => cloud.events.once('failback', resolve));
  expect(failback).toMatchObject({ deviceId: id, fromHub: original.name, toHub: other.name });
  await back;
  await closeQuietly(moved);
  expect(cloud.dps.registration(id)).toMatchObject({ assignedHub: original.host, substatus: 'reprovisionedToInitialAssignment' });
  expect(other.device(id)).toMatchObject({ status: 'disabled', disabledReason: 'failover' });
  expect(await openError(await deviceClient(cloud, other.host, id, cloud.deviceKey(id)))).toBeInstanceOf(refusedAs[refusalCode]);
  expect(await openError(await deviceClient(cloud, original.host, id, cloud.deviceKey(id)))).toBeUndefined();
  expect(cloud.failovers()).toHaveLength(0);
});

test('manualFailback reverts early and carries twin changes made on the failover hub', async () => {
  const id = 'fo-dev-2';
  const p = await provision(cloud, id);
  const original = cloud.hub(p.assignedHub!);
  const info = cloud.manualFailover(id, { ttlMinutes: 10 });
  expect(cloud.failovers()).toEqual([info]);
  expect(info.failbackAt).toBeGreaterThan(Date.now() + 9 * 60_000);
  const other = cloud.hub(info.toHub);
  other.updateDesired(id, { mode: 'eco' });

  cloud.manualFailback(id);
  expect(cloud.failovers()).toHaveLength(0);
  expect(original.getTwin(id).desired).toMatchObject({ mode: 'eco' });
  expect(original.device(id)!.status).toBe('enabled');
  expect(() => cloud.manualFailback(id)).toThrow(/not failed over/);
});

test('failover rejects unknown devices and double failovers; an operator-disabled identity stays disabled on failback', async () => {
  expect(() => cloud.manualFailover('never-registered')).toThrow(/has not registered/);
  const id = 'fo-dev-3';
  const p = await provision(cloud, id);
  const original = cloud.hub(p.assignedHub!);
  const info = cloud.manualFailover(id);
  // Without a TTL it fails back after 5 minutes, as IoT Central's manual failover does.
  expect(info.failbackAt! - info.startedAt).toBe(5 * 60_000);
  expect(() => cloud.manualFailover(id)).toThrow(/already failed over/);
  original.disableDevice(id); // operator action while failed over
  cloud.manualFailback(id);
  expect(original.device(id)).toMatchObject({ status: 'disabled', disabledReason: 'operator' });
  await waitFor(() => cloud.failovers().length === 0);
});

test('ttlMs: null keeps the failover until failback; refusalCode outside 3|5 is refused', async () => {
  const id = 'fo-dev-4';
  await provision(cloud, id);
  expect(() => cloud.manualFailover(id, { refusalCode: 4 as never })).toThrow(/refusalCode must be 3/);
  const info = cloud.manualFailover(id, { ttlMs: null });
  expect(info.failbackAt).toBeUndefined();
  cloud.manualFailback(id);
});

test('an overloaded hub, an injected refusal and a moved device are told apart in the hub records', async () => {
  const id = 'fo-dev-5';
  const p = await provision(cloud, id);
  const hub = cloud.hub(p.assignedHub!);
  const key = cloud.deviceKey(id);
  const before = hub.metrics().refusedByReason;
  hub.refuse(3);
  expect(await openError(await deviceClient(cloud, hub.host, id, key))).toBeInstanceOf(errors.ServiceUnavailableError);
  hub.refuse(null);
  hub.setConnectRateLimit(0.001); // the bucket starts full: one connect, then CONNACK 3
  expect(await openError(await deviceClient(cloud, hub.host, id, key))).toBeUndefined();
  expect(await openError(await deviceClient(cloud, hub.host, id, key))).toBeInstanceOf(errors.ServiceUnavailableError);
  hub.setConnectRateLimit(null);
  cloud.manualFailover(id, { ttlMs: null });
  expect(await openError(await deviceClient(cloud, hub.host, id, key))).toBeInstanceOf(errors.ServiceUnavailableError);
  cloud.manualFailback(id);
  expect(hub.refusals(id).map((r) => [r.code, r.reason])).toEqual([
    [3, 'injected'],
    [3, 'overloaded'],
    [3, 'moved'],
  ]);
  const after = hub.metrics().refusedByReason;
  for (const reason of ['injected', 'overloaded', 'moved'] as const) expect((after[reason] ?? 0) - (before[reason] ?? 0)).toBe(1);
});

test('hub.refusalCode: 5 makes CONNACK 5 the cloud-wide answer for moved and disabled devices', async () => {
  const other = await startLocalCloud({ hubs: 2, seed: 'failover-code-5', hub: { refusalCode: 5 }, dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  try {
    const id = 'fo-dev-6';
    const p = await provision(other, id);
    const hub = other.hub(p.assignedHub!);
    hub.disableDevice(id);
    expect(await openError(await deviceClient(other, hub.host, id, other.deviceKey(id)))).toBeInstanceOf(errors.UnauthorizedError);
    expect(hub.refusals(id).at(-1)).toMatchObject({ code: 5, reason: 'disabled' });
    await expect(startLocalCloud({ hub: { refusalCode: 4 as never } })).rejects.toThrow(/hub.refusalCode must be 3/);
  } finally {
    await other.stop();
  }
});
