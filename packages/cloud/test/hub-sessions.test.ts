/**
 * Persistent MQTT sessions as IoT Hub keeps them: a device connecting with clean=false (the Node
 * SDK always does) finds its subscriptions again, with sessionPresent in the CONNACK, and gets the
 * C2D messages it left unacknowledged; a clean connect discards the session.
 */
import type { Client } from 'azure-iot-device';
import { startLocalCloud, waitFor, type EmulatedHub, type LocalCloud } from '../src';
import { closeQuietly, connectDevice, Message } from './helpers';
import { connectRaw, endRaw, nextMessage, subscribe } from './hub-raw-mqtt';

let cloud: LocalCloud;
let hub: EmulatedHub;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'hub-sessions' });
  hub = cloud.hubs[0]!;
});

afterAll(async () => {
  await cloud?.stop();
});

function newDevice(id: string): string {
  hub.addDevice(id, cloud.deviceKey(id));
  return id;
}

const c2dPrefix = (id: string) => `devices/${id}/messages/devicebound/`;

test('clean=false: the session is kept; a reconnect gets sessionPresent and C2D and method requests without resubscribing', async () => {
  const id = newDevice('session-keep');
  const first = await connectRaw(cloud, hub, id, { clean: false });
  expect(first.sessionPresent).toBe(false);
  await subscribe(first.client, `devices/${id}/messages/devicebound/#`, 1);
  await subscribe(first.client, '$iothub/methods/POST/#', 0);
  await endRaw(first.client, hub, id);

  const again = await connectRaw(cloud, hub, id, { clean: false });
  expect(again.sessionPresent).toBe(true);
  // No SUBSCRIBE on this connection.
  const c2d = nextMessage(again.client, c2dPrefix(id));
  expect(hub.sendC2D(id, 'still subscribed').status).toBe('sent');
  expect((await c2d).payload.toString()).toBe('still subscribed');

  const request = nextMessage(again.client, '$iothub/methods/POST/');
  const result = hub.invokeMethod(id, 'ping', { n: 1 }, { responseTimeoutSec: 5 });
  const { topic } = await request;
  const rid = /\$rid=([^&]+)/.exec(topic)![1];
  again.client.publish(`$iothub/methods/res/200/?$rid=${rid}`, '{"pong":1}');
  expect(await result).toEqual({ status: 200, payload: { pong: 1 } });
  await endRaw(again.client, hub, id);
});

test('an unacknowledged QoS 1 C2D is redelivered to the resumed session (same message id)', async () => {
  const id = newDevice('session-redeliver');
  const first = await connectRaw(cloud, hub, id, { clean: false, withholdPubacks: true });
  await subscribe(first.client, `devices/${id}/messages/devicebound/#`, 1);
  const delivered = nextMessage(first.client, c2dPrefix(id));
  const { messageId } = hub.sendC2D(id, 'ack me');
  expect((await delivered).topic).toContain(`%24.mid=${messageId}`);
  await endRaw(first.client, hub, id);
  expect(hub.device(id)!.c2dPending).toBe(1);

  const again = await connectRaw(cloud, hub, id, { clean: false });
  expect(again.sessionPresent).toBe(true);
  const redelivered = await nextMessage(again.client, c2dPrefix(id));
  expect(redelivered.topic).toContain(`%24.mid=${messageId}`);
  expect(redelivered.payload.toString()).toBe('ack me');
  await waitFor(() => hub.device(id)!.c2dPending === 0, { message: 'PUBACKed this time' });
  await endRaw(again.client, hub, id);
});

test('clean=true discards the session: no sessionPresent, C2D stays queued until the device subscribes', async () => {
  const id = newDevice('session-clean');
  const first = await connectRaw(cloud, hub, id, { clean: false });
  await subscribe(first.client, `devices/${id}/messages/devicebound/#`, 1);
  await endRaw(first.client, hub, id);

  const clean = await connectRaw(cloud, hub, id, { clean: true });
  expect(clean.sessionPresent).toBe(false);
  expect(hub.sendC2D(id, 'wait for a subscription').status).toBe('queued');
  expect(hub.device(id)!.c2dPending).toBe(1);
  await endRaw(clean.client, hub, id);

  // The clean connection ended the stored session for good.
  const later = await connectRaw(cloud, hub, id, { clean: false });
  expect(later.sessionPresent).toBe(false);
  const delivered = nextMessage(later.client, c2dPrefix(id));
  await subscribe(later.client, `devices/${id}/messages/devicebound/#`, 1);
  expect((await delivered).payload.toString()).toBe('wait for a subscription');
  await endRaw(later.client, hub, id);
});

test('the Node SDK connects with clean=false, so IoT Hub keeps its subscriptions for the next connection', async () => {
  const id = newDevice('session-sdk');
  const sdk: Client = await connectDevice(cloud, hub.host, id);
  sdk.on('message', () => undefined); // subscribes to C2D
  hub.sendC2D(id, 'probe');
  await waitFor(() => hub.device(id)!.c2dPending === 0, { message: 'C2D subscription' });
  await closeQuietly(sdk);
  await waitFor(() => !hub.isConnected(id));

  const raw = await connectRaw(cloud, hub, id, { clean: false });
  expect(raw.sessionPresent).toBe(true);
  await endRaw(raw.client, hub, id);
});

test('pinned SDK consequence: a new SDK client that opens without a message listener gets (and acknowledges) C2D sent while it was away', async () => {
  const id = newDevice('session-sdk-loss');
  const sdk = await connectDevice(cloud, hub.host, id);
  sdk.on('message', () => undefined);
  hub.sendC2D(id, 'probe');
  await waitFor(() => hub.device(id)!.c2dPending === 0, { message: 'C2D subscription' });
  await closeQuietly(sdk);
  await waitFor(() => !hub.isConnected(id));

  expect(hub.sendC2D(id, 'sent while away').status).toBe('queued');
  const completedBefore = hub.metrics().c2dCompleted;
  const next = await connectDevice(cloud, hub.host, id); // no 'message' listener yet
  // The resumed session delivers at once; mqtt.js acknowledges it although nobody listened.
  await waitFor(() => hub.metrics().c2dCompleted === completedBefore + 1, { message: 'acknowledged by mqtt.js' });
  expect(hub.device(id)!.c2dPending).toBe(0);
  const received: Message[] = [];
  next.on('message', (m: Message) => received.push(m));
  expect(hub.sendC2D(id, 'after the listener').status).toBe('sent');
  await waitFor(() => received.length === 1);
  expect(received.map((m) => m.getData().toString())).toEqual(['after the listener']);
  await closeQuietly(next);
});
