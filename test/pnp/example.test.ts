/**
 * The example device (examples/failover-device.ts) against the local cloud: everything its model
 * (examples/dtmi-sample-failover-1.json) declares works as declared — temp and humidity as
 * numbers, battery reported, fanSpeed acknowledged (and refused out of range), echo answered,
 * setAlarm as an offline command — and the model file is a well-formed DTDL v2 interface.
 */
import pino from 'pino';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { startExampleDevice, MODEL_ID, type ExampleDevice } from '../../examples/failover-device';
import model from '../../examples/dtmi-sample-failover-1.json';
import migrationModel from '../../examples/dtmi-azureiot-devicemigration-1.json';
import { newDataDir } from '../e2e/harness';
import { QUICK_POLICY, at, waitFor } from './helpers';

let cloud: LocalCloud;
let example: ExampleDevice;
const accepted: string[] = [];

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'pnp-example', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  example = startExampleDevice({
    device: {
      idScope: cloud.idScope,
      registrationId: 'example-1',
      deviceKey: cloud.deviceKey('example-1'),
      provisioningHost: cloud.provisioningHost,
      ca: cloud.ca,
      dataDir: newDataDir(),
      keepaliveSeconds: 2,
      policy: QUICK_POLICY,
      logger: pino({ level: 'silent' }),
    },
    telemetryIntervalMs: 20,
    reportIntervalMs: 50,
    onTelemetry: (messageId) => accepted.push(messageId),
  });
  await waitFor('connected', () => example.device.state() === 'Connected');
});
afterAll(async () => {
  await example.stop();
  await cloud.stop();
});

const hub = () => cloud.hub(example.device.assignment()!.hubHost);
const reported = () => hub().getTwin('example-1').reported;

test('the model: DTDL v2 interface dtmi:Sample:Failover;1 with the seed sample contents', () => {
  expect(MODEL_ID).toBe('dtmi:Sample:Failover;1');
  expect(model['@context']).toContain('dtmi:dtdl:context;2');
  expect(model['@type']).toBe('Interface');
  const contents = Object.fromEntries(model.contents.map((c) => [c.name, c as Record<string, unknown>]));
  expect(contents.temp).toMatchObject({ '@type': 'Telemetry', schema: 'double' });
  expect(contents.humidity).toMatchObject({ '@type': 'Telemetry', schema: 'double' });
  expect(contents.battery).toMatchObject({ '@type': 'Property', schema: 'double', writable: false });
  expect(contents.fanSpeed).toMatchObject({ '@type': 'Property', schema: 'integer', writable: true });
  expect(contents.echo).toMatchObject({ '@type': 'Command', commandType: 'synchronous' });
  expect(contents.setAlarm).toMatchObject({ '@type': 'Command', durable: true, request: { schema: 'time' } });
  for (const item of model.contents) expect(item['@id']).toBe(`dtmi:Sample:Failover:${item.name};1`);
});

test('telemetry: temp and humidity as numbers, from the model id announced to DPS and the hub', async () => {
  await waitFor('a few readings', () => accepted.length >= 3 && cloud.telemetry({ deviceId: 'example-1' }).length >= 3);
  expect(cloud.dps.registration('example-1')?.modelId).toBe('dtmi:Sample:Failover;1');
  expect(hub().device('example-1')?.modelId).toBe('dtmi:Sample:Failover;1');
  const body = JSON.parse(cloud.telemetry({ deviceId: 'example-1' })[0].body.toString('utf8')) as Record<string, unknown>;
  expect(Object.keys(body).sort()).toEqual(['humidity', 'temp']);
  expect(typeof body.temp).toBe('number');
  expect(typeof body.humidity).toBe('number');
});

test('battery reported as a number; fanSpeed default 203, then set (200) and refused out of range (400)', async () => {
  await waitFor('battery', () => typeof reported().battery === 'number');
  await waitFor('fanSpeed default', () => at(reported(), 'fanSpeed.ac') === 203);
  expect(reported().fanSpeed).toEqual({ value: 0, ac: 203, av: 0, ad: 'default value' });

  const v1 = hub().updateDesired('example-1', { fanSpeed: 4 });
  await waitFor('fanSpeed 4 acknowledged', () => at(reported(), 'fanSpeed.av') === v1);
  expect(reported().fanSpeed).toEqual({ value: 4, ac: 200, av: v1, ad: 'completed' });
  expect(example.fanSpeed()).toBe(4);

  const v2 = hub().updateDesired('example-1', { fanSpeed: 11 });
  await waitFor('fanSpeed 11 refused', () => at(reported(), 'fanSpeed.av') === v2);
  expect(reported().fanSpeed).toEqual({ value: 4, ac: 400, av: v2, ad: 'fanSpeed must be between 0 and 10' });
  expect(example.fanSpeed()).toBe(4);
});

test('echo answers its message; setAlarm runs as an offline command', async () => {
  expect(await hub().invokeMethod('example-1', 'echo', 'hello, hub', { timeoutMs: 5000 })).toEqual({ status: 200, payload: 'hello, hub' });
  expect((await hub().invokeMethod('example-1', 'echo', 7, { timeoutMs: 5000 })).status).toBe(400);
  hub().sendC2D('example-1', JSON.stringify('06:45:00'), { 'method-name': 'setAlarm' });
  await waitFor('alarm set', () => example.alarm() === '06:45:00');
});

test('the resilience component its model declares is reported under that name', async () => {
  const component = model.contents.find((c) => c['@type'] === 'Component')!;
  expect(component).toMatchObject({ name: 'resilience', schema: 'dtmi:hubstate:Resilience;1' });
  await waitFor('the resilience report', () => typeof at(reported(), 'resilience.connects') === 'number');
  expect(at(reported(), 'resilience.__t')).toBe('c');
  expect(at(reported(), 'resilience.connects')).toBe(example.device.stats().connects);
});

test('the migration component its model declares is the built-in DeviceMove of dtmi:azureiot:DeviceMigration;1', async () => {
  const component = model.contents.find((c) => c.name === 'migration')!;
  expect(component).toMatchObject({ '@type': 'Component', schema: 'dtmi:azureiot:DeviceMigration;1' });
  expect(migrationModel['@id']).toBe(component.schema);
  expect(migrationModel.contents.map((c) => c.name)).toEqual(['DeviceMove']);
  // Served (a payload without an ID scope is refused 400), not unknown (404).
  const answer = await hub().invokeMethod('example-1', 'migration*DeviceMove', { dpsName: 'x' }, { timeoutMs: 5000 });
  expect(answer.status).toBe(400);
  expect(example.device.idScope()).toBe(cloud.idScope);
});
