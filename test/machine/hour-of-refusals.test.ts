/**
 * An hour of one fault, on the simulated clock with the default policy: a device disabled on its
 * hub (every connect refused with CONNACK 3 or 5, the assignment in doubt), DPS answering that it
 * still belongs there. Counts what the fleet operator pays for it: lookups, registrations and hub
 * attempts per hour (seed 004: stay on the hub, at least a minute between retries; a device an
 * operator must fix is parked instead of registering every minute).
 */
import { createActor, type ActorRefFrom } from 'xstate';
import { leafStateName } from '../../machines/device.machine';
import { DEFAULT_POLICY } from '../../src/policy/backoff';
import { FakeCloud } from '../support/fake-actors';

const HOUR_MS = 3_600_000;
/** Code 3: DPS confirmed the hub, so it is a busy hub: never a reason to register. Code 5: three quick re-registrations, then parked (15-30 min). */
const MAX_REGISTRATIONS_PER_HOUR = { 3: 0, 5: 7 } as const;
/** Three quick retries, then at least a minute apart. */
const MAX_HUB_ATTEMPTS_PER_HOUR = 3 + 60;

async function anHourRefused(refusalCode: 3 | 5) {
  const cloud = new FakeCloud();
  const actor = createActor(cloud.machine(), {
    clock: cloud.clock,
    input: {
      registrationId: 'dev-1',
      policy: DEFAULT_POLICY,
      seed: 7,
      cachedAssignment: { hubHost: cloud.hub.hubHost, deviceId: 'dev-1', assignedAt: 1 },
    },
  });
  actor.start();
  actor.send({ type: 'START' });
  await cloud.flush();
  const start = cloud.clock.now();
  const refusal = () =>
    cloud.failure(refusalCode === 3 ? 'transient' : 'reprovision', {
      rule: refusalCode === 3 ? 'connack-3-hub-unavailable' : 'connack-5-after-connect',
      assignmentInDoubt: true,
      code: refusalCode,
      ...(refusalCode === 3 ? { minDelayMs: 5000, serverBusy: true as const } : {}),
    });
  while (cloud.clock.now() - start < HOUR_MS) {
    const snapshot = actor.getSnapshot();
    if (cloud.opens.length) await cloud.failOpen(refusal());
    else if (cloud.lookups.length) await cloud.answerLookup();
    else if (cloud.provisions.length) await cloud.assign();
    else if (leafStateName(snapshot.value) === 'BackingOff') await cloud.advance(Math.max(0, snapshot.context.retryAt! - cloud.clock.now()));
    else throw new Error(`stuck in ${leafStateName(snapshot.value)}`);
  }
  const state = leafStateName(actor.getSnapshot().value);
  actor.stop();
  return { lookups: cloud.calls.lookupAssignment, registrations: cloud.calls.provision, hubAttempts: cloud.calls.openHub, state };
}

test.each([3, 5] as const)('disabled device, refusal code %i, one hour: bounded lookups, registrations and hub attempts, never Failed', async (code) => {
  const perHour = await anHourRefused(code);
  console.log(`one hour refused with CONNACK ${code}: ${JSON.stringify(perHour)}`);
  expect(perHour.state).not.toBe('Failed');
  // A hub the device worked on is looked up at the first refusal, and again once per hub window
  // while the refusals last (DPS may have moved it after answering); a fresh assignment never.
  expect(perHour.lookups).toBeGreaterThanOrEqual(1);
  expect(perHour.lookups).toBeLessThanOrEqual(1 + HOUR_MS / DEFAULT_POLICY.hubRetryWindowMs);
  expect(perHour.registrations).toBeLessThanOrEqual(MAX_REGISTRATIONS_PER_HOUR[code]);
  expect(perHour.hubAttempts).toBeLessThanOrEqual(MAX_HUB_ATTEMPTS_PER_HOUR);
});

