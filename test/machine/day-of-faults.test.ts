/**
 * A day of one fault, on the simulated clock with the shipped presets: what the device costs DPS
 * and the hub after 24 hours, and whether it ever stops trying. Failures are the real SDK errors
 * (test/policy/sdk-fixtures.ts) classified by the real table (toFailure), so a change of a row
 * shows here as a change of behaviour over a day.
 */
import { createActor, fromPromise, SimulatedClock } from 'xstate';
import { leafStateName } from '../../machines/device.machine';
import { DpsLookupError } from '../../src/actors/lookup';
import { waitUntilWork } from '../../src/actors/wait';
import { monotonicNow, type Clock } from '../../src/clock';
import { DEFAULT_POLICY, PRESETS } from '../../src/policy/backoff';
import { toFailure } from '../../src/policy/classify';
import type { Failure, Phase, RetryPolicy } from '../../src/policy/types';
import { FakeCloud } from '../support/fake-actors';
import { connackError, dpsAnswer, dpsRegistrationBody, dpsStatus, hubConnectionClosed, hubErrorBody, hubFirstConnect, socketError, twinAnswer } from '../policy/sdk-fixtures';

const MINUTE_MS = 60_000;
const HOUR_MS = 60 * MINUTE_MS;
const DAY_MS = 24 * HOUR_MS;

/**
 * The device's wall clock (`Date.now()`: NTP may step it) over the simulated monotonic time that
 * Node's timers run on: `jump(ms)` moves what `now()` says, never `monotonicNow()` nor when a
 * pending timer fires.
 */
class SteppedWallClock implements Clock {
  offsetMs = 0;
  constructor(private readonly monotonic: SimulatedClock) {}
  now(): number {
    return this.monotonic.now() + this.offsetMs;
  }
  monotonicNow(): number {
    return this.monotonic.now();
  }
  setTimeout(fn: (...args: unknown[]) => void, timeout: number): unknown {
    return this.monotonic.setTimeout(fn, timeout);
  }
  clearTimeout(id: unknown): void {
    this.monotonic.clearTimeout(id as number);
  }
  jump(ms: number): void {
    this.offsetMs += ms;
  }
}

interface Fault {
  /** A hub connect to `hubHost`: undefined accepts it, an error refuses it. */
  connect?: (hubHost: string) => unknown;
  /** Right after an accepted connect (the twin GET of every session): an error ends the session. */
  session?: () => unknown;
  /** A registration: undefined assigns the hub, an error fails it. */
  register?: () => unknown;
  /** A status lookup: undefined answers "this hub", an error fails it. */
  lookup?: () => unknown;
}

interface DayFigures {
  registrations: number;
  lookups: number;
  hubAttempts: number;
  sessions: number;
  /** The hub of every accepted connection, in order. */
  connectedTo: string[];
  /** Monotonic times of every DPS request (registrations and lookups). */
  dpsAt: number[];
  state: string;
  maxCounter: number;
}

/**
 * Drives one device through `durationMs` of `fault` (a cached, proven hub unless `cached` is false),
 * answering every actor at once and waiting out every backoff. `onTick` may step the wall clock.
 */
