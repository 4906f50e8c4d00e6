/**
 * Commands end to end: direct methods through the local cloud (status and payload as the caller
 * sees them), component naming, unknown / failing / slow / long-running commands, bad payloads,
 * offline commands (C2D with `method-name`, also queued while the device was away), C2D that
 * does not decode, and the built-in Reprovision command.
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { CommandError } from '../../src/pnp';
import type { Device } from '../../src/device';
import { deferred, startPnpDevice, waitFor, type PnpDevice } from './helpers';

let cloud: LocalCloud;
let d: PnpDevice;
const alarms: unknown[] = [];
const slowAborted = deferred<string>();
const longRunning = deferred();

function setup(device: Device) {
  device.onCommand('echo', ({ payload }) => ({ payload }), { schema: 'string' });
  device.onCommand('getMaxMinReport', ({ payload, component }) => ({ payload: { component, since: payload } }), { component: 'thermostat1' });
  device.onCommand('explode', () => {
    throw new Error('boom: sensor bus fault');
  });
  device.onCommand('refuse', () => {
    throw new CommandError(409, 'already running');
  });
  device.onCommand('slow', ({ signal }) => new Promise((resolve) => signal.addEventListener('abort', () => {
    slowAborted.resolve('aborted');
    resolve(undefined);
  })));
  device.onCommand('startUpdate', () => {
    void longRunning.promise.then(() => device.reportProperties({ updateStatus: 'done' }));
    return { status: 202, payload: { message: 'update started' } };
  });
  device.onCommand('setAlarm', ({ payload, offline }) => void alarms.push({ payload, offline }), { schema: 'time' });
}

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'pnp-commands', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  d = startPnpDevice(cloud, 'pnp-commands', setup, { commandTimeoutMs: 400 });
  await d.waitForState('Connected');
  await waitFor('methods subscribed', () => d.logLines.some((l) => l.includes('twin synchronised')));
});
afterAll(async () => {
  await d.device.stop();
  await cloud.stop();
});

const invoke = (name: string, payload?: unknown) => d.hub().invokeMethod('pnp-commands', name, payload, { timeoutMs: 5000 });

test('a synchronous command answers 200 with its payload; a component command is named component*command', async () => {
  expect(await invoke('echo', 'hello')).toEqual({ status: 200, payload: 'hello' });
  expect(await invoke('thermostat1*getMaxMinReport', '2024-01-01T00:00:00Z')).toEqual({
    status: 200,
    payload: { component: 'thermostat1', since: '2024-01-01T00:00:00Z' },
  });
  // Without its component the name is unknown.
  expect((await invoke('getMaxMinReport', null)).status).toBe(404);
});

test('unknown → 404, throwing → 500, CommandError → its status, each with a message', async () => {
  expect(await invoke('noSuchCommand', {})).toEqual({ status: 404, payload: { message: "unknown command 'noSuchCommand'" } });
  expect(await invoke('explode')).toEqual({ status: 500, payload: { message: 'boom: sensor bus fault' } });
  expect(await invoke('refuse')).toEqual({ status: 409, payload: { message: 'already running' } });
});

test('a slow handler is cut at commandTimeoutMs: 504 with a message, its signal aborted; long-running answers 202', async () => {
  const started = Date.now();
  expect(await invoke('slow')).toEqual({ status: 504, payload: { message: "command 'slow' did not complete within 400 ms" } });
  expect(Date.now() - started).toBeLessThan(3000);
  await expect(slowAborted.promise).resolves.toBe('aborted');

  expect(await invoke('startUpdate')).toEqual({ status: 202, payload: { message: 'update started' } });
  longRunning.resolve();
  await waitFor('the long-running result reported', () => d.reported().updateStatus === 'done');
});

test('bad payloads get 400 and the device stays up: wrong type, null, huge', async () => {
  expect(await invoke('echo', 42)).toEqual({ status: 400, payload: { message: 'invalid payload: expected a string, got a number' } });
  expect(await invoke('echo', null)).toEqual({ status: 400, payload: { message: 'invalid payload: expected a string, got null' } });
  // Over 128 KB: IoT Hub itself answers 400 (errorCode 400004); the device never sees it.
  const huge = await invoke('echo', 'x'.repeat(200 * 1024));
  expect(huge).toMatchObject({ status: 400, payload: { errorCode: 400004 } });
  expect(await invoke('echo', 'still here')).toEqual({ status: 200, payload: 'still here' });
  expect(d.device.state()).toBe('Connected');
});

test('offline commands: a C2D with method-name runs its handler (also when queued while the device was away)', async () => {
  const hub = d.hub();
  hub.sendC2D('pnp-commands', JSON.stringify('07:30:00'), { 'method-name': 'setAlarm' });
  await waitFor('the alarm set', () => alarms.length === 1);
  expect(alarms[0]).toEqual({ payload: '07:30:00', offline: true });

  // Not JSON, wrong type, unknown name, no name, a bag that does not decode: logged, ignored.
  hub.sendC2D('pnp-commands', 'not json {', { 'method-name': 'setAlarm' });
  hub.sendC2D('pnp-commands', JSON.stringify(12), { 'method-name': 'setAlarm' });
  hub.sendC2D('pnp-commands', '{}', { 'method-name': 'noSuchCommand' });
  hub.sendC2D('pnp-commands', '{}', {});
  hub.sendC2DRaw('pnp-commands', JSON.stringify('08:00:00'), 'method-name=setAlarm&bad=%E0%A4%A');
  hub.sendC2D('pnp-commands', JSON.stringify('09:00:00'), { 'method-name': 'setAlarm' });
  await waitFor('the last good alarm', () => alarms.length === 2);
  expect(alarms[1]).toEqual({ payload: '09:00:00', offline: true });
  await waitFor('all C2D acknowledged', () => hub.device('pnp-commands')!.c2dPending === 0);
  expect(d.logLines.some((l) => l.includes('command payload is not JSON'))).toBe(true);
  expect(d.logLines.some((l) => l.includes('undecodable property bag'))).toBe(true);
  expect(d.device.state()).toBe('Connected');

  // Queued while the device is away: delivered and run when it is back.
  hub.disconnect('pnp-commands');
  await waitFor('away', () => !hub.isConnected('pnp-commands'));
  const queued = hub.sendC2D('pnp-commands', JSON.stringify('10:15:00'), { 'method-name': 'setAlarm' });
  await waitFor('the queued alarm', () => alarms.length === 3, 15_000);
  expect(['queued', 'sent']).toContain(queued.status);
  expect(alarms[2]).toEqual({ payload: '10:15:00', offline: true });
  await d.waitForState('Connected');
});

test('the built-in Reprovision command answers 200, then the device goes Reprovisioning → Connected', async () => {
  await d.waitForState('Connected');
  await waitFor('synchronised again', () => d.device.pendingReportedProperties() === 0);
  const registrations = cloud.dps.metrics().registrations;
  const before = d.states.length;
  const twinGets = () => cloud.hubs.reduce((n, hub) => n + hub.metrics().twinGets, 0);
  const getsBefore = twinGets();
  expect(await invoke('Reprovision')).toEqual({ status: 200, payload: { message: 'reprovisioning' } });
  await waitFor('reprovisioned and connected', () => d.states.slice(before).some((s) => s.value === 'Reprovisioning') && d.device.state() === 'Connected');
  expect(d.states.slice(before).map((s) => s.value)).toEqual(['Reprovisioning', 'Connecting', 'Connected']);
  expect(cloud.dps.metrics().registrations).toBe(registrations + 1);
  // The new session subscribes to methods before it reads the twin: once it has, echo is live.
  await waitFor('the new session subscribed and read the twin', () => twinGets() > getsBefore);
  expect(await invoke('echo', 'after reprovision')).toEqual({ status: 200, payload: 'after reprovision' });
});
