/**
 * Reported properties the hub does not take, end to end (real SDK, local cloud): 429 and 5xx keep
 * them and send them again on the same connection (also a 503 whose empty body the SDK calls a
 * success); 400/413 drop only what the hub refuses, with a `droppedProperties` event naming it;
 * a writable-property acknowledgement reaches the twin anyway (without its value).
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import type { Device } from '../../src/device';
import type { DroppedProperties } from '../../src/pnp/reported';
import { startPnpDevice, waitFor, type PnpDevice } from './helpers';

const ID = 'pnp-reported-refusals';
let cloud: LocalCloud;
let d: PnpDevice;
const dropped: DroppedProperties[] = [];

function setup(device: Device) {
  device.onWritableProperty('fanSpeed', () => undefined, { schema: 'integer' });
  device.on('droppedProperties', (report) => dropped.push(report));
}

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'pnp-reported-refusals', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  d = startPnpDevice(cloud, ID, setup);
  await d.waitForState('Connected');
  await waitFor('twin synchronised', () => d.logLines.some((l) => l.includes('twin synchronised')));
});
afterAll(async () => {
  await d.device.stop();
  await cloud.stop();
});
beforeEach(() => {
  dropped.length = 0;
});

const retriesLogged = () => d.logLines.filter((l) => l.includes('sent again later')).length;

test('429 twice: kept and sent again on the same connection until the hub takes it', async () => {
  const before = retriesLogged();
  d.hub().answerNextReportedPatch(ID, 429, { count: 2 });
  d.device.reportProperties({ battery: 50 });
  await waitFor('battery in the twin', () => d.reported().battery === 50, 10_000);
  await waitFor('nothing pending', () => d.device.pendingReportedProperties() === 0);
  expect(retriesLogged() - before).toBe(2);
  expect(dropped).toEqual([]);
  expect(d.states.filter((s) => s.value === 'Connected')).toHaveLength(1);
});

test('503 with an empty body (the SDK calls that a success): read from the status, kept and sent again', async () => {
  d.hub().answerNextReportedPatch(ID, 503, { body: '' });
  d.device.reportProperties({ battery: 49 });
  await waitFor('battery in the twin', () => d.reported().battery === 49, 10_000);
  expect(dropped).toEqual([]);
});

test('400: only the property the hub refuses is dropped, with a droppedProperties event; the other arrives', async () => {
  d.hub().answerNextReportedPatch(ID, 400, { count: 2 }); // the batch, then its first property alone
  d.device.reportProperties({ serial: 'A-1', firmware: '2.0' });
  await waitFor('firmware in the twin', () => d.reported().firmware === '2.0');
  await waitFor('the drop reported', () => dropped.length === 1);
  expect(dropped).toEqual([{ reason: 'refused', status: 400, properties: ['serial'], detail: 'Injected answer 400.' }]);
  await waitFor('nothing pending', () => d.device.pendingReportedProperties() === 0);
  expect(d.reported().serial).toBeUndefined();
});

test('413 on a writable-property acknowledgement: it reaches the twin without its value, nothing is dropped', async () => {
  d.hub().answerNextReportedPatch(ID, 413);
  const version = d.hub().updateDesired(ID, { fanSpeed: 3 });
  await waitFor('the acknowledgement in the twin', () => (d.reported().fanSpeed as { av?: number } | undefined)?.av === version);
  expect(d.reported().fanSpeed).toEqual({ ac: 200, av: version, ad: 'the hub refused the value (413)' });
  expect(dropped).toEqual([]);
  expect(d.device.state()).toBe('Connected');
});