async function runFault(fault: Fault, options: { policy?: RetryPolicy; cached?: boolean; durationMs?: number; onTick?: (elapsedMs: number, wall: SteppedWallClock, cloud: FakeCloud, figures: DayFigures) => void; until?: (figures: DayFigures) => boolean } = {}) {
  const cloud = new FakeCloud();
  const wall = new SteppedWallClock(cloud.clock);
  const stamp = (error: unknown, phase: Phase): Failure => toFailure(error, phase, monotonicNow(wall));
  const machine = cloud.machine().provide({ actors: { waitUntil: fromPromise(waitUntilWork(wall)) } });
  const actor = createActor(machine, {
    clock: cloud.clock,
    input: {
      registrationId: 'dev-1',
      policy: options.policy ?? DEFAULT_POLICY,
      seed: 7,
      cachedAssignment: options.cached === false ? null : { hubHost: cloud.hub.hubHost, deviceId: 'dev-1', assignedAt: 1 },
    },
  });
  actor.start();
  actor.send({ type: 'START' });
  await cloud.flush();
  const start = cloud.clock.now();
  const durationMs = options.durationMs ?? DAY_MS;
  const figures: DayFigures = { registrations: 0, lookups: 0, hubAttempts: 0, sessions: 0, connectedTo: [], dpsAt: [], state: '', maxCounter: 0 };
  while (cloud.clock.now() - start < durationMs && !(options.until?.(figures) ?? false)) {
    options.onTick?.(cloud.clock.now() - start, wall, cloud, figures);
    const snapshot = actor.getSnapshot();
    const { context } = snapshot;
    figures.maxCounter = Math.max(figures.maxCounter, context.dpsAttempts, context.hubAttempts);
    if (cloud.opens.length) {
      figures.hubAttempts++;
      const hubHost = (cloud.opens[0]!.input as { assignment: { hubHost: string } }).assignment.hubHost;
      const refusal = fault.connect?.(hubHost);
      if (refusal !== undefined) await cloud.failOpen(stamp(refusal, 'hub-connect'));
      else {
        cloud.opens.shift()!.resolve({ connectedAt: monotonicNow(wall) });
        await cloud.flush();
        figures.sessions++;
        figures.connectedTo.push(hubHost);
        const loss = fault.session?.();
        if (loss !== undefined) {
          const epoch = actor.getSnapshot().context.epoch;
          cloud.sessions.get(epoch)?.({ type: 'HUB_LOST', epoch, failure: stamp(loss, 'hub-session') });
          await cloud.flush();
        } else await cloud.advance(MINUTE_MS); // a working session: let time pass
      }
    } else if (cloud.provisions.length) {
      figures.registrations++;
      figures.dpsAt.push(cloud.clock.now() - start);
      const failure = fault.register?.();
      if (failure !== undefined) await cloud.failProvision(stamp(failure, 'dps'));
      else {
        cloud.provisions.shift()!.resolve({ ...cloud.hub, assignedAt: wall.now(), registeredAt: monotonicNow(wall) });
        await cloud.flush();
      }
    } else if (cloud.lookups.length) {
      figures.lookups++;
      figures.dpsAt.push(cloud.clock.now() - start);
      const failure = fault.lookup?.();
      if (failure !== undefined) await cloud.failLookup(stamp(failure, 'dps-lookup'));
      else {
        cloud.lookups.shift()!.resolve({ ...cloud.hub, checkedAt: monotonicNow(wall), assignedAt: wall.now() });
        await cloud.flush();
      }
    } else if (leafStateName(snapshot.value) === 'BackingOff') {
      // Wait out the timer the device armed: its length was fixed when the wait began.
      const [pending] = [...(cloud.clock as unknown as { timeouts: Map<number, { start: number; timeout: number }> }).timeouts.values()].sort((a, b) => a.start + a.timeout - (b.start + b.timeout));
      await cloud.advance(Math.max(0, pending ? pending.start + pending.timeout - cloud.clock.now() : 0));
    } else if (leafStateName(snapshot.value) === 'Connected') await cloud.advance(MINUTE_MS);
    else break;
  }
  figures.state = leafStateName(actor.getSnapshot().value);
  actor.stop();
  return { figures, elapsedMs: cloud.clock.now() - start, cloud };
}

function minGap(times: number[]): number {
  let gap = Infinity;
  for (let i = 1; i < times.length; i++) gap = Math.min(gap, times[i]! - times[i - 1]!);
  return gap;
}

const presets = [['default', DEFAULT_POLICY], ['iotCentral', PRESETS.iotCentral], ['dpsAtScale', PRESETS.dpsAtScale]] as const;

describe('a day of one fault (default policy unless named)', () => {
  test('DPS unreachable (ECONNREFUSED) for a day, nothing cached: retries forever, at least a minute apart after the quick ones, counters bounded', async () => {
    const { figures } = await runFault({ register: () => socketError('ECONNREFUSED') }, { cached: false });
    console.log(`a day of DPS refused, nothing cached: ${JSON.stringify({ ...figures, dpsAt: undefined, minGapMs: minGap(figures.dpsAt.slice(3)) })}`);
    expect(figures.state).not.toBe('Failed');
    // Never gives up: still registering in the last hour of the day.
    expect(figures.dpsAt[figures.dpsAt.length - 1]).toBeGreaterThan(DAY_MS - HOUR_MS);
    expect(minGap(figures.dpsAt.slice(DEFAULT_POLICY.quickRetries))).toBeGreaterThanOrEqual(DEFAULT_POLICY.slowRetryMinMs);
    expect(figures.registrations).toBeLessThanOrEqual(DEFAULT_POLICY.quickRetries + DAY_MS / DEFAULT_POLICY.slowRetryMinMs);
  });

  // Azure SDK for C (sdk/docs/iot/mqtt_state_machine.md, "Retry Timing"): `if (retry_after_seconds
  // > 0) delay = retry-after; else the exponential back-off`. A zero is no retry-after.
  test.each(['0', '0.0001'])('DPS answering 409 with retry-after=%s for an hour, nothing cached: the back-off curve, not a retry every second', async (retryAfter) => {
    const { figures } = await runFault({ register: () => dpsStatus(409, {}, retryAfter) }, { cached: false, durationMs: HOUR_MS });
    console.log(`an hour of DPS 409 retry-after=${retryAfter}: ${JSON.stringify({ ...figures, dpsAt: undefined, connectedTo: undefined })}`);
    expect(minGap(figures.dpsAt.slice(DEFAULT_POLICY.quickRetries))).toBeGreaterThanOrEqual(DEFAULT_POLICY.slowRetryMinMs);
    expect(figures.registrations).toBeLessThanOrEqual(DEFAULT_POLICY.quickRetries + HOUR_MS / DEFAULT_POLICY.slowRetryMinMs);
  });

  test('DPS unreachable for a day while the cached hub works: not one DPS call', async () => {
    const { figures } = await runFault({ register: () => socketError('ECONNREFUSED'), lookup: () => socketError('ECONNREFUSED') });
    expect(figures.registrations + figures.lookups).toBe(0);
    expect(figures.state).toBe('Connected');
  });

  test('hub refused (ECONNREFUSED) and DPS unreachable for a day: alternates hub retries and DPS, each at least a minute apart', async () => {
    const { figures } = await runFault({ connect: () => socketError('ECONNREFUSED'), register: () => socketError('ECONNREFUSED'), lookup: () => socketError('ECONNREFUSED') });
    console.log(`a day of hub and DPS refused: ${JSON.stringify({ ...figures, dpsAt: undefined })}`);
    expect(figures.state).not.toBe('Failed');
    // The cached hub is still tried all day (DPS never answered with another one).
    expect(figures.hubAttempts).toBeGreaterThan(DAY_MS / DEFAULT_POLICY.maxDelayMs);
    expect(figures.registrations).toBeLessThanOrEqual(DAY_MS / DEFAULT_POLICY.hubRetryWindowMs + 1);
  });
});

