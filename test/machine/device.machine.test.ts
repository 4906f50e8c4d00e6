import { setFlagsFromString } from 'node:v8';
import { createActor } from 'xstate';
import { leafStateName, type DeviceContext } from '../../machines/device.machine';
import { expectParkedThenRegistersAgain, FakeCloud, MACHINE_TEST_POLICY, startMachine as start } from '../support/fake-actors';

const policy = MACHINE_TEST_POLICY;


async function connectFresh(cloud: FakeCloud, options?: Parameters<typeof start>[1]) {
  const device = start(cloud, options);
  await cloud.flush();
  await cloud.assign();
  await cloud.connect();
  return device;
}

function refusedAsMoved(cloud: FakeCloud, phase: 'hub-connect' | 'hub-session' = 'hub-connect') {
  return cloud.failure('transient', { rule: 'connack-3-hub-unavailable', minDelayMs: 5000, serverBusy: true, assignmentInDoubt: true, code: 3 }, phase);
}

function refusedAsUnauthorized(cloud: FakeCloud) {
  return cloud.failure('reprovision', { rule: 'connack-5-after-connect', assignmentInDoubt: true, code: 5 });
}

/** Every field of the machine's context, in initialContext's order (`satisfies`: none left out). */
const CONTEXT_FIELDS = {
  registrationId: true,
  policy: true,
  assignment: true,
  epoch: true,
  dpsAttempts: true,
  hubAttempts: true,
  firstFailureAt: true,
  lastError: true,
  retryAfterMs: true,
  delayMs: true,
  retryAt: true,
  retryStep: true,
  rngState: true,
  connectedAt: true,
  connectionStable: true,
  assignmentProven: true,
  assignmentConfirmed: true,
  assignmentConfirmedAt: true,
  sameHubAnswers: true,
  dpsBusyUntil: true,
  registerWhenDpsFree: true,
  failedLookups: true,
  dpsRestUntil: true,
  lookupAtBoot: true,
  reprovisionRequested: true,
} satisfies Record<keyof DeviceContext, true>;

