/**
 * Bad credentials answered as DPS answers them: the MQTT CONNECT is accepted and every request
 * gets `$dps/registrations/res/401` with errorCode 401002 (MicrosoftDocs/azure-docs issue 43157,
 * the Embedded C SDK's provisioning client), which the Node SDK turns into UnauthorizedError.
 * An unknown id scope is refused at CONNECT with 3 (azure-iot-sdk-python issue 670); a username
 * that is not `{scope}/registrations/{id}/…` is refused at CONNECT with 5.
 */
import { errors } from 'azure-iot-common';
import { MqttBase } from 'azure-iot-mqtt-base';
import type { DeviceRegistrationResult } from 'azure-iot-provisioning-device';
import { Mqtt as ProvMqtt } from 'azure-iot-provisioning-device-mqtt';
import { FAST_DPS_POLL_SEC, createSasToken, dpsResource, dpsSasToken, startLocalCloud, type LocalCloud } from '../src';
import { provision } from './helpers';

let cloud: LocalCloud;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'dps-credentials', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});

afterAll(async () => {
  await cloud?.stop();
});

type RegisterOutcome = { error?: Error & { result?: unknown }; result?: DeviceRegistrationResult };

/** One register request through the SDK's own MQTT transport, signed with the token given. */
function registerWithToken(registrationId: string, token: string): Promise<RegisterOutcome> {
  const base = new MqttBase();
  base.setOptions({ ca: cloud.ca });
  const transport = new ProvMqtt(base);
  transport.on('error', () => undefined);
  transport.setSharedAccessSignature(token);
  return new Promise((resolve) => {
    transport.registrationRequest({ registrationId, provisioningHost: cloud.provisioningHost, idScope: cloud.idScope }, (error, result) => {
      transport.disconnect(() => resolve(error ? { error } : { ...(result ? { result } : {}) }));
    });
  });
}

const nowSec = (): number => Math.floor(Date.now() / 1000);

test('wrong key: CONNECT accepted, 401002 on res/401, UnauthorizedError; counted as unauthorized, not as a refused connect', async () => {
  const before = cloud.dps.metrics();
  const outcome = await provision(cloud, 'cred-wrong-key', { key: Buffer.alloc(32, 9).toString('base64') });
  expect(outcome.error).toBeInstanceOf(errors.UnauthorizedError);
  expect(outcome.error!.result).toMatchObject({ errorCode: 401002, message: 'Unauthorized' });
  const after = cloud.dps.metrics();
  expect(after.connects - before.connects).toBe(1);
  expect(after.refusedConnects - before.refusedConnects).toBe(0);
  expect(after.unauthorized - before.unauthorized).toBe(1);
  expect(cloud.dps.answers('cred-wrong-key')).toEqual([expect.objectContaining({ request: 'register', status: 401 })]);
});

test('an expired token and a token signed for another registration get 401 the same way', async () => {
  const key = cloud.deviceKey('cred-expired');
  const expired = await registerWithToken('cred-expired', dpsSasToken(cloud.idScope, 'cred-expired', key, nowSec() - 60));
  expect(expired.error).toBeInstanceOf(errors.UnauthorizedError);
  const foreign = await registerWithToken('cred-expired', dpsSasToken(cloud.idScope, 'someone-else', cloud.deviceKey('someone-else'), nowSec() + 600));
  expect(foreign.error).toBeInstanceOf(errors.UnauthorizedError);
  expect(cloud.dps.answers('cred-expired').map((a) => a.status)).toEqual([401, 401]);
  expect(cloud.dps.registration('cred-expired')).toBeUndefined();
});

test('a valid token is accepted with sr raw (Node SDK) or URL-encoded (C# and C SDKs)', async () => {
  const key = cloud.deviceKey('cred-encoded');
  const raw = await registerWithToken('cred-encoded', dpsSasToken(cloud.idScope, 'cred-encoded', key, nowSec() + 600));
  expect(raw.result).toMatchObject({ status: 'assigning' });
  const encoded = createSasToken({ sr: encodeURIComponent(dpsResource(cloud.idScope, 'cred-encoded')), keyBase64: key, expiresAtSec: nowSec() + 600, keyName: 'registration' });
  expect(encoded).toContain('%2Fregistrations%2F');
  const viaEncoded = await registerWithToken('cred-encoded', encoded);
  expect(viaEncoded.result).toMatchObject({ status: 'assigning' });
});

test('an unknown id scope is refused at CONNECT with 3 "server unavailable"; nothing is answered', async () => {
  const before = cloud.dps.metrics();
  const outcome = await provision(cloud, 'cred-scope', { idScope: '0ne00000000' });
  expect(outcome.error!.code ?? outcome.error!.transportError?.code).toBe(3);
  const after = cloud.dps.metrics();
  expect(after.refusedConnects - before.refusedConnects).toBe(1);
  expect(after.requestsTotal - before.requestsTotal).toBe(0);
  expect(cloud.dps.answers('cred-scope')).toEqual([]);
});

test('a username that is not {scope}/registrations/{id}/… is refused at CONNECT with 5', async () => {
  // The SDK puts the registration id in the username and as the client id: a '/' breaks the path.
  const before = cloud.dps.metrics().refusedConnects;
  const outcome = await provision(cloud, 'cred/slash');
  expect(outcome.error!.code ?? outcome.error!.transportError?.code).toBe(5);
  expect(cloud.dps.metrics().refusedConnects - before).toBe(1);
});
