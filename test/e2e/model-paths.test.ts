/**
 * The fault model's long faults (hubstate-testing's fault model, packages/testing/src/fault-model.ts): a flapping hub, a long DPS outage
 * while the hub is fine and while the device needs DPS, and a disabled device (under CONNACK 3
 * and 5). Each is a path of its own, replayed against a fresh local cloud with the real SDK while
 * the device keeps sending: the device's states must follow the fault's leg (EXPECTED_LEG), its
 * waits the policy's curve and floors, the cloud must see no more attempts than the policy allows,
 * and every message must arrive.
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { curveCapMs } from '../../src/policy/backoff';
import { EXPECTED_LEG, generateFaultPaths, isLongPath, replayCases, type Fault, type LongFault, type RefusalCode } from 'hubstate-testing';
import { deliveryReport, startDevice, waitFor, waitForState, keepSending, type DeviceUnderTest } from './harness';

let cloud: LocalCloud;
const cases = replayCases(generateFaultPaths().filter(isLongPath));

/** A connection counts as a success after 0.5 s here (30 s by default). */
const STABLE_CONNECTION_MS = 500;
/**
 * Compressed policy: the real curve's shape (three quick retries on the exponential curve, then a
 * slow floor) at a fraction of its waits. The real policy waits at least a minute after the quick
 * retries (slowRetryMinMs 60 s, maxDelayMs 90 s, firstRetryMaxMs 1 s, minDelayMs 1 s,
 * throttledMinDelayMs 5 s): here 1 s, 1.5 s, 0.3 s, 0.2 s and 1 s, so a path that goes past the
 * quick retries lasts seconds, not minutes.
 */
const POLICY = {
  stableConnectionMs: STABLE_CONNECTION_MS,
  firstRetryMaxMs: 300,
  minDelayMs: 200,
  maxDelayMs: 1500,
  throttledMinDelayMs: 1000,
  slowRetryMinMs: 1000,
  quickRetries: 3,
};
/** The floor the device keeps after a CONNACK 3 or a DPS 5xx (src/policy/classify.ts), whatever the policy. */
const SERVER_BUSY_FLOOR_MS = 5000;
/** A flapping hub drops each session this long after accepting it (far below stableConnectionMs). */
const FLAP_SESSION_MS = 150;
/** How long the hub flaps. */
const FLAP_WINDOW_MS = 5000;
/** DPS away while the hub is fine: longer than the keepalive (2 s) and 6 × stableConnectionMs. */
const DPS_OUTAGE_MS = 3000;
/** Timers may fire a millisecond early against Date.now(). */
const SLACK_MS = 5;

/** The wait the policy may choose for hub or DPS attempt `n` (no retry-after, no floor). */
function window(n: number, afterLoss: boolean): { min: number; max: number } {
  if (afterLoss && n <= 1) return { min: 0, max: POLICY.firstRetryMaxMs };
  const cap = curveCapMs(POLICY.minDelayMs, POLICY.maxDelayMs, n);
  const slowFloor = n > POLICY.quickRetries ? Math.min(POLICY.slowRetryMinMs, POLICY.maxDelayMs) : 0;
  if (slowFloor > cap / 2) return { min: slowFloor, max: Math.max(slowFloor, POLICY.maxDelayMs) };
  return { min: cap / 2, max: cap };
}

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'model-paths', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});
afterAll(async () => {
  await cloud.stop();
});

const hubOf = (dut: DeviceUnderTest) => cloud.hubs.find((h) => h.host === dut.device.assignment()?.hubHost)!.name;
const backoffs = (dut: DeviceUnderTest, mark: number) => dut.states.slice(mark).filter((s) => s.value === 'BackingOff');
const connectedSince = (dut: DeviceUnderTest, mark: number) => dut.states.slice(mark).some((s) => s.value === 'Connected');

/** Waits until the device's current connection has lasted (it is then a success: counters reset). */
async function untilConnectionStable(dut: DeviceUnderTest): Promise<void> {
  const connectedAt = [...dut.states].reverse().find((s) => s.value === 'Connected')!.at;
  await waitFor('the connection to last', () => Date.now() >= connectedAt + STABLE_CONNECTION_MS + 200);
  expect(dut.device.state()).toBe('Connected');
}

