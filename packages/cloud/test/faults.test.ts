import type { Client } from 'azure-iot-device';
import { errors } from 'azure-iot-common';
import { FAST_DPS_POLL_SEC, startLocalCloud, waitFor, type EmulatedHub, type LocalCloud, type TelemetryRecord } from '../src';
import { Message, closeQuietly, connectDevice, deviceClient, nextDisconnect, openError, provision } from './helpers';

let cloud: LocalCloud;
let hub: EmulatedHub;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'faults-test', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  hub = cloud.hubs[0]!;
  await Promise.all(['kill-1', 'refuse-1', 'bh-1', 'bh-2', 'wh-1', 'rl-0', 'rl-1', 'rl-2', 'rl-3'].map((id) => provision(cloud, id)));
});

afterEach(() => {
  // A failed test must not leave a fault behind for the next one.
  hub.blackhole(false);
  hub.refuse(null);
  hub.withholdPubacks(false);
  hub.setConnectRateLimit(null);
});

afterAll(async () => {
  await cloud?.stop();
});

test('kill() drops connections and refuses new ones; restart() listens on the same port', async () => {
  const host = hub.host;
  const client = await connectDevice(cloud, host, 'kill-1');
  const dropped = nextDisconnect(client);
  await hub.kill();
  await dropped;
  expect(hub.isUp).toBe(false);
  const refused = await openError(await deviceClient(cloud, host, 'kill-1', cloud.deviceKey('kill-1')));
  expect(refused).toBeDefined();
  expect(String(refused!.message)).toMatch(/ECONNREFUSED|Not authorized/);

  await hub.restart();
  expect(hub.host).toBe(host);
  expect(await openError(await deviceClient(cloud, host, 'kill-1', cloud.deviceKey('kill-1')))).toBeUndefined();
  await closeQuietly(client);
});

test('refuse(3) answers CONNACK 3 (ServiceUnavailableError) until refuse(null)', async () => {
  hub.refuse(3);
  const err = await openError(await deviceClient(cloud, hub.host, 'refuse-1', cloud.deviceKey('refuse-1')));
  expect(err).toBeInstanceOf(errors.ServiceUnavailableError);
  expect(hub.metrics().refusedByCode['3']).toBeGreaterThanOrEqual(1);
  hub.refuse(null);
  expect(await openError(await deviceClient(cloud, hub.host, 'refuse-1', cloud.deviceKey('refuse-1')))).toBeUndefined();
});

test('connection rate limit answers CONNACK 3 beyond the rate', async () => {
  hub.setConnectRateLimit(2);
  try {
    const clients = await Promise.all(['rl-0', 'rl-1', 'rl-2', 'rl-3'].map((id) => deviceClient(cloud, hub.host, id, cloud.deviceKey(id))));
    const results = await Promise.all(clients.map((c) => openError(c)));
    const refused = results.filter((e) => e instanceof errors.ServiceUnavailableError);
    expect(refused.length).toBeGreaterThanOrEqual(1);
    expect(results.filter((e) => e === undefined).length).toBeGreaterThanOrEqual(1);
  } finally {
    hub.setConnectRateLimit(null);
  }
});

test('blackhole: an established connection goes silent and only the keepalive notices', async () => {
  const client = await connectDevice(cloud, hub.host, 'bh-1', { keepalive: 1 });
  const started = Date.now();
  hub.blackhole(true);
  expect(hub.metrics().mutedConnections).toBe(1); // the socket stays open but mute...
  await waitFor(() => !hub.isConnected('bh-1')); // ...while the hub side considers the device gone
  await nextDisconnect(client, 5000); // keepalive 1 s: PINGREQ unanswered → close
  const detectedAfter = Date.now() - started;
  expect(detectedAfter).toBeGreaterThanOrEqual(900);
  await closeQuietly(client, 500);

  // New connections: TLS is accepted, CONNECT is never answered.
  const pending = await deviceClient(cloud, hub.host, 'bh-2', cloud.deviceKey('bh-2'));
  let settled = false;
  const opening = openError(pending).finally(() => {
    settled = true;
  });
  await waitFor(() => hub.metrics().mutedConnections >= 1 && !hub.isConnected('bh-2'));
  expect(settled).toBe(false);
  hub.blackhole(false); // ends the blackhole: muted sockets are reset
  expect(await opening).toBeDefined();
  await waitFor(() => hub.metrics().mutedConnections === 0);
  expect(await openError(await deviceClient(cloud, hub.host, 'bh-2', cloud.deviceKey('bh-2')))).toBeUndefined();
});

test('withholdPubacks: the message is stored but never PUBACKed while the connection stays alive', async () => {
  const client: Client = await connectDevice(cloud, hub.host, 'wh-1');
  hub.withholdPubacks(true);
  let acked = false;
  let failed = false;
  const m = new Message('{"x":1}');
  m.messageId = 'withheld-1';
  const stored = new Promise<TelemetryRecord>((resolve) => cloud.events.once('telemetry', resolve));
  void client.sendEvent(m).then(
    () => {
      acked = true;
    },
    () => {
      failed = true;
    },
  );
  expect((await stored).messageId).toBe('withheld-1');
  // A later round trip completes, so the PUBACK (which would have been written first) was withheld.
  await client.getTwin();
  expect(acked).toBe(false);
  hub.withholdPubacks(false);
  const m2 = new Message('{"x":2}');
  m2.messageId = 'acked-2';
  await client.sendEvent(m2);
  expect(cloud.deliveredIds('wh-1')).toEqual(new Set(['withheld-1', 'acked-2']));
  // close() would wait forever for the missing PUBACK; a server-side disconnect fails the send instead.
  const dropped = nextDisconnect(client);
  hub.disconnect('wh-1');
  await dropped;
  await waitFor(() => failed);
  await closeQuietly(client, 500);
});

test('stop() releases every socket, listener and timer', async () => {
  const kinds = ['TCPServerWrap', 'TCPSocketWrap', 'TLSWrap', 'Timeout'];
  const count = (): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const k of process.getActiveResourcesInfo()) if (kinds.includes(k)) out[k] = (out[k] ?? 0) + 1;
    return out;
  };
  const baseline = count();
  const local = await startLocalCloud({ hubs: 2, controlApi: true, dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  const p = await provision(local, 'stop-1');
  const client = await connectDevice(local, p.assignedHub!, 'stop-1');
  local.manualFailover('stop-1', { ttlMinutes: 5 }); // a pending failback timer
  const pendingMethod = local.hubs[0]!.invokeMethod('stop-1', 'm', null, { timeoutMs: 60_000 });
  await closeQuietly(client, 500);
  await local.stop();
  expect((await pendingMethod).status).toBeGreaterThanOrEqual(400);
  await waitFor(
    () => {
      const now = count();
      return kinds.every((k) => (now[k] ?? 0) <= (baseline[k] ?? 0));
    },
    { timeoutMs: 3000, message: 'resources left after stop()' },
  );
});
