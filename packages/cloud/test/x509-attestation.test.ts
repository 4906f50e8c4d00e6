/**
 * X.509 with the real SDK against the local cloud: DPS attestation (enrollment group by CA chain,
 * individual enrollment by thumbprint) and hub authentication by client certificate, and the
 * refusals of bad certificates (DPS: 401 with errorCode 401002; hub: CONNACK 5, or a close for a
 * certificate out of its dates).
 */
import { Client } from 'azure-iot-device';
import { Mqtt } from 'azure-iot-device-mqtt';
import { NoRetry } from 'azure-iot-common';
import { MqttBase } from 'azure-iot-mqtt-base';
import { ProvisioningDeviceClient } from 'azure-iot-provisioning-device';
import { Mqtt as ProvMqtt } from 'azure-iot-provisioning-device-mqtt';
import { X509Security } from 'azure-iot-security-x509';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from '../src';
import type { IssuedCertificate } from '../src/x509';
import { closeQuietly, Message, openError } from './helpers';

const DAY = 24 * 60 * 60 * 1000;

interface Outcome {
  assignedHub?: string;
  deviceId?: string;
  error?: Error & { result?: unknown };
}

async function provisionX509(cloud: LocalCloud, registrationId: string, cert: { cert: string; key: string }): Promise<Outcome> {
  const base = new MqttBase();
  base.setOptions({ ca: cloud.ca });
  const transport = new ProvMqtt(base);
  transport.on('error', () => undefined);
  const client = ProvisioningDeviceClient.create(cloud.provisioningHost, cloud.idScope, transport, new X509Security(registrationId, { cert: cert.cert, key: cert.key }));
  try {
    const result = (await client.register()) as unknown as Record<string, string>;
    return { assignedHub: result['assignedHub']!, deviceId: result['deviceId']! };
  } catch (error) {
    await new Promise<void>((resolve) => client.cancel(() => resolve()));
    return { error: error as Outcome['error'] & Error };
  }
}

async function x509Client(cloud: LocalCloud, host: string, deviceId: string, cert: { cert: string; key: string }): Promise<Client> {
  const client = Client.fromConnectionString(`HostName=${host};DeviceId=${deviceId};x509=true`, Mqtt);
  client.setRetryPolicy(new NoRetry());
  client.on('error', () => undefined);
  await client.setOptions({ ca: cloud.ca, cert: cert.cert, key: cert.key });
  return client;
}

let cloud: LocalCloud;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});

afterAll(async () => {
  await cloud.stop();
});

test('group enrollment: CN = registration id, chain to the group CA; the hub takes the same certificate and no password', async () => {
  const issued = await cloud.issueDeviceCertificate('x509-dev-1');
  const p = await provisionX509(cloud, 'x509-dev-1', issued);
  expect(p.error).toBeUndefined();
  expect(p.deviceId).toBe('x509-dev-1');
  expect(cloud.dps.x509AttestationOf('x509-dev-1')).toEqual({ kind: 'ca' });
  const client = await x509Client(cloud, p.assignedHub!, 'x509-dev-1', issued);
  try {
    await client.open();
    const m = new Message('{"t":1}');
    m.messageId = 'x509-m1';
    await client.sendEvent(m);
    expect([...cloud.deliveredIds('x509-dev-1')]).toEqual(['x509-m1']);
  } finally {
    await closeQuietly(client);
  }
  // The identity is X.509: a SAS token for it is refused.
  const sas = Client.fromConnectionString(`HostName=${p.assignedHub};DeviceId=x509-dev-1;SharedAccessKey=${cloud.deviceKey('x509-dev-1')}`, Mqtt);
  sas.setRetryPolicy(new NoRetry());
  sas.on('error', () => undefined);
  await sas.setOptions({ ca: cloud.ca });
  expect(await openError(sas)).toBeDefined();
  expect(cloud.hub(p.assignedHub!).refusals('x509-dev-1').at(-1)).toMatchObject({ code: 5, reason: 'certificate' });
});

