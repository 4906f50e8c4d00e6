/** Helpers driving the real, unmodified Azure IoT Node SDK against the local cloud. */
import { Client, Message } from 'azure-iot-device';
import { Mqtt } from 'azure-iot-device-mqtt';
import { NoRetry } from 'azure-iot-common';
import { MqttBase } from 'azure-iot-mqtt-base';
import { ProvisioningDeviceClient } from 'azure-iot-provisioning-device';
import { Mqtt as ProvMqtt } from 'azure-iot-provisioning-device-mqtt';
import { SymmetricKeySecurityClient } from 'azure-iot-security-symmetric-key';
import type { LocalCloud } from '../src';

export { Message };

/** Outcome of a provisioning attempt through the real SDK. */
export interface ProvisionOutcome {
  assignedHub?: string;
  deviceId?: string;
  result?: Record<string, unknown>;
  error?: Error & { transportError?: { code?: unknown }; result?: unknown; code?: unknown };
  /** Errors the transport emitted with no request in flight. */
  transportErrors: Error[];
}

/** Provisions `registrationId` with the real ProvisioningDeviceClient (MqttBase-injected CA). */
export async function provision(
  cloud: LocalCloud,
  registrationId: string,
  opts: { key?: string; idScope?: string; modelId?: string; host?: string; timeoutMs?: number } = {},
): Promise<ProvisionOutcome> {
  const base = new MqttBase();
  base.setOptions({ ca: cloud.ca });
  const transport = new ProvMqtt(base);
  const transportErrors: Error[] = [];
  transport.on('error', (e: Error) => transportErrors.push(e));
  const security = new SymmetricKeySecurityClient(registrationId, opts.key ?? cloud.deviceKey(registrationId));
  const client = ProvisioningDeviceClient.create(opts.host ?? cloud.provisioningHost, opts.idScope ?? cloud.idScope, transport, security);
  if (opts.modelId) client.setProvisioningPayload({ modelId: opts.modelId });
  let timer: NodeJS.Timeout | undefined;
  try {
    const result = (await Promise.race([
      client.register(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('provision deadline')), opts.timeoutMs ?? 10_000);
      }),
    ])) as unknown as Record<string, unknown>;
    return {
      assignedHub: result['assignedHub'] as string,
      deviceId: result['deviceId'] as string,
      result,
      transportErrors,
    };
  } catch (error) {
    await new Promise<void>((resolve) => client.cancel(() => resolve()));
    return { error: error as ProvisionOutcome['error'] & Error, transportErrors };
  } finally {
    if (timer) clearTimeout(timer);
  }
}

/** Device client options used by the tests. */
export interface DeviceOptions {
  modelId?: string;
  keepalive?: number;
  tokenRenewal?: { tokenValidTimeInSeconds: number; tokenRenewalMarginInSeconds: number };
}

/** A real azure-iot-device Client (MQTT, NoRetry, emulator CA) not yet opened. */
export async function deviceClient(cloud: LocalCloud, host: string, deviceId: string, key: string, opts: DeviceOptions = {}): Promise<Client> {
  const client = Client.fromConnectionString(`HostName=${host};DeviceId=${deviceId};SharedAccessKey=${key}`, Mqtt);
  client.setRetryPolicy(new NoRetry());
  client.on('error', () => undefined);
  await client.setOptions({
    ca: cloud.ca,
    ...(opts.modelId ? { modelId: opts.modelId } : {}),
    ...(opts.keepalive ? { keepalive: opts.keepalive } : {}),
    ...(opts.tokenRenewal ? { tokenRenewal: opts.tokenRenewal } : {}),
  });
  return client;
}

/** Opens a device on `host`; returns the client. */
export async function connectDevice(cloud: LocalCloud, host: string, deviceId: string, opts: DeviceOptions & { key?: string } = {}): Promise<Client> {
  const client = await deviceClient(cloud, host, deviceId, opts.key ?? cloud.deviceKey(deviceId), opts);
  await client.open();
  return client;
}

/** Opens and returns the error (or undefined on success; the client is then closed). */
export async function openError(client: Client): Promise<(Error & { transportError?: { code?: unknown } }) | undefined> {
  try {
    await client.open();
  } catch (err) {
    return err as Error & { transportError?: { code?: unknown } };
  }
  await closeQuietly(client);
  return undefined;
}

/** Closes a client without hanging (close() can wait forever on unacked QoS 1 publishes). */
export async function closeQuietly(client: Client | undefined, timeoutMs = 2000): Promise<void> {
  if (!client) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    client.close().catch(() => undefined),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    }),
  ]);
  if (timer) clearTimeout(timer);
}

/** Resolves on the client's next `disconnect` event (with its error), or rejects after `timeoutMs`. */
export function nextDisconnect(client: Client, timeoutMs = 5000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.removeListener('disconnect', onDisconnect);
      reject(new Error('no disconnect event'));
    }, timeoutMs);
    const onDisconnect = (e: unknown): void => {
      clearTimeout(timer);
      resolve(e);
    };
    client.once('disconnect', onDisconnect);
  });
}

/** Provisions, then connects to the assigned hub. */
export async function provisionAndConnect(cloud: LocalCloud, deviceId: string, opts: DeviceOptions = {}): Promise<{ client: Client; host: string }> {
  const p = await provision(cloud, deviceId, opts.modelId ? { modelId: opts.modelId } : {});
  if (!p.assignedHub) throw p.error ?? new Error('not assigned');
  const client = await connectDevice(cloud, p.assignedHub, deviceId, opts);
  return { client, host: p.assignedHub };
}
