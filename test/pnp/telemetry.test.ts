/**
 * Telemetry as the cloud receives it: components (`$.sub`), JSON numbers, content type and
 * encoding, capture time; the outbox's capture order and zero loss across a manual failover;
 * the 256 KB limit refused at the call without blocking the queue; a full outbox that drops
 * the oldest says so, message by message.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { MessageRejectedError } from '../../src/errors';
import type { DroppedMessage } from '../../src/store/outbox';
import { openSqliteOutbox } from '../../src/store/sqlite-outbox';
import { deliveryReport } from '../e2e/harness';
import { startPnpDevice, waitFor, type PnpDevice } from './helpers';

let cloud: LocalCloud;
const running: PnpDevice[] = [];

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'pnp-telemetry', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((d) => d.device.stop()));
});
afterAll(async () => {
  await cloud.stop();
});

function launch(...args: Parameters<typeof startPnpDevice>): PnpDevice {
  const d = startPnpDevice(...args);
  running.push(d);
  return d;
}

test('component telemetry: one message per component with $.sub, numbers as numbers, JSON utf-8, capture time', async () => {
  const d = launch(cloud, 'pnp-telemetry-components', () => undefined);
  await d.waitForState('Connected');
  const before = Date.now();
  const root = await d.device.sendTelemetry({ temp: 21.5, humidity: 40 });
  const one = await d.device.sendTelemetry({ temperature: 19.25 }, { component: 'thermostat1' });
  const two = await d.device.sendTelemetry({ temperature: 23 }, { component: 'thermostat2' });
  await waitFor('three messages', () => deliveryReport(cloud, [root.messageId, one.messageId, two.messageId]).lost.length === 0);
  const byId = new Map(cloud.telemetry({ deviceId: 'pnp-telemetry-components' }).map((r) => [r.messageId, r]));
  const rootRecord = byId.get(root.messageId)!;
  expect(rootRecord.component).toBeUndefined();
  expect(JSON.parse(rootRecord.body.toString('utf8'))).toEqual({ temp: 21.5, humidity: 40 });
  for (const [id, component, temperature] of [
    [one.messageId, 'thermostat1', 19.25],
    [two.messageId, 'thermostat2', 23],
  ] as const) {
    const record = byId.get(id)!;
    expect(record.component).toBe(component);
    expect(record.systemProperties['$.sub']).toBe(component);
    expect(record.contentType).toBe('application/json');
    expect(record.contentEncoding).toBe('utf-8');
    const body = JSON.parse(record.body.toString('utf8')) as { temperature: unknown };
    expect(typeof body.temperature).toBe('number');
    expect(body.temperature).toBe(temperature);
    const created = Date.parse(record.creationTimeUtc!);
    expect(created).toBeGreaterThanOrEqual(before - 5);
    expect(created).toBeLessThanOrEqual(record.receivedAt);
  }
});

test('manual failover while sending: every message arrives, first copies in capture order, same ids for resends', async () => {
  const d = launch(cloud, 'pnp-telemetry-failover', () => undefined);
  await d.waitForState('Connected');
  const home = d.hub().name;
  const accepted: string[] = [];
  let sending = true;
  const producer = (async () => {
    for (let n = 0; sending; n++) {
      accepted.push((await d.device.sendTelemetry({ n })).messageId);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  })();
  await waitFor('traffic at home', () => cloud.telemetry({ deviceId: 'pnp-telemetry-failover', hub: home }).length >= 20);
  cloud.manualFailover('pnp-telemetry-failover');
  await waitFor('connected elsewhere', () => d.device.state() === 'Connected' && d.hub().name !== home, 15_000);
  const afterFailover = accepted.length;
  await waitFor('traffic on the failover hub', () => accepted.length > afterFailover + 20);
  sending = false;
  await producer;
  await waitFor('all delivered', () => deliveryReport(cloud, accepted).lost.length === 0, 15_000);

  const report = deliveryReport(cloud, accepted);
  expect(report.lost).toEqual([]);
  const seen = new Set<string>();
  const firstArrivals: string[] = [];
  for (const record of cloud.telemetry({ deviceId: 'pnp-telemetry-failover' })) {
    if (record.messageId && !seen.has(record.messageId)) {
      seen.add(record.messageId);
      firstArrivals.push(record.messageId);
    }
  }
  expect(firstArrivals).toEqual(accepted);
  const hubs = new Set(cloud.telemetry({ deviceId: 'pnp-telemetry-failover' }).map((r) => r.hub));
  expect(hubs.size).toBe(2);
  if (report.duplicates > 0) console.log(`failover: ${report.duplicates} duplicate(s) of ${accepted.length}, same message ids`);
});

test('over 256 KB is refused at sendTelemetry with a typed error; the queue keeps flowing', async () => {
  const d = launch(cloud, 'pnp-telemetry-size', () => undefined);
  await d.waitForState('Connected');
  const big = await d.device.sendTelemetry({ blob: 'x'.repeat(250 * 1024) });
  const error = await d.device.sendTelemetry({ blob: 'x'.repeat(257 * 1024) }).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(MessageRejectedError);
  expect((error as MessageRejectedError).reason).toBe('too-large');
  const after = await d.device.sendTelemetry({ small: true });
  await waitFor('the big and the small delivered', () => deliveryReport(cloud, [big.messageId, after.messageId]).lost.length === 0);
  expect(d.device.outboxStats().count).toBe(0);
  expect(d.device.state()).toBe('Connected');
});

test('a full outbox with drop-oldest emits `dropped` for each message it drops; the rest arrives', async () => {
  const d = launch(cloud, 'pnp-telemetry-full', () => undefined, { outboxLimits: { maxCount: 5, whenFull: 'drop-oldest' } });
  await d.waitForState('Connected');
  const hub = d.hub();
  const dropped: DroppedMessage[] = [];
  d.device.on('dropped', (message) => dropped.push(message));
  await hub.kill();
  await waitFor('offline', () => d.device.state() !== 'Connected');
  const ids: string[] = [];
  for (let n = 0; n < 8; n++) ids.push((await d.device.sendTelemetry({ n })).messageId);
  expect(dropped).toEqual(ids.slice(0, 3).map((messageId) => ({ messageId, reason: 'outbox-full' })));
  await hub.restart();
  await waitFor('the five kept delivered', () => deliveryReport(cloud, ids.slice(3)).lost.length === 0, 15_000);
  expect(deliveryReport(cloud, ids.slice(0, 3)).lost).toEqual(ids.slice(0, 3));
});

test('durable sends of one event-loop turn share one SQLite commit; each resolves committed, all arrive in capture order', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hubstate-group-commit-'));
  const outbox = openSqliteOutbox(dir, 'pnp-telemetry-group');
  try {
    const d = launch(cloud, 'pnp-telemetry-group', () => undefined, { outbox });
    await d.waitForState('Connected');
    const before = outbox.addCommits;
    const sent = await Promise.all(Array.from({ length: 40 }, (_, n) => d.device.sendTelemetry({ n })));
    expect(outbox.addCommits - before).toBe(1);
    const ids = sent.map((s) => s.messageId);
    await waitFor('all delivered', () => deliveryReport(cloud, ids).lost.length === 0);
    const arrived = cloud.telemetry({ deviceId: 'pnp-telemetry-group' }).map((r) => r.messageId);
    expect(arrived.filter((id) => id !== undefined && ids.includes(id))).toEqual(ids);
  } finally {
    await Promise.all(running.splice(0).map((d) => d.device.stop()));
    outbox.close();
  }
});

test('durable: acknowledged messages leave the outbox in bulk removals; each is delivered once, in capture order, and none is left behind', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hubstate-ack-flush-'));
  const outbox = openSqliteOutbox(dir, 'pnp-telemetry-acks');
  const batches: number[] = [];
  const removeMany = outbox.removeMany.bind(outbox);
  outbox.removeMany = (messageIds) => {
    batches.push(messageIds.length);
    return removeMany(messageIds);
  };
  try {
    const d = launch(cloud, 'pnp-telemetry-acks', () => undefined, { outbox });
    await d.waitForState('Connected');
    const delivered: string[] = [];
    d.device.on('delivered', (id) => delivered.push(id));
    const sent = await Promise.all(Array.from({ length: 300 }, (_, n) => d.device.sendTelemetry({ n })));
    const ids = sent.map((s) => s.messageId);
    await waitFor('all delivered', () => delivered.length >= ids.length);
    expect(delivered).toEqual(ids);
    expect(outbox.stats().count).toBe(0);
    expect(batches.reduce((a, b) => a + b, 0)).toBe(300);
  } finally {
    await Promise.all(running.splice(0).map((d) => d.device.stop()));
    outbox.close();
  }
});