interface PathContext {
  dut: DeviceUnderTest;
  deviceId: string;
  mark: number;
  refusalCode?: RefusalCode;
}

/** Each long fault: inject it, let the device recover, assert what the leg alone cannot show. */
const replay: Record<LongFault, (p: PathContext) => Promise<void>> = {
  async FLAPPING_HUB({ dut, deviceId, mark }) {
    const hubName = hubOf(dut);
    const hub = cloud.hub(hubName);
    const lookups = cloud.dps.lookups(deviceId).length;
    const registrations = cloud.dps.attempts(deviceId).length;
    const sessions: number[] = [];
    const drops = new Set<NodeJS.Timeout>();
    const onConnected = (info: { hub: string; deviceId: string }) => {
      if (info.deviceId !== deviceId || info.hub !== hubName) return;
      sessions.push(Date.now());
      const drop = setTimeout(() => {
        drops.delete(drop);
        hub.disconnect(deviceId);
      }, FLAP_SESSION_MS);
      drops.add(drop);
    };
    cloud.events.on('deviceConnected', onConnected);
    const flapFrom = Date.now();
    try {
      hub.disconnect(deviceId); // the session that had lasted: from now on no session lasts
      await waitFor('the flapping window', () => Date.now() >= flapFrom + FLAP_WINDOW_MS, FLAP_WINDOW_MS + 5000);
    } finally {
      cloud.events.off('deviceConnected', onConnected);
      for (const drop of drops) clearTimeout(drop); // the session in progress, if any, may last
    }
    await waitFor('connected after the flapping', () => connectedSince(dut, mark) && dut.device.state() === 'Connected', 10_000);
    await untilConnectionStable(dut);

    // The hub accepted it again and again: every session was too short to count, so every
    // reconnect is one more attempt on the curve (the first after a loss that had lasted).
    const flapped = sessions.filter((at) => at < flapFrom + FLAP_WINDOW_MS);
    expect(flapped.length).toBeGreaterThanOrEqual(3);
    const waits = backoffs(dut, mark);
    waits.forEach((wait, i) => {
      const { min, max } = window(i + 1, i === 0);
      expect(wait.errorClass).toBe('transient');
      expect(wait.delayMs).toBeGreaterThanOrEqual(min);
      expect(wait.delayMs).toBeLessThanOrEqual(max);
    });
    // Seen from the hub: no session starts sooner after the one before than the policy allows
    // (it lasted FLAP_SESSION_MS, then the device waited at least the attempt's minimum) ...
    for (let k = 1; k < flapped.length; k++) {
      expect(flapped[k] - flapped[k - 1]).toBeGreaterThanOrEqual(FLAP_SESSION_MS + window(k + 1, false).min - SLACK_MS);
    }
    // ... so over the window it reconnected at most as often as the curve's minimum waits allow
    // (with the real policy's minute floor that would be 4 sessions in the first minute).
    let allowed = 0;
    for (let elapsed = window(1, true).min; elapsed <= FLAP_WINDOW_MS; elapsed += FLAP_SESSION_MS + window(allowed + 1, false).min) allowed++;
    expect(flapped.length).toBeLessThanOrEqual(allowed);
    // Recovered on the same hub, without DPS, and the connection that lasted reset the counters.
    expect(hubOf(dut)).toBe(hubName);
    expect(cloud.dps.lookups(deviceId)).toHaveLength(lookups);
    expect(cloud.dps.attempts(deviceId)).toHaveLength(registrations);
    expect(dut.device.actor.getSnapshot().context.hubAttempts).toBe(0);
    console.log(`flapping hub: ${flapped.length} sessions in ${FLAP_WINDOW_MS} ms (policy allows ${allowed}); waits ${waits.map((w) => Math.round(w.delayMs!)).join(', ')} ms`);
  },

  async DPS_OUTAGE({ dut, deviceId, mark }) {
    const hubName = hubOf(dut);
    const lookups = cloud.dps.lookups(deviceId).length;
    const registrations = cloud.dps.attempts(deviceId).length;
    await cloud.dps.down();
    const from = Date.now();
    const sentBefore = dut.accepted.length;
    try {
      await waitFor('the outage to last', () => Date.now() >= from + DPS_OUTAGE_MS, DPS_OUTAGE_MS + 5000);
      // telemetry kept flowing to the hub while DPS was away
      await waitFor('telemetry during the outage', () => dut.accepted.length > sentBefore + 5 && deliveryReport(cloud, dut.accepted.slice(sentBefore)).lost.length === 0);
      expect(cloud.dps.isUp).toBe(false);
      expect(dut.device.state()).toBe('Connected');
    } finally {
      await cloud.dps.up();
    }
    expect(dut.states.length).toBe(mark); // not one state change
    expect(hubOf(dut)).toBe(hubName);
    expect(cloud.dps.lookups(deviceId)).toHaveLength(lookups);
    expect(cloud.dps.attempts(deviceId)).toHaveLength(registrations);
  },

  async DPS_OUTAGE_REPROVISION({ dut, deviceId, mark }) {
    const registrations = cloud.dps.registration(deviceId)!.registrations;
    const answered = cloud.dps.answers(deviceId).length;
    await cloud.dps.down();
    try {
      dut.device.reprovision(); // asked for (the application or a cloud command): it needs DPS now
      // past the quick retries, into the slow floor
      await waitFor('DPS unreachable four times', () => backoffs(dut, mark).length >= POLICY.quickRetries + 1, 15_000);
      // DPS comes back overloaded: one 503, then it registers
      cloud.dps.failWith({ status: 503, count: 1, target: 'register' });
    } finally {
      await cloud.dps.up();
    }
    await waitFor('connected after the outage', () => connectedSince(dut, mark), 30_000);

    const waits = backoffs(dut, mark);
    const unreachable = waits.slice(0, -1);
    const afterBusy = waits[waits.length - 1];
    expect(unreachable.length).toBeGreaterThanOrEqual(POLICY.quickRetries + 1);
    unreachable.forEach((wait, i) => {
      // DPS attempts on the curve: the loss of DPS is not the loss of a connection that had lasted
      const { min, max } = window(i + 1, false);
      expect(wait.errorClass).toBe('transient');
      expect(wait.delayMs).toBeGreaterThanOrEqual(min);
      expect(wait.delayMs).toBeLessThanOrEqual(max);
    });
    expect(afterBusy.errorClass).toBe('transient');
    expect(afterBusy.delayMs).toBeGreaterThanOrEqual(SERVER_BUSY_FLOOR_MS);
    // DPS saw the 503, then the next registration no sooner than the floor, and it succeeded
    const answers = cloud.dps.answers(deviceId).slice(answered);
    const busy = answers.find((a) => a.request === 'register' && a.status === 503)!;
    expect(busy).toBeDefined();
    const next = cloud.dps.attempts(deviceId).filter((at) => at > busy.at);
    expect(next).toHaveLength(1);
    expect(next[0] - busy.at).toBeGreaterThanOrEqual(SERVER_BUSY_FLOOR_MS - SLACK_MS);
    expect(cloud.dps.registration(deviceId)!.registrations).toBe(registrations + 1);
    expect(dut.device.assignment()!.hubHost).toBe(cloud.dps.registration(deviceId)!.assignedHub);
    console.log(`DPS outage while reprovisioning: waits ${waits.map((w) => Math.round(w.delayMs!)).join(', ')} ms`);
  },

  async DISABLED_DEVICE({ dut, deviceId, mark, refusalCode }) {
    const hubName = hubOf(dut);
    const hub = cloud.hub(hubName);
    const lookups = cloud.dps.lookups(deviceId).length;
    const registrations = cloud.dps.attempts(deviceId).length;
    hub.disableDevice(deviceId, 'operator', refusalCode);
    try {
      // refused, DPS asked once (it still names this hub), refused again on the hub's backoff
      await waitFor('refused twice, backing off', () => hub.refusals(deviceId).length >= 2 && backoffs(dut, mark).length >= 3, 20_000);
    } finally {
      hub.enableDevice(deviceId);
    }
    await waitFor('connected once enabled', () => connectedSince(dut, mark), 20_000);

    const refusals = hub.refusals(deviceId);
    expect(refusals.map((r) => [r.code, r.reason])).toEqual([
      [refusalCode, 'disabled'],
      [refusalCode, 'disabled'],
    ]);
    const newLookups = cloud.dps.lookups(deviceId).slice(lookups);
    expect(newLookups.map((l) => l.status)).toEqual([200]);
    expect(cloud.dps.attempts(deviceId)).toHaveLength(registrations); // no registration
    // The waits on the hub: the short one after the loss, then the hub's backoff — on the curve
    // for CONNACK 5, at least the 5 s floor of a busy hub for CONNACK 3 (DPS confirmed the hub).
    const waits = backoffs(dut, mark);
    expect(waits).toHaveLength(3);
    expect(waits[0].delayMs).toBeLessThanOrEqual(POLICY.firstRetryMaxMs);
    // the second wait follows DPS's answer (it names this hub), the third the hub's second refusal
    expect(waits[1].event).toBe('xstate.done.actor.lookupAssignment');
    expect(waits[2].errorClass).toBe(refusalCode === 3 ? 'transient' : 'reprovision');
    for (const [i, wait] of waits.slice(1).entries()) {
      if (refusalCode === 3) {
        expect(wait.delayMs).toBeGreaterThanOrEqual(SERVER_BUSY_FLOOR_MS);
      } else {
        const { min, max } = window(i + 2, false);
        expect(wait.delayMs).toBeGreaterThanOrEqual(min);
        expect(wait.delayMs).toBeLessThanOrEqual(max);
      }
    }
    const floor = refusalCode === 3 ? SERVER_BUSY_FLOOR_MS : window(2, false).min;
    expect(refusals[1].at - refusals[0].at).toBeGreaterThanOrEqual(floor - SLACK_MS);
    expect(hubOf(dut)).toBe(hubName);
  },
};