describe('what an operator must fix, for a day, under each preset: parked, DPS at most every 15-30 min', () => {
  /** Registrations a parked device may make in a day: the quick ones, then one per parkedMinDelayMs at most. */
  const parkedBound = (policy: RetryPolicy) => policy.quickRetries + 1 + DAY_MS / policy.parkedMinDelayMs;

  test.each(presets)('%s: disabled on its hub (CONNACK 5), DPS assigning it there again', async (_name, policy) => {
    const { figures } = await runFault({ connect: () => hubFirstConnect(connackError(5)) }, { policy });
    console.log(`a day disabled on the hub, ${_name}: ${JSON.stringify({ ...figures, dpsAt: undefined, connectedTo: undefined })}`);
    expect(figures.state).not.toBe('Failed');
    expect(figures.registrations).toBeLessThanOrEqual(parkedBound(policy));
    expect(minGap(figures.dpsAt.slice(policy.quickRetries + 2))).toBeGreaterThanOrEqual(policy.parkedMinDelayMs);
  });

  test.each(presets)("%s: DPS enrollment disabled (registration status 'disabled')", async (_name, policy) => {
    const { error } = await dpsAnswer(200, dpsRegistrationBody('disabled'));
    expect(toFailure(error, 'dps', 0)).toMatchObject({ rule: 'registration-disabled', errorClass: 'parked' });
    const { figures } = await runFault({ register: () => error }, { policy, cached: false });
    console.log(`a day of a disabled enrollment, ${_name}: ${JSON.stringify({ ...figures, dpsAt: undefined, connectedTo: undefined })}`);
    expect(figures.registrations).toBeLessThanOrEqual(parkedBound(policy));
    expect(minGap(figures.dpsAt)).toBeGreaterThanOrEqual(policy.parkedMinDelayMs);
  });
});

describe('a hub that accepts the connection but throttles it for a day', () => {
  // The session ends on these only when it cannot read the twin answer's status (the Plug and
  // Play session retries a GET answered 429 on the connection: reported-status.test.ts); the
  // daily quota's 403 ends it always. Either way, this is what the machine then does.

  // IoT Hub's daily message quota (403002) lasts until it resets at 00:00 UTC: up to a day.
  const quota = async () => twinAnswer(403, hubErrorBody(403002, "Total number of messages on IotHub 'hub-1' exceeded the allocated quota."));
  const throttled = async () => twinAnswer(429, hubErrorBody(429001, 'IoT Hub throttling limits have been exceeded for the requested operation.'));

  test('the classification this scenario rests on: a twin GET answered 403002 is hub-quota-exceeded (throttled), 429001 hub-throttled', async () => {
    expect(toFailure(await quota(), 'hub-session', 0)).toMatchObject({ rule: 'hub-quota-exceeded', errorClass: 'throttled' });
    expect(toFailure(await throttled(), 'hub-session', 0)).toMatchObject({ rule: 'hub-throttled', errorClass: 'throttled' });
  });

  test.each([
    ['daily quota exceeded (403002)', quota],
    ['throttled (429001)', throttled],
  ])('%s for a day: stays on its hub (which accepted it), at least a minute apart, and never registers: DPS would hand back the same hub', async (what, answer) => {
    const error = await answer();
    const { figures } = await runFault({ session: () => error });
    console.log(`a day of hub ${what}: ${JSON.stringify({ ...figures, dpsAt: undefined, connectedTo: undefined })}`);
    expect(figures.state).not.toBe('Failed');
    // A hub-wide throttle hits every device on the hub: a registration each per hub window would
    // be a fleet-wide DPS storm (96 a day each) for an answer that cannot change.
    expect(figures.registrations).toBe(0);
    expect(figures.lookups).toBe(0);
    expect(figures.sessions).toBeLessThanOrEqual(DEFAULT_POLICY.quickRetries + DAY_MS / DEFAULT_POLICY.slowRetryMinMs);
  });
});

