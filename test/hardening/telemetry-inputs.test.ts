/**
 * Bad telemetry at the call (issue 13, finding 1 and the telemetry part of 7): every input the hub
 * or MQTT could never take is refused by sendTelemetry with a MessageRejectedError naming the
 * reason, and nothing accepted before or after it is lost. The limits are checked at their
 * boundaries against the local cloud's hub (which counts a message as IoT Hub does) and the real
 * SDK (which builds the MQTT topic): the last byte that fits is delivered, one more is refused.
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { MessageRejectedError } from '../../src/errors';
import { MAX_REPORTED_BYTES, PropertiesRejectedError } from '../../src/pnp';
import type { TelemetryOptions } from '../../src/device';
import { MAX_DEVICE_ID_LENGTH } from '../../src/assignment';
import { MAX_MESSAGE_BYTES, MAX_TOPIC_BYTES } from '../../src/pnp/telemetry';
import { QUICK_POLICY } from '../pnp/helpers';
import { deliveryReport, startDevice, waitFor, waitForState, type DeviceUnderTest } from '../e2e/harness';

let cloud: LocalCloud;
let dut: DeviceUnderTest;
/** Every message sendTelemetry accepted in this file, in call order. */
const accepted: string[] = [];

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'telemetry-inputs', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  dut = startDevice(cloud, 'telemetry-inputs', { policy: QUICK_POLICY });
  await waitForState(dut, 'Connected');
});
afterAll(async () => {
  await dut.device.stop();
  await cloud.stop();
});

const send = (data: unknown, options?: unknown) => dut.device.sendTelemetry(data as Record<string, unknown>, options as TelemetryOptions);
const accept = async (data: Record<string, unknown>, options?: TelemetryOptions) => {
  const { messageId } = await dut.device.sendTelemetry(data, options);
  accepted.push(messageId);
  return messageId;
};
const allDelivered = () => waitFor('every accepted message delivered', () => deliveryReport(cloud, accepted).lost.length === 0);

// ---- the boundaries, measured as IoT Hub and the SDK do -----------------------------------------
// IoT Hub counts the body, the values of $.mid (a 36-character UUID), $.ct (application/json),
// $.ce (utf-8) and $.sub, the names and values of the application properties, among them
// iothub-creation-time-utc (24 + 24 characters).
const FIXED_SIZE = 36 + 'application/json'.length + 'utf-8'.length + 'iothub-creation-time-utc'.length + '2026-12-03T02:12:31.000Z'.length;
/** A body `{"b":"xxx…"}` of `bytes` bytes. */
const bodyOf = (bytes: number) => ({ b: 'x'.repeat(bytes - '{"b":""}'.length) });
const LARGEST_BODY = MAX_MESSAGE_BYTES - FIXED_SIZE;
// The SDK's topic: devices/{id}/messages/events/%24.mid=…&%24.ct=application%2Fjson&%24.ce=utf-8&p=…
// &iothub-creation-time-utc=2026-12-03T02%3A12%3A31.000Z, measured for the longest device id.
const FIXED_TOPIC =
  'devices/'.length + MAX_DEVICE_ID_LENGTH + '/messages/events/'.length + '%24.mid='.length + 36 + '&%24.ct=application%2Fjson&%24.ce=utf-8'.length +
  '&p='.length + '&iothub-creation-time-utc=2026-12-03T02%3A12%3A31.000Z'.length;
const LONGEST_PROPERTY = MAX_TOPIC_BYTES - FIXED_TOPIC;

function circular(): Record<string, unknown> {
  const value: Record<string, unknown> = { a: 1 };
  value.self = value;
  return value;
}

function nested(depth: number): Record<string, unknown> {
  let value: Record<string, unknown> = {};
  for (let i = 0; i < depth; i++) value = { v: value };
  return value;
}

