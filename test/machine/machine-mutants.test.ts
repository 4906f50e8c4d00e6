/**
 * Behaviours of the device machine that mutation testing (bench/results/mutation.md) showed no
 * fast test pinned: the lookup at boot, actors that reject with something unclassified, exact
 * window boundaries, the inputs the actors receive, counter resets. Fake cloud, simulated clock.
 */
import { createActor, fromPromise } from 'xstate';
import { deviceMachine, leafStateName, type Assignment } from '../../machines/device.machine';
import type { Failure, RetryPolicy } from '../../src/policy/types';
import { POLICY_BOUNDS } from '../../src/policy/backoff';
import { FakeCloud, MACHINE_TEST_POLICY } from '../support/fake-actors';

const T0 = 1_700_000_000_000;

const policy = MACHINE_TEST_POLICY;

/** First retry after a loss in [0, 100 ms]; anything on the curve is at least 5 s. */
const splitPolicy: RetryPolicy = { ...policy, firstRetryMaxMs: 100, minDelayMs: 10_000 };

interface StartOptions {
  cached?: boolean;
  policy?: RetryPolicy;
  lookupAtBoot?: boolean;
}

function start(cloud: FakeCloud, options: StartOptions = {}) {
  const saved: Assignment[] = [];
  const machine = cloud.machine().provide({
    actions: {
      saveAssignment: (_args: unknown, params: { assignment: Assignment }) => {
        cloud.calls.saveAssignment++;
        saved.push(params.assignment);
      },
    },
  });
  const actor = createActor(machine, {
    clock: cloud.clock,
    input: {
      registrationId: 'reg-7',
      policy: options.policy ?? policy,
      seed: 42,
      cachedAssignment: options.cached ? { hubHost: 'cached-hub.local', deviceId: 'dev-1', assignedAt: 1 } : null,
      ...(options.lookupAtBoot !== undefined ? { lookupAtBoot: options.lookupAtBoot } : {}),
    },
  });
  const states: string[] = [];
  actor.subscribe({
    next: (snapshot) => {
      const value = leafStateName(snapshot.value);
      if (states[states.length - 1] !== value) states.push(value);
    },
    error: () => {},
  });
  actor.start();
  actor.send({ type: 'START' });
  return { actor, states, saved, value: () => leafStateName(actor.getSnapshot().value), context: () => actor.getSnapshot().context };
}

type Device = ReturnType<typeof start>;

function lose(cloud: FakeCloud, device: Device, failure: Failure) {
  const epoch = device.context().epoch;
  cloud.sessions.get(epoch)!({ type: 'HUB_LOST', epoch, failure });
}

/** A refusal that may mean the device was moved, not busy (CONNACK 5 on a hub that worked). */
function unauthorized(cloud: FakeCloud, extra: Partial<Failure> = {}) {
  return cloud.failure('reprovision', { rule: 'connack-5-after-connect', assignmentInDoubt: true, code: 5, ...extra });
}

/** Rejects the oldest pending call of `queue` with a value that is not a classified Failure. */
async function rejectRaw(cloud: FakeCloud, queue: { reject(f: Failure): void }[], value: unknown) {
  queue.shift()!.reject(value as Failure);
  await cloud.flush();
}

