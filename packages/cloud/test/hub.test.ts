import { Client as DeviceClient, type Client } from 'azure-iot-device';
import { Mqtt } from 'azure-iot-device-mqtt';
import { NoRetry, errors } from 'azure-iot-common';
import { FAST_DPS_POLL_SEC, hubSasToken, startLocalCloud, waitFor, type EmulatedHub, type LocalCloud, type TelemetryRecord } from '../src';
import { Message, closeQuietly, connectDevice, deviceClient, nextDisconnect, openError, provision } from './helpers';

const MODEL = 'dtmi:com:example:Thermostat;1';

let cloud: LocalCloud;

/** A client authenticated by a fixed SAS token (no renewal), to control `se` exactly. */
async function sasClient(host: string, deviceId: string, key: string, se: number): Promise<Client> {
  const c = DeviceClient.fromSharedAccessSignature(hubSasToken(host, deviceId, key, se), Mqtt);
  c.setRetryPolicy(new NoRetry());
  c.on('error', () => undefined);
  await c.setOptions({ ca: cloud.ca });
  return c;
}
let hub: EmulatedHub;
let client: Client;
const DEVICE = 'hub-dev-1';

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'hub-test', hub: { methodTimeoutMs: 5000 }, dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  const p = await provision(cloud, DEVICE, { modelId: MODEL });
  hub = cloud.hub(p.assignedHub!);
  client = await connectDevice(cloud, hub.host, DEVICE, { modelId: MODEL });
});

afterAll(async () => {
  await closeQuietly(client);
  await cloud?.stop();
});

describe('hub connection', () => {
  test('the real Client connects with the derived key; model id and connection are recorded', async () => {
    await waitFor(() => hub.isConnected(DEVICE));
    expect(hub.device(DEVICE)).toMatchObject({ status: 'enabled', connected: true, modelId: MODEL, hub: hub.name });
    expect(hub.metrics().connects).toBeGreaterThanOrEqual(1);
    expect(hub.metrics().currentConnections).toBe(1);
  });

  test('wrong key, unknown device and the wrong hub are refused (CONNACK 5 → UnauthorizedError)', async () => {
    const before = hub.metrics().refusedByCode['5'] ?? 0;
    const wrongKey = await deviceClient(cloud, hub.host, DEVICE, Buffer.alloc(32, 3).toString('base64'));
    const err1 = await openError(wrongKey);
    expect(err1).toBeInstanceOf(errors.UnauthorizedError);

    const unknown = await deviceClient(cloud, hub.host, 'nobody', cloud.deviceKey('nobody'));
    expect(await openError(unknown)).toBeInstanceOf(errors.UnauthorizedError);

    const other = cloud.hubs.find((h) => h !== hub)!;
    const wrongHub = await deviceClient(cloud, other.host, DEVICE, cloud.deviceKey(DEVICE));
    expect(await openError(wrongHub)).toBeInstanceOf(errors.UnauthorizedError);
    expect((hub.metrics().refusedByCode['5'] ?? 0) - before).toBe(2);
    // The legitimate connection is untouched.
    expect(hub.isConnected(DEVICE)).toBe(true);
  });
});

describe('telemetry', () => {
  test('QoS 1 messages are stored with message id, system and user properties', async () => {
    const created = new Date().toISOString();
    const m = new Message(JSON.stringify({ temp: 21.5 }));
    m.messageId = 'msg-1';
    m.contentType = 'application/json';
    m.contentEncoding = 'utf-8';
    m.properties.add('dt-subject', 'thermostat1');
    m.properties.add('iothub-creation-time-utc', created);
    m.properties.add('weird key', 'a/b&c=d é');
    const seen = new Promise<TelemetryRecord>((resolve) => cloud.events.once('telemetry', resolve));
    await client.sendEvent(m); // resolves on PUBACK, which the hub sends once stored
    const rec = (await seen) as TelemetryRecord;
    expect(rec).toMatchObject({
      hub: hub.name,
      deviceId: DEVICE,
      messageId: 'msg-1',
      contentType: 'application/json',
      contentEncoding: 'utf-8',
      component: 'thermostat1',
      creationTimeUtc: created,
    });
    expect(rec.properties).toEqual({ 'iothub-creation-time-utc': created, 'weird key': 'a/b&c=d é' });
    expect(rec.systemProperties['$.sub']).toBe('thermostat1');
    expect(JSON.parse(rec.body.toString())).toEqual({ temp: 21.5 });
    expect(cloud.telemetry({ deviceId: DEVICE }).map((r) => r.messageId)).toContain('msg-1');
    expect(cloud.deliveredIds(DEVICE).has('msg-1')).toBe(true);
    expect(hub.metrics().messages).toBeGreaterThanOrEqual(1);
  });

  test('many messages in flight are all stored; clearTelemetry forgets them', async () => {
    const sends = Array.from({ length: 50 }, (_, i) => {
      const m = new Message(`{"i":${i}}`);
      m.messageId = `bulk-${i}`;
      return client.sendEvent(m);
    });
    await Promise.all(sends);
    const ids = cloud.deliveredIds(DEVICE);
    for (let i = 0; i < 50; i++) expect(ids.has(`bulk-${i}`)).toBe(true);
    hub.clearTelemetry();
    expect(hub.telemetry()).toHaveLength(0);
  });
});

