/**
 * Writable and reported properties end to end (real SDK, real TLS, the local cloud's twin):
 * acknowledgement shapes exactly as the Plug and Play conventions, components, defaults (203/0),
 * 202 then 200, 400 and 500, desired changes made while the device was offline, reported
 * properties while offline (latest wins), properties registered after the first twin read.
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { PropertiesRejectedError, PropertyRejectedError } from '../../src/pnp';
import { at, deferred, startPnpDevice, waitFor, type PnpDevice } from './helpers';

let cloud: LocalCloud;
const running: PnpDevice[] = [];

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'pnp-properties', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((d) => d.device.stop()));
});
afterAll(async () => {
  await cloud.stop();
});

/**
 * The tests count the hub's reported patches (all devices of the file share the hub): the devices'
 * own resilience reports would be among them, so they are off here (test/e2e/resilience.test.ts).
 */
function launch(...[cloud, registrationId, setup, overrides]: Parameters<typeof startPnpDevice>): PnpDevice {
  const d = startPnpDevice(cloud, registrationId, setup, { resilience: false, ...overrides });
  running.push(d);
  return d;
}

test('desired fanSpeed → ack { value, ac: 200, av: $version, ad }; a default is reported once with 203 / av 0', async () => {
  const applied: Array<[unknown, number]> = [];
  const d = launch(cloud, 'pnp-ack-200', (device) => {
    device.onWritableProperty('fanSpeed', (value, ctx) => void applied.push([value, ctx.version]), { schema: 'integer', default: 1 });
  });
  await d.waitForState('Connected');
  await waitFor('the default acknowledged', () => at(d.reported(), 'fanSpeed.ac') === 203);
  expect(d.reported().fanSpeed).toEqual({ value: 1, ac: 203, av: 0, ad: 'default value' });

  const version = d.hub().updateDesired('pnp-ack-200', { fanSpeed: 3 });
  await waitFor('the ack of fanSpeed 3', () => at(d.reported(), 'fanSpeed.av') === version);
  expect(d.reported().fanSpeed).toEqual({ value: 3, ac: 200, av: version, ad: 'completed' });
  expect(applied).toEqual([[3, version]]);
});

test('components: desired inside { "<component>": { "__t": "c" } } is acknowledged inside it; reported too', async () => {
  const d = launch(cloud, 'pnp-component', (device) => {
    device.onWritableProperty('targetTemperature', () => undefined, { component: 'thermostat1', schema: 'double' });
  });
  await d.waitForState('Connected');
  const version = d.hub().updateDesired('pnp-component', { thermostat1: { __t: 'c', targetTemperature: 21.5 } });
  await waitFor('the component ack', () => at(d.reported(), 'thermostat1.targetTemperature.av') === version);
  expect(d.reported().thermostat1).toEqual({ __t: 'c', targetTemperature: { value: 21.5, ac: 200, av: version, ad: 'completed' } });

  d.device.reportProperties({ maxTempSinceLastReboot: 22.25 }, { component: 'thermostat1' });
  d.device.reportProperties({ serialNumber: 'SN-1' });
  await waitFor('reported in the component', () => at(d.reported(), 'thermostat1.maxTempSinceLastReboot') === 22.25);
  expect(at(d.reported(), 'thermostat1.__t')).toBe('c');
  await waitFor('reported at the root', () => d.reported().serialNumber === 'SN-1');
});