describe('lookupAtBoot: a device without a provisioning cache asks DPS where it belongs', () => {
  test('START looks up (no registration) with the registration id; DPS names a hub → connect there, saved', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { lookupAtBoot: true });
    await cloud.flush();
    expect(device.value()).toBe('CheckingAssignment');
    expect(cloud.lookups[0].input).toEqual({ registrationId: 'reg-7' });
    expect(cloud.calls.provision).toBe(0);
    // checkedAt is machine time, assignedAt the wall date the cache keeps: the assignment takes the date.
    cloud.lookups.shift()!.resolve({ hubHost: 'hub-b.local', deviceId: 'dev-9', checkedAt: 42, assignedAt: T0 - 5000 });
    await cloud.flush();
    expect(device.value()).toBe('Connecting');
    const assignment = { hubHost: 'hub-b.local', deviceId: 'dev-9', assignedAt: T0 - 5000, source: 'dps' };
    expect(device.context()).toMatchObject({ assignment, assignmentProven: false, assignmentConfirmed: false, hubAttempts: 0, firstFailureAt: null });
    expect(device.saved).toEqual([assignment]);
    expect(cloud.opens[0].input).toEqual({ assignment, epoch: 1 });
    expect(device.states).toEqual(['Idle', 'CheckingAssignment', 'Connecting']);
  });

  test('with a cached assignment, START connects: no lookup', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { lookupAtBoot: true, cached: true });
    await cloud.flush();
    expect(device.value()).toBe('Connecting');
    expect(cloud.calls.lookupAssignment).toBe(0);
  });

  test('without the option (or false), START registers', async () => {
    for (const lookupAtBoot of [false, undefined]) {
      const cloud = new FakeCloud();
      const device = start(cloud, { lookupAtBoot });
      await cloud.flush();
      expect(device.value()).toBe('Provisioning');
      expect(device.context().lookupAtBoot).toBe(false);
      expect(cloud.calls.lookupAssignment).toBe(0);
    }
  });

  test('DPS unreachable at boot: the registration is the next step, on the DPS backoff', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { lookupAtBoot: true, policy: splitPolicy });
    await cloud.flush();
    await cloud.failLookup(cloud.failure('transient', { rule: 'socket-refused' }, 'dps-lookup'));
    expect(device.value()).toBe('BackingOff');
    expect(device.context()).toMatchObject({ retryStep: 'Provisioning', dpsAttempts: 1, hubAttempts: 0, assignment: null });
    // A DPS retry is on the curve, never the [0, firstRetryMaxMs] first-retry-after-loss window.
    expect(device.context().delayMs).toBeGreaterThanOrEqual(5000);
    await cloud.advance(device.context().delayMs!);
    expect(device.value()).toBe('Provisioning');
    expect(cloud.provisions[0].input).toEqual({ registrationId: 'reg-7', attempt: 2 });
  });

  test('DPS has no registration (404): a full registration; if it fails there is no old hub to fall back to', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { lookupAtBoot: true });
    await cloud.flush();
    await cloud.failLookup(cloud.failure('reprovision', { rule: 'lookup-no-registration' }, 'dps-lookup'));
    expect(device.value()).toBe('Reprovisioning');
    await cloud.failProvision(cloud.failure('transient', {}, 'dps'));
    expect(device.context()).toMatchObject({ retryStep: 'Reprovisioning', assignment: null, dpsAttempts: 1 });
    await cloud.advance(device.context().delayMs!);
    expect(device.value()).toBe('Reprovisioning');
  });

  test('a lookup rejecting with something unclassified at boot: transient, phase dps-lookup, then the registration', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { lookupAtBoot: true });
    await cloud.flush();
    await rejectRaw(cloud, cloud.lookups, new Error('no body'));
    expect(device.value()).toBe('BackingOff');
    expect(device.context().lastError).toEqual({ errorClass: 'transient', rule: 'unclassified-actor-error', phase: 'dps-lookup', name: 'Error', message: 'no body', at: 0 });
    expect(device.context().retryStep).toBe('Provisioning');
  });

  test('no hub yet, so no hub budget: with maxHubAttempts 1 a failed boot lookup still leads to Provisioning', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { lookupAtBoot: true, policy: { ...policy, maxHubAttempts: 1 } });
    await cloud.flush();
    await cloud.failLookup(cloud.failure('transient', { rule: 'socket-refused' }, 'dps-lookup'));
    expect(device.context()).toMatchObject({ retryStep: 'Provisioning', dpsAttempts: 1 });
  });

  test('a fatal lookup answer ends in Failed with that failure', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { lookupAtBoot: true });
    await cloud.flush();
    const fatal = cloud.failure('fatal', { rule: 'bad-credentials' }, 'dps-lookup');
    await cloud.failLookup(fatal);
    expect(device.value()).toBe('Failed');
    expect(device.context().lastError).toEqual(fatal);
  });
});

describe('an actor that rejects with something other than a classified Failure (an actor bug)', () => {
  test('a registration rejecting with an Error: transient, unclassified, phase dps, dated at the latest known time', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { policy: splitPolicy });
    await cloud.flush();
    await cloud.failProvision(cloud.failure('transient', {}, 'dps'));
    const retryAt = device.context().retryAt!;
    await cloud.advance(device.context().delayMs! + 2000); // the clock is past retryAt: the machine does not read it
    await rejectRaw(cloud, cloud.provisions, new RangeError('boom'));
    expect(device.value()).toBe('BackingOff');
    expect(device.context().lastError).toEqual({ errorClass: 'transient', rule: 'unclassified-actor-error', phase: 'dps', name: 'RangeError', message: 'boom', at: retryAt });
    expect(device.context()).toMatchObject({ dpsAttempts: 2, retryStep: 'Provisioning' });
    expect(device.context().retryAt).toBe(retryAt + device.context().delayMs!);
  });

  test('a connect rejecting with a string: phase hub-connect, name Error, dated at the refusal before it', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true });
    await cloud.flush();
    await cloud.failOpen(unauthorized(cloud, { at: T0 + 50_000 }));
    expect(device.value()).toBe('CheckingAssignment');
    await cloud.answerLookup('cached-hub.local');
    // Confirmed: the next refusal backs off on this hub. Now the connect rejects with a string.
    await cloud.advance(device.context().retryAt! - cloud.clock.now());
    expect(device.value()).toBe('Connecting');
    await rejectRaw(cloud, cloud.opens, 'kaput');
    expect(device.context().lastError).toMatchObject({ errorClass: 'transient', rule: 'unclassified-actor-error', phase: 'hub-connect', name: 'Error', message: 'kaput' });
    expect(device.value()).toBe('BackingOff');
  });

  test('a lookup rejecting with an object that is not a Failure: phase dps-lookup, dated at the refusal', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true });
    await cloud.flush();
    await cloud.failOpen(unauthorized(cloud, { at: T0 + 7000 }));
    expect(device.value()).toBe('CheckingAssignment');
    // errorClass without a numeric `at`: not a Failure.
    await rejectRaw(cloud, cloud.lookups, { errorClass: 'fatal', at: 'now' });
    expect(device.value()).toBe('BackingOff');
    expect(device.context().lastError).toMatchObject({ errorClass: 'reprovision', at: T0 + 7000 });
    expect(device.context().assignmentConfirmed).toBe(false);
  });

  test('not a Failure: no errorClass, a non-string errorClass, null — none is taken for fatal', async () => {
    for (const value of [{ at: T0 }, { errorClass: 7, at: T0 }, null, { errorClass: 'fatal' }]) {
      const cloud = new FakeCloud();
      const device = start(cloud);
      await cloud.flush();
      await rejectRaw(cloud, cloud.provisions, value);
      expect(device.value()).toBe('BackingOff');
      expect(device.context().lastError).toMatchObject({ errorClass: 'transient', rule: 'unclassified-actor-error', phase: 'dps', at: 0 });
    }
    const cloud = new FakeCloud();
    const device = start(cloud);
    await cloud.flush();
    await rejectRaw(cloud, cloud.provisions, null);
    expect(device.context().lastError).toMatchObject({ name: 'Error', message: 'null' });
  });

  test('a registration rejecting after a connection: dated at connectedAt, the latest known time', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true });
    await cloud.flush();
    cloud.opens.shift()!.resolve({ connectedAt: T0 + 123 });
    await cloud.flush();
    expect(device.context().connectedAt).toBe(T0 + 123);
    device.actor.send({ type: 'REPROVISION' });
    await cloud.flush();
    await rejectRaw(cloud, cloud.provisions, new Error('sdk bug'));
    expect(device.context().lastError).toMatchObject({ rule: 'unclassified-actor-error', phase: 'dps', at: T0 + 123, message: 'sdk bug' });
  });

  test('a machine started without provide() fails loudly, naming the actor', async () => {
    const seen: string[] = [];
    for (const cachedAssignment of [null, { hubHost: 'h', deviceId: 'd', assignedAt: 1 }]) {
      const actor = createActor(deviceMachine, { input: { registrationId: 'r', policy: { ...policy, minDelayMs: 3_600_000, maxDelayMs: 3_600_000 }, seed: 1, cachedAssignment } });
      actor.subscribe({ error: () => {} });
      actor.start();
      actor.send({ type: 'START' });
      for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
      seen.push(String(actor.getSnapshot().context.lastError?.message));
      actor.stop();
    }
    const lookup = createActor(deviceMachine, { input: { registrationId: 'r', policy, seed: 1, lookupAtBoot: true } });
    lookup.subscribe({ error: () => {} });
    lookup.start();
    lookup.send({ type: 'START' });
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
    seen.push(String(lookup.getSnapshot().context.lastError?.message));
    lookup.stop();
    expect(seen).toEqual([
      "device machine: actor 'provision' was not provided (use deviceMachine.provide)",
      "device machine: actor 'openHub' was not provided (use deviceMachine.provide)",
      "device machine: actor 'lookupAssignment' was not provided (use deviceMachine.provide)",
    ]);
  });
});