describe('a hub that accepts every connection and drops it at once, for a day', () => {
  // A connection is a success only once it lasts (stableConnectionMs): a hub that drops every
  // session at once must not earn a fresh budget, and a quick retry, each time.
  test.each(presets)('%s: sessions at least 20 s apart on average, one lookup and one registration per hub window', async (_name, policy) => {
    const { figures } = await runFault({ session: () => hubConnectionClosed() }, { policy });
    console.log(`a day of a flapping hub, ${_name}: ${JSON.stringify({ ...figures, dpsAt: undefined, connectedTo: undefined })}`);
    expect(figures.state).not.toBe('Failed');
    expect(figures.sessions).toBeLessThanOrEqual(DAY_MS / 20_000);
    // Each window: a lookup (the drop may mean a move), DPS confirms the hub, the budget is spent,
    // a registration hands it back; iotCentral's 60 s window doubles to 15 min on the way.
    const windowMs = Math.max(policy.hubRetryWindowMs, policy.hubRetryWindowMaxMs);
    const perDayBound = DAY_MS / windowMs + Math.ceil(Math.log2(windowMs / policy.hubRetryWindowMs)) + 1;
    expect(figures.lookups).toBeLessThanOrEqual(perDayBound);
    expect(figures.registrations).toBeLessThanOrEqual(perDayBound);
    // Still asking DPS all day: a hub that never holds a connection may be one the device was moved off.
    expect(figures.dpsAt[figures.dpsAt.length - 1]).toBeGreaterThan(DAY_MS - windowMs - HOUR_MS);
  });
});

