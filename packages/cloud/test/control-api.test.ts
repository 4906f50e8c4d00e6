import { errors } from 'azure-iot-common';
import { FAST_DPS_POLL_SEC, startLocalCloud, waitFor, type LocalCloud } from '../src';
import { closeQuietly, connectDevice, deviceClient, openError, provision } from './helpers';

let cloud: LocalCloud;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, controlApi: true, seed: 'control-api-test', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});

afterAll(async () => {
  await cloud?.stop();
});

async function call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${cloud.controlUrl}${path}`, {
    method,
    // Every POST is JSON (415 otherwise), even without input.
    ...(method === 'POST' ? { body: JSON.stringify(body ?? {}), headers: { 'content-type': 'application/json' } } : {}),
  });
  return { status: res.status, json: await res.json() };
}

test('GET /state lists hubs, registrations and metrics', async () => {
  expect(cloud.controlUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  await provision(cloud, 'api-dev-1', { modelId: 'dtmi:x:y;1' });
  const { status, json } = await call('GET', '/state');
  expect(status).toBe(200);
  expect(json.idScope).toBe(cloud.idScope);
  expect(json.hubs.map((h: { name: string }) => h.name)).toEqual(['hub-0', 'hub-1']);
  expect(json.registrations).toEqual([expect.objectContaining({ registrationId: 'api-dev-1', modelId: 'dtmi:x:y;1' })]);
  expect(json.dps.metrics.registrations).toBe(1);
});

test('POST /failover and /failback move the device', async () => {
  const reg = cloud.dps.registration('api-dev-1')!;
  const fo = await call('POST', '/failover', { deviceId: 'api-dev-1', ttlMinutes: 5 });
  expect(fo.status).toBe(200);
  expect(fo.json).toMatchObject({ deviceId: 'api-dev-1', fromHub: reg.hubName });
  expect(cloud.dps.registration('api-dev-1')!.hubName).not.toBe(reg.hubName);
  expect((await call('POST', '/failover', { deviceId: 'api-dev-1' })).status).toBe(409);
  const fb = await call('POST', '/failback', { deviceId: 'api-dev-1' });
  expect(fb.status).toBe(200);
  expect(cloud.dps.registration('api-dev-1')!.hubName).toBe(reg.hubName);
});

test('hub faults: refuse, kill and restart', async () => {
  const hub = cloud.hub('hub-0');
  await provision(cloud, 'api-dev-2', {});
  const host = cloud.dps.registration('api-dev-2')!.assignedHub;
  const h = cloud.hub(host);
  expect((await call('POST', `/hubs/${h.name}/refuse`, { code: 3 })).status).toBe(200);
  expect(await openError(await deviceClient(cloud, host, 'api-dev-2', cloud.deviceKey('api-dev-2')))).toBeInstanceOf(errors.ServiceUnavailableError);
  expect((await call('POST', `/hubs/${h.name}/refuse`, { code: null })).status).toBe(200);

  expect((await call('POST', `/hubs/${hub.name}/kill`)).status).toBe(200);
  expect(hub.isUp).toBe(false);
  const restarted = await call('POST', `/hubs/${hub.host}/restart`);
  expect(restarted.json).toEqual({ ok: true, host: hub.host });
  expect(hub.isUp).toBe(true);
});

test('device operations: desired patch, twin, method, c2d, disable', async () => {
  const host = cloud.dps.registration('api-dev-2')!.assignedHub;
  const h = cloud.hub(host);
  const client = await connectDevice(cloud, host, 'api-dev-2');
  client.onDeviceMethod('ping', (_req, res) => res.send(200, 'pong', () => undefined));
  const base = `/hubs/${h.name}/devices/api-dev-2`;
  expect((await call('POST', `${base}/desired`, { patch: { a: 1 } })).json).toEqual({ version: 2 });
  expect((await call('GET', `${base}/twin`)).json.desired).toEqual({ a: 1, $version: 2 });
  // The SDK subscribes to methods asynchronously after onDeviceMethod: 404 until it has.
  const method = await waitFor(async () => {
    const r = await call('POST', `${base}/methods/ping`, { payload: null, timeoutMs: 2000 });
    return r.status === 404 ? undefined : r.json;
  });
  expect(method).toEqual({ status: 200, payload: 'pong' });
  expect((await call('POST', `${base}/c2d`, { body: 'hello', properties: { k: 'v' } })).json.messageId).toBeDefined();
  expect((await call('POST', `${base}/disable`)).status).toBe(200);
  expect(h.device('api-dev-2')!.status).toBe('disabled');
  expect((await call('POST', `${base}/enable`)).status).toBe(200);
  await closeQuietly(client);
});

test('DPS faults through the API: throttle, fail, enrollment status, down/up', async () => {
  expect((await call('POST', '/dps/throttle', { retryAfterSec: 0.1, count: 1 })).status).toBe(200);
  const before = cloud.dps.metrics().throttled;
  expect((await provision(cloud, 'api-dev-3')).assignedHub).toBeDefined();
  expect(cloud.dps.metrics().throttled - before).toBe(1);

  expect((await call('POST', '/dps/enrollments/api-dev-4/status', { status: 'failed' })).status).toBe(200);
  expect((await provision(cloud, 'api-dev-4')).error).toBeInstanceOf(errors.DeviceRegistrationFailedError);
  expect((await call('POST', '/dps/fail', { status: 418 })).status).toBe(400);

  expect((await call('POST', '/dps/down')).status).toBe(200);
  expect(cloud.dps.isUp).toBe(false);
  expect((await call('POST', '/dps/up')).status).toBe(200);
  expect(cloud.dps.isUp).toBe(true);
});

test('disable refuses with the hub refusal code, or the code given', async () => {
  const host = cloud.dps.registration('api-dev-2')!.assignedHub;
  const base = `/hubs/${cloud.hub(host).name}/devices/api-dev-2`;
  const key = cloud.deviceKey('api-dev-2');
  expect((await call('POST', `${base}/disable`)).status).toBe(200);
  expect(await openError(await deviceClient(cloud, host, 'api-dev-2', key))).toBeInstanceOf(errors.ServiceUnavailableError);
  expect((await call('POST', `${base}/disable`, { refusalCode: 5 })).status).toBe(200);
  expect(await openError(await deviceClient(cloud, host, 'api-dev-2', key))).toBeInstanceOf(errors.UnauthorizedError);
  expect((await call('POST', `${base}/disable`, { refusalCode: 4 })).json.error).toBe('INVALID_ARGUMENT');
  expect((await call('POST', `${base}/enable`)).status).toBe(200);
});

test('DPS faults narrowed to one kind of request, and the lookup rate limit', async () => {
  expect((await call('POST', '/dps/throttle', { retryAfterSec: 1, count: 1, target: 'lookup' })).status).toBe(200);
  const throttledBefore = cloud.dps.metrics().throttled;
  expect((await provision(cloud, 'api-dev-5')).assignedHub).toBeDefined();
  expect(cloud.dps.metrics().throttled).toBe(throttledBefore); // a registration is not a lookup
  expect((await call('POST', '/dps/fail', { status: 503, target: 'poll', count: 1 })).status).toBe(200);
  expect((await call('GET', '/state')).json.dps.faults.failWith).toMatchObject({ status: 503, target: 'poll' });
  expect((await call('POST', '/dps/fail', { status: 503, target: 'everything' })).json.error).toBe('INVALID_ARGUMENT');
  expect((await call('POST', '/dps/clear-faults')).status).toBe(200);

  expect((await call('POST', '/dps/lookup-rate-limit', { perSec: 2, retryAfterSec: 3 })).status).toBe(200);
  expect((await call('GET', '/state')).json.dps.faults.lookupRateLimitPerSec).toBe(2);
  expect((await call('POST', '/dps/lookup-rate-limit', { perSec: 2, retryAfterSec: 0.5 })).json.error).toBe('INVALID_ARGUMENT');
  expect((await call('POST', '/dps/lookup-rate-limit', { perSec: null })).status).toBe(200);
  expect((await call('GET', '/state')).json.dps.faults.lookupRateLimitPerSec).toBeNull();
});

test('errors: unknown route 404, unknown hub 404, bad JSON 400', async () => {
  expect((await call('GET', '/nope')).status).toBe(404);
  expect((await call('POST', '/hubs/hub-9/kill')).json.error).toBe('UNKNOWN_HUB');
  const bad = await fetch(`${cloud.controlUrl}/failover`, { method: 'POST', body: '{not json', headers: { 'content-type': 'application/json' } });
  expect(bad.status).toBe(400);
  await bad.text();
  expect((await call('POST', '/failover', {})).status).toBe(400);
});
