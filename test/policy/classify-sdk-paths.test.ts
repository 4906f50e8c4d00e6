/**
 * The classifier's fixtures, checked against the wire: the same service answers sent by the local
 * cloud over real MQTT/TLS to the real, unmodified SDK give the same errors (name, message, body,
 * topic) as the scripted fixtures in sdk-fixtures.ts, and so the same table row. Also: the
 * CONNACK leaf is what mqtt.js itself builds, and DPS 429/5xx never reach the SDK's caller.
 */
import { Duplex } from 'stream';
import type { Client } from 'azure-iot-device';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { classify } from '../../src/policy/classify';
import { closeQuietly, provision, provisionAndConnect } from '../../packages/cloud/test/helpers';
import { connackError, dpsAnswer, dpsErrorBody, dpsRegistrationBody, hubErrorBody, sdkMqtt, sdkMqttPacket, twinAnswer } from './sdk-fixtures';

jest.setTimeout(30_000);

let cloud: LocalCloud;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'classify-sdk-paths', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});

afterAll(async () => {
  await cloud?.stop();
});

/** What identifies an SDK error: its class, name, message, body and response topic (request id blanked). */
function shape(error: unknown): Record<string, unknown> {
  const e = error as Error & { result?: unknown; transportObject?: { topic?: string } };
  return {
    class: e?.constructor?.name,
    name: e?.name,
    message: e?.message,
    result: e?.result,
    topic: e?.transportObject?.topic?.replace(/\$rid=[^&]+/, '$rid=…'),
  };
}

describe('mqtt.js builds the CONNACK leaf the fixtures re-create', () => {
  test.each([1, 2, 3, 4, 5] as const)('CONNACK %i', async (rc) => {
    const server = new Duplex({ read() {}, write: (_chunk, _encoding, done) => done() });
    const client = new sdkMqtt.MqttClient(() => server as never, { reconnectPeriod: 0 });
    const error = await new Promise<Error & { code?: unknown }>((resolve) => {
      client.once('error', resolve);
      setImmediate(() => server.push(sdkMqttPacket.generate({ cmd: 'connack', returnCode: rc, sessionPresent: false })));
    });
    client.end(true);
    const fixture = connackError(rc);
    expect({ message: error.message, code: error.code }).toEqual({ message: fixture.message, code: fixture.code });
  });
});

describe('DPS answers on the wire give the fixtures’ errors', () => {
  const cases: Array<[status: number, rule: string, body: Record<string, unknown>]> = [
    [400, 'dps-bad-request', dpsErrorBody(400)],
    [401, 'dps-unauthorized', dpsErrorBody(401)],
    [403, 'dps-forbidden', dpsErrorBody(403)],
    [404, 'dps-not-found', dpsErrorBody(404)],
    [405, 'dps-client-error', dpsErrorBody(405)],
    [408, 'dps-request-timeout', dpsErrorBody(408)],
    [409, 'dps-conflict', dpsErrorBody(409)],
    [412, 'dps-conflict', dpsErrorBody(412)],
    [200, 'registration-failed', dpsRegistrationBody('failed')],
    [200, 'registration-disabled', dpsRegistrationBody('disabled')],
  ];

  test.each(cases)('DPS answers %i → %s', async (status, rule, body) => {
    cloud.dps.respondRaw({ status, body: JSON.stringify(body) });
    const wire = await provision(cloud, `paths-${status}-${String(body['status'] ?? 'error')}`);
    const scripted = await dpsAnswer(status, body);
    expect(wire.error).toBeDefined();
    expect(shape(wire.error)).toEqual(shape(scripted.error));
    expect(classify(wire.error, 'dps').rule).toBe(rule);
    expect(classify(scripted.error, 'dps').rule).toBe(rule);
  });

  test('429 and 5xx never fail a registration: the SDK re-polls them (only the provision actor surfaces them)', async () => {
    cloud.dps.throttle({ retryAfterSec: 0.05, count: 1 });
    const throttled = await provision(cloud, 'paths-429');
    expect(throttled.error).toBeUndefined();
    expect(cloud.dps.answers('paths-429')[0]).toMatchObject({ status: 429 });

    cloud.dps.failWith({ status: 503, count: 1, retryAfterSec: 0.05 });
    const busy = await provision(cloud, 'paths-503');
    expect(busy.error).toBeUndefined();
    expect(cloud.dps.answers('paths-503')[0]).toMatchObject({ status: 503 });

    for (const status of [429, 500, 503]) {
      const scripted = await dpsAnswer(status, dpsErrorBody(status), '0.01');
      expect({ status, error: scripted.error, requests: scripted.requests }).toEqual({ status, error: undefined, requests: 2 });
    }
  });
});

describe('twin answers on the wire give the fixtures’ errors', () => {
  let client: Client | undefined;
  let host = '';
  const deviceId = 'paths-twin';

  beforeAll(async () => {
    ({ client, host } = await provisionAndConnect(cloud, deviceId));
  });

  afterAll(async () => {
    await closeQuietly(client);
  });

  const cases: Array<[status: number, rule: string, body: Record<string, unknown>]> = [
    [429, 'hub-throttled', hubErrorBody(429001, 'IoT Hub throttling limits have been exceeded for the requested operation.')],
    [403, 'hub-quota-exceeded', hubErrorBody(403002, "Total number of messages on IotHub 'hub-1' exceeded the allocated quota.")],
    [401, 'hub-unauthorized', hubErrorBody(401003, 'Authentication failed for this device, renew token or certificate and reconnect')],
    [500, 'hub-server-error', hubErrorBody(500001, 'An internal error occurred.')],
    [503, 'hub-server-error', hubErrorBody(503003, 'PartitionNotFound')],
    [404, 'unknown', hubErrorBody(404001, 'Something nobody documented')],
  ];

  test.each(cases)('twin GET answered %i → %s', async (status, rule, body) => {
    cloud.hub(host).answerNextTwinGetRaw(deviceId, status, JSON.stringify(body));
    // src/pnp/session.ts calls the transport directly, as here.
    const transport = (client as unknown as { _transport: { getTwin(done: (err?: Error) => void): void } })._transport;
    const wire = await new Promise<Error | undefined>((resolve) => transport.getTwin((err) => resolve(err ?? undefined)));
    const scripted = await twinAnswer(status, body);
    expect(wire).toBeDefined();
    // The status is gone: a bare Error with the hub's text, whatever the status was.
    expect(shape(wire)).toEqual({ class: 'Error', name: 'Error', message: body['message'], result: undefined, topic: undefined });
    expect(shape(wire)).toEqual(shape(scripted));
    expect(classify(wire, 'hub-session').rule).toBe(rule);
  });
});