describe('placeholders: a machine whose actor was not provided stops with an error naming it', () => {
  test('hubSession (after a provided connect) and waitUntil (after a provided failed connect)', async () => {
    const seen: string[] = [];
    const opens = [async () => ({ connectedAt: 0 }), async () => Promise.reject({ errorClass: 'transient', rule: 'x', phase: 'hub-connect', name: 'E', message: 'm', at: 0 })];
    for (const open of opens) {
      const machine = deviceMachine.provide({ actors: { openHub: fromPromise(open) as never } });
      const actor = createActor(machine, { input: { registrationId: 'r', policy, seed: 1, cachedAssignment: { hubHost: 'h', deviceId: 'd', assignedAt: 1 } } });
      let error: unknown;
      actor.subscribe({ error: (e) => (error = e) });
      actor.start();
      actor.send({ type: 'START' });
      for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
      expect(actor.getSnapshot().status).toBe('error');
      seen.push(String(error));
    }
    expect(seen).toEqual([
      "Error: device machine: actor 'hubSession' was not provided (use deviceMachine.provide)",
      "Error: device machine: actor 'waitUntil' was not provided (use deviceMachine.provide)",
    ]);
  });
});

describe('who gets the short first retry after a loss ([0, firstRetryMaxMs])', () => {
  test('a failed connect is on the curve', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: splitPolicy });
    await cloud.flush();
    await cloud.failOpen(cloud.failure('transient'));
    expect(device.context().delayMs).toBeGreaterThanOrEqual(5000);
  });

  test('the loss of a short session is on the curve; the loss of one that lasted is not', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: splitPolicy });
    await cloud.flush();
    await cloud.connect();
    await cloud.advance(1000);
    lose(cloud, device, cloud.failure('transient', {}, 'hub-session'));
    await cloud.flush();
    expect(device.context().delayMs).toBeGreaterThanOrEqual(5000);
    await cloud.advance(device.context().delayMs!);
    await cloud.connect();
    await cloud.advance(splitPolicy.stableConnectionMs);
    lose(cloud, device, cloud.failure('transient', {}, 'hub-session'));
    await cloud.flush();
    expect(device.context().delayMs).toBeLessThanOrEqual(100);
  });

  test('a failed connect after a lasting connection was left (REPROVISION) is on the curve', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: splitPolicy });
    await cloud.flush();
    await cloud.connect();
    await cloud.advance(splitPolicy.stableConnectionMs);
    expect(device.context().connectionStable).toBe(true);
    device.actor.send({ type: 'REPROVISION' });
    await cloud.flush();
    await cloud.assign();
    await cloud.failOpen(cloud.failure('transient', { rule: 'socket-refused' }));
    expect(device.context()).toMatchObject({ retryStep: 'Connecting', hubAttempts: 1 });
    expect(device.context().delayMs).toBeGreaterThanOrEqual(5000);
  });

  test('a lost session in doubt waits the first-retry spread before the lookup, keeping the loss and the run start', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: splitPolicy });
    await cloud.flush();
    await cloud.connect();
    await cloud.advance(1000);
    const loss = cloud.failure('transient', { rule: 'connack-3', assignmentInDoubt: true, retryAfterMs: 9000, minDelayMs: 7000 }, 'hub-session');
    lose(cloud, device, loss);
    await cloud.flush();
    expect(device.value()).toBe('BackingOff');
    expect(device.context()).toMatchObject({ retryStep: 'CheckingAssignment', lastError: loss, retryAfterMs: 9000, firstFailureAt: loss.at });
    expect(device.context().delayMs).toBeLessThanOrEqual(100);
  });

  test('a lookup that fails after the connect refusal: the next hub attempt is on the curve', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: splitPolicy });
    await cloud.flush();
    await cloud.failOpen(unauthorized(cloud));
    await cloud.failLookup(cloud.failure('transient', {}, 'dps-lookup'));
    expect(device.value()).toBe('BackingOff');
    expect(device.context().delayMs).toBeGreaterThanOrEqual(5000);
  });

  test('parked on a hub under a fleet policy: the parked wait, not the fleet window (nor its first-retry start at 0)', async () => {
    const cloud = new FakeCloud();
    // Fleet window [minDelayMs, 1000/10/1 s = 100 s], far below the parked 15-30 min.
    const fleetPolicy = { ...policy, minDelayMs: 100_000, maxDelayMs: 100_000, fleet: { devices: 1000, ratePerSec: 10, load: 1 } } as RetryPolicy;
    const device = start(cloud, { cached: true, policy: fleetPolicy });
    await cloud.flush();
    await cloud.failOpen(cloud.failure('parked', { rule: 'operator-blocked' }));
    expect(device.context().retryStep).toBe('Connecting');
    expect(device.context().delayMs).toBeGreaterThanOrEqual(fleetPolicy.parkedMinDelayMs);
    expect(device.context().delayMs).toBeLessThanOrEqual(fleetPolicy.parkedMaxDelayMs);
  });
});

