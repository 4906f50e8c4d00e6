/**
 * An hour of one fault, on the simulated clock with the default policy: a device disabled on its
 * hub (every connect refused with CONNACK 3 or 5, the assignment in doubt), DPS answering that it
 * still belongs there. Counts what the fleet operator pays for it: lookups, registrations and hub
 * attempts per hour. The resilience policy v2 issue asks for a parked, much rarer retry; these
 * figures pin today's bounds so that work can only lower them.
 */
import { createActor } from 'xstate';
import { DEFAULT_POLICY } from '../../src/policy/backoff';
import { FakeCloud } from '../support/fake-actors';

const HOUR_MS = 3_600_000;
const REGISTRATIONS_PER_HOUR_TODAY = { 3: 20, 5: 90 } as const;

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
      ...(refusalCode === 3 ? { minDelayMs: 5000 } : {}),
    });
  while (cloud.clock.now() - start < HOUR_MS) {
    const snapshot = actor.getSnapshot();
    if (cloud.opens.length) await cloud.failOpen(refusal());
    else if (cloud.lookups.length) await cloud.answerLookup();
    else if (cloud.provisions.length) await cloud.assign();
    else if (snapshot.value === 'BackingOff') await cloud.advance(Math.max(0, snapshot.context.retryAt! - cloud.clock.now()));
    else throw new Error(`stuck in ${String(snapshot.value)}`);
  }
  const state = actor.getSnapshot().value;
  actor.stop();
  return { lookups: cloud.calls.lookupAssignment, registrations: cloud.calls.provision, hubAttempts: cloud.calls.openHub, state };
}

test.each([3, 5] as const)('disabled device, refusal code %i, one hour: bounded lookups, registrations and hub attempts, never Failed', async (code) => {
  const perHour = await anHourRefused(code);
  console.log(`one hour refused with CONNACK ${code}: ${JSON.stringify(perHour)}`);
  expect(perHour.state).not.toBe('Failed');
  // One lookup per run on a hub the device worked on; a fresh DPS assignment is not looked up.
  expect(perHour.lookups).toBe(1);
  // Today's figures (seed 7): code 3 → 18 registrations/h (one per spent hub budget); code 5 →
  // 81/h, a fresh assignment refused as unauthorized re-registers on the DPS curve (≤ 60 s apart).
  // The second is the defect the resilience policy v2 issue removes (a parked retry, DPS at most
  // every 15-30 min); these bounds only keep it from getting worse until then.
  expect(perHour.registrations).toBeLessThanOrEqual(REGISTRATIONS_PER_HOUR_TODAY[code]);
  // Never faster than the capped curve allows on average (≥ 1 s apart even at the start).
  expect(perHour.hubAttempts).toBeLessThanOrEqual(HOUR_MS / 10_000);
});