describe('a status lookup DPS throttles with a long retry-after', () => {
  /**
   * The hub refuses (CONNACK 3 unless told) for `outageMs` then accepts; every lookup is answered
   * 429 + `retryAfterSec`; registrations hand back the same hub. Returns when the device is back.
   */
  async function backOnHubAfter(outageMs: number, retryAfterSec: number, refusal: () => unknown = () => hubFirstConnect(connackError(3)), registrationsAtMost = 0): Promise<number> {
    let elapsed = 0;
    const { figures } = await runFault(
      {
        connect: () => (elapsed < outageMs ? refusal() : undefined),
        lookup: () => new DpsLookupError(429, retryAfterSec * 1000, 'throttled'),
      },
      { onTick: (elapsedMs) => (elapsed = elapsedMs), until: (figures) => figures.sessions > 0 },
    );
    expect(figures.registrations).toBeLessThanOrEqual(registrationsAtMost);
    return elapsed;
  }

  test('the classification this rests on: a lookup answered 429 carries its retry-after', () => {
    expect(toFailure(new DpsLookupError(429, 3_600_000, 'throttled'), 'dps-lookup', 0)).toMatchObject({ rule: 'throttled-429', retryAfterMs: 3_600_000 });
  });

  test('retry-after 10 s: the busy hub (2 min of CONNACK 3) is back within a few minutes', async () => {
    expect(await backOnHubAfter(2 * MINUTE_MS, 10)).toBeLessThanOrEqual(2 * MINUTE_MS + 2 * DEFAULT_POLICY.maxDelayMs);
  });

  // DPS's wait is DPS's: the hub needs no DPS, so it is retried on its own curve meanwhile, and
  // no refusal asks DPS before the wait is over. (It used to delay the next hub attempt too: a
  // lookup throttled for an hour kept the device off a hub that was back after 2 min for 60-90 min.)
  test('retry-after 1 h: the hub that recovered after 2 min is not left waiting for DPS (back within a few minutes)', async () => {
    const back = await backOnHubAfter(2 * MINUTE_MS, 3600);
    console.log(`back on a hub that recovered after 2 min, lookup throttled 1 h: after ${Math.round(back / MINUTE_MS)} min`);
    expect(back).toBeLessThanOrEqual(2 * MINUTE_MS + 2 * DEFAULT_POLICY.maxDelayMs);
  });

  test('retry-after 1 h, the hub unreachable for 90 min (its budget spent): back within a few minutes of its recovery', async () => {
    // A lookup at ~1 min (the unreachable limit), throttled for 1 to 1.5 h; the budget is spent at
    // 15 min, so the first refusal after DPS's wait registers (DPS hands back the same hub). The
    // hub is tried all along: a device that waited for DPS, then registered, would be back at 2 h.
    const back = await backOnHubAfter(90 * MINUTE_MS, 3600, () => socketError('ECONNREFUSED'), 1);
    console.log(`back on a hub unreachable for 90 min, lookups throttled 1 h: after ${Math.round(back / MINUTE_MS)} min`);
    expect(back).toBeLessThanOrEqual(90 * MINUTE_MS + 2 * DEFAULT_POLICY.maxDelayMs);
  });

  test('retry-after 1 h, moved off its hub (CONNACK 5): lookups after each of DPS\'s waits, the hub left alone meanwhile, then one registration to the new hub', async () => {
    let elapsed = 0;
    const { figures } = await runFault(
      {
        connect: (hubHost) => (hubHost === 'hub-a.local' ? hubFirstConnect(connackError(5)) : undefined),
        lookup: () => new DpsLookupError(429, HOUR_MS, 'throttled'),
      },
      {
        onTick: (elapsedMs, _wall, cloud) => {
          elapsed = elapsedMs;
          cloud.hub = { hubHost: 'hub-b.local', deviceId: 'dev-1' };
        },
        until: (figures) => figures.sessions > 0,
      },
    );
    console.log(`moved, lookups throttled 1 h: ${JSON.stringify({ ...figures, dpsAt: undefined })} after ${Math.round(elapsed / MINUTE_MS)} min`);
    expect(figures.connectedTo).toEqual(['hub-b.local']);
    // DPS's wait is 1 to 1.5 h (spread). The first lookup, at once, finds the hub budget unspent:
    // after the wait, a lookup again (cheaper than a registration, and it may say "moved"). That
    // one finds the budget spent: after its wait, the registration, not a third lookup a
    // still-busy DPS would throttle again, for ever.
    expect(elapsed).toBeLessThanOrEqual(3 * HOUR_MS + 2 * DEFAULT_POLICY.maxDelayMs);
    expect(figures).toMatchObject({ lookups: 2, registrations: 1 });
    expect(figures.hubAttempts).toBeLessThanOrEqual(4);
  });

  test('retry-after 1 h on a fresh assignment (busy 20 min, then CONNACK 5): no DPS request before DPS\'s wait is over', async () => {
    let elapsed = 0;
    const { figures } = await runFault(
      {
        connect: () => (elapsed < 20 * MINUTE_MS ? hubFirstConnect(connackError(3)) : hubFirstConnect(connackError(5))),
        lookup: () => new DpsLookupError(429, HOUR_MS, 'throttled'),
      },
      { cached: false, durationMs: 4 * HOUR_MS, onTick: (elapsedMs) => (elapsed = elapsedMs) },
    );
    console.log(`fresh assignment, busy then refused, lookups throttled 1 h: ${JSON.stringify({ ...figures, connectedTo: undefined })}`);
    // The registration at boot, then the first lookup (the fresh assignment refused for a hub window).
    expect(figures.dpsAt[1]).toBeGreaterThanOrEqual(DEFAULT_POLICY.hubRetryWindowMs);
    // Nothing until DPS's wait is over; then registrations (a fresh assignment refused: quick, then parked).
    expect(figures.dpsAt[2]! - figures.dpsAt[1]!).toBeGreaterThanOrEqual(HOUR_MS);
    expect(figures.registrations).toBeGreaterThan(1);
  });

  test('retry-after 1 h, the hub refusing all day: DPS is asked at most once an hour, the hub on its own curve in between', async () => {
    const { figures } = await runFault({
      connect: () => hubFirstConnect(connackError(3)),
      lookup: () => new DpsLookupError(429, HOUR_MS, 'throttled'),
    });
    console.log(`a day of CONNACK 3 with lookups throttled 1 h: ${JSON.stringify({ ...figures, dpsAt: undefined, connectedTo: undefined })}`);
    expect(figures.state).not.toBe('Failed');
    expect(figures.lookups).toBeGreaterThanOrEqual(2);
    expect(minGap(figures.dpsAt)).toBeGreaterThanOrEqual(HOUR_MS);
    expect(figures.lookups + figures.registrations).toBeLessThanOrEqual(DAY_MS / HOUR_MS + 1);
    // Never parked on DPS's wait: the hub is retried at least every slow retry meanwhile.
    expect(figures.hubAttempts).toBeGreaterThan(DAY_MS / DEFAULT_POLICY.maxDelayMs);
  });
});

