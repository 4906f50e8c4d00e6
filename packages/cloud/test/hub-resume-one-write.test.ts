/**
 * `resumeInOneWrite`: the CONNACK of a resumed MQTT session and what the hub delivers with it at
 * once (queued C2D, a method call waiting for the device) reach the device in one read, as they
 * often do from a hub across a real network. Off, they are written one by one.
 */
import * as mqtt from 'mqtt';
import { hubSasToken, startLocalCloud, type EmulatedHub, type LocalCloud } from '../src';
import { connectRaw, endRaw, subscribe } from './hub-raw-mqtt';

let cloud: LocalCloud;
let hub: EmulatedHub;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'hub-resume-one-write' });
  hub = cloud.hubs[0]!;
});
afterAll(async () => {
  await cloud?.stop();
});

/** Connects with clean=false and records, for each packet received, which socket read carried it. */
function connectCountingReads(deviceId: string) {
  const client = mqtt.connect(`mqtts://${hub.host}`, {
    ca: cloud.ca,
    clientId: deviceId,
    username: `${hub.host}/${deviceId}/?api-version=2021-04-12`,
    password: hubSasToken(hub.host, deviceId, cloud.deviceKey(deviceId), Math.floor(Date.now() / 1000) + 3600),
    clean: false,
    protocolVersion: 4,
    reconnectPeriod: 0,
    keepalive: 0,
  });
  let reads = 0;
  (client as unknown as { stream: NodeJS.ReadableStream }).stream.prependListener('data', () => reads++); // before mqtt.js parses the read
  const packets: Array<{ cmd: string; topic?: string; read: number }> = [];
  client.on('packetreceive', (packet: mqtt.Packet) => {
    packets.push({ cmd: packet.cmd, ...('topic' in packet ? { topic: String(packet.topic) } : {}), read: reads });
  });
  return { client, packets };
}

test('on: the CONNACK, a queued C2D and a waiting method request arrive in the same read', async () => {
  const id = 'resume-burst';
  hub.addDevice(id, cloud.deviceKey(id));
  const first = await connectRaw(cloud, hub, id, { clean: false });
  await subscribe(first.client, `devices/${id}/messages/devicebound/#`, 1);
  await subscribe(first.client, '$iothub/methods/POST/#', 0);
  await endRaw(first.client, hub, id);

  hub.resumeInOneWrite(true);
  try {
    expect(hub.sendC2D(id, 'queued while away').status).toBe('queued');
    const call = hub.invokeMethod(id, 'ping', { n: 1 }, { connectTimeoutSec: 10, responseTimeoutSec: 5 });
    const { client, packets } = connectCountingReads(id);
    const method = new Promise<string>((resolve) =>
      client.on('message', (topic: string) => {
        if (topic.startsWith('$iothub/methods/POST/')) resolve(topic);
      }),
    );
    const rid = /\$rid=([^&]+)/.exec(await method)![1];
    client.publish(`$iothub/methods/res/200/?$rid=${rid}`, '{"pong":1}');
    expect(await call).toEqual({ status: 200, payload: { pong: 1 } });

    const connack = packets.find((p) => p.cmd === 'connack')!;
    const c2d = packets.find((p) => p.cmd === 'publish' && p.topic!.startsWith(`devices/${id}/messages/devicebound/`))!;
    const request = packets.find((p) => p.cmd === 'publish' && p.topic!.startsWith('$iothub/methods/POST/'))!;
    expect([connack.read, c2d.read, request.read]).toEqual([1, 1, 1]);
    await endRaw(client, hub, id);
  } finally {
    hub.resumeInOneWrite(false);
  }
});
