/**
 * IoT Hub's limits where a device decision depends on them: device-to-cloud size, QoS 2, RETAIN,
 * twin names and size, direct method payload and timeouts. The real SDK where it can reach the
 * limit, raw MQTT where it never would.
 */
import type { Client } from 'azure-iot-device';
import { EmulatorError, startLocalCloud, waitFor, type EmulatedHub, type LocalCloud, type TelemetryRecord } from '../src';
import { D2C_MESSAGE_LIMIT_BYTES, d2cMessageSize } from '../src/util';
import { Message, closeQuietly, connectDevice, nextDisconnect } from './helpers';
import { closed, connectRaw, endRaw, nextMessage, subscribe } from './hub-raw-mqtt';

let cloud: LocalCloud;
let hub: EmulatedHub;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'hub-limits' });
  hub = cloud.hubs[0]!;
});

afterAll(async () => {
  await cloud?.stop();
});

function newDevice(id: string): string {
  hub.addDevice(id, cloud.deviceKey(id));
  return id;
}

/** A reported-properties update through the SDK's twin. */
async function report(client: Client, patch: unknown): Promise<void> {
  const twin = await client.getTwin();
  await new Promise<void>((resolve, reject) => twin.properties.reported.update(patch, (e?: Error) => (e ? reject(e) : resolve())));
}

describe('device-to-cloud messages', () => {
  test('over 256 KB counting body and properties: the connection is closed, nothing stored, no PUBACK', async () => {
    const id = newDevice('d2c-size');
    const client = await connectDevice(cloud, hub.host, id);
    // Exactly at the limit: body + the $.mid value + the property's name and value.
    const fits = new Message(Buffer.alloc(D2C_MESSAGE_LIMIT_BYTES - 'fits'.length - 'k'.length - 'v'.length, 0x61));
    fits.messageId = 'fits';
    fits.properties.add('k', 'v');
    const stored = new Promise<TelemetryRecord>((resolve) => cloud.events.once('telemetry', resolve));
    await client.sendEvent(fits);
    const record = await stored;
    expect(d2cMessageSize(record.body, { ...record.systemProperties, ...record.properties })).toBe(D2C_MESSAGE_LIMIT_BYTES);

    // One byte more, in a property: the SDK checks only the body (under 256 KiB) and sends it.
    const over = new Message(Buffer.alloc(D2C_MESSAGE_LIMIT_BYTES - 'over'.length - 'k'.length - 'vv'.length + 1, 0x61));
    over.messageId = 'over';
    over.properties.add('k', 'vv');
    const dropped = nextDisconnect(client);
    const sent = client.sendEvent(over).then(
      () => 'acknowledged',
      (error: Error) => error.name,
    );
    await dropped;
    expect(await sent).toBe('NotConnectedError');
    expect(hub.metrics().oversizedMessages).toBe(1);
    expect(cloud.deliveredIds(id).has('over')).toBe(false);
    expect(hub.isConnected(id)).toBe(false);
    await closeQuietly(client);
  });

  test('QoS 2 ends the connection; nothing is stored', async () => {
    const id = newDevice('d2c-qos2');
    const { client } = await connectRaw(cloud, hub, id, { clean: true });
    const gone = closed(client);
    client.publish(`devices/${id}/messages/events/`, 'exactly once?', { qos: 2 });
    await gone;
    expect(hub.metrics().qos2Publishes).toBe(1);
    expect(hub.telemetry(id)).toHaveLength(0);
  });

  test('RETAIN: stored with the application property mqtt-retain=true, acknowledged, not kept as a retained message', async () => {
    const id = newDevice('d2c-retain');
    const { client } = await connectRaw(cloud, hub, id, { clean: true });
    await new Promise<void>((resolve, reject) =>
      client.publish(`devices/${id}/messages/events/%24.mid=r1&unit=C`, '{"t":1}', { qos: 1, retain: true }, (e) => (e ? reject(e) : resolve())),
    );
    const [record] = hub.telemetry(id);
    expect(record).toMatchObject({ messageId: 'r1', properties: { unit: 'C', 'mqtt-retain': 'true' } });
    // A new subscriber to that topic gets nothing replayed (and is refused anyway: not a hub topic).
    const retained = await new Promise<number>((resolve) => {
      const persistence = (hub as unknown as { endpoint: { broker: { persistence: { createRetainedStreamCombi(p: string[]): NodeJS.ReadableStream } } } }).endpoint.broker.persistence;
      let count = 0;
      persistence
        .createRetainedStreamCombi(['#'])
        .on('data', () => count++)
        .on('end', () => resolve(count));
    });
    expect(retained).toBe(0);
    await endRaw(client, hub, id);
  });
});