describe('a hub refusing with CONNACK 3 while DPS fails every status lookup', () => {
  // CONNACK 3 is in doubt (a moved device gets it: field-evidence.md) and never spends the hub
  // budget (a busy hub). A lookup DPS does not answer used to leave nothing behind, so every hub
  // retry asked again: 1,151 lookups a day (2,516 with dpsAtScale), ~8,000 a minute from 10,000
  // devices against DPS's ~1,000.
  const lookupTimeout = () => Object.assign(new Error('DPS status lookup did not complete within 30000 ms'), { name: 'TimeoutError' });
  const lookup503 = () => new DpsLookupError(503, undefined, 'Service Unavailable');
  const failures = [['timing out', lookupTimeout], ['answered 503', lookup503]] as const;

  test('the classification this rests on: a lookup timeout and a 503 carry no wait longer than a hub retry', () => {
    expect(toFailure(lookupTimeout(), 'dps-lookup', 0)).toMatchObject({ errorClass: 'transient' });
    expect(toFailure(lookupTimeout(), 'dps-lookup', 0).retryAfterMs).toBeUndefined();
    const busy = toFailure(lookup503(), 'dps-lookup', 0);
    expect(busy.retryAfterMs).toBeUndefined();
    expect(busy.minDelayMs ?? 0).toBeLessThan(DEFAULT_POLICY.slowRetryMinMs);
  });

  test.each(presets.flatMap(([name, policy]) => failures.map(([what, failure]) => [name, what, policy, failure] as const)))(
    '%s, lookups %s, for a day: DPS rests longer after each failure, up to the longest hub window; the hub on its own curve meanwhile',
    async (name, what, policy, failure) => {
      const { figures } = await runFault({ connect: () => hubFirstConnect(connackError(3)), lookup: failure }, { policy });
      console.log(`a day of CONNACK 3, lookups ${what}, ${name}: ${JSON.stringify({ ...figures, dpsAt: undefined, connectedTo: undefined })}`);
      const longestWindowMs = Math.max(policy.hubRetryWindowMs, policy.hubRetryWindowMaxMs);
      // Once the rest has grown, one per [window/2, window] (spread), plus the ramp (two at once, then up to 3, 6, 12 … min).
      const ramp = Math.ceil(Math.log2(longestWindowMs / policy.maxDelayMs)) + 2;
      expect(figures.lookups).toBeLessThanOrEqual(DAY_MS / (longestWindowMs / 2) + ramp);
      expect(figures.registrations).toBe(0);
      const gaps = figures.dpsAt.slice(1).map((at, i) => at - figures.dpsAt[i]!);
      expect(Math.min(...gaps.slice(ramp))).toBeGreaterThanOrEqual(longestWindowMs / 2);
      // Never longer than the longest window plus a hub retry: a device moved meanwhile is found.
      expect(Math.max(...gaps)).toBeLessThanOrEqual(longestWindowMs + 2 * policy.maxDelayMs);
      // Still asking in the last hour, and the hub retried all along.
      expect(figures.dpsAt[figures.dpsAt.length - 1]).toBeGreaterThan(DAY_MS - longestWindowMs - HOUR_MS);
      expect(figures.hubAttempts).toBeGreaterThan(DAY_MS / policy.maxDelayMs);
    },
  );

  test('DPS back after 3 h, the device moved meanwhile: on the new hub within one rest of DPS answering, without a registration', async () => {
    const dpsBackAtMs = 3 * HOUR_MS;
    let elapsed = 0;
    const { figures } = await runFault(
      {
        connect: (hubHost) => (hubHost === 'hub-a.local' ? hubFirstConnect(connackError(3)) : undefined),
        lookup: () => (elapsed < dpsBackAtMs ? lookupTimeout() : undefined),
      },
      {
        onTick: (elapsedMs, _wall, cloud) => {
          elapsed = elapsedMs;
          cloud.hub = { hubHost: 'hub-b.local', deviceId: 'dev-1' };
        },
        until: (figures) => figures.sessions > 0,
      },
    );
    console.log(`moved while DPS failed lookups for 3 h: on hub-b after ${Math.round(elapsed / MINUTE_MS)} min, ${JSON.stringify({ ...figures, dpsAt: undefined })}`);
    expect(figures.connectedTo).toEqual(['hub-b.local']);
    expect(figures.registrations).toBe(0);
    expect(elapsed).toBeLessThanOrEqual(dpsBackAtMs + DEFAULT_POLICY.hubRetryWindowMs + 2 * DEFAULT_POLICY.maxDelayMs);
  });
});

