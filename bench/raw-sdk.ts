/** The raw Azure SDK, used for the references (floor and throughput): no hubstate code involved. */
import { randomUUID } from 'node:crypto';
import { NoRetry } from 'azure-iot-common';
import { Client, Message } from 'azure-iot-device';
import { Mqtt } from 'azure-iot-device-mqtt';
import { MqttBase } from 'azure-iot-mqtt-base';
import { ProvisioningDeviceClient } from 'azure-iot-provisioning-device';
import { Mqtt as ProvMqtt } from 'azure-iot-provisioning-device-mqtt';
import { SymmetricKeySecurityClient } from 'azure-iot-security-symmetric-key';
import { deriveDeviceKey } from '../src/actors/credentials';
import type { BenchCloudInfo } from './cloud';

export async function rawRegister(cloud: BenchCloudInfo, registrationId: string): Promise<{ assignedHub: string; deviceId: string }> {
  const base = new MqttBase();
  base.setOptions({ ca: cloud.ca });
  const transport = new ProvMqtt(base);
  transport.on('error', () => undefined);
  const security = new SymmetricKeySecurityClient(registrationId, deriveDeviceKey(cloud.groupKey, registrationId));
  const client = ProvisioningDeviceClient.create(cloud.provisioningHost, cloud.idScope, transport, security);
  const result = (await client.register()) as unknown as { assignedHub: string; deviceId: string };
  return { assignedHub: result.assignedHub, deviceId: result.deviceId };
}

export async function rawOpen(cloud: BenchCloudInfo, host: string, deviceId: string, registrationId: string, modelId?: string): Promise<Client> {
  const key = deriveDeviceKey(cloud.groupKey, registrationId);
  const client = Client.fromConnectionString(`HostName=${host};DeviceId=${deviceId};SharedAccessKey=${key}`, Mqtt);
  client.setRetryPolicy(new NoRetry());
  client.on('error', () => undefined);
  await client.setOptions({ ca: cloud.ca, keepalive: 30, ...(modelId ? { modelId } : {}) } as Parameters<Client['setOptions']>[0]);
  await client.open();
  return client;
}

/**
 * What an IoT Central device does on the raw SDK once open (Microsoft's Plug and Play sample,
 * azure-iot-sdk-node device/samples/javascript/pnp_temperature_controller.js): announce a model
 * id (rawOpen's modelId), read the twin and listen for desired patches, answer direct methods,
 * take C2D messages, and report a property. The same session hubstate's device keeps (twin GET,
 * the three subscriptions, one reported patch: its resilience report), so the two compare alike.
 */
export async function rawPlugAndPlaySession(client: Client): Promise<void> {
  client.onDeviceMethod('reboot', (_request, response) => response.send(200, {}, () => undefined));
  client.on('message', (message) => client.complete(message, () => undefined));
  const twin = await client.getTwin();
  twin.on('properties.desired', () => undefined);
  await new Promise<void>((resolve, reject) =>
    twin.properties.reported.update({ serialNumber: 'raw-0001' }, (error?: Error) => (error ? reject(error) : resolve())),
  );
}

/** The same message hubstate sends: JSON body, message id, content type/encoding, creation time. */
export function rawMessage(body: string): Message {
  const message = new Message(body);
  message.messageId = randomUUID();
  message.contentType = 'application/json';
  message.contentEncoding = 'utf-8';
  message.properties.add('iothub-creation-time-utc', new Date().toISOString());
  return message;
}

export async function closeQuietly(client: Client): Promise<void> {
  await Promise.race([client.close().catch(() => undefined), new Promise((r) => setTimeout(r, 2000))]);
}
