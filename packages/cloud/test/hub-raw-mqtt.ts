/**
 * A device speaking MQTT to an emulated hub without the SDK (mqtt.js, which the SDK itself runs):
 * for what the SDK never does (clean=true or no resubscription, QoS 2, RETAIN, withheld PUBACKs).
 */
import * as mqtt from 'mqtt';
import { hubSasToken, waitFor, type EmulatedHub, type LocalCloud } from '../src';

/** A connected raw client and what its CONNACK said. */
export interface RawDevice {
  client: mqtt.MqttClient;
  sessionPresent: boolean;
}

/** Connects as `deviceId` with a SAS token, the way the SDK does (username, client id, password). */
export function connectRaw(cloud: LocalCloud, hub: EmulatedHub, deviceId: string, opts: { clean: boolean; withholdPubacks?: boolean }): Promise<RawDevice> {
  const client = mqtt.connect(`mqtts://${hub.host}`, {
    ca: cloud.ca,
    clientId: deviceId,
    username: `${hub.host}/${deviceId}/?api-version=2021-04-12`,
    password: hubSasToken(hub.host, deviceId, cloud.deviceKey(deviceId), Math.floor(Date.now() / 1000) + 3600),
    clean: opts.clean,
    protocolVersion: 4,
    reconnectPeriod: 0,
    keepalive: 0,
  });
  // mqtt.js sends a PUBACK when handleMessage calls back: never calling back withholds it.
  if (opts.withholdPubacks) client.handleMessage = () => undefined;
  return new Promise((resolve, reject) => {
    client.once('connect', (connack: mqtt.IConnackPacket) => resolve({ client, sessionPresent: connack.sessionPresent }));
    client.once('error', reject);
    client.once('close', () => reject(new Error('closed before CONNACK')));
  });
}

/** Resolves with the first message whose topic starts with `prefix`. */
export function nextMessage(client: mqtt.MqttClient, prefix: string): Promise<{ topic: string; payload: Buffer; packet: mqtt.IPublishPacket }> {
  return new Promise((resolve) => {
    const onMessage = (topic: string, payload: Buffer, packet: mqtt.IPublishPacket): void => {
      if (!topic.startsWith(prefix)) return;
      client.removeListener('message', onMessage);
      resolve({ topic, payload, packet });
    };
    client.on('message', onMessage);
  });
}

/** Resolves when the connection is closed (by either side). */
export function closed(client: mqtt.MqttClient): Promise<void> {
  return new Promise((resolve) => {
    if (client.disconnected) resolve();
    else client.once('close', () => resolve());
  });
}

/** Subscribes and resolves on the SUBACK. */
export function subscribe(client: mqtt.MqttClient, topic: string, qos: 0 | 1 = 1): Promise<void> {
  return new Promise((resolve, reject) => client.subscribe(topic, { qos }, (err) => (err ? reject(err) : resolve())));
}

/** Ends the connection and waits for the hub to see it gone. */
export async function endRaw(client: mqtt.MqttClient, hub: EmulatedHub, deviceId: string): Promise<void> {
  await new Promise<void>((resolve) => client.end(true, {}, () => resolve()));
  await waitFor(() => !hub.isConnected(deviceId), { message: `${deviceId} gone from ${hub.name}` });
}