describe('device machine with fake actors and a simulated clock', () => {
  test('first boot: Idle → Provisioning → Connecting → Connected, and the assignment is cached', async () => {
    const cloud = new FakeCloud();
    const device = await connectFresh(cloud);
    expect(device.states).toEqual(['Idle', 'Provisioning', 'Connecting', 'Connected']);
    expect(device.context().assignment).toMatchObject({ hubHost: 'hub-a.local', deviceId: 'dev-1', source: 'dps' });
    expect(cloud.calls.saveAssignment).toBe(1);
  });

  test('every context stays a compact object through XState\'s assigns (a V8 dictionary costs 1.6 KB a device)', async () => {
    setFlagsFromString('--allow-natives-syntax');
    const hasFastProperties = new Function('object', 'return %HasFastProperties(object)') as (object: object) => boolean;
    const cloud = new FakeCloud();
    const device = start(cloud);
    const contexts = [device.context()];
    const step = async (act: () => Promise<unknown>) => {
      await act();
      contexts.push(device.context());
    };
    await step(() => cloud.flush());
    await step(() => cloud.assign());
    await step(() => cloud.connect());
    cloud.sessions.get(1)!({ type: 'HUB_LOST', epoch: 1, failure: cloud.failure('transient', {}, 'hub-session') });
    await step(() => cloud.flush());
    await step(() => cloud.advance(device.context().delayMs!));
    await step(() => cloud.connect());
    expect(device.states).toEqual(['Idle', 'Provisioning', 'Connecting', 'Connected', 'BackingOff', 'Connecting', 'Connected']);
    // Each assign made a new context: all of them compact.
    expect(new Set(contexts).size).toBeGreaterThanOrEqual(5);
    expect(contexts.map(hasFastProperties)).toEqual(contexts.map(() => true));
    // initialContext sets every field (the type cannot tell: it is built by stores), in this order.
    expect(Object.keys(contexts[0]!)).toEqual(Object.keys(CONTEXT_FIELDS));
  });

  test('a cached assignment goes straight to Connecting without DPS', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true });
    await cloud.flush();
    expect(device.value()).toBe('Connecting');
    expect(cloud.opens[0].input).toMatchObject({ assignment: { hubHost: 'cached-hub.local', source: 'cache' }, epoch: 1 });
    await cloud.connect();
    expect(device.value()).toBe('Connected');
    expect(cloud.calls.provision).toBe(0);
  });

  test('first retry after losing a working connection waits at most 1 s, to the exact deadline', async () => {
    const cloud = new FakeCloud();
    const device = await connectFresh(cloud);
    const lostAt = cloud.clock.now();
    cloud.sessions.get(1)!({ type: 'HUB_LOST', epoch: 1, failure: cloud.failure('transient', {}, 'hub-session') });
    await cloud.flush();
    expect(device.value()).toBe('BackingOff');
    const { delayMs, retryAt } = device.context();
    expect(delayMs).toBeGreaterThanOrEqual(0);
    expect(delayMs).toBeLessThanOrEqual(1000);
    expect(retryAt).toBe(lostAt + delayMs!);
    if (delayMs! > 0) {
      await cloud.advance(delayMs! - 1);
      expect(device.value()).toBe('BackingOff');
    }
    await cloud.advance(1);
    expect(device.value()).toBe('Connecting');
    expect(cloud.opens[0].input).toMatchObject({ assignment: { hubHost: 'hub-a.local' }, epoch: 2 });
  });

  test('transient connect failures back off exponentially on the same hub, then reprovision after maxHubAttempts', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true });
    await cloud.flush();
    const delays: number[] = [];
    for (let attempt = 1; attempt < policy.maxHubAttempts; attempt++) {
      await cloud.failOpen(cloud.failure('transient'));
      expect(device.value()).toBe('BackingOff');
      const { delayMs } = device.context();
      const cap = Math.min(policy.maxDelayMs, policy.minDelayMs * 2 ** (attempt - 1));
      expect(delayMs).toBeGreaterThanOrEqual(cap / 2);
      expect(delayMs).toBeLessThanOrEqual(cap);
      delays.push(delayMs!);
      await cloud.advance(delayMs!);
      expect(device.value()).toBe('Connecting');
    }
    await cloud.failOpen(cloud.failure('transient'));
    expect(device.value()).toBe('Reprovisioning');
    // The old assignment stays until DPS answers with a new one (the fallback if DPS fails).
    expect(device.context().assignment).toMatchObject({ hubHost: 'cached-hub.local' });
    expect(cloud.calls.provision).toBe(1);
    expect(delays).toHaveLength(policy.maxHubAttempts - 1);
  });

  test('the hub retry window ends the stay on a hub even before the attempt budget', async () => {
    const cloud = new FakeCloud();
    const windowed = { ...policy, maxHubAttempts: 100, hubRetryWindowMs: 10_000, maxDelayMs: 8_000 };
    const device = start(cloud, { cached: true, policy: windowed });
    await cloud.flush();
    let attempts = 0;
    while (device.value() !== 'Reprovisioning') {
      await cloud.failOpen(cloud.failure('transient'));
      attempts++;
      if (device.value() === 'BackingOff') await cloud.advance(device.context().delayMs!);
    }
    expect(attempts).toBeLessThan(10);
    expect(device.context().lastError?.at).toBeGreaterThanOrEqual(1_700_000_000_000 + 10_000);
  });

  test('the reprovision class (device disabled / moved) leaves the hub at once', async () => {
    const cloud = new FakeCloud();
    const device = await connectFresh(cloud);
    cloud.sessions.get(1)!({ type: 'HUB_LOST', epoch: 1, failure: cloud.failure('reprovision', {}, 'hub-session') });
    await cloud.flush();
    expect(device.value()).toBe('Reprovisioning');
    cloud.hub = { hubHost: 'hub-b.local', deviceId: 'dev-1' };
    await cloud.assign();
    await cloud.connect();
    expect(device.states).toEqual(['Idle', 'Provisioning', 'Connecting', 'Connected', 'Reprovisioning', 'Connecting', 'Connected']);
    expect(device.context().assignment?.hubHost).toBe('hub-b.local');
  });

  test('throttled DPS honours retry-after: never earlier, jitter on top', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud);
    await cloud.flush();
    const failedAt = cloud.clock.now();
    await cloud.failProvision(cloud.failure('throttled', { retryAfterMs: 3000 }, 'dps'));
    expect(device.value()).toBe('BackingOff');
    const { delayMs, retryAt } = device.context();
    expect(delayMs).toBeGreaterThanOrEqual(3000);
    expect(delayMs).toBeLessThanOrEqual(3000 + policy.retryAfterJitterMs);
    expect(retryAt).toBe(failedAt + delayMs!);
    await cloud.advance(2999);
    expect(device.value()).toBe('BackingOff');
    expect(cloud.calls.provision).toBe(1);
    await cloud.advance(delayMs! - 2999);
    expect(device.value()).toBe('Provisioning');
    expect(cloud.calls.provision).toBe(2);
  });

  test('a fatal DPS error ends in Failed; RETRY goes back to Provisioning', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud);
    await cloud.flush();
    await cloud.failProvision(cloud.failure('fatal', { rule: 'dps-401' }, 'dps'));
    expect(device.value()).toBe('Failed');
    expect(device.context().lastError?.rule).toBe('dps-401');
    await cloud.advance(24 * 3600_000);
    expect(cloud.calls.provision).toBe(1);
    device.actor.send({ type: 'RETRY' });
    await cloud.flush();
    expect(device.value()).toBe('Provisioning');
  });

  test('a HUB_LOST from an older epoch is ignored', async () => {
    const cloud = new FakeCloud();
    const device = await connectFresh(cloud);
    device.actor.send({ type: 'HUB_LOST', epoch: 0, failure: cloud.failure('reprovision', {}, 'hub-session') });
    await cloud.flush();
    expect(device.value()).toBe('Connected');
  });

  test('REPROVISION is accepted in Connected and in BackingOff', async () => {
    const cloud = new FakeCloud();
    const device = await connectFresh(cloud);
    device.actor.send({ type: 'REPROVISION' });
    await cloud.flush();
    expect(device.value()).toBe('Reprovisioning');
    await cloud.failProvision(cloud.failure('transient', {}, 'dps'));
    expect(device.value()).toBe('BackingOff');
    device.actor.send({ type: 'REPROVISION' });
    await cloud.flush();
    expect(device.value()).toBe('Reprovisioning');
  });

  test('STOP in BackingOff and in Provisioning ends in Stopped through Disconnecting', async () => {
    const cloud = new FakeCloud();
    const provisioning = start(cloud);
    await cloud.flush();
    provisioning.actor.send({ type: 'STOP' });
    await cloud.flush();
    expect(provisioning.states.slice(-2)).toEqual(['Disconnecting', 'Stopped']);
    expect(provisioning.actor.getSnapshot().status).toBe('done');

    const cloud2 = new FakeCloud();
    const backingOff = start(cloud2, { cached: true });
    await cloud2.flush();
    await cloud2.failOpen(cloud2.failure('transient'));
    expect(backingOff.value()).toBe('BackingOff');
    backingOff.actor.send({ type: 'STOP' });
    await cloud2.flush();
    expect(backingOff.states.slice(-3)).toEqual(['BackingOff', 'Disconnecting', 'Stopped']);
    await cloud2.advance(120_000);
    expect(cloud2.calls.openHub).toBe(1);
  });

  test('STOP in Connected leaves Active: the hub session and the stable-connection wait stop, then the hub is closed', async () => {
    const cloud = new FakeCloud();
    const device = await connectFresh(cloud);
    expect(device.actor.getSnapshot().value).toEqual({ Active: 'Connected' });
    expect(cloud.sessions.size).toBe(1);
    device.actor.send({ type: 'STOP' });
    await cloud.flush();
    expect(device.states.slice(-3)).toEqual(['Connected', 'Disconnecting', 'Stopped']);
    expect(cloud.sessions.size).toBe(0);
    expect(cloud.calls.closeHub).toBe(1);
    // The stable-connection wait was cancelled with its state: it never marks the connection stable.
    await cloud.advance(policy.stableConnectionMs);
    expect(device.context().connectionStable).toBe(false);
  });

  test('STOP in a registration or a connect cancels it: its late outcome changes nothing', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud);
    await cloud.flush();
    device.actor.send({ type: 'STOP' });
    await cloud.flush();
    expect(cloud.provisions[0].aborted).toBe(true);
    await cloud.assign();
    expect(device.value()).toBe('Stopped');
    expect(cloud.calls.saveAssignment).toBe(0);

    const cloud2 = new FakeCloud();
    const connecting = start(cloud2, { cached: true });
    await cloud2.flush();
    connecting.actor.send({ type: 'STOP' });
    await cloud2.flush();
    expect(cloud2.opens[0].aborted).toBe(true);
    expect(connecting.states).toEqual(['Idle', 'Connecting', 'Disconnecting', 'Stopped']);
  });

  test('STOP outside Active (Idle, Failed) stops at once: nothing is open to close', async () => {
    const cloud = new FakeCloud();
    const idle = createActor(cloud.machine(), { clock: cloud.clock, input: { registrationId: 'dev-1', policy, seed: 1 } });
    idle.start();
    idle.send({ type: 'STOP' });
    expect(idle.getSnapshot().value).toBe('Stopped');

    const failed = start(cloud);
    await cloud.flush();
    await cloud.failProvision(cloud.failure('fatal', {}, 'dps'));
    expect(failed.value()).toBe('Failed');
    failed.actor.send({ type: 'STOP' });
    await cloud.flush();
    expect(failed.states.slice(-2)).toEqual(['Failed', 'Stopped']);
    expect(cloud.calls.closeHub).toBe(0);
  });

  test('REPROVISION during a registration is swallowed: the one under way goes on, no second registration', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud);
    await cloud.flush();
    device.actor.send({ type: 'REPROVISION' });
    await cloud.flush();
    expect(device.value()).toBe('Provisioning');
    expect(cloud.calls.provision).toBe(1);
    expect(cloud.provisions[0].aborted).toBe(false);

    await cloud.assign();
    await cloud.connect();
    device.actor.send({ type: 'REPROVISION' });
    await cloud.flush();
    expect(device.value()).toBe('Reprovisioning');
    device.actor.send({ type: 'REPROVISION' });
    await cloud.flush();
    expect(device.value()).toBe('Reprovisioning');
    expect(cloud.calls.provision).toBe(2);
    expect(cloud.provisions.filter((p) => !p.aborted)).toHaveLength(1);
  });

  test('Failed accepts REPROVISION (to DPS) and RETRY; Disconnecting ignores REPROVISION and a second STOP', async () => {
    const cloud = new FakeCloud();
    cloud.parkCloses = true;
    const device = start(cloud);
    await cloud.flush();
    await cloud.failProvision(cloud.failure('fatal', {}, 'dps'));
    device.actor.send({ type: 'REPROVISION' });
    await cloud.flush();
    expect(device.value()).toBe('Reprovisioning');
    expect(device.context().reprovisionRequested).toBe(true);

    device.actor.send({ type: 'STOP' });
    await cloud.flush();
    expect(device.value()).toBe('Disconnecting');
    device.actor.send({ type: 'REPROVISION' });
    device.actor.send({ type: 'STOP' });
    await cloud.flush();
    expect(device.value()).toBe('Disconnecting');
    expect(cloud.calls.closeHub).toBe(1);
    cloud.closes[0].resolve();
    await cloud.flush();
    expect(device.value()).toBe('Stopped');
  });

  test('a snapshot persisted in BackingOff resumes and fires at the original deadline', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true });
    await cloud.flush();
    await cloud.failOpen(cloud.failure('transient'));
    const { retryAt } = device.context();
    const persisted = JSON.parse(JSON.stringify(device.actor.getPersistedSnapshot()));
    device.actor.stop();

    // A new process: its own clock, 400 ms of the wait already gone.
    const revived = new FakeCloud(cloud.clock.now() + 400);
    const restored = createActor(revived.machine(), { clock: revived.clock, snapshot: persisted, input: undefined as never });
    restored.start();
    await revived.flush();
    expect(leafStateName(restored.getSnapshot().value)).toBe('BackingOff');
    const remaining = retryAt! - revived.clock.now();
    if (remaining > 0) {
      await revived.advance(remaining - 1);
      expect(leafStateName(restored.getSnapshot().value)).toBe('BackingOff');
    }
    await revived.advance(1);
    expect(leafStateName(restored.getSnapshot().value)).toBe('Connecting');
    expect(revived.clock.now()).toBe(Math.max(retryAt!, cloud.clock.now() + 400));
  });

  test('the same seed gives the same delays; another seed gives others', async () => {
    async function delaysFor(seed: number) {
      const cloud = new FakeCloud();
      const device = start(cloud, { cached: true, seed, policy: { ...policy, maxHubAttempts: 8 } });
      await cloud.flush();
      const delays: number[] = [];
      for (let i = 0; i < 6; i++) {
        await cloud.failOpen(cloud.failure('transient'));
        delays.push(device.context().delayMs!);
        await cloud.advance(device.context().delayMs!);
      }
      return delays;
    }
    expect(await delaysFor(7)).toEqual(await delaysFor(7));
    expect(await delaysFor(7)).not.toEqual(await delaysFor(8));
  });

  test('the seed-sample baseline reprovisions after every loss, with a fixed wait', async () => {
    const cloud = new FakeCloud();
    const device = await connectFresh(cloud, { policy: { ...policy, fixedDelayMs: 90_000, reprovisionOnLoss: true } });
    cloud.sessions.get(1)!({ type: 'HUB_LOST', epoch: 1, failure: cloud.failure('transient', {}, 'hub-session') });
    await cloud.flush();
    expect(device.value()).toBe('BackingOff');
    expect(device.context().delayMs).toBe(90_000);
    await cloud.advance(89_999);
    expect(device.value()).toBe('BackingOff');
    await cloud.advance(1);
    expect(device.value()).toBe('Reprovisioning');
  });
});

