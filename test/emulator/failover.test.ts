import { errors } from 'azure-iot-common';
import { startLocalCloud, waitFor, type FailoverInfo, type LocalCloud } from '../../src/emulator';
import { closeQuietly, connectDevice, deviceClient, nextDisconnect, openError, provision, provisionAndConnect } from './helpers';

let cloud: LocalCloud;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'failover-test' });
});

afterAll(async () => {
  await cloud?.stop();
});

test('manual failover: old hub refuses (CONNACK 5), registration and twin move, TTL fails back', async () => {
  const id = 'fo-dev-1';
  const { client, host } = await provisionAndConnect(cloud, id, { modelId: 'dtmi:Sample:Failover;1' });
  const original = cloud.hub(host);
  const other = cloud.hubs.find((h) => h !== original)!;
  const twin = await client.getTwin();
  await new Promise<void>((resolve, reject) => twin.properties.reported.update({ battery: 77 }, (e?: Error) => (e ? reject(e) : resolve())));
  original.updateDesired(id, { fanSpeed: 2 });

  const dropped = nextDisconnect(client);
  const info = cloud.manualFailover(id, { ttlMs: 1500 });
  expect(info).toMatchObject({ deviceId: id, fromHub: original.name, toHub: other.name });
  await dropped;
  await closeQuietly(client);

  // Old hub: disabled (moved away) → CONNACK 5, which the SDK surfaces as UnauthorizedError.
  expect(original.device(id)).toMatchObject({ status: 'disabled', disabledReason: 'failover', connected: false });
  expect(await openError(await deviceClient(cloud, original.host, id, cloud.deviceKey(id)))).toBeInstanceOf(errors.UnauthorizedError);

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
  expect(await openError(await deviceClient(cloud, other.host, id, cloud.deviceKey(id)))).toBeInstanceOf(errors.UnauthorizedError);
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
  cloud.manualFailover(id);
  expect(() => cloud.manualFailover(id)).toThrow(/already failed over/);
  original.disableDevice(id); // operator action while failed over
  cloud.manualFailback(id);
  expect(original.device(id)).toMatchObject({ status: 'disabled', disabledReason: 'operator' });
  await waitFor(() => cloud.failovers().length === 0);
});