type Reason = MessageRejectedError['reason'];
const ok = { bad: true };
const CASES: Array<[string, () => Promise<unknown>, Reason]> = [
  // the body: a JSON object, and only that
  ['body null', () => send(null), 'invalid-body'],
  ['body undefined', () => send(undefined), 'invalid-body'],
  ['body a number', () => send(42), 'invalid-body'],
  ['body a string', () => send('{"a":1}'), 'invalid-body'],
  ['body a boolean', () => send(true), 'invalid-body'],
  ['body a function', () => send(() => ({ a: 1 })), 'invalid-body'],
  ['body an array', () => send([1, 2]), 'invalid-body'],
  ['body a Map (would be {})', () => send(new Map([['a', 1]])), 'invalid-body'],
  ['body a Set (would be {})', () => send(new Set([1])), 'invalid-body'],
  ['body a Date (would be a string)', () => send(new Date(0)), 'invalid-body'],
  ['body a Buffer', () => send(Buffer.from('{"a":1}')), 'invalid-body'],
  ['body a Uint8Array', () => send(new Uint8Array([1, 2])), 'invalid-body'],
  ['body circular', () => send(circular()), 'invalid-body'],
  ['body with a BigInt', () => send({ n: BigInt(10) }), 'invalid-body'],
  ['body whose toJSON returns undefined', () => send({ toJSON: () => undefined }), 'invalid-body'],
  ['body whose toJSON returns a string', () => send({ toJSON: () => 'text' }), 'invalid-body'],
  ['body whose toJSON throws', () => send({ toJSON: () => { throw new Error('no'); } }), 'invalid-body'],
  ['body nested 100,000 levels', () => send(nested(100_000)), 'invalid-body'],
  // the size IoT Hub counts: body, properties, component and system properties together
  ['body of 257 KB', () => send({ blob: 'x'.repeat(257 * 1024) }), 'too-large'],
  ['body one byte over, with the system properties counted', () => send(bodyOf(LARGEST_BODY + 1)), 'too-large'],
  ['body that fits alone, with the component making it one byte over', () => send(bodyOf(LARGEST_BODY), { component: 'c' }), 'too-large'],
  ['body of 200 KB and a property of 60 KB', () => send(bodyOf(200 * 1024), { properties: { p: 'v'.repeat(60 * 1024) } }), 'too-large'],
  ['body of 131,072 two-byte characters (UTF-8 bytes count, not characters)', () => send({ t: 'é'.repeat(131_072) }), 'too-large'],
  ['property names count: 240 KB body and a 20 KB name', () => send(bodyOf(240 * 1024), { properties: { ['n'.repeat(20 * 1024)]: 'v' } }), 'too-large'],
  // the MQTT topic: the URL-encoded properties and component, at most 65,535 bytes
  ["the issue's 70 KB property", () => send({ a: 1 }, { properties: { p: 'v'.repeat(70 * 1024) } }), 'properties-too-large'],
  ['a property one byte over the topic limit', () => send(ok, { properties: { p: 'v'.repeat(LONGEST_PROPERTY + 1) } }), 'properties-too-large'],
  ['a property of 8,000 euro signs (24 KB, 72 KB URL-encoded)', () => send(ok, { properties: { p: '€'.repeat(8000) } }), 'properties-too-large'],
  ['2,500 properties of 30 bytes each', () => send(ok, { properties: Object.fromEntries(Array.from({ length: 2500 }, (_, i) => [`p${i}`, 'v'.repeat(25)])) }), 'properties-too-large'],
  ['a property name of 70,000 characters', () => send(ok, { properties: { ['n'.repeat(70_000)]: 'v' } }), 'properties-too-large'],
  // the component: a DTDL name
  ['component empty', () => send(ok, { component: '' }), 'invalid-component'],
  ['component starting with a digit', () => send(ok, { component: '1thermostat' }), 'invalid-component'],
  ['component ending with _', () => send(ok, { component: 'thermostat_' }), 'invalid-component'],
  ['component with a hyphen', () => send(ok, { component: 'thermo-stat' }), 'invalid-component'],
  ['component with a space', () => send(ok, { component: 'thermo stat' }), 'invalid-component'],
  ['component with a dot', () => send(ok, { component: 'thermo.stat' }), 'invalid-component'],
  ['component of 65 characters', () => send(ok, { component: 'c'.repeat(65) }), 'invalid-component'],
  ['component a number', () => send(ok, { component: 42 }), 'invalid-component'],
  ['component null', () => send(ok, { component: null }), 'invalid-component'],
  ['component with a NUL', () => send(ok, { component: 'thermostat\u0000' }), 'invalid-component'],
  ['component not ASCII', () => send(ok, { component: 'thermostaté' }), 'invalid-component'],
  ['component of 70 KB', () => send(ok, { component: 'c'.repeat(70 * 1024) }), 'invalid-component'],
  // application properties: strings, names that are not the system's or IoT Hub's
  ['property $.mid (would replace the message id)', () => send(ok, { properties: { '$.mid': 'dup' } }), 'invalid-property'],
  ['property $.sub (would replace the component)', () => send(ok, { properties: { '$.sub': 'x' } }), 'invalid-property'],
  ['property $.ct', () => send(ok, { properties: { '$.ct': 'text/plain' } }), 'invalid-property'],
  ['property $.cid', () => send(ok, { properties: { '$.cid': 'x' } }), 'invalid-property'],
  ['property iothub-creation-time-utc (stamped here)', () => send(ok, { properties: { 'iothub-creation-time-utc': 'x' } }), 'invalid-property'],
  ['property IOTHUB-connection-device-id (any case)', () => send(ok, { properties: { 'IOTHUB-connection-device-id': 'x' } }), 'invalid-property'],
  ['property dt-subject (the component)', () => send(ok, { properties: { 'dt-subject': 'x' } }), 'invalid-property'],
  ['property with an empty name', () => send(ok, { properties: { '': 'x' } }), 'invalid-property'],
  ['property name with a lone surrogate', () => send(ok, { properties: { ['p\ud800']: 'x' } }), 'invalid-property'],
  ['property value with a lone surrogate', () => send(ok, { properties: { p: 'x\udc00' } }), 'invalid-property'],
  ['property value a number', () => send(ok, { properties: { p: 5 } }), 'invalid-property'],
  ['property value null', () => send(ok, { properties: { p: null } }), 'invalid-property'],
  ['property value undefined', () => send(ok, { properties: { p: undefined } }), 'invalid-property'],
  ['property value an object', () => send(ok, { properties: { p: { q: 'x' } } }), 'invalid-property'],
  ['properties a string', () => send(ok, { properties: 'abc' }), 'invalid-property'],
  ['properties an array', () => send(ok, { properties: ['a'] }), 'invalid-property'],
  ['properties null', () => send(ok, { properties: null }), 'invalid-property'],
  ['properties a Map', () => send(ok, { properties: new Map([['p', 'v']]) }), 'invalid-property'],
  // the options object itself
  ['options null', () => send(ok, null), 'invalid-options'],
  ['options a string', () => send(ok, 'thermostat1'), 'invalid-options'],
  ['options an array', () => send(ok, []), 'invalid-options'],
  ['options with a misspelt key', () => send(ok, { componet: 'thermostat1' }), 'invalid-options'],
  ['options with a misspelt key (any case)', () => send(ok, { Properties: { p: 'v' } }), 'invalid-options'],
  ['options with an unknown key', () => send(ok, { properties: {}, ttl: 5 }), 'invalid-options'],
];