describe('the doubtful refusal and the lookup that follows', () => {
  test('a refused connect keeps its retry-after and the start of the failure run', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true });
    await cloud.flush();
    await cloud.failOpen(cloud.failure('transient', { rule: 'socket-refused' }));
    const runStart = device.context().firstFailureAt;
    expect(runStart).toBe(T0);
    await cloud.advance(device.context().delayMs!);
    const refusal = unauthorized(cloud, { retryAfterMs: 4000 });
    await cloud.failOpen(refusal);
    expect(device.value()).toBe('CheckingAssignment');
    expect(device.context()).toMatchObject({ lastError: refusal, retryAfterMs: 4000, firstFailureAt: runStart });
  });

  test('a first refusal starts the failure run at its own time', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true });
    await cloud.flush();
    await cloud.failOpen(unauthorized(cloud, { at: T0 + 42 }));
    expect(device.context()).toMatchObject({ firstFailureAt: T0 + 42, retryAfterMs: null });
  });

  test('a lookup answer is dated by its checkedAt: the retry deadline and the confirmation count from it', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: { ...policy, maxHubAttempts: 100 } });
    await cloud.flush();
    await cloud.failOpen(unauthorized(cloud));
    cloud.lookups.shift()!.resolve({ hubHost: 'cached-hub.local', deviceId: 'dev-1', checkedAt: T0 + 5000, assignedAt: T0 });
    await cloud.flush();
    expect(device.value()).toBe('BackingOff');
    const { lastError, retryAt, delayMs } = device.context();
    expect(lastError).toMatchObject({ errorClass: 'reprovision', rule: 'connack-5-after-connect', at: T0 + 5000 });
    expect(retryAt).toBe(T0 + 5000 + delayMs!);
    expect(device.context()).toMatchObject({ assignmentConfirmed: true, assignmentConfirmedAt: T0 + 5000, hubAttempts: 1, firstFailureAt: T0 });
  });

  test('DPS answers the same hub with another device id: the device was moved', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true });
    await cloud.flush();
    await cloud.failOpen(unauthorized(cloud));
    cloud.lookups.shift()!.resolve({ hubHost: 'cached-hub.local', deviceId: 'dev-2', checkedAt: T0, assignedAt: T0 });
    await cloud.flush();
    expect(device.value()).toBe('Connecting');
    expect(cloud.opens[0].input).toMatchObject({ assignment: { hubHost: 'cached-hub.local', deviceId: 'dev-2' } });
  });

  test('a hub named by a lookup that then refuses is not looked up again (no ping-pong): DPS after a backoff', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true });
    await cloud.flush();
    await cloud.failOpen(unauthorized(cloud));
    await cloud.answerLookup('hub-b.local');
    expect(device.context()).toMatchObject({ assignmentProven: false, assignmentConfirmed: false });
    await cloud.failOpen(unauthorized(cloud));
    expect(device.value()).toBe('BackingOff');
    expect(device.context().retryStep).toBe('Reprovisioning');
    expect(cloud.calls.lookupAssignment).toBe(1);
  });

  test('a fresh DPS assignment whose hub fails transiently (not a refusal) is retried on that hub', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud);
    await cloud.flush();
    await cloud.assign();
    await cloud.failOpen(cloud.failure('transient', { rule: 'socket-refused' }));
    expect(device.value()).toBe('BackingOff');
    expect(device.context()).toMatchObject({ retryStep: 'Connecting', hubAttempts: 1, assignmentProven: false });
  });

  test('a hub moved after an expired confirmation: the new hub is not confirmed', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: { ...policy, maxHubAttempts: 100 } });
    await cloud.flush();
    await cloud.failOpen(cloud.failure('transient', { rule: 'connack-3', serverBusy: true, assignmentInDoubt: true }));
    await cloud.answerLookup('cached-hub.local');
    expect(device.context().assignmentConfirmed).toBe(true);
    await cloud.advance(policy.hubRetryWindowMs);
    await cloud.failOpen(cloud.failure('transient', { rule: 'connack-3', serverBusy: true, assignmentInDoubt: true }));
    expect(device.value()).toBe('CheckingAssignment');
    await cloud.answerLookup('hub-b.local');
    expect(device.value()).toBe('Connecting');
    expect(device.context()).toMatchObject({ assignmentConfirmed: false, assignmentProven: false, hubAttempts: 0, firstFailureAt: null });
  });

  test('a lookup failing with a floor (5xx): DPS is not asked before the floor, a busy hub keeps its refusal\'s own floor', async () => {
    for (const [lookupFloor, refusalFloor] of [
      [30_000, 5000],
      [2000, 5000],
      [2000, undefined],
    ] as const) {
      const cloud = new FakeCloud();
      const device = start(cloud, { cached: true });
      await cloud.flush();
      await cloud.failOpen(cloud.failure('transient', { rule: 'connack-3', serverBusy: true, assignmentInDoubt: true, ...(refusalFloor === undefined ? {} : { minDelayMs: refusalFloor }) }));
      const lookupEndedAt = cloud.clock.now();
      await cloud.failLookup(cloud.failure('transient', { rule: 'dps-server-error', minDelayMs: lookupFloor }, 'dps-lookup'));
      expect(device.value()).toBe('BackingOff');
      expect(device.context().lastError?.rule).toBe('connack-3'); // still the hub's refusal
      expect(device.context().lastError?.minDelayMs).toBe(refusalFloor);
      expect(device.context().delayMs).toBeGreaterThanOrEqual(refusalFloor ?? policy.minDelayMs / 2);
      // The hub's own curve (MACHINE_TEST_POLICY's first retry is 0.5-1 s, or the refusal's floor and up to 2x), not DPS's floor.
      expect(device.context().delayMs).toBeLessThanOrEqual(2 * (refusalFloor ?? policy.minDelayMs));
      expect(device.context().retryAfterMs).toBeNull();
      expect(device.context().dpsBusyUntil).toBeGreaterThanOrEqual(lookupEndedAt + lookupFloor);
      expect(device.context().dpsBusyUntil).toBeLessThanOrEqual(lookupEndedAt + lookupFloor + policy.maxDelayMs);
    }
  });

  test('DPS\'s wait ends with its answer: a lookup that answers clears it, a failed one without a wait keeps it (and starts our rest)', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: { ...policy, maxHubAttempts: 100 } });
    await cloud.flush();
    await cloud.failOpen(unauthorized(cloud));
    await cloud.failLookup(cloud.failure('transient', { rule: 'dps-server-error', minDelayMs: 30_000 }, 'dps-lookup'));
    const busyUntil = device.context().dpsBusyUntil!;
    expect(busyUntil).toBeGreaterThanOrEqual(cloud.clock.now() + 30_000);
    // Past DPS's wait: the next refusal asks; DPS unreachable (no wait of its own) keeps the old
    // time; the second failure in a row starts our rest: [1, 2] × the slowest retry from then.
    await cloud.advance(busyUntil - cloud.clock.now());
    while (device.value() === 'BackingOff') await cloud.advance(device.context().delayMs!);
    await cloud.failOpen(unauthorized(cloud));
    expect(device.value()).toBe('CheckingAssignment');
    const failedAt = cloud.clock.now();
    await cloud.failLookup(cloud.failure('transient', { rule: 'dps-unreachable' }, 'dps-lookup'));
    expect(device.context().dpsBusyUntil).toBe(busyUntil);
    expect(device.context().dpsRestUntil).toBeGreaterThanOrEqual(failedAt + policy.maxDelayMs);
    expect(device.context().dpsRestUntil).toBeLessThanOrEqual(failedAt + 2 * policy.maxDelayMs);
    while (device.value() === 'BackingOff') await cloud.advance(device.context().delayMs!);
    await cloud.failOpen(unauthorized(cloud));
    expect(device.value()).toBe('CheckingAssignment');
    await cloud.answerLookup('cached-hub.local');
    expect(device.context()).toMatchObject({ dpsBusyUntil: null, dpsRestUntil: null, failedLookups: 0 });
  });

  test('a lookup answered after the hub window spends the budget: register again, the hub run reset', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: { ...policy, maxHubAttempts: 100 } });
    await cloud.flush();
    await cloud.failOpen(unauthorized(cloud));
    cloud.lookups.shift()!.resolve({ hubHost: 'cached-hub.local', deviceId: 'dev-1', checkedAt: T0 + policy.hubRetryWindowMs, assignedAt: T0 });
    await cloud.flush();
    expect(device.value()).toBe('Reprovisioning');
    expect(device.context()).toMatchObject({ hubAttempts: 0, firstFailureAt: null, assignmentConfirmed: false });
    expect(cloud.provisions[0].input).toEqual({ registrationId: 'reg-7', attempt: 1 });
    // Reprovisioning (not Provisioning): DPS failing falls back to the old hub.
    await cloud.failProvision(cloud.failure('transient', {}, 'dps'));
    expect(device.context()).toMatchObject({ retryStep: 'Connecting', assignment: { hubHost: 'cached-hub.local' } });
  });

  test('one millisecond inside the window the same answer backs off on the hub', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: { ...policy, maxHubAttempts: 100 } });
    await cloud.flush();
    await cloud.failOpen(unauthorized(cloud));
    cloud.lookups.shift()!.resolve({ hubHost: 'cached-hub.local', deviceId: 'dev-1', checkedAt: T0 + policy.hubRetryWindowMs - 1, assignedAt: T0 });
    await cloud.flush();
    expect(device.value()).toBe('BackingOff');
    expect(device.context().retryStep).toBe('Connecting');
  });

  test('a busy refusal answered after the window never spends the budget', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: { ...policy, maxHubAttempts: 100 } });
    await cloud.flush();
    await cloud.failOpen(cloud.failure('transient', { rule: 'connack-3', serverBusy: true, assignmentInDoubt: true }));
    cloud.lookups.shift()!.resolve({ hubHost: 'cached-hub.local', deviceId: 'dev-1', checkedAt: T0 + 2 * policy.hubRetryWindowMs, assignedAt: T0 });
    await cloud.flush();
    expect(device.value()).toBe('BackingOff');
    expect(device.context().retryStep).toBe('Connecting');
  });

  test('a confirmation that has outlasted the window exactly is asked again; the answer (budget spent) resets the run', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: { ...policy, maxHubAttempts: 100 } });
    await cloud.flush();
    await cloud.failOpen(unauthorized(cloud));
    await cloud.answerLookup('cached-hub.local');
    expect(device.context()).toMatchObject({ assignmentConfirmed: true, assignmentConfirmedAt: T0 });
    await cloud.advance(device.context().delayMs!);
    await cloud.failOpen(unauthorized(cloud, { at: T0 + policy.hubRetryWindowMs }));
    expect(device.value()).toBe('CheckingAssignment');
    cloud.lookups.shift()!.resolve({ hubHost: 'cached-hub.local', deviceId: 'dev-1', checkedAt: T0 + policy.hubRetryWindowMs, assignedAt: T0 });
    await cloud.flush();
    expect(device.value()).toBe('Reprovisioning');
    expect(device.context()).toMatchObject({ hubAttempts: 0, firstFailureAt: null, assignmentConfirmed: false });
  });

  test('one millisecond before, the confirmation holds: back off on the hub, no lookup', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: { ...policy, maxHubAttempts: 100 } });
    await cloud.flush();
    await cloud.failOpen(unauthorized(cloud));
    await cloud.answerLookup('cached-hub.local');
    await cloud.advance(device.context().delayMs!);
    await cloud.failOpen(unauthorized(cloud, { at: T0 + policy.hubRetryWindowMs - 1 }));
    expect(device.value()).toBe('BackingOff');
    expect(device.context()).toMatchObject({ retryStep: 'Connecting', hubAttempts: 2 });
    expect(cloud.calls.lookupAssignment).toBe(1);
  });

  test('DPS has no registration after the budget was spent: Reprovisioning with the hub run reset', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: { ...policy, maxHubAttempts: 100 } });
    await cloud.flush();
    await cloud.failOpen(unauthorized(cloud));
    await cloud.answerLookup('cached-hub.local');
    await cloud.advance(device.context().delayMs!);
    await cloud.failOpen(unauthorized(cloud, { at: T0 + policy.hubRetryWindowMs }));
    await cloud.failLookup(cloud.failure('reprovision', { rule: 'lookup-no-registration' }, 'dps-lookup'));
    expect(device.value()).toBe('Reprovisioning');
    expect(device.context()).toMatchObject({ hubAttempts: 0, firstFailureAt: null, assignmentConfirmed: false });
  });

  test('budget spent and the lookup fails: register after DPS\'s wait, the hub run reset', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: { ...policy, maxHubAttempts: 100 } });
    await cloud.flush();
    await cloud.failOpen(unauthorized(cloud));
    await cloud.answerLookup('cached-hub.local');
    await cloud.advance(device.context().delayMs!);
    await cloud.failOpen(unauthorized(cloud, { at: T0 + policy.hubRetryWindowMs }));
    await cloud.failLookup(cloud.failure('transient', { at: T0 + policy.hubRetryWindowMs }, 'dps-lookup'));
    expect(device.value()).toBe('BackingOff');
    expect(device.context()).toMatchObject({ retryStep: 'Reprovisioning', hubAttempts: 0, firstFailureAt: null, assignmentConfirmed: false, dpsAttempts: 1 });
  });
});

