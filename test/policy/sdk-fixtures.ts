/**
 * Errors built exactly the way the SDK builds them, with the SDK's own classes and translate
 * functions. Only the leaves that come from mqtt.js or Node are re-created by hand, with the
 * shapes they have in mqtt.js 4.3.8 (lib/client.js) and Node 20 (classify-sdk-paths.test.ts
 * checks the CONNACK leaf against mqtt.js itself).
 *
 * Service answers go through the SDK's real objects: the device MQTT transport
 * (azure-iot-device-mqtt `Mqtt`, whose twin client turns `$iothub/twin/res/{status}` into an
 * error) and the provisioning client (ProvisioningDeviceClient → polling state machine →
 * azure-iot-provisioning-device-mqtt `Mqtt`), each on a scripted MqttBase that answers like the
 * service would. classify-sdk-paths.test.ts checks them against the same answers on the wire
 * (the local cloud, real MQTT over TLS).
 */
import { Duplex } from 'stream';
import { EventEmitter } from 'events';
import { errors, Message, results } from 'azure-iot-common';
import { SharedAccessSignatureAuthenticationProvider } from 'azure-iot-device';
import { Mqtt as DeviceMqtt } from 'azure-iot-device-mqtt';
import { MqttBase, translateError as mqttTranslateError } from 'azure-iot-mqtt-base';
import { ProvisioningDeviceClient, translateError as dpsTranslateError } from 'azure-iot-provisioning-device';
import { Mqtt as ProvisioningMqtt } from 'azure-iot-provisioning-device-mqtt';
import { SymmetricKeySecurityClient } from 'azure-iot-security-symmetric-key';
import { DpsStatusError } from '../../src/actors/provision';

/** The mqtt.js the SDK runs (azure-iot-mqtt-base's own dependency, 4.3.8) and its packet codec. */
const mqttPath = require.resolve('mqtt', { paths: [require.resolve('azure-iot-mqtt-base')] });
export const sdkMqtt = require(mqttPath) as typeof import('mqtt');
export const sdkMqttPacket = require(require.resolve('mqtt-packet', { paths: [mqttPath] })) as typeof import('mqtt-packet');

/** mqtt.js 4.3.8 lib/client.js `errors` for MQTT 3.1.1 return codes. */
const CONNACK_TEXT: Record<number, string> = {
  1: 'Unacceptable protocol version',
  2: 'Identifier rejected',
  3: 'Server unavailable',
  4: 'Bad username or password',
  5: 'Not authorized',
};

/** mqtt.js `_handleConnack`: `new Error('Connection refused: ' + errors[rc]); err.code = rc`. */
export function connackError(rc: 1 | 2 | 3 | 4 | 5): Error & { code: number } {
  return Object.assign(new Error('Connection refused: ' + CONNACK_TEXT[rc]), { code: rc });
}

/** Node's socket / dns errors (net.connect, dns.lookup): errno, code, syscall and address. */
export function socketError(code: string): Error & { code: string } {
  const errno: Record<string, number> = {
    ECONNREFUSED: -111,
    ECONNRESET: -104,
    ETIMEDOUT: -110,
    EPIPE: -32,
    EHOSTUNREACH: -113,
    ENETUNREACH: -101,
    EMFILE: -24,
    ENOTFOUND: -3008,
    EAI_AGAIN: -3001,
  };
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EMFILE') {
    return Object.assign(new Error(`getaddrinfo ${code} localhost`), {
      errno: errno[code],
      code,
      syscall: 'getaddrinfo',
      hostname: 'localhost',
    });
  }
  if (code === 'EPIPE' || code === 'ECONNRESET') {
    return Object.assign(new Error(code === 'EPIPE' ? 'write EPIPE' : 'read ECONNRESET'), {
      errno: errno[code],
      code,
      syscall: code === 'EPIPE' ? 'write' : 'read',
    });
  }
  return Object.assign(new Error(`connect ${code} 127.0.0.1:18884`), {
    errno: errno[code],
    code,
    syscall: 'connect',
    address: '127.0.0.1',
    port: 18884,
  });
}