describe('no registration storm', () => {
  test('a hub that refuses a fresh DPS assignment sends the device back to DPS only after a growing backoff', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud);
    await cloud.flush();
    const waits: number[] = [];
    for (let round = 0; round < 4; round++) {
      await cloud.assign();
      expect(device.value()).toBe('Connecting');
      await cloud.failOpen(cloud.failure('reprovision', { rule: 'connack-5-first-connect' }));
      expect(device.value()).toBe('BackingOff');
      expect(device.context().retryStep).toBe('Reprovisioning');
      waits.push(device.context().delayMs!);
      await cloud.advance(device.context().delayMs!);
      expect(device.value()).toBe('Reprovisioning');
    }
    expect(cloud.calls.provision).toBe(5);
    // exponential caps 1 s, 2 s, 4 s, 8 s with delays in [cap/2, cap]
    waits.forEach((wait, i) => {
      expect(wait).toBeGreaterThanOrEqual(500 * 2 ** i);
      expect(wait).toBeLessThanOrEqual(1000 * 2 ** i);
    });
  });

  test('a cached (proven) assignment refused by its hub reprovisions at once', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true });
    await cloud.flush();
    await cloud.failOpen(cloud.failure('reprovision'));
    expect(device.value()).toBe('Reprovisioning');
  });

  describe('a refusal that puts the assignment in doubt asks DPS where the device belongs (status lookup)', () => {

    test('refused after a drop: lookup at once, DPS names another hub → connect there, cache saved, no registration', async () => {
      const cloud = new FakeCloud();
      const device = start(cloud, { cached: true });
      await cloud.flush();
      await cloud.connect();
      cloud.sessions.get(device.context().epoch)!({ type: 'HUB_LOST', epoch: device.context().epoch, failure: cloud.failure('transient', {}, 'hub-session') });
      await cloud.flush();
      expect(device.context().delayMs).toBeLessThanOrEqual(policy.firstRetryMaxMs);
      await cloud.advance(policy.firstRetryMaxMs);
      await cloud.failOpen(refusedAsMoved(cloud));
      expect(device.value()).toBe('CheckingAssignment');
      expect(cloud.lookups).toHaveLength(1);
      const refusedAt = cloud.clock.now();
      await cloud.answerLookup('hub-b.local');
      expect(device.value()).toBe('Connecting');
      expect(cloud.clock.now()).toBe(refusedAt); // no wait between the refusal, the lookup and the new hub
      expect(cloud.opens[0].input).toMatchObject({ assignment: { hubHost: 'hub-b.local', source: 'dps' } });
      expect(cloud.calls.saveAssignment).toBe(1);
      await cloud.connect();
      expect(device.states).toEqual(['Idle', 'Connecting', 'Connected', 'BackingOff', 'Connecting', 'CheckingAssignment', 'Connecting', 'Connected']);
      expect(cloud.calls.provision).toBe(0);
    });

    test('DPS names the same hub: the hub is busy → back off on it (its 5 s floor), and the next refusal is not looked up again', async () => {
      const cloud = new FakeCloud();
      const device = start(cloud, { cached: true });
      await cloud.flush();
      await cloud.failOpen(refusedAsMoved(cloud));
      await cloud.answerLookup('cached-hub.local');
      expect(device.value()).toBe('BackingOff');
      expect(device.context()).toMatchObject({ assignmentConfirmed: true, hubAttempts: 1, retryStep: 'Connecting' });
      expect(device.context().delayMs).toBeGreaterThanOrEqual(5000);
      await cloud.advance(device.context().delayMs!);
      expect(device.value()).toBe('Connecting');
      await cloud.failOpen(refusedAsMoved(cloud));
      expect(device.value()).toBe('BackingOff');
      expect(cloud.calls.lookupAssignment).toBe(1);
      expect(cloud.calls.provision).toBe(0);
      await cloud.advance(device.context().delayMs!);
      await cloud.connect();
      expect(device.context().assignmentConfirmed).toBe(true); // accepted, but not yet a success
      await cloud.advance(policy.stableConnectionMs);
      expect(device.context()).toMatchObject({ assignmentConfirmed: false, hubAttempts: 0, connectionStable: true }); // lasted: the run is over
    });
  });

  describe('a connection is a success only once it has lasted (stableConnectionMs)', () => {
    test('a hub that accepts and drops at once: each short session is the next attempt on the curve, and the budget is spent', async () => {
      const cloud = new FakeCloud();
      const flapping = { ...policy, maxHubAttempts: 4, quickRetries: 10 };
      const device = start(cloud, { cached: true, policy: flapping });
      await cloud.flush();
      const delays: number[] = [];
      for (let session = 1; session <= 3; session++) {
        await cloud.connect();
        await cloud.advance(500); // dropped half a second after CONNACK, long before 30 s
        const epoch = device.context().epoch;
        cloud.sessions.get(epoch)!({ type: 'HUB_LOST', epoch, failure: cloud.failure('transient', {}, 'hub-session') });
        await cloud.flush();
        expect(device.value()).toBe('BackingOff');
        expect(device.context().hubAttempts).toBe(session);
        delays.push(device.context().delayMs!);
        await cloud.advance(device.context().delayMs!);
      }
      // No sub-second "first retry after a loss": the curve grows (equal jitter: ≥ cap/2).
      expect(delays[0]).toBeGreaterThanOrEqual(500);
      expect(delays[1]).toBeGreaterThanOrEqual(1000);
      expect(delays[2]).toBeGreaterThanOrEqual(2000);
      await cloud.connect();
      await cloud.advance(500);
      const epoch = device.context().epoch;
      cloud.sessions.get(epoch)!({ type: 'HUB_LOST', epoch, failure: cloud.failure('transient', {}, 'hub-session') });
      await cloud.flush();
      expect(device.value()).toBe('Reprovisioning'); // the fourth short session spends the budget
    });

    test('a connection that lasted: the next loss gets the short first retry and a fresh budget', async () => {
      const cloud = new FakeCloud();
      const device = start(cloud, { cached: true });
      await cloud.flush();
      await cloud.failOpen(cloud.failure('transient'));
      await cloud.advance(device.context().delayMs!);
      await cloud.connect();
      expect(device.context().hubAttempts).toBe(1);
      await cloud.advance(policy.stableConnectionMs);
      expect(device.context()).toMatchObject({ hubAttempts: 0, connectionStable: true });
      const epoch = device.context().epoch;
      cloud.sessions.get(epoch)!({ type: 'HUB_LOST', epoch, failure: cloud.failure('transient', {}, 'hub-session') });
      await cloud.flush();
      expect(device.context().delayMs).toBeLessThanOrEqual(policy.firstRetryMaxMs);
    });

    test('REPROVISION during a DPS retry-after wait waits it out, then registers', async () => {
      const cloud = new FakeCloud();
      const device = start(cloud);
      await cloud.flush();
      await cloud.failProvision(cloud.failure('throttled', { retryAfterMs: 10_000 }, 'dps'));
      expect(device.value()).toBe('BackingOff');
      device.actor.send({ type: 'REPROVISION' });
      await cloud.flush();
      expect(device.value()).toBe('BackingOff');
      expect(cloud.calls.provision).toBe(1);
      await cloud.advance(9_999);
      expect(cloud.calls.provision).toBe(1);
      await cloud.advance(device.context().retryAt! - cloud.clock.now());
      expect(device.value()).toBe('Reprovisioning');
      expect(cloud.calls.provision).toBe(2);
    });

    /** A cached device whose hub refused it twice with maxHubAttempts 2: registering with DPS. */
    async function hubBudgetSpent() {
      const cloud = new FakeCloud();
      const device = start(cloud, { cached: true, policy: { ...policy, maxHubAttempts: 2 } });
      await cloud.flush();
      await cloud.failOpen(cloud.failure('transient', { rule: 'socket-refused' }));
      await cloud.advance(device.context().delayMs!);
      await cloud.failOpen(cloud.failure('transient', { rule: 'socket-refused' }));
      expect(device.value()).toBe('Reprovisioning');
      return { cloud, device };
    }

    test('a registration that fails after the hub budget was spent goes back to the old hub instead of waiting offline for DPS', async () => {
      const { cloud, device } = await hubBudgetSpent();
      await cloud.failProvision(cloud.failure('transient', {}, 'dps'));
      expect(device.context()).toMatchObject({ retryStep: 'Connecting', assignment: { hubHost: 'cached-hub.local' } });
      await cloud.advance(device.context().delayMs!);
      expect(device.value()).toBe('Connecting');
      expect(cloud.opens[0].input).toMatchObject({ assignment: { hubHost: 'cached-hub.local' } });
    });

    test('a REPROVISION asked for during a registration (swallowed there) is not dropped either: a failed registration goes to DPS again, not back to the old hub', async () => {
      const { cloud, device } = await hubBudgetSpent();
      // E.g. a DeviceMove answered now: the registration under way goes on (no second one) ...
      device.actor.send({ type: 'REPROVISION' });
      await cloud.flush();
      expect(cloud.provisions.filter((p) => !p.aborted)).toHaveLength(1);
      // ... and if it fails, the device was asked to register, so it registers again.
      await cloud.failProvision(cloud.failure('transient', {}, 'dps'));
      expect(device.context()).toMatchObject({ retryStep: 'Reprovisioning', reprovisionRequested: true });
      await cloud.advance(device.context().delayMs!);
      expect(device.value()).toBe('Reprovisioning');
    });

    test('a REPROVISION that was asked for is not dropped when DPS fails: DPS again after the wait', async () => {
      const cloud = new FakeCloud();
      const device = start(cloud, { cached: true });
      await cloud.flush();
      await cloud.connect();
      device.actor.send({ type: 'REPROVISION' });
      await cloud.flush();
      await cloud.failProvision(cloud.failure('throttled', { retryAfterMs: 2000 }, 'dps'));
      expect(device.context()).toMatchObject({ retryStep: 'Reprovisioning', reprovisionRequested: true });
      await cloud.advance(device.context().delayMs!);
      expect(device.value()).toBe('Reprovisioning');
      await cloud.assign();
      expect(device.context().reprovisionRequested).toBe(false);
    });
  });

  describe('the status lookup when DPS cannot answer, or says the registration is gone', () => {

    test('a lost session in doubt waits the first-retry spread before the lookup; a lookup 404 means a full registration', async () => {
      const cloud = new FakeCloud();
      const device = start(cloud, { cached: true });
      await cloud.flush();
      await cloud.connect();
      const epoch = device.context().epoch;
      cloud.sessions.get(epoch)!({ type: 'HUB_LOST', epoch, failure: refusedAsMoved(cloud, 'hub-session') });
      await cloud.flush();
      expect(device.value()).toBe('BackingOff');
      expect(device.context().retryStep).toBe('CheckingAssignment');
      expect(device.context().delayMs).toBeLessThanOrEqual(policy.firstRetryMaxMs); // no 5 s hub floor: the wait is for DPS
      await cloud.advance(policy.firstRetryMaxMs);
      expect(device.value()).toBe('CheckingAssignment');
      await cloud.failLookup(cloud.failure('reprovision', { rule: 'lookup-no-registration', status: 404 } as never, 'dps-lookup'));
      expect(device.value()).toBe('Reprovisioning');
    });

    test('DPS unreachable for the lookup: carry on with the cached hub, ask again at the next refusal, register once the budget is spent (CONNACK 5; a busy CONNACK 3 never spends it)', async () => {
      const cloud = new FakeCloud();
      const device = start(cloud, { cached: true, policy: { ...policy, maxHubAttempts: 2 } });
      await cloud.flush();
      await cloud.failOpen(refusedAsUnauthorized(cloud));
      await cloud.failLookup(cloud.failure('transient', { rule: 'socket-refused' }, 'dps-lookup'));
      expect(device.value()).toBe('BackingOff');
      expect(device.context()).toMatchObject({ retryStep: 'Connecting', assignmentConfirmed: false, hubAttempts: 1 });
      await cloud.advance(device.context().delayMs!);
      await cloud.failOpen(refusedAsUnauthorized(cloud));
      expect(device.value()).toBe('CheckingAssignment');
      await cloud.failLookup(cloud.failure('transient', { rule: 'socket-refused' }, 'dps-lookup'));
      // Budget spent: register, after DPS's own wait (never straight into a DPS that just failed).
      expect(device.context().retryStep).toBe('Reprovisioning');
      await cloud.advance(device.context().delayMs!);
      expect(device.value()).toBe('Reprovisioning');
      expect(cloud.calls.lookupAssignment).toBe(2);
    });

    test('the official sample preset (reprovisionOnLoss) never looks up: it re-registers', async () => {
      const cloud = new FakeCloud();
      const device = start(cloud, { cached: true, policy: { ...policy, reprovisionOnLoss: true } });
      await cloud.flush();
      await cloud.failOpen(cloud.failure('reprovision', { assignmentInDoubt: true }));
      expect(device.value()).toBe('Reprovisioning');
      expect(cloud.calls.lookupAssignment).toBe(0);
    });
  });
});