describe('twin', () => {
  test('GET returns desired and reported with versions; reported PATCH merges (null deletes)', async () => {
    const twin = await client.getTwin();
    expect(twin.properties.desired.$version).toBe(1);
    expect(twin.properties.reported.$version).toBe(1);

    await new Promise<void>((resolve, reject) =>
      twin.properties.reported.update({ fanSpeed: { value: 3, ac: 200, av: 1 }, battery: 90, tmp: 'x' }, (e?: Error) => (e ? reject(e) : resolve())),
    );
    await new Promise<void>((resolve, reject) => twin.properties.reported.update({ tmp: null }, (e?: Error) => (e ? reject(e) : resolve())));
    const server = hub.getTwin(DEVICE);
    expect(server.reported).toEqual({ fanSpeed: { value: 3, ac: 200, av: 1 }, battery: 90, $version: 3 });
  });

  test('desired updates are pushed with $version to the subscribed device', async () => {
    const twin = await client.getTwin();
    const got = new Promise<Record<string, unknown>>((resolve) => twin.on('properties.desired', (d: Record<string, unknown>) => {
      if (d['fanSpeed'] !== undefined) resolve(d);
    }));
    // The SDK subscribes to desired patches when a listener is attached; wait for the subscription.
    await waitFor(() => {
      const v = hub.updateDesired(DEVICE, { probe: Date.now() });
      return v > 0 && hub.metrics().desiredPushes > 0;
    });
    const version = hub.updateDesired(DEVICE, { fanSpeed: 4 });
    const patch = await got;
    expect(patch).toMatchObject({ fanSpeed: 4, $version: version });
    expect(hub.getTwin(DEVICE).desired).toMatchObject({ fanSpeed: 4, $version: version });
    hub.updateDesired(DEVICE, { probe: null });
    expect(hub.getTwin(DEVICE).desired['probe']).toBeUndefined();
  });

  test('like IoT Hub, twins nested deeper than 10 levels are refused: desired at the call, reported with a 400 (no stack overflow at any depth)', async () => {
    const nested = (levels: number) => JSON.parse('{"a":'.repeat(levels) + '1' + '}'.repeat(levels)) as Record<string, unknown>;
    expect(() => hub.updateDesired(DEVICE, nested(11))).toThrow(/deeper than 10 levels/);
    expect(() => hub.updateDesired(DEVICE, nested(50_000))).toThrow(/deeper than 10 levels/);
    const version = hub.updateDesired(DEVICE, nested(10));
    expect(hub.getTwin(DEVICE).desired.$version).toBe(version);
    hub.updateDesired(DEVICE, { a: null });

    const twin = await client.getTwin();
    const update = (patch: unknown) =>
      new Promise<void>((resolve, reject) => twin.properties.reported.update(patch, (e?: Error) => (e ? reject(e) : resolve())));
    const before = hub.getTwin(DEVICE).reported.$version;
    await expect(update(nested(11))).rejects.toThrow();
    await update({ deepest: nested(9) });
    expect(hub.getTwin(DEVICE).reported.$version).toBe((before as number) + 1);
  });
});

describe('direct methods', () => {
  test('invoke → device handler → status and payload', async () => {
    client.onDeviceMethod('echo', (req, res) => {
      res.send(200, { echoed: req.payload }, () => undefined);
    });
    const r = await waitFor(async () => {
      const res = await hub.invokeMethod(DEVICE, 'echo', { hello: 'world' }, { timeoutMs: 2000 });
      return res.status === 404 ? undefined : res;
    });
    expect(r).toEqual({ status: 200, payload: { echoed: { hello: 'world' } } });
    expect(hub.metrics().methodCalls).toBeGreaterThan(0);
  });

  test('404 for an unknown or offline device, 504 when the device does not answer', async () => {
    expect((await hub.invokeMethod('nobody', 'echo')).status).toBe(404);
    client.onDeviceMethod('silent', () => undefined);
    const started = Date.now();
    const r = await hub.invokeMethod(DEVICE, 'silent', null, { timeoutMs: 200 });
    expect(r.status).toBe(504);
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
  });
});

