/**
 * An error inside a live session is a classified session loss (HUB_LOST, the machine reconnects),
 * never the device actor in XState's `error` status and never an unhandled rejection (Jest fails
 * a test on one). Real device, real SDK, the local cloud; the faults are an outbox that fails on
 * cue (StorageError, as the SQLite outbox raises) and session features that throw. stop() resolves
 * whatever happened.
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { StorageError } from '../../src/errors';
import type { SessionFeature } from '../../src/actors/hub';
import { MemoryOutbox, type NewOutboxMessage, type Outbox, type OutboxMessage } from '../../src/store/outbox';
import { QUICK_POLICY } from '../pnp/helpers';
import { startDevice, waitFor, waitForState, type DeviceUnderTest } from './harness';

let cloud: LocalCloud;
const devices: DeviceUnderTest[] = [];

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'session-errors', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});
afterAll(async () => {
  for (const dut of devices) await dut.device.stop();
  await cloud.stop();
});

/** A memory outbox whose next reads or removals fail, as a broken disk would make SQLite fail. */
class FaultyOutbox implements Outbox {
  readonly inner = new MemoryOutbox();
  failReads = 0;
  failRemoves = 0;
  private fault(what: string): never {
    throw new StorageError('io', '/data/outbox.sqlite', `disk I/O error while ${what}`);
  }
  add(message: NewOutboxMessage): OutboxMessage {
    return this.inner.add(message);
  }
  after(afterSeq: number, limit: number): OutboxMessage[] {
    if (this.failReads > 0) {
      this.failReads--;
      this.fault('reading');
    }
    return this.inner.after(afterSeq, limit);
  }
  remove(messageId: string): boolean {
    if (this.failRemoves > 0) {
      this.failRemoves--;
      this.fault('removing');
    }
    return this.inner.remove(messageId);
  }
  drop(...args: Parameters<Outbox['drop']>): boolean {
    return this.inner.drop(...args);
  }
  stats() {
    return this.inner.stats();
  }
  onAdded(listener: () => void) {
    return this.inner.onAdded(listener);
  }
  onDropped(listener: Parameters<Outbox['onDropped']>[0]) {
    return this.inner.onDropped(listener);
  }
  close(): void {
    this.inner.close();
  }
}

function start(registrationId: string, overrides: Parameters<typeof startDevice>[2] = {}): DeviceUnderTest {
  const dut = startDevice(cloud, registrationId, { policy: QUICK_POLICY, ...overrides });
  devices.push(dut);
  return dut;
}

const losses = (dut: DeviceUnderTest) => dut.states.filter((s) => s.previous === 'Connected' && s.event === 'HUB_LOST');
const connections = (dut: DeviceUnderTest) => dut.states.filter((s) => s.value === 'Connected').length;
const delivered = (messageId: string) => cloud.telemetry().some((record) => record.messageId === messageId);

test('an outbox storage error during the pump ends the session (classified), not the device; the message is delivered after the reconnect', async () => {
  const outbox = new FaultyOutbox();
  const dut = start('errors-pump', { outbox });
  const lossCauses: string[] = [];
  dut.device.on('state', (change) => {
    if (change.event === 'HUB_LOST') lossCauses.push(dut.device.actor.getSnapshot().context.lastError?.message ?? '');
  });
  await waitForState(dut, 'Connected');

  outbox.failReads = 1;
  const messageId = await dut.send({ n: 1 }); // accepted: the failure belongs to the session, not to the caller
  await waitFor('the session lost', () => losses(dut).length === 1);
  expect(losses(dut)[0]!.errorClass).toBeDefined();
  await waitFor('connected again', () => connections(dut) === 2 && dut.device.state() === 'Connected');
  await waitFor('the message delivered', () => delivered(messageId));
  expect(dut.device.actor.getSnapshot().status).toBe('active');
  expect(lossCauses).toEqual([expect.stringContaining('disk I/O error while reading')]);
});

test('a session feature that throws when its session starts ends that session, not the device', async () => {
  let calls = 0;
  const flaky: SessionFeature = () => {
    if (++calls === 1) throw new Error('feature failed to start');
    return () => undefined;
  };
  const dut = start('errors-feature', { features: [flaky] });
  await waitFor('connected on the second session', () => connections(dut) === 2 && dut.device.state() === 'Connected');
  expect(losses(dut)).toHaveLength(1);
  expect(dut.device.actor.getSnapshot().status).toBe('active');
  const messageId = await dut.send();
  await waitFor('telemetry flows', () => delivered(messageId));
});

test('a throw in a PUBACK continuation (the acknowledged message cannot be removed) ends the session; the message is sent again and delivered', async () => {
  const outbox = new FaultyOutbox();
  const dut = start('errors-puback', { outbox });
  const deliveredEvents: string[] = [];
  dut.device.on('delivered', (id) => deliveredEvents.push(id));
  await waitForState(dut, 'Connected');

  outbox.failRemoves = 1;
  const messageId = await dut.send();
  await waitFor('the session lost', () => losses(dut).length === 1);
  await waitFor('delivered after the reconnect', () => deliveredEvents.includes(messageId));
  expect(outbox.stats().count).toBe(0);
  expect(dut.device.actor.getSnapshot().status).toBe('active');
});

test('an application listener that throws (delivered, state) is logged; the session goes on', async () => {
  const dut = start('errors-listener');
  dut.device.on('delivered', () => {
    throw new Error('listener bug');
  });
  await waitForState(dut, 'Connected');
  const messageId = await dut.send();
  await waitFor('the message delivered', () => delivered(messageId));
  await waitFor('the listener error logged', () => dut.logLines.some((l) => l.includes('a device event listener threw')));
  expect(losses(dut)).toHaveLength(0);
  expect(dut.device.outboxStats().count).toBe(0);
});

test('stop() resolves when a session cleanup throws, and when the actor is in XState error status', async () => {
  const throwsOnCleanup: SessionFeature = () => () => {
    throw new Error('cleanup failed');
  };
  const dut = start('errors-stop', { features: [throwsOnCleanup] });
  await waitForState(dut, 'Connected');
  await dut.device.stop();
  expect(dut.device.state()).toBe('Stopped');
  expect(dut.logLines.some((l) => l.includes('session cleanup failed'))).toBe(true);

  // However the actor ended up in `error` (here: an error event nothing handles), stop() resolves.
  const broken = start('errors-stop-broken');
  await waitForState(broken, 'Connected');
  broken.device.actor.send({ type: 'xstate.error.actor.synthetic', error: new Error('synthetic') } as never);
  expect(broken.device.actor.getSnapshot().status).toBe('error');
  await broken.device.stop();
});