describe('parked: what an operator can fix remotely waits long instead of ending in Failed', () => {
  test('a DPS registration answered disabled parks for 15-30 min, then registers again; Failed is never reached', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud);
    await cloud.flush();
    await cloud.failProvision(cloud.failure('parked', { rule: 'registration-disabled' }, 'dps'));
    expect(device.context().lastError).toMatchObject({ errorClass: 'parked', rule: 'registration-disabled' });
    expect(cloud.calls.provision).toBe(1);
    await expectParkedThenRegistersAgain(cloud, device);
  });

  test('a hub refusing a blocked device parks on that hub without spending the hub budget', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: { ...policy, maxHubAttempts: 2 } });
    await cloud.flush();
    for (let i = 0; i < 3; i++) {
      await cloud.failOpen(cloud.failure('parked', { rule: 'operator-blocked' }));
      expect(device.value()).toBe('BackingOff');
      expect(device.context()).toMatchObject({ retryStep: 'Connecting', hubAttempts: 0 });
      expect(device.context().delayMs).toBeGreaterThanOrEqual(policy.parkedMinDelayMs);
      await cloud.advance(device.context().delayMs!);
    }
    expect(cloud.calls.provision).toBe(0);
  });

  test('a fresh assignment its hub keeps refusing: quick re-registrations, then parked', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { policy: { ...policy, quickRetries: 2 } });
    await cloud.flush();
    const classes: string[] = [];
    for (let i = 0; i < 4; i++) {
      await cloud.assign();
      await cloud.failOpen(refusedAsUnauthorized(cloud));
      expect(device.value()).toBe('BackingOff');
      classes.push(device.context().delayMs! >= policy.parkedMinDelayMs ? 'parked' : 'quick');
      await cloud.advance(device.context().delayMs!);
    }
    expect(classes).toEqual(['quick', 'quick', 'parked', 'parked']);
  });
});

