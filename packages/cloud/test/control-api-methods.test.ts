/**
 * `POST /hubs/:hub/devices/:id/methods/:name` answers like IoT Hub's service API: HTTP 200 with
 * `{ status, payload }` whenever the device answered, whatever status it chose (a failed method
 * is still a delivered answer); the hub's own error status and `errorCode` when no device did
 * (404 + 404001 unknown device, 404 + 404103 not online, 504 + 504101 no answer in time, 400 +
 * 400004 a request it refuses).
 * Devices are the real SDK.
 */
import type { Client } from 'azure-iot-device';
import { FAST_DPS_POLL_SEC, startLocalCloud, waitFor, type LocalCloud } from '../src';
import { closeQuietly, provision, provisionAndConnect } from './helpers';

let cloud: LocalCloud;
let client: Client;
let hubName: string;

/** Invokes through the control API, with a payload (`null` unless given: the SDK answers 400 to none). */
async function invoke(deviceId: string, method: string, body: Record<string, unknown> = {}): Promise<{ status: number; json: any }> {
  const res = await fetch(`${cloud.controlUrl}/hubs/${hubName}/devices/${deviceId}/methods/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ payload: null, ...body }),
  });
  return { status: res.status, json: await res.json() };
}

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, controlApi: true, seed: 'control-api-methods', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  hubName = cloud.hubs[0]!.name;
  ({ client } = await provisionAndConnect(cloud, 'method-dev'));
  client.onDeviceMethod('ok', (_req, res) => res.send(200, { done: true }, () => undefined));
  client.onDeviceMethod('fails', (_req, res) => res.send(500, { reason: 'sensor jammed' }, () => undefined));
  client.onDeviceMethod('refuses', (_req, res) => res.send(404, 'no such component', () => undefined));
  client.onDeviceMethod('silent', () => undefined); // never answers
  // The SDK subscribes to methods after onDeviceMethod, asynchronously: "not online" until then.
  await waitFor(async () => (await invoke('method-dev', 'ok', { timeoutMs: 2000 })).status === 200, { message: 'method subscription' });
});

afterAll(async () => {
  await closeQuietly(client);
  await cloud?.stop();
});

test('the device answered 200: HTTP 200 with its status and payload', async () => {
  expect(await invoke('method-dev', 'ok', { payload: { x: 1 } })).toEqual({ status: 200, json: { status: 200, payload: { done: true } } });
});

test('the device answered with a failure: still HTTP 200, with the status the device chose', async () => {
  expect(await invoke('method-dev', 'fails')).toEqual({ status: 200, json: { status: 500, payload: { reason: 'sensor jammed' } } });
  expect(await invoke('method-dev', 'refuses')).toEqual({ status: 200, json: { status: 404, payload: 'no such component' } });
});

test('the device did not answer in time: HTTP 504, errorCode 504101', async () => {
  const { status, json } = await invoke('method-dev', 'silent', { timeoutMs: 200 });
  expect({ status, json }).toEqual({ status: 504, json: { error: 'DEVICE_TIMEOUT', errorCode: 504101, message: expect.any(String) } });
});

test('a request the hub refuses (a response timeout outside the 5-300 s IoT Hub accepts): HTTP 400, errorCode 400004', async () => {
  const { status, json } = await invoke('method-dev', 'ok', { responseTimeoutInSeconds: 1 });
  expect({ status, json }).toEqual({ status: 400, json: { error: 'INVALID_METHOD_REQUEST', errorCode: 400004, message: expect.any(String) } });
});

test('the device is known but not connected: HTTP 404, errorCode 404103', async () => {
  expect((await provision(cloud, 'offline-dev')).assignedHub).toBeDefined();
  const { status, json } = await invoke('offline-dev', 'ok');
  expect({ status, json }).toEqual({ status: 404, json: { error: 'DEVICE_NOT_ONLINE', errorCode: 404103, message: expect.any(String) } });
});

test('the device does not exist: HTTP 404, errorCode 404001', async () => {
  const { status, json } = await invoke('nobody', 'ok');
  expect({ status, json }).toEqual({ status: 404, json: { error: 'DEVICE_NOT_FOUND', errorCode: 404001, message: expect.any(String) } });
});
