/**
 * Cloud-to-device messages as IoT Hub delivers them: the property bag it writes (`$.to`, `$.exp`),
 * the time to live and the maximum delivery count.
 */
import { EmulatorError, startLocalCloud, waitFor, type EmulatedHub, type LocalCloud } from '../src';
import { Message, closeQuietly, connectDevice } from './helpers';
import { connectRaw, endRaw, nextMessage, subscribe } from './hub-raw-mqtt';

let cloud: LocalCloud;
let hub: EmulatedHub;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'hub-c2d' });
  hub = cloud.hubs[0]!;
});

afterAll(async () => {
  await cloud?.stop();
});

afterEach(() => {
  hub.setC2DDelivery({ maxDeliveryCount: 10 });
});

function newDevice(id: string): string {
  hub.addDevice(id, cloud.deviceKey(id));
  return id;
}

const c2dFilter = (id: string) => `devices/${id}/messages/devicebound/#`;
const c2dPrefix = (id: string) => `devices/${id}/messages/devicebound/`;

/** Connects without acknowledging, receives one C2D message, disconnects: one failed delivery. */
async function receiveWithoutAck(id: string): Promise<string> {
  const { client } = await connectRaw(cloud, hub, id, { clean: true, withholdPubacks: true });
  const message = nextMessage(client, c2dPrefix(id));
  await subscribe(client, c2dFilter(id));
  const { topic } = await message;
  await endRaw(client, hub, id);
  return topic;
}

test('the property bag as IoT Hub writes it: %24-escaped system properties, $.to ending in deviceBound; the SDK reads it', async () => {
  const id = newDevice('c2d-bag');
  const raw = await connectRaw(cloud, hub, id, { clean: true });
  await subscribe(raw.client, c2dFilter(id));
  const delivered = nextMessage(raw.client, c2dPrefix(id));
  hub.sendC2D(id, 'hi', { messageId: 'm-1', correlationId: 'c-1', 'method-name': 'setAlarm' });
  expect((await delivered).topic).toBe(
    `devices/${id}/messages/devicebound/%24.mid=m-1&%24.to=%2Fdevices%2F${id}%2Fmessages%2FdeviceBound&%24.cid=c-1&method-name=setAlarm`,
  );
  await endRaw(raw.client, hub, id);

  const sdk = await connectDevice(cloud, hub.host, id);
  const received: Message[] = [];
  sdk.on('message', (m: Message) => received.push(m));
  hub.sendC2D(id, 'to the SDK', { messageId: 'm-2' }, { ttlMs: 60_000 }); // delivered once the SDK subscribes
  await waitFor(() => received.length === 1);
  const [message] = received;
  expect(message!.to).toBe(`/devices/${id}/messages/deviceBound`);
  expect(message!.messageId).toBe('m-2');
  // With a TTL given, its absolute expiry is written as $.exp.
  expect(Date.parse(message!.expiryTimeUtc as string)).toBeGreaterThan(Date.now());
  await closeQuietly(sdk);
});

test('a message whose TTL passes before delivery is dropped and counted, never delivered', async () => {
  const id = newDevice('c2d-ttl');
  const expired = hub.metrics().c2dExpired;
  const sentAt = Date.now();
  expect(hub.sendC2D(id, 'too late', { messageId: 'late' }, { ttlMs: 50 }).status).toBe('queued');
  hub.sendC2D(id, 'in time', { messageId: 'in-time' });
  await waitFor(() => Date.now() > sentAt + 60, { message: 'TTL passed' });
  expect(hub.device(id)!.c2dPending).toBe(1);
  expect(hub.metrics().c2dExpired).toBe(expired + 1);

  const { client } = await connectRaw(cloud, hub, id, { clean: true });
  const first = nextMessage(client, c2dPrefix(id));
  await subscribe(client, c2dFilter(id));
  expect((await first).topic).toContain('%24.mid=in-time');
  await endRaw(client, hub, id);
});

test('TTL bounds: at most 48 hours; the default TTL is 1 minute to 48 hours, maxDeliveryCount 1 to 100', () => {
  const id = newDevice('c2d-bounds');
  expect(() => hub.sendC2D(id, 'x', {}, { ttlMs: 48 * 3_600_000 + 1 })).toThrow(EmulatorError);
  expect(() => hub.sendC2D(id, 'x', {}, { ttlMs: 0 })).toThrow(/ttlMs/);
  expect(() => hub.setC2DDelivery({ defaultTtlMs: 59_999 })).toThrow(/defaultTtlMs/);
  expect(() => hub.setC2DDelivery({ maxDeliveryCount: 101 })).toThrow(/maxDeliveryCount/);
  expect(() => hub.setC2DDelivery({ maxDeliveryCount: 0 })).toThrow(/maxDeliveryCount/);
});

test('an unacknowledged message is redelivered until maxDeliveryCount deliveries, then dead-lettered and counted', async () => {
  const id = newDevice('c2d-dead-letter');
  hub.setC2DDelivery({ maxDeliveryCount: 2 });
  const deadLettered = hub.metrics().c2dDeadLettered;
  hub.sendC2D(id, 'poison', { messageId: 'poison' });
  expect(await receiveWithoutAck(id)).toContain('%24.mid=poison');
  expect(hub.device(id)!.c2dPending).toBe(1);
  expect(await receiveWithoutAck(id)).toContain('%24.mid=poison');
  expect(hub.device(id)!.c2dPending).toBe(0);
  expect(hub.metrics().c2dDeadLettered).toBe(deadLettered + 1);

  // The next connection gets the next message, not the dead-lettered one.
  hub.sendC2D(id, 'next', { messageId: 'next' });
  expect(await receiveWithoutAck(id)).toContain('%24.mid=next');
});

test('maxDeliveryCount null (the reading where only an explicit abandon counts): redelivered until the TTL ends', async () => {
  const id = newDevice('c2d-no-count');
  hub.setC2DDelivery({ maxDeliveryCount: null });
  hub.sendC2D(id, 'again and again', { messageId: 'again' });
  for (let attempt = 0; attempt < 3; attempt++) expect(await receiveWithoutAck(id)).toContain('%24.mid=again');
  expect(hub.device(id)!.c2dPending).toBe(1);
});