describe('a busy DPS is not asked again before its own wait is over', () => {
  /** CONNACK 3 on a hub the device worked on: busy, and maybe moved (a lookup). */
  const busyInDoubt = (cloud: FakeCloud) => cloud.failure('transient', { rule: 'connack-3', serverBusy: true, assignmentInDoubt: true, code: 3 });
  const lookupThrottled = (cloud: FakeCloud, retryAfterMs: number) => cloud.failure('throttled', { rule: 'throttled-429', retryAfterMs }, 'dps-lookup');

  /** A cached device whose hub refused it (`refusal`) and whose status lookup DPS then answered 429 + `retryAfterMs`. */
  async function afterThrottledLookup(refusal: typeof busyInDoubt, retryAfterMs: number, options: { seed?: number; policy?: typeof policy } = {}) {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, ...options });
    await cloud.flush();
    await cloud.failOpen(refusal(cloud));
    expect(device.value()).toBe('CheckingAssignment');
    const throttledAt = cloud.clock.now();
    await cloud.failLookup(lookupThrottled(cloud, retryAfterMs));
    return { cloud, device, throttledAt };
  }

  test('lookup answered 429 + retry-after 20 s: a busy hub is retried on its own curve meanwhile, and no refusal asks DPS before the (spread) 20 s are over', async () => {
    const { cloud, device, throttledAt } = await afterThrottledLookup(busyInDoubt, 20_000);
    expect(device.value()).toBe('BackingOff');
    expect(device.context().retryStep).toBe('Connecting');
    // DPS's wait, spread like any retry-after: [R, R + max(R/2, 1 s)].
    const busyUntil = device.context().dpsBusyUntil!;
    expect(busyUntil - throttledAt).toBeGreaterThanOrEqual(20_000);
    expect(busyUntil - throttledAt).toBeLessThanOrEqual(30_000);
    // The hub's own first retry, not DPS's wait.
    expect(device.context().delayMs).toBeLessThan(20_000);
    let hubAttemptsMeanwhile = 0;
    while (device.value() === 'BackingOff') {
      await cloud.advance(device.context().delayMs!);
      expect(device.value()).toBe('Connecting');
      const refusedAt = cloud.clock.now();
      await cloud.failOpen(busyInDoubt(cloud));
      if (refusedAt < busyUntil) {
        hubAttemptsMeanwhile++;
        expect(device.value()).toBe('BackingOff');
      }
    }
    expect(hubAttemptsMeanwhile).toBeGreaterThanOrEqual(2);
    // The first refusal after DPS's wait asks again.
    expect(device.value()).toBe('CheckingAssignment');
    expect(cloud.clock.now()).toBeGreaterThanOrEqual(busyUntil);
    expect(cloud.calls.lookupAssignment).toBe(2);
    expect(cloud.calls.provision).toBe(0);
  });

  const lookupTimedOut = (cloud: FakeCloud) => cloud.failure('transient', { rule: 'timeout' }, 'dps-lookup');

  /** Refused in doubt until the device looks DPS up, then the lookup fails; returns the rest it left (dpsRestUntil − now), or null. */
  async function failNextLookup(cloud: FakeCloud, device: ReturnType<typeof start>): Promise<number | null> {
    for (let refusals = 0; device.value() !== 'CheckingAssignment'; refusals++) {
      expect(refusals).toBeLessThan(40);
      if (device.value() === 'BackingOff') await cloud.advance(device.context().delayMs!);
      if (device.value() === 'Connecting') await cloud.failOpen(busyInDoubt(cloud));
    }
    const failedAt = cloud.clock.now();
    await cloud.failLookup(lookupTimedOut(cloud));
    expect(device.value()).toBe('BackingOff');
    const until = device.context().dpsRestUntil;
    return until === null ? null : until - failedAt;
  }

  /** A cached device refused with CONNACK 3 whose lookups failed `n` times in a row. */
  async function afterFailedLookups(n: number, options: { seed?: number } = {}) {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, ...options });
    await cloud.flush();
    const rests: Array<number | null> = [];
    for (let i = 0; i < n; i++) rests.push(await failNextLookup(cloud, device));
    return { cloud, device, rests };
  }

  test('lookups DPS leaves unanswered in a row: no rest after the first, then one in [cap/2, cap], the cap doubling from twice the slowest retry up to the hub window; DPS confirming the hub ends it', async () => {
    const { cloud, device, rests } = await afterFailedLookups(6);
    expect(rests[0]).toBeNull();
    const caps = [2, 4, 8].map((k) => k * policy.maxDelayMs).concat([policy.hubRetryWindowMs, policy.hubRetryWindowMs]);
    rests.slice(1).forEach((rest, i) => {
      expect(rest).toBeGreaterThanOrEqual(caps[i]! / 2);
      expect(rest).toBeLessThanOrEqual(caps[i]!);
    });
    expect(device.context().failedLookups).toBe(6);
    // No lookup before the rest is over; the hub is retried on its own curve meanwhile.
    const restUntil = device.context().dpsRestUntil!;
    while (cloud.clock.now() < restUntil) {
      await cloud.advance(device.context().delayMs!);
      if (cloud.clock.now() < restUntil) {
        expect(device.value()).toBe('Connecting');
        await cloud.failOpen(busyInDoubt(cloud));
        expect(device.value()).toBe('BackingOff');
      }
    }
    expect(cloud.calls.lookupAssignment).toBe(6);
    // DPS answers (this hub): the count and the rest are over, and the next failure rests nothing.
    if (device.value() === 'Connecting') await cloud.failOpen(busyInDoubt(cloud));
    expect(device.value()).toBe('CheckingAssignment');
    await cloud.answerLookup('cached-hub.local');
    expect(device.context()).toMatchObject({ failedLookups: 0, dpsRestUntil: null, assignmentConfirmed: true });
    expect(cloud.calls.provision).toBe(0);
  });

  test('a fleet whose lookups failed together is spread: the rest differs from seed to seed', async () => {
    const rests = new Set<number>();
    for (const seed of [1, 2, 3, 4, 5]) rests.add((await afterFailedLookups(3, { seed })).rests[2]!);
    expect(rests.size).toBe(5);
  });

  test.each([
    [
      'a connection that lasts',
      async (cloud: FakeCloud, device: ReturnType<typeof start>) => {
        await cloud.advance(device.context().delayMs!);
        if (device.value() === 'BackingOff') await cloud.advance(device.context().delayMs!);
        await cloud.connect();
        await cloud.advance(policy.stableConnectionMs);
        expect(device.context().connectionStable).toBe(true);
      },
    ],
    [
      'a lookup that names another hub',
      async (cloud: FakeCloud, device: ReturnType<typeof start>) => {
        while (device.value() !== 'CheckingAssignment') {
          await cloud.advance(device.context().delayMs!);
          if (device.value() === 'Connecting') await cloud.failOpen(busyInDoubt(cloud));
        }
        await cloud.answerLookup('hub-b.local');
        expect(device.value()).toBe('Connecting');
      },
    ],
    [
      'a lookup that finds no registration (a registration follows)',
      async (cloud: FakeCloud, device: ReturnType<typeof start>) => {
        while (device.value() !== 'CheckingAssignment') {
          await cloud.advance(device.context().delayMs!);
          if (device.value() === 'Connecting') await cloud.failOpen(busyInDoubt(cloud));
        }
        await cloud.failLookup(cloud.failure('reprovision', { rule: 'lookup-no-registration' }, 'dps-lookup'));
        expect(device.value()).toBe('Reprovisioning');
      },
    ],
    [
      'a registration (REPROVISION)',
      async (cloud: FakeCloud, device: ReturnType<typeof start>) => {
        device.actor.send({ type: 'REPROVISION' });
        await cloud.flush();
        await cloud.assign();
        expect(device.value()).toBe('Connecting');
      },
    ],
    [
      'RETRY after Failed',
      async (cloud: FakeCloud, device: ReturnType<typeof start>) => {
        await cloud.advance(device.context().delayMs!);
        if (device.value() === 'BackingOff') await cloud.advance(device.context().delayMs!);
        await cloud.failOpen(cloud.failure('fatal', { rule: 'tls-certificate' }));
        expect(device.value()).toBe('Failed');
        device.actor.send({ type: 'RETRY' });
        await cloud.flush();
      },
    ],
  ])('the rest ends with %s: the next outage starts afresh', async (_what, end) => {
    const { cloud, device } = await afterFailedLookups(3);
    expect(device.context().dpsRestUntil).not.toBeNull();
    await end(cloud, device);
    expect(device.context()).toMatchObject({ failedLookups: 0, dpsRestUntil: null });
  });

  test('after a rest, a connection that lasts, then a move (CONNACK 5): DPS is asked at once, the device on its new hub within a retry', async () => {
    const { cloud, device } = await afterFailedLookups(5);
    const restUntil = device.context().dpsRestUntil!;
    await cloud.advance(device.context().delayMs!);
    if (device.value() === 'BackingOff') await cloud.advance(device.context().delayMs!);
    await cloud.connect();
    await cloud.advance(policy.stableConnectionMs);
    // Moved while the rest would still run: the hub drops the session and refuses the device.
    expect(cloud.clock.now()).toBeLessThan(restUntil);
    const lostAt = cloud.clock.now();
    const epoch = device.context().epoch;
    cloud.sessions.get(epoch)!({ type: 'HUB_LOST', epoch, failure: refusedAsUnauthorized(cloud) });
    await cloud.flush();
    while (device.value() === 'BackingOff') await cloud.advance(device.context().delayMs!);
    if (device.value() === 'Connecting') await cloud.failOpen(refusedAsUnauthorized(cloud));
    expect(device.value()).toBe('CheckingAssignment');
    await cloud.answerLookup('hub-b.local');
    await cloud.connect();
    expect(device.value()).toBe('Connected');
    expect(device.context().assignment?.hubHost).toBe('hub-b.local');
    expect(cloud.clock.now() - lostAt).toBeLessThanOrEqual(2 * policy.firstRetryMaxMs);
  });

  test('a fleet throttled together is spread: DPS\'s wait differs from seed to seed', async () => {
    const until = new Set<number>();
    for (const seed of [1, 2, 3, 4, 5]) {
      const { device, throttledAt } = await afterThrottledLookup(busyInDoubt, 60_000, { seed });
      until.add(device.context().dpsBusyUntil! - throttledAt);
    }
    expect(until.size).toBe(5);
    expect(Math.min(...until)).toBeGreaterThanOrEqual(60_000);
    expect(Math.max(...until)).toBeLessThanOrEqual(90_000);
  });

  test('a lookup throttled before the hub budget is spent is followed by a lookup after DPS\'s wait, not a registration (iotCentral: 60 s window, retry-after 60 s)', async () => {
    const { cloud, device } = await afterThrottledLookup(refusedAsUnauthorized, 60_000, { policy: { ...policy, hubRetryWindowMs: 60_000, hubRetryWindowMaxMs: 15 * 60_000 } });
    expect(device.context().registerWhenDpsFree).toBe(false);
    await cloud.advance(device.context().delayMs!);
    // The budget is spent by now (past the 60 s window), but no lookup has found it so.
    await cloud.failOpen(refusedAsUnauthorized(cloud));
    expect(device.value()).toBe('CheckingAssignment');
    expect(cloud.calls.provision).toBe(0);
    // This one does, and is throttled too: after its wait, the registration.
    await cloud.failLookup(lookupThrottled(cloud, 60_000));
    expect(device.context().registerWhenDpsFree).toBe(true);
    await cloud.advance(device.context().delayMs!);
    await cloud.failOpen(refusedAsUnauthorized(cloud));
    expect(device.value()).toBe('Reprovisioning');
    expect(cloud.calls.lookupAssignment).toBe(2);
  });

  test('a connection that lasts inside DPS\'s wait ends the failure run, not the wait: the next loss does not ask DPS before it', async () => {
    const { cloud, device } = await afterThrottledLookup(busyInDoubt, 3_600_000);
    const busyUntil = device.context().dpsBusyUntil!;
    await cloud.advance(device.context().delayMs!);
    await cloud.connect();
    await cloud.advance(policy.stableConnectionMs);
    expect(device.context()).toMatchObject({ connectionStable: true, dpsBusyUntil: busyUntil });
    const epoch = device.context().epoch;
    cloud.sessions.get(epoch)!({ type: 'HUB_LOST', epoch, failure: refusedAsUnauthorized(cloud) });
    await cloud.flush();
    expect(device.value()).toBe('BackingOff');
    expect(device.context().retryStep).toBe('Connecting');
    expect(device.context().retryAt).toBe(busyUntil);
    expect(cloud.calls.lookupAssignment).toBe(1);
  });

  test('a connection that lasts past DPS\'s wait clears it', async () => {
    const { cloud, device } = await afterThrottledLookup(busyInDoubt, 1000);
    expect(device.context().dpsBusyUntil).not.toBeNull();
    await cloud.advance(device.context().delayMs!);
    await cloud.connect();
    await cloud.advance(policy.stableConnectionMs);
    expect(device.context()).toMatchObject({ connectionStable: true, dpsBusyUntil: null });
  });

  test('a REPROVISION command during DPS\'s lookup wait goes to DPS at once (an explicit request; its own 429 is honoured)', async () => {
    const { cloud, device } = await afterThrottledLookup(busyInDoubt, 20_000);
    expect(device.value()).toBe('BackingOff');
    device.actor.send({ type: 'REPROVISION' });
    await cloud.flush();
    expect(device.value()).toBe('Reprovisioning');
    expect(cloud.calls.provision).toBe(1);
  });

  test('a hub that refused the device outright (CONNACK 5) is not retried before DPS may say where to go', async () => {
    const { cloud, device } = await afterThrottledLookup(refusedAsUnauthorized, 20_000);
    const busyUntil = device.context().dpsBusyUntil!;
    expect(device.context()).toMatchObject({ retryStep: 'Connecting', retryAt: busyUntil });
    await cloud.advance(device.context().delayMs!);
    // After DPS's wait: the next refusal asks DPS.
    await cloud.failOpen(refusedAsUnauthorized(cloud));
    expect(device.value()).toBe('CheckingAssignment');
    expect(cloud.calls.openHub).toBe(2);
  });
});

