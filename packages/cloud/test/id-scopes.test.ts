/**
 * `addIdScope`: a second DPS instance behind the same provisioning host (a fleet migrating from
 * IoT Central to its own DPS), driven with the real SDK: its own group key and hubs, a device
 * not enrolled there refused 401, an unknown scope refused at CONNECT, lookups per scope.
 */
import * as https from 'node:https';
import { FAST_DPS_POLL_SEC, deriveDeviceKey, dpsSasToken, EmulatorError, startLocalCloud, type AddedIdScope, type LocalCloud } from '../src';
import { provision } from './helpers';

let cloud: LocalCloud;
let added: AddedIdScope;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 3, seed: 'id-scopes', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  added = cloud.addIdScope({ hubs: ['hub-2'], groupKey: cloud.groupKey });
});
afterAll(async () => {
  await cloud?.stop();
});

function lookup(idScope: string, registrationId: string, key: string): Promise<number> {
  const body = JSON.stringify({ registrationId });
  const token = dpsSasToken(idScope, registrationId, key, Math.floor(Date.now() / 1000) + 600);
  return new Promise((resolve, reject) => {
    const request = https.request(
      {
        hostname: 'localhost',
        port: cloud.dps.port,
        path: `/${idScope}/registrations/${registrationId}?api-version=2021-10-01`,
        method: 'POST',
        ca: cloud.ca,
        agent: false,
        headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), Authorization: token },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      },
    );
    request.on('error', reject);
    request.end(body);
  });
}

test('the added scope assigns to its own hubs; the cloud scope no longer does; the record moves with the device', async () => {
  expect(cloud.idScopes()).toEqual([{ idScope: added.idScope, groupKey: cloud.groupKey, hubs: ['hub-2'] }]);
  const first = await provision(cloud, 'ids-1');
  expect(first.error).toBeUndefined();
  expect(first.assignedHub).not.toBe(cloud.hub('hub-2').host);
  expect(cloud.dps.registration('ids-1')).toMatchObject({ idScope: cloud.idScope });
  expect(await lookup(cloud.idScope, 'ids-1', cloud.deviceKey('ids-1'))).toBe(200);

  const moved = await provision(cloud, 'ids-1', { idScope: added.idScope });
  expect(moved.error).toBeUndefined();
  expect(moved.assignedHub).toBe(cloud.hub('hub-2').host);
  expect(cloud.dps.registration('ids-1')).toMatchObject({ idScope: added.idScope, hubName: 'hub-2', substatus: 'initialAssignment' });
  expect(cloud.hub('hub-2').hasDevice('ids-1')).toBe(true);
  // One record per registration id: the old scope has none to report now, the new one has.
  expect(await lookup(cloud.idScope, 'ids-1', cloud.deviceKey('ids-1'))).toBe(404);
  expect(await lookup(added.idScope, 'ids-1', cloud.deviceKey('ids-1'))).toBe(200);
});

test('a scope with another group key: the device is not enrolled there, every request is answered 401', async () => {
  const elsewhere = cloud.addIdScope({ hubs: ['hub-1'] });
  expect(elsewhere.groupKey).not.toBe(cloud.groupKey);
  const refused = await provision(cloud, 'ids-2', { idScope: elsewhere.idScope });
  expect(refused.error).toBeDefined();
  expect(cloud.dps.answers('ids-2').map((a) => a.status)).toEqual([401]);
  // With a key of that scope's group it registers, on that scope's hub.
  const enrolled = await provision(cloud, 'ids-2', { idScope: elsewhere.idScope, key: deriveDeviceKey(elsewhere.groupKey, 'ids-2') });
  expect(enrolled.assignedHub).toBe(cloud.hub('hub-1').host);
});

test('an ID scope nobody hosts is refused at CONNECT (3) and looked up 404', async () => {
  const unknown = await provision(cloud, 'ids-3', { idScope: '0ne00000000', timeoutMs: 5000 });
  expect(unknown.error).toBeDefined();
  expect(cloud.dps.answers('ids-3')).toEqual([]);
  expect(await lookup('0ne00000000', 'ids-3', cloud.deviceKey('ids-3'))).toBe(404);
});

test('addIdScope refuses what it cannot host', () => {
  const refusal = (opts: Parameters<LocalCloud['addIdScope']>[0]) => {
    try {
      cloud.addIdScope(opts);
    } catch (error) {
      return error instanceof EmulatorError ? error.message : String(error);
    }
    return 'accepted';
  };
  expect(refusal({ hubs: [] })).toMatch(/at least one hub/);
  expect(refusal({ hubs: ['hub-9'] })).toMatch(/unknown hub/);
  expect(refusal({ hubs: ['hub-2'] })).toMatch(/already linked/);
  expect(refusal({ hubs: ['hub-0'] })).toMatch(/must keep at least one hub/);
  expect(refusal({ hubs: ['hub-0'], idScope: added.idScope })).toMatch(/must keep at least one hub/);
  expect(cloud.idScopes()).toHaveLength(2);
});