describe('DPS refuses every request with 401 / 401002 (UnauthorizedError), as for a bad SAS token', () => {
  const cases: Array<[string, (regId: string) => Promise<IssuedCertificate>]> = [
    ['an expired certificate', (id) => cloud.issueDeviceCertificate(id, { notBefore: new Date(Date.now() - 10 * DAY), validDays: 1 })],
    ['a certificate not yet valid', (id) => cloud.issueDeviceCertificate(id, { notBefore: new Date(Date.now() + DAY) })],
    [
      'a revoked certificate',
      async (id) => {
        const c = await cloud.issueDeviceCertificate(id);
        cloud.revokeCertificate(c.cert);
        return c;
      },
    ],
    ['a self-signed certificate nobody enrolled', (id) => cloud.issueSelfSignedCertificate(id)],
    ['a certificate whose CN is another registration id', () => cloud.issueDeviceCertificate('somebody-else')],
  ];
  test.each(cases)('%s', async (_name, issue) => {
    const regId = `x509-bad-${Math.random().toString(36).slice(2, 8)}`;
    const before = cloud.dps.metrics().unauthorized;
    const p = await provisionX509(cloud, regId, await issue(regId));
    expect(p.error?.name).toBe('UnauthorizedError');
    expect(cloud.dps.answers(regId).at(-1)).toMatchObject({ status: 401 });
    expect(cloud.dps.metrics().unauthorized).toBe(before + 1);
    expect(cloud.dps.registration(regId)).toBeUndefined();
  });

  test('a certificate of another cloud (another CA)', async () => {
    const other = await startLocalCloud({ hubs: 1 });
    try {
      const foreign = await other.issueDeviceCertificate('x509-foreign');
      const p = await provisionX509(cloud, 'x509-foreign', foreign);
      expect(p.error?.name).toBe('UnauthorizedError');
    } finally {
      await other.stop();
    }
  });
});

test('individual enrollment by thumbprint (self-signed); the hub identity is by thumbprint too', async () => {
  const self = await cloud.issueSelfSignedCertificate('x509-ind-1');
  cloud.dps.addIndividualX509Enrollment('x509-ind-1', self.cert);
  const p = await provisionX509(cloud, 'x509-ind-1', self);
  expect(p.error).toBeUndefined();
  expect(cloud.dps.x509AttestationOf('x509-ind-1')).toEqual({ kind: 'thumbprint', thumbprints: [self.thumbprint] });
  const client = await x509Client(cloud, p.assignedHub!, 'x509-ind-1', self);
  expect(await openError(client)).toBeUndefined();
  // Another self-signed certificate with the same CN is not the enrolled one.
  const impostor = await cloud.issueSelfSignedCertificate('x509-ind-1');
  expect((await provisionX509(cloud, 'x509-ind-1', impostor)).error?.name).toBe('UnauthorizedError');
  expect(await openError(await x509Client(cloud, p.assignedHub!, 'x509-ind-1', impostor))).toBeDefined();
  expect(cloud.hub(p.assignedHub!).refusals('x509-ind-1').at(-1)).toMatchObject({ code: 5, reason: 'certificate' });
});

test('the status lookup takes the client certificate instead of a SAS token', async () => {
  const https = await import('node:https');
  const issued = await cloud.issueDeviceCertificate('x509-look');
  const p = await provisionX509(cloud, 'x509-look', issued);
  expect(p.error).toBeUndefined();
  const lookup = (cert: { cert: string; key: string } | undefined): Promise<{ status: number; body: Record<string, unknown> }> =>
    new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: '127.0.0.1',
          port: cloud.dps.port,
          servername: 'localhost',
          method: 'POST',
          path: `/${cloud.idScope}/registrations/x509-look?api-version=2021-10-01`,
          headers: { 'content-type': 'application/json; charset=utf-8' },
          ca: cloud.ca,
          agent: false,
          ...(cert ? { cert: cert.cert, key: cert.key } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }));
        },
      );
      req.on('error', reject);
      req.end('{"registrationId":"x509-look"}');
    });
  const ok = await lookup(issued);
  expect(ok.status).toBe(200);
  expect(ok.body).toMatchObject({ registrationId: 'x509-look', assignedHub: p.assignedHub, status: 'assigned' });
  expect((await lookup(undefined)).status).toBe(401);
  const stranger = await cloud.issueDeviceCertificate('x509-stranger');
  expect(await lookup(stranger)).toMatchObject({ status: 401, body: { errorCode: 401002 } });
});