test('the long faults of the fault model are paths of their own, those with a refusal under both codes', () => {
  expect(cases.map((c) => c.name)).toEqual([
    'FLAPPING_HUB',
    'DPS_OUTAGE',
    'DPS_OUTAGE_REPROVISION',
    'DISABLED_DEVICE (CONNACK 3)',
    'DISABLED_DEVICE (CONNACK 5)',
  ]);
});

test.each(cases.map((c, i) => [c.name, c.faults, c.refusalCode, i] as const))('%s', async (_name, faults, refusalCode, index) => {
  const [fault] = faults as [Fault];
  const dut = startDevice(cloud, `mp-${index}`, { seed: 100 + index, policy: POLICY });
  let producer: ReturnType<typeof keepSending> | undefined;
  try {
    await waitForState(dut, 'Connected');
    producer = keepSending(dut, { path: index });
    await untilConnectionStable(dut);
    const mark = dut.states.length;
    await replay[fault as LongFault]({ dut, deviceId: dut.device.assignment()!.deviceId, mark, ...(refusalCode ? { refusalCode } : {}) });
    const leg = ['Connected', ...dut.states.slice(mark).map((s) => s.value)].join(' ');
    expect(leg).toMatch(EXPECTED_LEG[fault]);
    // telemetry continues on the hub the device is on now, and nothing sent during the fault is lost
    const after = dut.accepted.length;
    await waitFor('telemetry after the fault', () => dut.accepted.length > after + 2 && deliveryReport(cloud, dut.accepted.slice(after)).lost.length === 0);
    await producer.stop();
    await waitFor('every message delivered', () => deliveryReport(cloud, dut.accepted).lost.length === 0, 30_000);
  } finally {
    await producer?.abandon(); // a failed path must not leave a producer behind
    await dut.device.stop();
  }
});
