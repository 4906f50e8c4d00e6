/**
 * A failover leaves the device's identity on the other hub disabled (the migration marker). When
 * DPS later re-allocates the device to that hub because its own hub is down (deviceDataReset),
 * the device must be able to connect there. Found by the chaos soak (seed 808133588, 200 devices:
 * 9 devices refused with CONNACK 5 forever after a failback followed by a crash of their hub).
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from '../src';
import { closeQuietly, deviceClient, openError, provision } from './helpers';

let cloud: LocalCloud;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'failover-realloc-test', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});

afterAll(async () => {
  await cloud?.stop();
});

test('re-allocation after a failback: the identity left disabled by the failover is enabled on the new hub', async () => {
  const id = 'realloc-1';
  const first = await provision(cloud, id);
  const home = cloud.hub(first.assignedHub!);
  const other = cloud.hubs.find((h) => h !== home)!;
  cloud.manualFailover(id);
  cloud.manualFailback(id);
  expect(other.device(id)).toMatchObject({ status: 'disabled', disabledReason: 'failover' });

  await home.kill(); // the device's hub is down: DPS re-allocates it to the other one
  try {
    const again = await provision(cloud, id);
    expect(again.assignedHub).toBe(other.host);
    expect(cloud.dps.registration(id)?.substatus).toBe('deviceDataReset');
    expect(other.device(id)).toMatchObject({ status: 'enabled' });
    const client = await deviceClient(cloud, other.host, id, cloud.deviceKey(id));
    expect(await openError(client)).toBeUndefined();
    await closeQuietly(client);
  } finally {
    await home.restart();
  }
});

test('an operator disable survives a DPS assignment', async () => {
  const id = 'realloc-2';
  const first = await provision(cloud, id);
  const hub = cloud.hub(first.assignedHub!);
  hub.disableDevice(id);
  const again = await provision(cloud, id);
  expect(again.assignedHub).toBe(hub.host);
  expect(hub.device(id)).toMatchObject({ status: 'disabled', disabledReason: 'operator' });
});