describe('iotCentral preset (hubRetryWindowMs 60 s), a day of a hub outage DPS cannot route around', () => {
  // IoT Central: 200 registrations a minute per application. The preset leaves an unreachable hub
  // after 60 s so that a failover is caught fast; DPS answering the same hub again used to restart
  // the 60 s window, so a sustained outage was a registration and a lookup per ~80 s per device
  // (1,077 of each a day: 1,000 devices made ~750 registrations a minute, all day). Each same-hub
  // answer now doubles the window up to hubRetryWindowMaxMs (15 min): 60 s, 2, 4, 8, 15, 15 ... min.
  const policy = PRESETS.iotCentral;
  /** DPS requests of one kind a day: one per 15 min once the window has grown, plus the ramp (60 s … 8 min). */
  const perDayBound = DAY_MS / policy.hubRetryWindowMaxMs + Math.ceil(Math.log2(policy.hubRetryWindowMaxMs / policy.hubRetryWindowMs)) + 1;

  test('hub refusing sockets, DPS assigning it again: about one registration and one lookup per 15 min', async () => {
    const { figures } = await runFault({ connect: () => socketError('ECONNREFUSED') }, { policy });
    console.log(`a day of an unreachable hub, iotCentral: ${JSON.stringify({ ...figures, dpsAt: undefined, connectedTo: undefined })}`);
    expect(figures.state).not.toBe('Failed');
    expect(figures.registrations).toBeLessThanOrEqual(perDayBound);
    expect(figures.lookups).toBeLessThanOrEqual(perDayBound);
    // Still reprovisioning all day (the preset's point), and still trying its hub in between.
    expect(figures.registrations).toBeGreaterThanOrEqual(DAY_MS / (policy.hubRetryWindowMaxMs + 2 * policy.maxDelayMs));
    expect(figures.dpsAt[figures.dpsAt.length - 1]).toBeGreaterThan(DAY_MS - HOUR_MS);
    expect(figures.hubAttempts).toBeGreaterThan(DAY_MS / policy.maxDelayMs);
  });

  test('the first DPS answers still come fast: the window grows 60 s, 2 min, 4 min ...', async () => {
    const { figures } = await runFault({ connect: () => socketError('ECONNREFUSED') }, { policy, durationMs: HOUR_MS });
    const gaps = figures.dpsAt.slice(1).map((at, i) => at - figures.dpsAt[i]!);
    // The first question within ~the unreachable limit (60 s) plus quick retries; the second soon after.
    expect(figures.dpsAt[0]).toBeLessThanOrEqual(policy.lookupAfterUnreachableMs + policy.maxDelayMs);
    expect(figures.dpsAt.length).toBeGreaterThanOrEqual(6);
    // The gaps between DPS requests never shrink by more than a retry's jitter as the window grows.
    const longGaps = gaps.filter((gap) => gap > policy.maxDelayMs);
    for (let i = 1; i < longGaps.length; i++) expect(longGaps[i]!).toBeGreaterThanOrEqual(longGaps[i - 1]! - policy.maxDelayMs);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(policy.hubRetryWindowMaxMs + 2 * policy.maxDelayMs);
  });

  test('hub refusing with CONNACK 3, DPS confirming it: a lookup about once per 15 min, no registration', async () => {
    const { figures } = await runFault({ connect: () => hubFirstConnect(connackError(3)) }, { policy });
    console.log(`a day of CONNACK 3, iotCentral: ${JSON.stringify({ ...figures, dpsAt: undefined, connectedTo: undefined })}`);
    expect(figures.registrations).toBe(0);
    expect(figures.lookups).toBeLessThanOrEqual(perDayBound);
    expect(figures.lookups).toBeGreaterThanOrEqual(DAY_MS / (policy.hubRetryWindowMaxMs + 2 * policy.maxDelayMs));
  });

  test('a connection that lasts starts over: the next outage is caught after 60 s again', async () => {
    // A 2 h outage (the window grows to 15 min), then the hub is back for 10 min, then down again.
    const secondOutageStart = 2 * HOUR_MS + 10 * MINUTE_MS;
    const down = (elapsedMs: number) => elapsedMs < 2 * HOUR_MS || elapsedMs >= secondOutageStart;
    let elapsed = 0;
    let dropped = false;
    const { figures } = await runFault(
      { connect: () => (down(elapsed) ? socketError('ECONNREFUSED') : undefined) },
      {
        policy,
        onTick: (elapsedMs, wall, cloud) => {
          elapsed = elapsedMs;
          if (dropped || elapsedMs < secondOutageStart) return;
          // The hub goes down under the working session: the connection is lost.
          dropped = true;
          for (const [epoch, send] of cloud.sessions) send({ type: 'HUB_LOST', epoch, failure: toFailure(socketError('ECONNRESET'), 'hub-session', wall.now()) });
        },
        durationMs: 3 * HOUR_MS,
      },
    );
    const asksAfter = figures.dpsAt.filter((at) => at >= secondOutageStart).map((at) => at - secondOutageStart);
    expect(figures.sessions).toBeGreaterThan(0);
    // The lookup after a minute unreachable, and the registration its 60 s window then allows
    // (not the 15 min the first outage had grown it to).
    expect(asksAfter.length).toBeGreaterThanOrEqual(2);
    expect(asksAfter[1]!).toBeLessThanOrEqual(policy.lookupAfterUnreachableMs + policy.hubRetryWindowMs + 2 * policy.maxDelayMs);
  });
});