describe('cloud-to-device', () => {
  test('queued while not subscribed, delivered with properties on subscribe, then live', async () => {
    const queued = hub.sendC2D(DEVICE, 'first', { messageId: 'c2d-1', 'method-name': 'setAlarm', note: 'a b/c' });
    expect(queued.status).toBe('queued');
    expect(hub.device(DEVICE)!.c2dPending).toBe(1);

    const received: { data: string; messageId: string; props: Record<string, string> }[] = [];
    client.on('message', (msg: InstanceType<typeof Message>) => {
      const props: Record<string, string> = {};
      for (let i = 0; i < msg.properties.count(); i++) {
        const p = msg.properties.getItem(i);
        props[p.key] = p.value;
      }
      received.push({ data: msg.getData().toString(), messageId: msg.messageId, props });
    });
    await waitFor(() => received.length === 1);
    expect(received[0]).toMatchObject({ data: 'first', messageId: 'c2d-1', props: { 'method-name': 'setAlarm', note: 'a b/c' } });

    const live = hub.sendC2D(DEVICE, { cmd: 'go' });
    expect(live.status).toBe('sent');
    await waitFor(() => received.length === 2);
    expect(JSON.parse(received[1]!.data)).toEqual({ cmd: 'go' });
    await waitFor(() => hub.device(DEVICE)!.c2dPending === 0);
    expect(hub.metrics().c2dCompleted).toBe(2);
  });

  test('at most 50 pending messages per device', async () => {
    const p = await provision(cloud, 'c2d-full');
    const h = cloud.hub(p.assignedHub!);
    for (let i = 0; i < 50; i++) h.sendC2D('c2d-full', `m${i}`);
    expect(() => h.sendC2D('c2d-full', 'one too many')).toThrow(/pending/);
  });
});

describe('identity lifecycle', () => {
  test('disableDevice disconnects and refuses; enableDevice lets it back', async () => {
    const p = await provision(cloud, 'life-1');
    const h = cloud.hub(p.assignedHub!);
    const c = await connectDevice(cloud, h.host, 'life-1');
    const dropped = nextDisconnect(c);
    h.disableDevice('life-1');
    await dropped;
    expect(h.isConnected('life-1')).toBe(false);
    // Azure refuses a disabled device with CONNACK 3 (ServiceUnavailableError), the cloud's default.
    const again = await deviceClient(cloud, h.host, 'life-1', cloud.deviceKey('life-1'));
    expect(await openError(again)).toBeInstanceOf(errors.ServiceUnavailableError);
    expect(h.refusals('life-1').at(-1)).toMatchObject({ code: 3, reason: 'disabled' });
    h.enableDevice('life-1');
    const back = await deviceClient(cloud, h.host, 'life-1', cloud.deviceKey('life-1'));
    expect(await openError(back)).toBeUndefined();
    await closeQuietly(c);
  });

  test('deleteDevice refuses; DPS re-registration re-creates the identity', async () => {
    const p = await provision(cloud, 'life-2');
    const h = cloud.hub(p.assignedHub!);
    h.deleteDevice('life-2');
    expect(h.hasDevice('life-2')).toBe(false);
    expect(await openError(await deviceClient(cloud, h.host, 'life-2', cloud.deviceKey('life-2')))).toBeInstanceOf(errors.UnauthorizedError);
    expect((await provision(cloud, 'life-2')).assignedHub).toBe(h.host);
    expect(await openError(await deviceClient(cloud, h.host, 'life-2', cloud.deviceKey('life-2')))).toBeUndefined();
  });

  test('expireTokens disconnects and refuses the old token; a later token is accepted', async () => {
    const p = await provision(cloud, 'life-3');
    const h = cloud.hub(p.assignedHub!);
    const key = cloud.deviceKey('life-3');
    const se = Math.floor(Date.now() / 1000) + 600;
    const c = await sasClient(h.host, 'life-3', key, se);
    await c.open();
    const dropped = nextDisconnect(c);
    h.expireTokens('life-3');
    await dropped;
    expect(await openError(await sasClient(h.host, 'life-3', key, se))).toBeInstanceOf(errors.UnauthorizedError);
    expect(await openError(await sasClient(h.host, 'life-3', key, se + 1))).toBeUndefined();
    await closeQuietly(c);
  });

  test('the hub disconnects a device when its token expires', async () => {
    const p = await provision(cloud, 'life-4');
    const h = cloud.hub(p.assignedHub!);
    const c = await sasClient(h.host, 'life-4', cloud.deviceKey('life-4'), Math.floor(Date.now() / 1000) + 2);
    await c.open();
    expect(h.isConnected('life-4')).toBe(true);
    await nextDisconnect(c, 4000);
    expect(h.isConnected('life-4')).toBe(false);
    await closeQuietly(c);
  });
});