describe('exact time-window boundaries', () => {
  async function failuresAt(offsets: number[], failure: (cloud: FakeCloud, at: number) => Failure, p: RetryPolicy) {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: p });
    await cloud.flush();
    for (const offset of offsets) {
      if (device.value() === 'BackingOff') await cloud.advance(device.context().retryAt! - cloud.clock.now());
      expect(device.value()).toBe('Connecting');
      await cloud.failOpen(failure(cloud, T0 + offset));
    }
    return device;
  }
  const wide = { ...policy, maxHubAttempts: 100, maxDelayMs: 2000, lookupAfterUnreachableMs: 3_600_000 };
  const plain = (cloud: FakeCloud, at: number) => cloud.failure('transient', { rule: 'network', at });

  test('a failure exactly one hub window after the first spends the budget; one ms before does not', async () => {
    expect((await failuresAt([0, wide.hubRetryWindowMs], plain, wide)).value()).toBe('Reprovisioning');
    const inside = await failuresAt([0, wide.hubRetryWindowMs - 1], plain, wide);
    expect(inside.value()).toBe('BackingOff');
    expect(inside.context().hubAttempts).toBe(2);
  });

  test('unreachable exactly lookupAfterUnreachableMs after the first failure asks DPS; one ms before does not', async () => {
    const p = { ...wide, lookupAfterUnreachableMs: 60_000 };
    const socket = (cloud: FakeCloud, at: number) => cloud.failure('transient', { rule: 'socket-refused', at });
    expect((await failuresAt([0, 60_000], socket, p)).value()).toBe('CheckingAssignment');
    expect((await failuresAt([0, 59_999], socket, p)).value()).toBe('BackingOff');
  });

  test('the first failure of a run never counts as unreachable for long, whatever its time', async () => {
    const p = { ...wide, lookupAfterUnreachableMs: 1 };
    const device = await failuresAt([0], plain, p);
    expect(device.value()).toBe('BackingOff');
    expect(device.context().firstFailureAt).toBe(T0);
  });

  test('a busy hub, or a throttled one, is never looked up for being unreachable', async () => {
    const p = { ...wide, lookupAfterUnreachableMs: 60_000 };
    const busy = (cloud: FakeCloud, at: number) => cloud.failure('transient', { rule: 'hub-server-error', serverBusy: true, at });
    const throttled = (cloud: FakeCloud, at: number) => cloud.failure('throttled', { rule: 'throttled-429', at });
    for (const failure of [busy, throttled]) {
      const device = await failuresAt([0, 120_000], failure, p);
      expect(device.value()).toBe('BackingOff');
    }
  });
});