describe('hub refusals of an X.509 identity', () => {
  let host: string;
  beforeAll(async () => {
    const issued = await cloud.issueDeviceCertificate('x509-hub-1');
    const p = await provisionX509(cloud, 'x509-hub-1', issued);
    host = p.assignedHub!;
  });

  test('revoked → CONNACK 5', async () => {
    const c = await cloud.issueDeviceCertificate('x509-hub-1');
    expect(await openError(await x509Client(cloud, host, 'x509-hub-1', c))).toBeUndefined();
    cloud.revokeCertificate(c.thumbprint);
    const err = await openError(await x509Client(cloud, host, 'x509-hub-1', c));
    expect(err?.message).toMatch(/Connection refused: Not authorized/); // CONNACK 5 (the SDK wraps a first connection's refusal)
    expect(cloud.hub(host).refusals('x509-hub-1').at(-1)).toEqual(expect.objectContaining({ code: 5, reason: 'certificate' }));
    expect(cloud.hub(host).refusals('x509-hub-1').at(-1)?.closed).toBeUndefined();
  });

  test('another CA, or a CN that is another device → CONNACK 5', async () => {
    const other = await startLocalCloud({ hubs: 1 });
    try {
      for (const c of [await other.issueDeviceCertificate('x509-hub-1'), await cloud.issueDeviceCertificate('x509-hub-2')]) {
        const before = cloud.hub(host).refusals('x509-hub-1').length;
        expect(await openError(await x509Client(cloud, host, 'x509-hub-1', c))).toBeDefined();
        expect(cloud.hub(host).refusals('x509-hub-1')).toHaveLength(before + 1);
        expect(cloud.hub(host).refusals('x509-hub-1').at(-1)).toMatchObject({ code: 5, reason: 'certificate' });
      }
    } finally {
      await other.stop();
    }
  });

  test('expired → the connection is closed without a CONNACK (default)', async () => {
    const c = await cloud.issueDeviceCertificate('x509-hub-1', { notBefore: new Date(Date.now() - 3 * DAY), validDays: 1 });
    const err = await openError(await x509Client(cloud, host, 'x509-hub-1', c));
    expect(err).toBeDefined();
    expect(err?.message).not.toMatch(/Connection refused/); // no CONNACK: the socket closed
    expect(cloud.hub(host).refusals('x509-hub-1').at(-1)).toMatchObject({ reason: 'certificate', closed: true });
  });
});

test("hub.expiredCertificateRefusal: 5 answers an expired certificate with CONNACK 5; other values are refused", async () => {
  await expect(startLocalCloud({ hubs: 1, hub: { expiredCertificateRefusal: 4 as unknown as 5 } })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  const c5 = await startLocalCloud({ hubs: 1, hub: { expiredCertificateRefusal: 5 }, dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  try {
    const good = await c5.issueDeviceCertificate('x509-c5');
    const p = await provisionX509(c5, 'x509-c5', good);
    const expired = await c5.issueDeviceCertificate('x509-c5', { notBefore: new Date(Date.now() - 3 * DAY), validDays: 1 });
    const err = await openError(await x509Client(c5, p.assignedHub!, 'x509-c5', expired));
    expect(err?.message).toMatch(/Connection refused: Not authorized/); // CONNACK 5 (the SDK wraps a first connection's refusal)
    expect(c5.hub(p.assignedHub!).refusals('x509-c5').at(-1)).toEqual({ at: expect.any(Number), code: 5, reason: 'certificate' });
  } finally {
    await c5.stop();
  }
});