describe('twin', () => {
  let client: Client;
  const id = 'twin-rules';

  beforeAll(async () => {
    newDevice(id);
    client = await connectDevice(cloud, hub.host, id);
  });

  afterAll(async () => {
    await closeQuietly(client);
  });

  test('names with ".", "$", a space or a control character, or over 1 KB, at any depth: reported 400, desired INVALID_ARGUMENT', async () => {
    const before = hub.getTwin(id);
    for (const patch of [{ 'a.b': 1 }, { nested: { $ref: 1 } }, { 'has space': true }, { 'bell\u0007': 1 }, { ['n'.repeat(1025)]: 1 }]) {
      await expect(report(client, patch)).rejects.toThrow(/property name/);
      expect(() => hub.updateDesired(id, patch)).toThrow(EmulatorError);
      expect(() => hub.updateDesired(id, patch)).toThrow(/property name/);
    }
    expect(hub.getTwin(id)).toEqual(before);
  });

  test('$version and $metadata at the top are read-only: ignored, the rest applies', async () => {
    const version = hub.updateDesired(id, { $version: 999, $metadata: { x: 1 }, mode: 'eco' });
    expect(hub.getTwin(id).desired).toEqual({ mode: 'eco', $version: version });
    await report(client, { $version: 42, battery: 80 });
    expect(hub.getTwin(id).reported).toMatchObject({ battery: 80 });
    expect(hub.getTwin(id).reported.$version).not.toBe(42);
    hub.updateDesired(id, { mode: null });
  });

  test('32 KB as IoT Hub counts it: 3,000 small numbers are 30 KB of JSON but 39 KB of twin, and are refused', async () => {
    const many: Record<string, number> = {};
    for (let i = 0; i < 3000; i++) many[`p${String(i).padStart(4, '0')}`] = 1;
    expect(Buffer.byteLength(JSON.stringify(many))).toBeLessThan(32 * 1024);
    expect(() => hub.updateDesired(id, many)).toThrow(/39000 bytes, over the 32768-byte limit/);
    await expect(report(client, many)).rejects.toThrow(/over the 32768-byte limit/);
    // Half of them fit.
    const half = Object.fromEntries(Object.entries(many).slice(0, 1500));
    await report(client, half);
    expect(Object.keys(hub.getTwin(id).reported)).toHaveLength(1500 + 2); // + battery, $version
  });
});