/** Node 20 / OpenSSL 3 TLS verification errors (only `code` is set, plus host/reason/cert for altnames). */
export function tlsError(code: string): Error & { code: string } {
  const text: Record<string, string> = {
    DEPTH_ZERO_SELF_SIGNED_CERT: 'self-signed certificate',
    SELF_SIGNED_CERT_IN_CHAIN: 'self-signed certificate in certificate chain',
    UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'unable to verify the first certificate',
    UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'unable to get local issuer certificate',
    CERT_HAS_EXPIRED: 'certificate has expired',
    ERR_TLS_CERT_ALTNAME_INVALID:
      "Hostname/IP does not match certificate's altnames: Host: otherhost. is not in the cert's altnames: DNS:localhost",
  };
  const err = Object.assign(new Error(text[code]), { code });
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    Object.assign(err, {
      reason: "Host: otherhost. is not in the cert's altnames: DNS:localhost",
      host: 'otherhost',
      cert: { raw: Buffer.alloc(16), subject: { CN: 'localhost' } },
    });
  }
  return err;
}

/**
 * Hub connect failure BEFORE the transport's first successful connect: azure-iot-device-mqtt
 * (mqtt.js:224) wraps `new Error('Failure on first connection (Not authorized): ' + err.message)`
 * and its `disconnected._onEnter` hands that to mqtt-base `translateError`.
 */
export function hubFirstConnect(mqttError: Error): Error {
  return mqttTranslateError(new Error('Failure on first connection (Not authorized): ' + mqttError.message));
}

/** Hub connect failure AFTER a successful connect: the raw error goes through `translateError`. */
export function hubAfterConnect(mqttError: Error): Error {
  return mqttTranslateError(mqttError);
}

/** Socket closed while connected: mqtt-base closeEvent → NotConnectedError, delivered as the
 *  client's `disconnect` event `results.Disconnected(err)` (error in `.transportObj`). */
export function hubConnectionClosed(): results.Disconnected {
  return new results.Disconnected(new errors.NotConnectedError('Connection to the server has been closed.'));
}

/**
 * A DPS response with status >= 300 through the provisioning transport: `translateError('incoming
 * message failure', status, payloadJson, { topic, payload })` (provisioning-device-mqtt mqtt.js:74).
 */
export function dpsStatus(status: number, body: Record<string, unknown> = {}, retryAfterSeconds?: string): Error {
  const payload = {
    errorCode: status * 1000 + 2,
    trackingId: 'a9e5b0a3-0000-4000-8000-000000000000',
    message: `DPS status ${status}`,
    timestampUtc: '2024-01-01T00:00:00.000Z',
    ...body,
  };
  const query = retryAfterSeconds === undefined ? '' : `&retry-after=${retryAfterSeconds}`;
  const topic = `$dps/registrations/res/${status}/?$rid=1${query}`;
  return dpsTranslateError('incoming message failure', status, payload, { topic, payload });
}

/** The DPS error body (`errorCode` = status × 1000 + detail), as DPS and the local cloud send it. */
export function dpsErrorBody(status: number, message = `DPS status ${status}`): Record<string, unknown> {
  return { errorCode: status * 1000 + 2, trackingId: 'a9e5b0a3-0000-4000-8000-000000000000', message, timestampUtc: '2024-01-01T00:00:00.000Z' };
}

/** A registration answer with a body status (200), e.g. 'failed' or 'disabled'. */
export function dpsRegistrationBody(status: 'failed' | 'disabled', errorCode = 400209): Record<string, unknown> {
  const registrationState =
    status === 'failed'
      ? { registrationId: 'dev1', status, errorCode, errorMessage: errorCode === 400209 ? 'Custom allocation failed' : 'Internal error' }
      : { registrationId: 'dev1', status };
  return { operationId: '4.0000.0000', status, registrationState };
}

/**
 * DPS 429 and every 5xx: the SDK re-polls them forever and never fails on them, so the provision
 * actor watches the raw response topic and fails with its own DpsStatusError (statusCode,
 * retryAfterMs from the topic's retry-after). dpsAnswer(429) shows the SDK side.
 */
export function dpsStatusError(statusCode: number, retryAfterMs?: number): Error {
  return new DpsStatusError(statusCode, retryAfterMs);
}

// ---------------------------------------------------------------------------------------------
// The SDK's own objects on a scripted MqttBase
// ---------------------------------------------------------------------------------------------