describe('NTP steps the wall clock back during a failure run (an RTC set to local time, corrected to UTC)', () => {
  const STEP_BACK_MS = 6 * HOUR_MS;
  const HUB_A = 'hub-a.local';
  const HUB_B = 'hub-b.local';

  /**
   * Refused with CONNACK 3 on its cached hub; DPS first confirms the hub, then (a failover racing
   * the lookup) moves the device to hub-b. The wall clock steps back `stepMs` right after the
   * confirmation. Returns the monotonic time from the confirmation to the first session on hub-b.
   */
  async function movedAfterConfirmation(stepMs: number): Promise<number> {
    let confirmedAt: number | undefined;
    const { figures, elapsedMs } = await runFault(
      { connect: (hubHost) => (hubHost === HUB_A ? hubFirstConnect(connackError(3)) : undefined) },
      {
        onTick: (elapsedMs, wall, cloud, figures) => {
          if (confirmedAt === undefined && figures.lookups === 1) {
            confirmedAt = elapsedMs;
            cloud.hub = { hubHost: HUB_B, deviceId: 'dev-1' };
            wall.jump(-stepMs);
          }
        },
        until: (figures) => figures.connectedTo.includes(HUB_B),
      },
    );
    expect(figures.connectedTo).toContain(HUB_B);
    expect(figures.registrations).toBe(0);
    return elapsedMs - confirmedAt!;
  }

  test('without a step: the confirmation holds one hub window, then DPS is asked again and the device moves', async () => {
    const tookMs = await movedAfterConfirmation(0);
    console.log(`moved after DPS's confirmation, no clock step: ${Math.round(tookMs / MINUTE_MS)} min`);
    expect(tookMs).toBeLessThanOrEqual(DEFAULT_POLICY.hubRetryWindowMs + 2 * DEFAULT_POLICY.maxDelayMs);
  });

  /** A 5 min outage of the cached hub (sockets refused), the wall clock stepped `stepMs` after the first refusal. */
  async function outageAcrossStep(stepMs: number): Promise<DayFigures> {
    let stepped = false;
    const { figures } = await runFault(
      { connect: () => socketError('ECONNREFUSED') },
      {
        durationMs: 5 * MINUTE_MS,
        onTick: (_elapsedMs, wall, _cloud, figures) => {
          if (!stepped && figures.hubAttempts === 1) {
            stepped = true;
            wall.jump(stepMs);
          }
        },
      },
    );
    return figures;
  }

  test('a 5 min outage of the cached hub, no clock step: one lookup (unreachable for a minute), no registration', async () => {
    const figures = await outageAcrossStep(0);
    expect(figures.lookups).toBe(1);
    expect(figures.registrations).toBe(0);
  });

  // The other direction: a step forward must not spend the 15 min hub window at once, or a blip
  // that happens to span an NTP correction (a fleet booting with RTC-less clocks) registers.
  test('stepped forward 1 h during that outage: still no registration (15 min on the hub have not passed)', async () => {
    const figures = await outageAcrossStep(HOUR_MS);
    console.log(`a 5 min outage across a 1 h step forward: ${JSON.stringify({ ...figures, dpsAt: undefined, connectedTo: undefined })}`);
    expect(figures.registrations).toBe(0);
  });

  // Every duration the machine measures (hub window, confirmation, unreachable) is a difference
  // of machine-time stamps (Failure.at = monotonicNow). On wall-clock stamps, a step back of 6 h
  // kept DPS's "same hub" current for 6 h 15 min of real time (377 min), and CONNACK 3 never
  // spends the hub budget: no backstop.
  test('stepped back 6 h: the device still moves within one hub window (plus a retry) of real time', async () => {
    const tookMs = await movedAfterConfirmation(STEP_BACK_MS);
    console.log(`moved after a 6 h step back of the wall clock: ${Math.round(tookMs / MINUTE_MS)} min of real time`);
    expect(tookMs).toBeLessThanOrEqual(DEFAULT_POLICY.hubRetryWindowMs + 2 * DEFAULT_POLICY.maxDelayMs);
  });
});
