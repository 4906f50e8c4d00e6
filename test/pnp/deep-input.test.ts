/**
 * Input nested deeper than anything sane. IoT Hub keeps twins within 10 levels but a device must
 * not trust that, and method and C2D payloads have no depth limit at all: JSON.parse takes any
 * depth, while JSON.stringify (an acknowledgement, a response, a log line) and any recursive walk
 * overflow the stack a few thousand levels down. Each deep input gets a typed refusal or a 400,
 * never reaches a handler, and the device stays up and keeps answering.
 */
import { PropertiesRejectedError } from '../../src/pnp';
import { MAX_COMMAND_PAYLOAD_DEPTH } from '../../src/pnp/commands';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { startPnpDevice, waitFor, type PnpDevice } from './helpers';

const nestedJson = (levels: number, leaf = '1') => '{"a":'.repeat(levels) + leaf + '}'.repeat(levels);
const nested = (levels: number) => JSON.parse(nestedJson(levels)) as Record<string, unknown>;

let cloud: LocalCloud;
let d: PnpDevice;
const seen: Array<{ what: string; depthOk: boolean }> = [];
const uncaught: unknown[] = [];
const onUncaught = (error: unknown) => uncaught.push(error);

beforeAll(async () => {
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  cloud = await startLocalCloud({ hubs: 1, seed: 'pnp-deep', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  d = startPnpDevice(cloud, 'deep', (device) => {
    device.onWritableProperty('config', (value) => {
      seen.push({ what: 'config', depthOk: JSON.stringify(value).length < 1000 });
    });
    device.onCommand('configure', (request) => {
      seen.push({ what: 'configure', depthOk: JSON.stringify(request.payload).length < 1000 });
      return { payload: { ok: true } };
    });
  });
  await d.waitForState('Connected');
});
afterAll(async () => {
  await d.device.stop();
  await cloud.stop();
  process.off('uncaughtException', onUncaught);
  process.off('unhandledRejection', onUncaught);
});

const config = () => d.reported().config as { value?: unknown; ac?: number; av?: number } | undefined;

test('a desired patch nested 20,000 levels ends the session as a protocol error; the device reconnects and answers the next patch', async () => {
  const connections = () => d.states.filter((s) => s.value === 'Connected').length;
  const before = connections();
  await waitFor('desired subscription', () => d.hub().pushRawDesired('deep', `{"config":${nestedJson(20_000)},"$version":99}`));
  await waitFor('reconnected', () => connections() > before && d.device.state() === 'Connected', 15_000);
  const failure = d.device.actor.getSnapshot().context.lastError;
  expect(failure).toMatchObject({ errorClass: 'transient' });
  expect(failure?.message).toMatch(/nested deeper than IoT Hub allows/);
  const version = d.hub().updateDesired('deep', { config: { mode: 'eco' } });
  await waitFor('the next patch acknowledged', () => config()?.av === version);
  expect(config()).toMatchObject({ value: { mode: 'eco' }, ac: 200 });
  expect(seen).toEqual([{ what: 'config', depthOk: true }]);
});

test('a twin GET answer nested 20,000 levels: same, and the twin read after it is applied', async () => {
  const connections = () => d.states.filter((s) => s.value === 'Connected').length;
  const before = connections();
  d.hub().answerNextTwinGetRaw('deep', 200, `{"desired":{"config":${nestedJson(20_000)},"$version":50},"reported":{"$version":1}}`);
  d.hub().disconnect('deep');
  await waitFor('connected twice more (junk answer, then a sound one)', () => connections() >= before + 2 && d.device.state() === 'Connected', 20_000);
  expect(seen.every((s) => s.depthOk)).toBe(true);
});

test('a command payload nested deeper than the limit gets 400 without reaching the handler; one within it runs', async () => {
  // After the reconnects above the method subscription may still be on its way (404 until then).
  const invokeDeep = () => d.hub().invokeMethod('deep', 'configure', nested(1000), { timeoutMs: 5000 });
  let deep = await invokeDeep();
  for (const deadline = Date.now() + 20_000; deep.status === 404 && Date.now() < deadline; deep = await invokeDeep()) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  expect(deep).toEqual({ status: 400, payload: { message: `the payload is nested deeper than ${MAX_COMMAND_PAYLOAD_DEPTH} levels` } });
  const fine = await d.hub().invokeMethod('deep', 'configure', nested(MAX_COMMAND_PAYLOAD_DEPTH - 1), { timeoutMs: 5000 });
  expect(fine.status).toBe(200);
  expect(seen.filter((s) => s.what === 'configure')).toHaveLength(1);
});

test('an offline (C2D) command nested 60,000 levels is acknowledged and dropped with a log line; the next one runs', async () => {
  const runs = () => seen.filter((s) => s.what === 'configure').length;
  const before = runs();
  d.hub().sendC2D('deep', nestedJson(60_000), { 'method-name': 'configure' });
  d.hub().sendC2D('deep', '{"mode":"eco"}', { 'method-name': 'configure' });
  await waitFor('the sound one ran', () => runs() === before + 1);
  await waitFor('both acknowledged', () => d.hub().device('deep')!.c2dPending === 0);
  await waitFor('the refusal logged', () => d.logLines.some((l) => l.includes('command payload nested too deep')));
});

test('reporting a value deeper than a twin holds is refused at the call with a typed error', () => {
  // The reported section is level 1: a root property's value may nest 9 more, a component's 8.
  expect(() => d.device.reportProperties({ tree: nested(10) })).toThrow(PropertiesRejectedError);
  expect(() => d.device.reportProperties({ tree: nested(20_000) })).toThrow(/nested deeper than IoT Hub allows/);
  expect(() => d.device.reportProperties({ tree: nested(9) }, { component: 'c1' })).toThrow(/nested deeper/);
  expect(() => d.device.reportProperties({ tree: nested(9) })).not.toThrow();
  expect(() => d.device.reportProperties({ tree: nested(8) }, { component: 'c1' })).not.toThrow();
});

test('nothing escaped: no uncaught exception, the device is Connected', () => {
  expect(uncaught).toEqual([]);
  expect(d.device.state()).toBe('Connected');
});