/** What a scripted service answers to one publish: [topic, body] or nothing (no answer). */
export type Script = (topic: string, payload: string) => [topic: string, body: string] | undefined;

const VALID_FILTER = (filter: string): boolean =>
  filter.split('/').every((part, i, parts) => part === '+' || (part === '#' ? i === parts.length - 1 : !/[+#]/.test(part)));

/**
 * The MqttBase surface the SDK transports use (connect, subscribe, publish, 'message' events),
 * connected at once. A publish is answered synchronously by `script`, as a 'message' event. A
 * subscription to a filter mqtt.js refuses goes to a real, unconnected mqtt.js client, so the
 * error is mqtt.js's own ("Invalid topic …", lib/client.js).
 */
export class ScriptedMqttBase extends EventEmitter {
  readonly published: string[] = [];
  constructor(private readonly script: Script = () => undefined) {
    super();
  }
  connect(_config: unknown, callback: (err: Error | null, result?: unknown) => void): void {
    callback(null, new results.Connected());
  }
  disconnect(callback: (err?: Error) => void): void {
    callback();
  }
  setOptions(): void {}
  updateSharedAccessSignature(_sas: string, callback: (err?: Error) => void): void {
    callback();
  }
  unsubscribe(_topic: string, callback: (err?: Error) => void): void {
    callback();
  }
  subscribe(topic: string, options: { qos: 0 | 1 }, callback: (err: Error | null, granted?: unknown) => void): void {
    if (VALID_FILTER(topic)) return callback(null, [{ topic, qos: options.qos }]);
    const client = new sdkMqtt.MqttClient(() => new Duplex({ read() {}, write: (_c, _e, done) => done() }) as never, { reconnectPeriod: 0 });
    client.subscribe(topic, { qos: options.qos }, (err) => {
      client.end(true);
      callback(err ?? null);
    });
  }
  publish(topic: string, payload: unknown, _options: unknown, callback?: (err?: Error, result?: unknown) => void): void {
    this.published.push(topic);
    callback?.(undefined, {});
    const answer = this.script(topic, String(payload));
    if (answer) this.emit('message', answer[0], Buffer.from(answer[1]));
  }
}

const ridOf = (topic: string): string => /[?&]\$rid=([^&]+)/.exec(topic)?.[1] ?? '';

/**
 * The device MQTT transport (the object src/pnp/session.ts calls) for `deviceId`, on a scripted
 * base, connected. A SAS provider without a key: no renewal timer, nothing left running.
 */
async function deviceTransport(script: Script = () => undefined, deviceId = 'dev1'): Promise<DeviceMqtt> {
  const sas = `SharedAccessSignature sr=hub.example%2Fdevices%2F${encodeURIComponent(deviceId)}&sig=c2ln&se=4102444800`;
  const transport = new DeviceMqtt(
    SharedAccessSignatureAuthenticationProvider.fromSharedAccessSignature(sas),
    new ScriptedMqttBase(script) as unknown as MqttBase,
  );
  await new Promise<void>((resolve, reject) => transport.connect((err) => (err ? reject(err) : resolve())));
  return transport;
}

/** The error a transport callback delivers (undefined when it succeeds). */
function errorOf(run: (done: (err?: Error | null) => void) => void): Promise<Error | undefined> {
  return new Promise((resolve) => run((err) => resolve(err ?? undefined)));
}

/**
 * The hub answers a twin GET on `$iothub/twin/res/{status}` with `body` (its JSON error body):
 * what `transport.getTwin` (src/pnp/session.ts) then fails with. azure-iot-device-mqtt
 * mqtt_twin_client.js `_onResponseMessage` ignores the status: `new Error(body.message)`.
 */
export async function twinAnswer(status: number, body: Record<string, unknown>): Promise<Error | undefined> {
  const transport = await deviceTransport((topic) =>
    topic.startsWith('$iothub/twin/GET/') ? [`$iothub/twin/res/${status}/?$rid=${ridOf(topic)}`, JSON.stringify(body)] : undefined,
  );
  return errorOf((done) => transport.getTwin(done as never));
}

/** IoT Hub's twin error body: `{ errorCode, trackingId, message, timestampUtc }`. */
export function hubErrorBody(errorCode: number, message?: string): Record<string, unknown> {
  return { errorCode, trackingId: 'b2c1d3e4-0000-4000-8000-000000000000', ...(message === undefined ? {} : { message }), timestampUtc: '2024-01-01T00:00:00.000Z' };
}

/** session.ts subscribes to C2D with `transport.enableC2D`: the filter is devices/{id}/messages/devicebound/#. */
export async function c2dSubscribe(deviceId: string): Promise<Error | undefined> {
  const transport = await deviceTransport(undefined, deviceId);
  return errorOf((done) => transport.enableC2D(done as never));
}

/** A telemetry body over 256 KiB through the transport's sendEvent (device-mqtt mqtt.js). */
export async function sendTooLarge(): Promise<Error | undefined> {
  const transport = await deviceTransport();
  return errorOf((done) => transport.sendEvent(new Message(Buffer.alloc(256 * 1024 + 1)), done as never));
}

/** Token renewal options on a transport whose credential cannot renew (device-mqtt setOptions). */
export function tokenRenewalWithoutKey(): unknown {
  const sas = 'SharedAccessSignature sr=hub.example%2Fdevices%2Fdev1&sig=c2ln&se=4102444800';
  const transport = new DeviceMqtt(SharedAccessSignatureAuthenticationProvider.fromSharedAccessSignature(sas), new ScriptedMqttBase() as unknown as MqttBase);
  try {
    transport.setOptions({ tokenRenewal: { tokenValidTimeInSeconds: 3600, tokenRenewalMarginInSeconds: 900 } } as never);
  } catch (error) {
    return error;
  }
  return undefined;
}

/** A provisioning client on a scripted DPS; resolves with what `register` ended with. */
type RegistrationClient = ReturnType<typeof ProvisioningDeviceClient.create>;

function provisioningClient(script: Script): { client: RegistrationClient; base: ScriptedMqttBase } {
  const base = new ScriptedMqttBase(script);
  const transport = new ProvisioningMqtt(base as unknown as MqttBase);
  const security = new SymmetricKeySecurityClient('dev1', Buffer.alloc(32, 7).toString('base64'));
  return { client: ProvisioningDeviceClient.create('dps.example', '0ne00000000', transport, security), base };
}

function registerOutcome(client: RegistrationClient): Promise<{ error?: Error; result?: unknown }> {
  return new Promise((resolve) => client.register((error?: Error, result?: unknown) => resolve(error ? { error } : { result })));
}

/**
 * DPS answers the registration with `status` and `body` (then, for a status the SDK re-polls,
 * 'assigned'): the error ProvisioningDeviceClient.register fails with, through the provisioning
 * MQTT transport's response handler (translateError for 300–428) and the polling state machine
 * (DeviceRegistrationFailedError / SyntaxError for a body status).
 */
export async function dpsAnswer(
  status: number,
  body: Record<string, unknown> = dpsErrorBody(status),
  retryAfterSeconds?: string,
): Promise<{ error?: Error; result?: unknown; requests: number }> {
  let answered = false;
  const { client, base } = provisioningClient((topic) => {
    if (!topic.startsWith('$dps/registrations/')) return undefined;
    const rid = ridOf(topic);
    if (answered) {
      const assigned = { operationId: 'op', status: 'assigned', registrationState: { registrationId: 'dev1', assignedHub: 'hub.example', deviceId: 'dev1', status: 'assigned' } };
      return [`$dps/registrations/res/200/?$rid=${rid}`, JSON.stringify(assigned)];
    }
    answered = true;
    const query = retryAfterSeconds === undefined ? '' : `&retry-after=${retryAfterSeconds}`;
    return [`$dps/registrations/res/${status}/?$rid=${rid}${query}`, JSON.stringify(body)];
  });
  const outcome = await registerOutcome(client);
  return { ...outcome, requests: base.published.length };
}

/**
 * register() while a registration is pending (DPS not answering): the second call fails with
 * the polling state machine's InvalidOperationError; cancelling the first fails it with its
 * OperationCancelledError. Both errors, in that order.
 */
export async function registerTwice(): Promise<{ second: Error; first: Error }> {
  const { client } = provisioningClient(() => undefined);
  const first = registerOutcome(client);
  const second = await registerOutcome(client);
  await new Promise<void>((resolve) => client.cancel(() => resolve()));
  return { second: second.error!, first: (await first).error! };
}