test('202 then 200; 400 from the schema and from the handler (value stays the actual one); 500 with the message', async () => {
  const slow = deferred();
  const d = launch(cloud, 'pnp-ack-codes', (device) => {
    device.onWritableProperty(
      'fanSpeed',
      async (value, ctx) => {
        if (value === 99) throw new PropertyRejectedError('fanSpeed must be at most 10');
        if (value === 7) throw new Error('fan controller not responding');
        if (value === 5) {
          ctx.inProgress('spinning up');
          await slow.promise;
        }
      },
      { schema: 'integer' },
    );
  });
  await d.waitForState('Connected');
  const hub = d.hub();
  const fan = () => d.reported().fanSpeed as Record<string, unknown> | undefined;

  const v1 = hub.updateDesired('pnp-ack-codes', { fanSpeed: 5 });
  await waitFor('202', () => fan()?.ac === 202);
  expect(fan()).toEqual({ value: 5, ac: 202, av: v1, ad: 'spinning up' });
  slow.resolve();
  await waitFor('200 after 202', () => fan()?.ac === 200);
  expect(fan()).toEqual({ value: 5, ac: 200, av: v1, ad: 'completed' });

  const v2 = hub.updateDesired('pnp-ack-codes', { fanSpeed: 'fast' });
  await waitFor('400 from the schema', () => fan()?.av === v2);
  expect(fan()).toEqual({ value: 5, ac: 400, av: v2, ad: 'expected an integer, got a string' });

  const v3 = hub.updateDesired('pnp-ack-codes', { fanSpeed: 99 });
  await waitFor('400 from the handler', () => fan()?.av === v3);
  expect(fan()).toEqual({ value: 5, ac: 400, av: v3, ad: 'fanSpeed must be at most 10' });

  const v4 = hub.updateDesired('pnp-ack-codes', { fanSpeed: 7 });
  await waitFor('500', () => fan()?.av === v4);
  expect(fan()).toEqual({ value: 5, ac: 500, av: v4, ad: 'fan controller not responding' });

  const v5 = hub.updateDesired('pnp-ack-codes', { fanSpeed: { huge: 'x'.repeat(20_000) } });
  await waitFor('400 for an object', () => fan()?.av === v5);
  expect(fan()?.ac).toBe(400);
  expect(d.device.state()).toBe('Connected');
});

test('a desired change made while the device is offline is applied and acknowledged after it reconnects', async () => {
  const applied: unknown[] = [];
  const d = launch(cloud, 'pnp-offline-desired', (device) => {
    device.onWritableProperty('fanSpeed', (value) => void applied.push(value), { schema: 'integer' });
  });
  await d.waitForState('Connected');
  const hub = d.hub();
  const v1 = hub.updateDesired('pnp-offline-desired', { fanSpeed: 2 });
  await waitFor('first ack', () => at(d.reported(), 'fanSpeed.av') === v1);

  await hub.kill();
  await waitFor('the device noticed', () => d.device.state() !== 'Connected');
  const pushes = hub.metrics().desiredPushes;
  const v2 = hub.updateDesired('pnp-offline-desired', { fanSpeed: 4 });
  expect(hub.metrics().desiredPushes).toBe(pushes); // nobody subscribed: no push, only the twin knows
  await hub.restart();
  await d.waitForState('Connected', 15_000);
  await waitFor('the ack of the offline change', () => at(d.reported(), 'fanSpeed.av') === v2);
  expect(d.reported().fanSpeed).toEqual({ value: 4, ac: 200, av: v2, ad: 'completed' });
  expect(applied).toEqual([2, 4]);
});

test('a restart does not apply an acknowledged value again, nor report the default again', async () => {
  const first: unknown[] = [];
  const a = launch(cloud, 'pnp-restart', (device) => {
    device.onWritableProperty('fanSpeed', (value) => void first.push(value), { default: 1 });
  });
  await a.waitForState('Connected');
  const version = a.hub().updateDesired('pnp-restart', { fanSpeed: 6 });
  await waitFor('ack', () => at(a.reported(), 'fanSpeed.av') === version);
  // The hub has the ack; so must the device (its answer read), or the restart rightly sends it again.
  await waitFor('the ack answered', () => a.device.pendingReportedProperties() === 0);
  await a.device.stop();
  running.splice(running.indexOf(a), 1);
  const patchesBefore = a.hub().metrics().reportedPatches;

  const second: unknown[] = [];
  const b = launch(cloud, 'pnp-restart', (device) => {
    device.onWritableProperty('fanSpeed', (value) => void second.push(value), { default: 1 });
    device.onWritableProperty('late', () => undefined, { default: 'x' });
  }, { dataDir: a.dataDir });
  await b.waitForState('Connected');
  await waitFor('the new default reported', () => at(b.reported(), 'late.ac') === 203);
  expect(second).toEqual([]);
  expect(b.reported().fanSpeed).toEqual({ value: 6, ac: 200, av: version, ad: 'completed' });
  expect(b.hub().metrics().reportedPatches).toBe(patchesBefore + 1);
});

