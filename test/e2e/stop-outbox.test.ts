/**
 * stop() and the telemetry not yet delivered. Without a data directory the outbox is memory: what
 * is unsent at stop() is reported message by message (`dropped`, reason 'stopped'), never gone
 * silently; `stop({ drainMs })` first waits (at most that long) for the outbox to empty. With a
 * data directory nothing is dropped: it stays for the next run. Real device, local cloud.
 */
import { ConfigError } from '../../src/errors';
import { FAST_DPS_POLL_SEC, startLocalCloud, type EmulatedHub, type LocalCloud } from 'hubstate-cloud';
import type { DroppedMessage } from '../../src/store/outbox';
import { QUICK_POLICY } from '../pnp/helpers';
import { startDevice, waitFor, waitForState, type DeviceUnderTest } from './harness';

let cloud: LocalCloud;
let hub: EmulatedHub;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'stop-outbox', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  hub = cloud.hubs[0]!;
});
afterAll(async () => {
  hub.refuse(null);
  await cloud.stop();
});

function inMemory(registrationId: string): DeviceUnderTest & { dropped: DroppedMessage[] } {
  const dut = startDevice(cloud, registrationId, { dataDir: undefined, policy: QUICK_POLICY });
  const dropped: DroppedMessage[] = [];
  dut.device.on('dropped', (d) => dropped.push(d));
  return Object.assign(dut, { dropped });
}

/** Connected once, then refused by the hub: what is sent now waits in the outbox. */
async function offline(dut: DeviceUnderTest): Promise<void> {
  await waitForState(dut, 'Connected');
  hub.refuse(3);
  hub.disconnect(dut.registrationId);
  await waitFor('the device offline', () => dut.device.state() !== 'Connected' && !hub.isConnected(dut.registrationId));
}

const deliveredAtHub = (id: string) => cloud.telemetry().some((record) => record.messageId === id);

test('in memory: every message unsent at stop() is reported as dropped (reason stopped), in capture order', async () => {
  const dut = inMemory('stop-memory');
  await offline(dut);
  const ids = [await dut.send({ n: 1 }), await dut.send({ n: 2 }), await dut.send({ n: 3 })];
  await dut.device.stop();
  hub.refuse(null);
  expect(dut.dropped).toEqual(ids.map((messageId) => ({ messageId, reason: 'stopped' })));
  expect(dut.device.outboxStats().count).toBe(0);
  expect(dut.logLines.filter((l) => l.includes('telemetry not delivered before stop()'))).toHaveLength(1);
});

test('stop({ drainMs }): the device reconnects meanwhile and delivers everything before it stops; nothing dropped', async () => {
  const dut = inMemory('stop-drain');
  await offline(dut);
  const ids = [await dut.send({ n: 1 }), await dut.send({ n: 2 })];
  const stopping = dut.device.stop({ drainMs: 20_000 });
  hub.refuse(null);
  await stopping;
  expect(dut.device.state()).toBe('Stopped');
  expect(ids.every(deliveredAtHub)).toBe(true);
  expect(dut.dropped).toEqual([]);
  expect(dut.states.filter((s) => s.value === 'Connected')).toHaveLength(2);
});

test('stop({ drainMs }) is bounded: still offline at the deadline, it stops and reports what is left', async () => {
  const dut = inMemory('stop-drain-deadline');
  await offline(dut);
  const id = await dut.send();
  const started = Date.now();
  await dut.device.stop({ drainMs: 300 });
  expect(Date.now() - started).toBeGreaterThanOrEqual(300);
  hub.refuse(null);
  expect(dut.dropped).toEqual([{ messageId: id, reason: 'stopped' }]);
});

test('an invalid drainMs is refused with a ConfigError and stops nothing', async () => {
  const dut = inMemory('stop-invalid');
  await waitForState(dut, 'Connected');
  for (const drainMs of [-1, Number.NaN, 600_001, '5' as unknown as number]) {
    await expect(dut.device.stop({ drainMs })).rejects.toThrow(ConfigError);
  }
  expect(dut.device.state()).toBe('Connected');
  await dut.device.stop();
});

test('with a data directory nothing is dropped at stop(): the message stays for the next run', async () => {
  const dut = startDevice(cloud, 'stop-durable', { policy: QUICK_POLICY });
  const dropped: DroppedMessage[] = [];
  dut.device.on('dropped', (d) => dropped.push(d));
  await offline(dut);
  const id = await dut.send();
  await dut.device.stop();
  hub.refuse(null);
  expect(dropped).toEqual([]);

  const again = startDevice(cloud, 'stop-durable', { policy: QUICK_POLICY, dataDir: dut.dataDir });
  await waitFor('delivered by the next run', () => deliveredAtHub(id));
  await again.device.stop();
});