describe('inputs the actors receive', () => {
  test('the registration gets the registration id and the attempt number; the save gets the new assignment', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud);
    await cloud.flush();
    expect(cloud.provisions[0].input).toEqual({ registrationId: 'reg-7', attempt: 1 });
    await cloud.failProvision(cloud.failure('transient', {}, 'dps'));
    await cloud.advance(device.context().delayMs!);
    expect(cloud.provisions[0].input).toEqual({ registrationId: 'reg-7', attempt: 2 });
    cloud.provisions.shift()!.resolve({ hubHost: 'hub-c.local', deviceId: 'dev-3', assignedAt: T0 + 1, registeredAt: T0 + 1 });
    await cloud.flush();
    expect(device.saved).toEqual([{ hubHost: 'hub-c.local', deviceId: 'dev-3', assignedAt: T0 + 1, source: 'dps' }]);
  });

  test('a connection counts as stable stableConnectionMs after the hub accepted it (its connectedAt)', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true });
    await cloud.flush();
    await cloud.failOpen(cloud.failure('transient'));
    await cloud.advance(device.context().delayMs!);
    cloud.opens.shift()!.resolve({ connectedAt: cloud.clock.now() - 10_000 });
    await cloud.flush();
    await cloud.advance(policy.stableConnectionMs - 10_000 - 1);
    expect(device.context()).toMatchObject({ connectionStable: false, hubAttempts: 1 });
    await cloud.advance(1);
    expect(device.context()).toMatchObject({ connectionStable: true, hubAttempts: 0 });
  });

  test('STOP closes the current epoch; a close that fails still ends in Stopped', async () => {
    const cloud = new FakeCloud();
    cloud.parkCloses = true;
    const device = start(cloud, { cached: true });
    await cloud.flush();
    await cloud.failOpen(cloud.failure('transient'));
    await cloud.advance(device.context().delayMs!);
    await cloud.connect();
    device.actor.send({ type: 'STOP' });
    await cloud.flush();
    expect(device.value()).toBe('Disconnecting');
    expect(cloud.closes[0].input).toEqual({ epoch: 2 });
    cloud.closes.shift()!.reject(cloud.failure('transient'));
    await cloud.flush();
    expect(device.value()).toBe('Stopped');
  });
});