test(`the table holds at least 40 bad inputs (${CASES.length})`, () => {
  expect(CASES.length).toBeGreaterThanOrEqual(40);
});

test.each(CASES.map(([name, call, reason]) => ({ name, call, reason })))('$name → MessageRejectedError($reason)', async ({ name, call, reason }) => {
  const before = await accept({ before: name });
  const error = await call().then(
    () => new Error('accepted'),
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(MessageRejectedError);
  expect((error as MessageRejectedError).reason).toBe(reason);
  const after = await accept({ after: name });
  await waitFor(`the messages around "${name}" delivered`, () => deliveryReport(cloud, [before, after]).lost.length === 0);
});

test('a misspelt option is named, with the nearest known one', async () => {
  await expect(send(ok, { componet: 'thermostat1' })).rejects.toThrow("'componet': no such option (unknown key; did you mean 'component'?)");
});

test('the boundaries are where the hub and MQTT put them: the last byte that fits is delivered', async () => {
  const largest = await accept(bodyOf(LARGEST_BODY));
  const longestTopic = await accept({ a: 1 }, { properties: { p: 'v'.repeat(LONGEST_PROPERTY) } });
  const longestComponent = await accept({ a: 1 }, { component: `c${'_'.repeat(62)}1` });
  await allDelivered();
  const record = cloud.telemetry().find((r) => r.messageId === largest)!;
  expect(record.body.length + 36 + 'application/json'.length + 'utf-8'.length + 'iothub-creation-time-utc'.length + record.creationTimeUtc!.length).toBe(MAX_MESSAGE_BYTES);
  expect(cloud.telemetry().find((r) => r.messageId === longestTopic)!.properties.p).toHaveLength(LONGEST_PROPERTY);
  expect(cloud.telemetry().find((r) => r.messageId === longestComponent)!.component).toHaveLength(64);
  expect(cloud.hubs[0]!.metrics().oversizedMessages).toBe(0);
});

test('what is allowed stays allowed: any Unicode in property names and values, a null-prototype bag, no options, empty options', async () => {
  const bag = Object.assign(Object.create(null) as Record<string, string>, { unit: '°C', 'x-ünïcødé 😀': 'a&b=c/d?e%f' });
  const ids = [await accept({ t: 1 }, { properties: bag }), await accept({ t: 2 }), await accept({ t: 3 }, {}), await accept({ t: 4 }, { component: 'thermostat1', properties: {} })];
  await allDelivered();
  const first = cloud.telemetry().find((r) => r.messageId === ids[0])!;
  expect(first.properties).toMatchObject({ unit: '°C', 'x-ünïcødé 😀': 'a&b=c/d?e%f' });
  expect(first.messageId).toBe(ids[0]);
});

test('nothing refused reached the hub; everything accepted arrived, in order, with its own message id', async () => {
  await allDelivered();
  const records = cloud.telemetry({ deviceId: 'telemetry-inputs' });
  expect(records.filter((r) => r.body.toString('utf8').includes('"bad"'))).toEqual([]);
  const firstArrivals = [...new Set(records.map((r) => r.messageId))];
  expect(firstArrivals).toEqual(accepted);
  expect(dut.states.filter((s) => s.event === 'HUB_LOST')).toEqual([]);
});

// ---- reported properties: the same reasoning, the size as IoT Hub counts a twin ------------------
const reportedRefusal = (patch: Record<string, unknown>) => {
  try {
    dut.device.reportProperties(patch);
    return 'accepted';
  } catch (error) {
    return error instanceof PropertiesRejectedError ? error.reason : error;
  }
};

test('reported: 3,000 numeric properties are 30 KB of JSON but 39 KB of twin → PropertiesRejectedError(too-large) at the call', () => {
  const patch = Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`p${String(i).padStart(4, '0')}`, 1]));
  expect(Buffer.byteLength(JSON.stringify(patch))).toBeLessThan(MAX_REPORTED_BYTES);
  expect(reportedRefusal(patch)).toBe('too-large');
  expect(dut.device.pendingReportedProperties()).toBe(0);
});

test('reported: 20,000 quotes are 40 KB of JSON but 20 KB of twin → accepted, and the hub takes them', async () => {
  const quotes = '"'.repeat(20_000);
  expect(Buffer.byteLength(JSON.stringify({ quotes }))).toBeGreaterThan(MAX_REPORTED_BYTES);
  expect(reportedRefusal({ quotes })).toBe('accepted');
  await waitFor('the quotes in the reported twin, acknowledged', () => cloud.hubs[0]!.getTwin('telemetry-inputs').reported.quotes === quotes && dut.device.pendingReportedProperties() === 0);
});

test('after stop(): MessageRejectedError(stopped)', async () => {
  const other = startDevice(cloud, 'telemetry-inputs-stopped', { policy: QUICK_POLICY, dataDir: undefined });
  await other.device.stop();
  const error = await other.device.sendTelemetry({ a: 1 }).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(MessageRejectedError);
  expect((error as MessageRejectedError).reason).toBe('stopped');
});