test('a property registered after the twin was read is still answered (the seed sample misses it)', async () => {
  const d = launch(cloud, 'pnp-late-register', () => undefined);
  await d.waitForState('Connected');
  const version = d.hub().updateDesired('pnp-late-register', { brightness: 40 });
  await waitFor('twin read at least once', () => d.hub().metrics().twinGets > 0);
  d.device.onWritableProperty('brightness', () => undefined, { schema: 'integer' });
  await waitFor('ack after late registration', () => at(d.reported(), 'brightness.av') === version);
  expect(at(d.reported(), 'brightness.ac')).toBe(200);
});

test('reported properties while offline: the latest value of each wins, sent in one patch on reconnect', async () => {
  const d = launch(cloud, 'pnp-reported-offline', () => undefined);
  await d.waitForState('Connected');
  const hub = d.hub();
  d.device.reportProperties({ battery: 90 });
  await waitFor('first report', () => d.reported().battery === 90);

  await hub.kill();
  await waitFor('offline', () => d.device.state() !== 'Connected');
  for (const battery of [80, 70, 60]) d.device.reportProperties({ battery, firmware: `1.${battery}` });
  expect(d.device.pendingReportedProperties()).toBe(2);
  const patchesBefore = hub.metrics().reportedPatches;
  await hub.restart();
  await d.waitForState('Connected', 15_000);
  await waitFor('latest value at the cloud', () => d.reported().battery === 60);
  expect(d.reported().firmware).toBe('1.60');
  expect(hub.metrics().reportedPatches).toBe(patchesBefore + 1);
  // The twin changes before the PATCH's answer reaches the device: the queue empties on that answer.
  await waitFor('queue settled on the hub\'s answer', () => d.device.pendingReportedProperties() === 0);
});

test('bad reported patches are refused at the call with a typed error; the device stays up', async () => {
  const d = launch(cloud, 'pnp-reported-bad', () => undefined);
  await d.waitForState('Connected');
  const refusal = (patch: unknown, component?: string) => {
    try {
      d.device.reportProperties(patch as Record<string, unknown>, component === undefined ? {} : { component });
    } catch (error) {
      return error instanceof PropertiesRejectedError ? error.reason : 'other';
    }
    return 'accepted';
  };
  expect(refusal(null)).toBe('invalid');
  expect(refusal([1, 2])).toBe('invalid');
  expect(refusal({ 'a.b': 1 })).toBe('invalid');
  expect(refusal({ $x: 1 })).toBe('invalid');
  expect(refusal({ big: 'x'.repeat(40_000) })).toBe('too-large');
  expect(refusal({ nothing: undefined })).toBe('invalid');
  expect(refusal({ ok: 1 })).toBe('accepted');
  await waitFor('the good one arrived', () => d.reported().ok === 1);
  expect(d.device.state()).toBe('Connected');
});

test('reported properties queued while offline survive a restart (data dir) and are sent on the next connection', async () => {
  const a = launch(cloud, 'pnp-reported-restart', () => undefined);
  await a.waitForState('Connected');
  const hub = a.hub();
  await hub.kill();
  await waitFor('offline', () => a.device.state() !== 'Connected');
  a.device.reportProperties({ battery: 12.5 });
  a.device.reportProperties({ lastSeen: 'before-restart' }, { component: 'diag' });
  await a.device.stop();
  running.splice(running.indexOf(a), 1);
  await hub.restart();

  const b = launch(cloud, 'pnp-reported-restart', () => undefined, { dataDir: a.dataDir });
  await b.waitForState('Connected');
  await waitFor('queued values at the cloud', () => b.reported().battery === 12.5);
  expect(b.reported().diag).toEqual({ __t: 'c', lastSeen: 'before-restart' });
  await waitFor('queue settled on the hub\'s answer', () => b.device.pendingReportedProperties() === 0);
});
