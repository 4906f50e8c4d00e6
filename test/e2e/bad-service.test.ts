/**
 * A broken service must never crash the device: junk JSON, missing fields and unknown statuses
 * from DPS become typed, classified failures; the device backs off and recovers.
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { deliveryReport, startDevice, waitFor, waitForState } from './harness';

let cloud: LocalCloud;
const uncaught: unknown[] = [];
const onUncaught = (error: unknown) => uncaught.push(error);

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'bad-service', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
});
afterAll(async () => {
  process.off('uncaughtException', onUncaught);
  process.off('unhandledRejection', onUncaught);
  await cloud.stop();
});

test.each([
  ['junk JSON on register', { status: 202, body: '{"operationId": ' }],
  ['junk JSON on an error status', { status: 500, body: '<html>bad gateway</html>' }],
  ['an assigned answer without a hub', { status: 200, body: '{"status":"assigned","registrationState":{"deviceId":"x"}}' }],
  ['an unknown registration status', { status: 200, body: '{"status":"levitating","operationId":"1"}' }],
  ['an empty body', { status: 200, body: '' }],
  ['a JSON array', { status: 202, body: '[1,2,3]' }],
])('DPS answers %s: the device backs off, then registers; nothing accepted is lost', async (_name, response) => {
  const registrationId = `bad-${Math.random().toString(36).slice(2, 8)}`;
  cloud.dps.respondRaw(response);
  const dut = startDevice(cloud, registrationId);
  const early = await dut.send({ accepted: 'before provisioning' });
  await waitForState(dut, 'Connected', 30_000);
  const firstFailure = dut.states.find((s) => s.value === 'BackingOff' || s.value === 'Failed');
  expect(firstFailure?.value).toBe('BackingOff');
  await waitFor('delivery', () => deliveryReport(cloud, [early]).lost.length === 0);
  expect(uncaught).toEqual([]);
  await dut.device.stop();
});

describe('a hub that sends junk twin messages', () => {
  test.each([
    ['a twin GET answer that is not JSON', { get: '{"desired": {' }],
    ['a twin GET answer that is HTML', { get: '<html>oops</html>' }],
    ['a desired patch that is not JSON', { desired: '{"fanSpeed": ' }],
    ['a desired patch that is an array', { desired: '[1,2]' }],
    ['a desired patch that is null', { desired: 'null' }],
  ])('%s: the session ends (transient), the device reconnects, nothing accepted is lost', async (_name, junk) => {
    const registrationId = `junk-twin-${Math.random().toString(36).slice(2, 8)}`;
    const dut = startDevice(cloud, registrationId);
    await waitForState(dut, 'Connected');
    const hub = cloud.hub(dut.device.assignment()!.hubHost);
    if ('get' in junk) {
      hub.answerNextTwinGetRaw(registrationId, 200, junk.get!);
      hub.disconnect(registrationId); // the next connection GETs the twin
    } else {
      await waitFor('desired subscription', () => hub.pushRawDesired(registrationId, junk.desired!));
    }
    const during = await dut.send({ during: true });
    await waitFor('a failure classified from the junk', () => dut.states.some((s) => s.value === 'BackingOff'));
    await waitFor('connected again', () => dut.device.state() === 'Connected' && dut.states.filter((s) => s.value === 'Connected').length >= 2, 30_000);
    await waitFor('delivery', () => deliveryReport(cloud, [during]).lost.length === 0);
    if ('desired' in junk) {
      const failure = dut.device.actor.getSnapshot().context.lastError;
      expect(failure).toMatchObject({ rule: 'malformed-service-response', errorClass: 'transient' });
    }
    expect(uncaught).toEqual([]);
    await dut.device.stop();
  });
});

test('a twin GET answered 429 (the hub throttling twin reads): the connection stays, telemetry flows, the GET is asked again on it', async () => {
  const registrationId = `get-429-${Math.random().toString(36).slice(2, 8)}`;
  const dut = startDevice(cloud, registrationId);
  try {
    await waitForState(dut, 'Connected');
    const hub = cloud.hub(dut.device.assignment()!.hubHost);
    await waitFor('the first twin GET', () => hub.metrics().twinGets >= 1);
    const getsBefore = hub.metrics().twinGets;
    hub.answerNextTwinGetRaw(registrationId, 429, JSON.stringify({ errorCode: 429001, message: 'IoT Hub throttling limits have been exceeded for the requested operation.' }));
    hub.disconnect(registrationId); // the next connection GETs the twin
    await waitFor('connected again', () => dut.states.filter((s) => s.value === 'Connected').length >= 2, 30_000);
    const during = await dut.send({ during: true });
    await waitFor('the GET asked again on the same connection', () => hub.metrics().twinGets >= getsBefore + 2, 10_000);
    await waitFor('delivery', () => deliveryReport(cloud, [during]).lost.length === 0);
    // One detour, the disconnect's: the throttled GET cost no connection.
    expect(dut.states.filter((s) => s.value === 'BackingOff')).toHaveLength(1);
    expect(dut.device.state()).toBe('Connected');
    expect(dut.logLines.some((line) => line.includes('asking again later') && line.includes('"status":429'))).toBe(true);
    expect(uncaught).toEqual([]);
  } finally {
    await dut.device.stop();
  }
});