describe('counters and reprovision requests', () => {
  test('RETRY from Failed starts over with fresh counters', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: { ...policy, maxHubAttempts: 100 } });
    await cloud.flush();
    await cloud.failOpen(cloud.failure('transient'));
    expect(device.context()).toMatchObject({ hubAttempts: 1, firstFailureAt: T0 });
    device.actor.send({ type: 'REPROVISION' });
    await cloud.flush();
    await cloud.failProvision(cloud.failure('transient', {}, 'dps'));
    await cloud.advance(device.context().delayMs!);
    expect(device.value()).toBe('Reprovisioning');
    await cloud.failProvision(cloud.failure('fatal', {}, 'dps'));
    expect(device.value()).toBe('Failed');
    expect(device.context()).toMatchObject({ dpsAttempts: 1, hubAttempts: 1 });
    device.actor.send({ type: 'RETRY' });
    await cloud.flush();
    expect(device.value()).toBe('Provisioning');
    expect(device.context()).toMatchObject({ dpsAttempts: 0, hubAttempts: 0, firstFailureAt: null });
    expect(cloud.provisions[0].input).toEqual({ registrationId: 'reg-7', attempt: 1 });
  });

  test('REPROVISION during a hub retry-after wait goes to DPS at once', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true });
    await cloud.flush();
    await cloud.failOpen(cloud.failure('throttled', { retryAfterMs: 60_000 }));
    expect(device.value()).toBe('BackingOff');
    device.actor.send({ type: 'REPROVISION' });
    await cloud.flush();
    expect(device.value()).toBe('Reprovisioning');
    expect(cloud.calls.provision).toBe(1);
  });

  test('a REPROVISION during a DPS retry-after wait (falling back to the old hub) is remembered: DPS again, not the old hub', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: { ...policy, maxHubAttempts: 1 } });
    await cloud.flush();
    await cloud.failOpen(cloud.failure('transient'));
    expect(device.value()).toBe('Reprovisioning');
    await cloud.failProvision(cloud.failure('throttled', { retryAfterMs: 10_000 }, 'dps'));
    expect(device.context()).toMatchObject({ retryStep: 'Connecting', reprovisionRequested: false });
    device.actor.send({ type: 'REPROVISION' });
    await cloud.flush();
    expect(device.context()).toMatchObject({ retryStep: 'Reprovisioning', reprovisionRequested: true });
    await cloud.advance(device.context().delayMs!);
    expect(device.value()).toBe('Reprovisioning');
    await cloud.failProvision(cloud.failure('transient', {}, 'dps'));
    expect(device.context().retryStep).toBe('Reprovisioning');
  });
});