describe('direct methods', () => {
  test('a payload over 128 KB is refused with 400 before the device sees it; 128 KB exactly goes through', async () => {
    const id = newDevice('method-size');
    const client = await connectDevice(cloud, hub.host, id);
    const seen: number[] = [];
    client.onDeviceMethod('size', (request, response) => {
      seen.push(JSON.stringify(request.payload).length);
      response.send(200, { bytes: seen.at(-1) }, () => undefined);
    });
    await waitFor(async () => (await hub.invokeMethod(id, 'size', 'probe', { responseTimeoutSec: 5 })).status === 200, { message: 'methods subscribed' });
    seen.length = 0;

    const limit = 128 * 1024;
    const tooBig = await hub.invokeMethod(id, 'size', 'x'.repeat(limit - 1), { responseTimeoutSec: 5 }); // JSON: limit + 1 bytes
    expect(tooBig).toMatchObject({ status: 400, payload: { errorCode: 400004 } });
    expect(seen).toEqual([]);
    expect(await hub.invokeMethod(id, 'size', 'x'.repeat(limit - 2), { responseTimeoutSec: 5 })).toEqual({ status: 200, payload: { bytes: limit } });
    await closeQuietly(client);
  });

  test.each([
    ['responseTimeoutSec below 5', { responseTimeoutSec: 4 }],
    ['responseTimeoutSec above 300', { responseTimeoutSec: 301 }],
    ['responseTimeoutSec not whole', { responseTimeoutSec: 2.5 }],
    ['connectTimeoutSec below 0', { connectTimeoutSec: -1 }],
    ['connectTimeoutSec above 300', { connectTimeoutSec: 301 }],
    ['both timeoutMs and responseTimeoutSec', { timeoutMs: 1000, responseTimeoutSec: 10 }],
  ])('%s: 400, as IoT Hub answers out-of-bounds timeouts', async (_what, options) => {
    const id = newDevice(`method-bounds-${Object.keys(options).join('-')}-${Object.values(options).join('-')}`);
    expect(await hub.invokeMethod(id, 'm', {}, options)).toMatchObject({ status: 400, payload: { errorCode: 400004 } });
  });

  test('connectTimeoutSec 0 (default): 404103 at once for a device not connected; > 0: waits for it to connect and subscribe', async () => {
    const id = newDevice('method-connect');
    const started = Date.now();
    expect(await hub.invokeMethod(id, 'm', {}, { responseTimeoutSec: 5 })).toMatchObject({ status: 404, payload: { errorCode: 404103 } });
    expect(Date.now() - started).toBeLessThan(1000);

    const result = hub.invokeMethod(id, 'm', { n: 7 }, { responseTimeoutSec: 5, connectTimeoutSec: 30 });
    const { client } = await connectRaw(cloud, hub, id, { clean: true });
    const request = nextMessage(client, '$iothub/methods/POST/m/');
    await subscribe(client, '$iothub/methods/POST/#', 0);
    const { topic, payload } = await request;
    expect(JSON.parse(payload.toString())).toEqual({ n: 7 });
    client.publish(`$iothub/methods/res/201/?$rid=${/\$rid=([^&]+)/.exec(topic)![1]}`, '"done"');
    expect(await result).toEqual({ status: 201, payload: 'done' });
    await endRaw(client, hub, id);
  });

  test('connectTimeoutSec passes without the device: 404103 after that long', async () => {
    const id = newDevice('method-connect-expires');
    const started = Date.now();
    expect(await hub.invokeMethod(id, 'm', {}, { connectTimeoutSec: 1 })).toMatchObject({ status: 404, payload: { errorCode: 404103 } });
    expect(Date.now() - started).toBeGreaterThanOrEqual(990);
  });

  test('no payload is an empty body (null is "null"); the SDK own handler answers an empty body with 400', async () => {
    const id = newDevice('method-empty');
    const raw = await connectRaw(cloud, hub, id, { clean: true });
    await subscribe(raw.client, '$iothub/methods/POST/#', 0);
    const bodies: string[] = [];
    raw.client.on('message', (topic: string, payload: Buffer) => {
      bodies.push(payload.toString());
      raw.client.publish(`$iothub/methods/res/200/?$rid=${/\$rid=([^&]+)/.exec(topic)![1]}`, '');
    });
    expect(await hub.invokeMethod(id, 'm', undefined, { responseTimeoutSec: 5 })).toEqual({ status: 200, payload: null });
    expect(await hub.invokeMethod(id, 'm', null, { responseTimeoutSec: 5 })).toEqual({ status: 200, payload: null });
    expect(bodies).toEqual(['', 'null']);
    await endRaw(raw.client, hub, id);

    // The SDK's DeviceMethodRequest JSON.parses any body it gets (an empty Buffer is truthy) and
    // answers 400 itself without calling the handler. hubstate's session reads the body instead.
    const sdk = await connectDevice(cloud, hub.host, id);
    const called: unknown[] = [];
    sdk.onDeviceMethod('m', (request, response) => {
      called.push(request.payload);
      response.send(200, 'ok', () => undefined);
    });
    await waitFor(async () => (await hub.invokeMethod(id, 'm', 'probe', { responseTimeoutSec: 5 })).status === 200, { message: 'methods subscribed' });
    const empty = await hub.invokeMethod(id, 'm', undefined, { responseTimeoutSec: 5 });
    expect(empty.status).toBe(400);
    expect(String(empty.payload)).toMatch(/Invalid request format/);
    expect(called).toEqual(['probe']);
    await closeQuietly(sdk);
  });
});