test('a flapping hub (accepts, drops half a second later), one hour: no sub-second hammering, DPS only when the window is spent', async () => {
  const cloud = new FakeCloud();
  const actor = createActor(cloud.machine(), {
    clock: cloud.clock,
    input: { registrationId: 'dev-1', policy: DEFAULT_POLICY, seed: 11, cachedAssignment: { hubHost: cloud.hub.hubHost, deviceId: 'dev-1', assignedAt: 1 } },
  });
  actor.start();
  actor.send({ type: 'START' });
  await cloud.flush();
  const start = cloud.clock.now();
  let sessions = 0;
  while (cloud.clock.now() - start < HOUR_MS) {
    const snapshot = actor.getSnapshot();
    if (cloud.opens.length) {
      await cloud.connect();
      sessions++;
      await cloud.advance(500);
      const epoch = actor.getSnapshot().context.epoch;
      cloud.sessions.get(epoch)?.({ type: 'HUB_LOST', epoch, failure: cloud.failure('transient', { rule: 'connection-lost' }, 'hub-session') });
      await cloud.flush();
    } else if (cloud.provisions.length) await cloud.assign();
    else if (cloud.lookups.length) await cloud.answerLookup();
    else if (leafStateName(snapshot.value) === 'BackingOff') await cloud.advance(Math.max(0, snapshot.context.retryAt! - cloud.clock.now()));
    else throw new Error(`stuck in ${leafStateName(snapshot.value)}`);
  }
  actor.stop();
  const perHour = { sessions, registrations: cloud.calls.provision, lookups: cloud.calls.lookupAssignment };
  console.log(`one hour of a flapping hub: ${JSON.stringify(perHour)}`);
  // A session that ends before stableConnectionMs is the next attempt on the curve: quick retries,
  // then at least a minute apart; the 15-minute window sends the device to DPS (≤ 4 per hour).
  expect(perHour.sessions).toBeLessThanOrEqual(4 * (3 + 15));
  expect(perHour.registrations).toBeLessThanOrEqual(4);
  expect(perHour.registrations).toBeGreaterThanOrEqual(1);
  // Failing for a minute counts as unreachable: DPS is asked once per failure run (it says: same hub).
  expect(perHour.lookups).toBeLessThanOrEqual(perHour.registrations + 1);
});

/** Refuses every connect (waiting out each backoff) until the device asks DPS; fails after two hub windows. */
async function refuseUntilLookup(actor: ActorRefFrom<ReturnType<FakeCloud['machine']>>, cloud: FakeCloud, refusal: () => ReturnType<FakeCloud['failure']>, since: number) {
  while (!cloud.lookups.length) {
    const snapshot = actor.getSnapshot();
    if (cloud.opens.length) await cloud.failOpen(refusal());
    else if (leafStateName(snapshot.value) === 'BackingOff') await cloud.advance(Math.max(0, snapshot.context.retryAt! - cloud.clock.now()));
    else throw new Error(`stuck in ${leafStateName(snapshot.value)}`);
    if (cloud.clock.now() - since > 2 * DEFAULT_POLICY.hubRetryWindowMs) throw new Error('never asked DPS again');
  }
}

test('moved after DPS confirmed the hub: the refusals outlast one hub window, DPS is asked again and the device moves', async () => {
  const cloud = new FakeCloud();
  const actor = createActor(cloud.machine(), {
    clock: cloud.clock,
    input: { registrationId: 'dev-1', policy: DEFAULT_POLICY, seed: 7, cachedAssignment: { hubHost: cloud.hub.hubHost, deviceId: 'dev-1', assignedAt: 1 } },
  });
  actor.start();
  actor.send({ type: 'START' });
  await cloud.flush();
  const refusal = () => cloud.failure('transient', { rule: 'connack-3-hub-unavailable', assignmentInDoubt: true, code: 3, minDelayMs: 5000, serverBusy: true });
  await cloud.failOpen(refusal());
  await cloud.answerLookup(); // DPS still says this hub; a failover moves the device right after
  const confirmedAt = cloud.clock.now();
  const lookupsBefore = cloud.calls.lookupAssignment;
  await refuseUntilLookup(actor, cloud, refusal, confirmedAt);
  expect(cloud.clock.now() - confirmedAt).toBeGreaterThanOrEqual(DEFAULT_POLICY.hubRetryWindowMs);
  expect(cloud.calls.lookupAssignment).toBe(lookupsBefore + 1); // the second lookup, pending now
  expect(cloud.calls.provision).toBe(0);
  await cloud.answerLookup('hub-b.local:8883');
  expect(actor.getSnapshot().context.assignment?.hubHost).toBe('hub-b.local:8883');
  expect(leafStateName(actor.getSnapshot().value)).toBe('Connecting');
  actor.stop();
});

test('moved before its fresh assignment ever worked: busy refusals for one hub window, then DPS is asked where it belongs', async () => {
  const cloud = new FakeCloud();
  const actor = createActor(cloud.machine(), { clock: cloud.clock, input: { registrationId: 'dev-1', policy: DEFAULT_POLICY, seed: 7 } });
  actor.start();
  actor.send({ type: 'START' });
  await cloud.assign(); // DPS assigns hub A; a failover moves the device before it connects
  const refusal = () => cloud.failure('transient', { rule: 'connack-3-hub-unavailable', assignmentInDoubt: true, code: 3, minDelayMs: 5000, serverBusy: true });
  const firstRefusalAt = cloud.clock.now();
  await refuseUntilLookup(actor, cloud, refusal, firstRefusalAt);
  // Not at the first refusal (a fresh assignment is not second-guessed at once), but within a window and a retry.
  expect(cloud.clock.now() - firstRefusalAt).toBeGreaterThanOrEqual(DEFAULT_POLICY.hubRetryWindowMs);
  expect(cloud.calls.provision).toBe(1);
  await cloud.answerLookup('hub-b.local:8883');
  expect(actor.getSnapshot().context.assignment?.hubHost).toBe('hub-b.local:8883');
  expect(leafStateName(actor.getSnapshot().value)).toBe('Connecting');
  actor.stop();
});