describe('DPS\'s wait pushes DPS retries back, never forward', () => {
  /** A cached device whose lookup DPS answered 5xx with a 30 s floor, then a REPROVISION command. */
  async function registeringWhileDpsBusy() {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true });
    await cloud.flush();
    await cloud.failOpen(cloud.failure('transient', { rule: 'connack-3', serverBusy: true, assignmentInDoubt: true }));
    await cloud.failLookup(cloud.failure('transient', { rule: 'dps-server-error', minDelayMs: 30_000 }, 'dps-lookup'));
    const busyUntil = device.context().dpsBusyUntil!;
    device.actor.send({ type: 'REPROVISION' });
    await cloud.flush();
    expect(device.value()).toBe('Reprovisioning');
    return { cloud, device, busyUntil };
  }

  test('a registration throttled for 1 s inside the wait retries at the end of the wait', async () => {
    const { cloud, device, busyUntil } = await registeringWhileDpsBusy();
    const failedAt = cloud.clock.now();
    await cloud.failProvision(cloud.failure('throttled', { rule: 'throttled-429', retryAfterMs: 1000 }, 'dps'));
    expect(device.context()).toMatchObject({ retryStep: 'Reprovisioning', retryAt: busyUntil });
    expect(device.context().delayMs).toBeCloseTo(busyUntil - failedAt, 3); // epoch-ms floats: ~2e-4 ms apart
  });

  test('a registration throttled past the wait keeps its own retry-after', async () => {
    const { cloud, device, busyUntil } = await registeringWhileDpsBusy();
    const failedAt = cloud.clock.now();
    await cloud.failProvision(cloud.failure('throttled', { rule: 'throttled-429', retryAfterMs: 600_000 }, 'dps'));
    const { retryAt, delayMs } = device.context();
    expect(delayMs).toBeGreaterThanOrEqual(600_000);
    expect(retryAt).toBe(failedAt + delayMs!);
    expect(retryAt).toBeGreaterThan(busyUntil);
  });

  test('without a wait, a DPS retry is the policy\'s alone', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud);
    await cloud.flush();
    const failedAt = cloud.clock.now();
    await cloud.failProvision(cloud.failure('throttled', { rule: 'throttled-429', retryAfterMs: 1000 }, 'dps'));
    const { retryAt, delayMs } = device.context();
    expect(delayMs).toBeGreaterThanOrEqual(1000);
    expect(delayMs).toBeLessThanOrEqual(2000);
    expect(retryAt).toBe(failedAt + delayMs!);
  });

  test('a registration adopted ends the wait and the pending registration', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: { ...policy, hubRetryWindowMs: 60_000, hubRetryWindowMaxMs: 60_000 } });
    await cloud.flush();
    await cloud.failOpen(unauthorized(cloud));
    await cloud.failLookup(cloud.failure('throttled', { rule: 'throttled-429', retryAfterMs: 60_000 }, 'dps-lookup'));
    await cloud.advance(device.context().delayMs!);
    await cloud.failOpen(unauthorized(cloud));
    await cloud.failLookup(cloud.failure('throttled', { rule: 'throttled-429', retryAfterMs: 60_000 }, 'dps-lookup'));
    expect(device.context()).toMatchObject({ registerWhenDpsFree: true });
    await cloud.advance(device.context().delayMs!);
    await cloud.failOpen(unauthorized(cloud));
    expect(device.value()).toBe('Reprovisioning');
    await cloud.assign();
    expect(device.context()).toMatchObject({ registerWhenDpsFree: false, dpsBusyUntil: null });
  });
});

describe('attempt counters are bounded', () => {
  /** A step that fails for ever: where it is retried, and how it fails. */
  interface EndlessFault {
    counter: 'hubAttempts' | 'dpsAttempts';
    cached: boolean;
    step: 'Connecting' | 'Provisioning';
    fail(cloud: FakeCloud): Promise<void>;
  }
  const faults: Array<[string, EndlessFault]> = [
    ['a hub busy for ever (CONNACK 3)', { counter: 'hubAttempts', cached: true, step: 'Connecting', fail: (cloud) => cloud.failOpen(cloud.failure('transient', { rule: 'connack-3', serverBusy: true })) }],
    ['a DPS throttling for ever', { counter: 'dpsAttempts', cached: false, step: 'Provisioning', fail: (cloud) => cloud.failProvision(cloud.failure('throttled', { rule: 'throttled-429' }, 'dps')) }],
  ];

  test.each(faults)('%s: the count stops at the largest budget a policy may set', async (_what, fault) => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: fault.cached });
    await cloud.flush();
    await fault.fail(cloud);
    // Years of failures, as a persisted snapshot one short of the bound.
    const persisted = JSON.parse(JSON.stringify(device.actor.getPersistedSnapshot()));
    persisted.context[fault.counter] = POLICY_BOUNDS.maxHubAttempts - 1;
    device.actor.stop();
    const revived = new FakeCloud(cloud.clock.now());
    const restored = createActor(revived.machine(), { clock: revived.clock, snapshot: persisted, input: undefined as never });
    restored.start();
    for (let i = 0; i < 3; i++) {
      await revived.advance(restored.getSnapshot().context.delayMs!);
      expect(leafStateName(restored.getSnapshot().value)).toBe(fault.step);
      await fault.fail(revived);
      expect(leafStateName(restored.getSnapshot().value)).toBe('BackingOff');
      expect(restored.getSnapshot().context[fault.counter]).toBe(POLICY_BOUNDS.maxHubAttempts);
    }
    restored.stop();
  });
});