describe('a hub that stays unreachable is asked about', () => {
  test('refused sockets for lookupAfterUnreachableMs: one status lookup (DPS may have moved the device), then on to the hub it names', async () => {
    const cloud = new FakeCloud();
    const device = start(cloud, { cached: true, policy: { ...policy, maxHubAttempts: 100, quickRetries: 10, maxDelayMs: 8000 } });
    await cloud.flush();
    await cloud.connect();
    await cloud.advance(policy.stableConnectionMs);
    const epoch = device.context().epoch;
    cloud.sessions.get(epoch)!({ type: 'HUB_LOST', epoch, failure: cloud.failure('transient', { rule: 'connection-lost' }, 'hub-session') });
    await cloud.flush();
    const start0 = cloud.clock.now();
    while (device.value() !== 'CheckingAssignment') {
      expect(device.value()).toBe('BackingOff');
      await cloud.advance(device.context().delayMs!);
      await cloud.failOpen(cloud.failure('transient', { rule: 'socket-refused', code: 'ECONNREFUSED' }));
      expect(cloud.clock.now() - start0).toBeLessThan(60_000 + 8000 + 1000);
    }
    expect(cloud.clock.now() - start0).toBeGreaterThanOrEqual(60_000 - 1000);
    await cloud.answerLookup('hub-b.local');
    expect(device.value()).toBe('Connecting');
    expect(cloud.opens[0].input).toMatchObject({ assignment: { hubHost: 'hub-b.local' } });
    expect(cloud.calls.lookupAssignment).toBe(1);
    expect(cloud.calls.provision).toBe(0);
  });
});
