/**
 * The fault model's long faults, as the runner replays them: a flapping hub, a DPS outage while
 * the hub is fine and while the device needs DPS, and a disabled device. Each injects its fault,
 * waits for the device to recover, and checks what the leg of states alone cannot show: the
 * waits the device chose follow its policy's curve and floors (read from the policy the device
 * runs, with the policy's own functions), the cloud saw no more attempts than the policy allows,
 * and DPS was asked only when the fault needs it. Every time is read on the run's clock (the
 * simulated one in that mode: cloud records are translated to it).
 */
import type { Device, StateChange } from 'hubstate';
import { curveCapMs, fleetMaxDelayMs, SERVER_BUSY_MIN_DELAY_MS } from 'hubstate/internal';
import type { LocalCloud } from 'hubstate-cloud';
import type { LongFault, RefusalCode } from './fault-model';

/** The policy fields the checks read (the device's resolved RetryPolicy has them all). */
export interface PolicyCurve {
  firstRetryMaxMs: number;
  minDelayMs: number;
  maxDelayMs: number;
  slowRetryMinMs: number;
  quickRetries: number;
  stableConnectionMs: number;
  lookupAfterUnreachableMs: number;
  /** A fixed wait instead of the curve (the seedSample and naive baselines). */
  fixedDelayMs?: number;
  /** Fleet mode: every wait uniform in [minDelayMs, (1/load) · N/cps] instead of the curve (dpsAtScale). */
  fleet?: { devices: number; ratePerSec: number; load: number };
}

/** A state change as the runner records it: `at` on the run's clock; for BackingOff, the wait's deadline. */
export type RecordedState = StateChange & { at: number; retryAt?: number; failedAt?: number };

export interface LongFaultContext {
  device: Device;
  cloud: LocalCloud;
  deviceId: string;
  hubName: string;
  policy: PolicyCurve;
  refusalCode?: RefusalCode;
  /** The run's clock (epoch ms), and a cloud record's wall time read on it. */
  now(): number;
  fromWall(wallAt: number): number;
  /** The states since the fault began. */
  since(): RecordedState[];
  /** Telemetry accepted so far (ids), and those of `ids` that reached no hub. */
  accepted(): readonly string[];
  lostOf(ids: readonly string[]): string[];
  /** Waits for a condition; `policyWaitMs` of the device's own waits are added to the timeout (none when the clock skips). */
  until(what: string, condition: () => boolean, policyWaitMs?: number): Promise<void>;
  /** Waits until the device's current connection has lasted its policy's stableConnectionMs. */
  untilConnectionStable(): Promise<void>;
}

export interface LongFaultResult {
  failures: string[];
  /** What the fault did, in one line (e.g. sessions of a flapping hub, the waits chosen). */
  notes: string[];
}

/** A flapping hub drops each session this long after accepting it (far below any stableConnectionMs). */
export const FLAP_SESSION_MS = 150;
/** DPS away while the hub is fine: longer than the runner's keepalive (2 s) and the compressed stableConnectionMs. */
export const DPS_OUTAGE_MS = 3000;
/** Timers may fire a millisecond early against Date.now(). */
const SLACK_MS = 5;

/** The wait the policy may choose for hub or DPS attempt `n` (no retry-after, no floor), as nextDelay draws it. */
export function policyWindow(policy: PolicyCurve, n: number, afterLoss: boolean): { min: number; max: number } {
  if (policy.fixedDelayMs !== undefined) return { min: policy.fixedDelayMs, max: policy.fixedDelayMs };
  if (policy.fleet !== undefined) {
    const min = afterLoss && n <= 1 ? 0 : policy.minDelayMs;
    return { min, max: Math.max(min, fleetMaxDelayMs(policy.fleet.devices, policy.fleet.ratePerSec, policy.fleet.load)) };
  }
  if (afterLoss && n <= 1) return { min: 0, max: policy.firstRetryMaxMs };
  const cap = curveCapMs(policy.minDelayMs, policy.maxDelayMs, n);
  const slowFloor = n > policy.quickRetries ? Math.min(policy.slowRetryMinMs, policy.maxDelayMs) : 0;
  if (slowFloor > cap / 2) return { min: slowFloor, max: Math.max(slowFloor, policy.maxDelayMs) };
  return { min: cap / 2, max: cap };
}

/**
 * How long the hub flaps: the quick retries and two slow ones at most (5 s at least), so the
 * device goes past its quick retries into the slow floor; and less than the policy's
 * lookupAfterUnreachableMs, after which a hub that keeps failing sends the device to ask DPS
 * where it belongs (59 s with the default policy: the quick retries, then a minute's wait).
 */
export function flapWindowMs(policy: PolicyCurve): number {
  let total = policy.firstRetryMaxMs;
  for (let n = 2; n <= policy.quickRetries; n++) total += curveCapMs(policy.minDelayMs, policy.maxDelayMs, n);
  const window = Math.max(5000, total + 2 * Math.min(policy.slowRetryMinMs, policy.maxDelayMs));
  return Math.min(window, Math.max(0, policy.lookupAfterUnreachableMs - 1000));
}

/** The longest the device may wait in total over its first `attempts` attempts (a timeout for real-time runs). */
function longestWaitsMs(policy: PolicyCurve, attempts: number, floorMs = 0): number {
  let total = 0;
  for (let n = 1; n <= attempts; n++) total += Math.max(policyWindow(policy, n, n === 1).max, floorMs);
  return total;
}

class Checks {
  readonly failures: string[] = [];
  readonly notes: string[] = [];
  that(holds: boolean, failure: string): void {
    if (!holds) this.failures.push(failure);
  }
  /** A wait within [min, max] (ms, rounded in the message). */
  within(what: string, wait: RecordedState | undefined, min: number, max = Infinity, errorClass?: string): void {
    if (!wait) {
      this.failures.push(`${what}: no such wait`);
      return;
    }
    const delay = wait.delayMs ?? NaN;
    this.that(delay >= min && delay <= max, `${what}: waited ${Math.round(delay)} ms, the policy allows ${Math.round(min)}–${max === Infinity ? '∞' : Math.round(max)} ms`);
    if (errorClass !== undefined) this.that(wait.errorClass === errorClass, `${what}: a ${wait.errorClass ?? 'unclassified'} failure, expected ${errorClass}`);
  }
}

const backoffs = (ctx: LongFaultContext) => ctx.since().filter((s) => s.value === 'BackingOff');
const connectedAgain = (ctx: LongFaultContext) => ctx.since().some((s) => s.value === 'Connected') && ctx.device.state() === 'Connected';
const ms = (waits: RecordedState[]) => waits.map((w) => Math.round(w.delayMs ?? NaN)).join(', ');

/** Injects the long fault, waits for the recovery, and checks it; never throws for a failed check. */
export async function replayLongFault(fault: LongFault, ctx: LongFaultContext): Promise<LongFaultResult> {
  const checks = new Checks();
  await LONG_FAULT_REPLAYS[fault](ctx, checks);
  return { failures: checks.failures, notes: checks.notes };
}

const LONG_FAULT_REPLAYS: Record<LongFault, (ctx: LongFaultContext, checks: Checks) => Promise<void>> = {
  async FLAPPING_HUB(ctx, checks) {
    const { cloud, deviceId, hubName, policy } = ctx;
    const hub = cloud.hub(hubName);
    const lookups = cloud.dps.lookups(deviceId).length;
    const registrations = cloud.dps.attempts(deviceId).length;
    const windowMs = flapWindowMs(policy);
    const sessions: number[] = [];
    const drops = new Set<NodeJS.Timeout>();
    const onConnected = (info: { hub: string; deviceId: string }) => {
      if (info.deviceId !== deviceId || info.hub !== hubName) return;
      sessions.push(ctx.now());
      const drop = setTimeout(() => {
        drops.delete(drop);
        hub.disconnect(deviceId);
      }, FLAP_SESSION_MS);
      drops.add(drop);
    };
    cloud.events.on('deviceConnected', onConnected);
    const flapFrom = ctx.now();
    try {
      hub.disconnect(deviceId); // the session that had lasted: from now on no session lasts
      await ctx.until('the flapping window', () => ctx.now() >= flapFrom + windowMs, windowMs);
    } finally {
      cloud.events.off('deviceConnected', onConnected);
      for (const drop of drops) clearTimeout(drop); // the session in progress, if any, may last
    }
    await ctx.until('connected after the flapping', () => connectedAgain(ctx), policy.maxDelayMs);
    await ctx.untilConnectionStable();

    // The hub accepted it again and again: every session was too short to count, so every
    // reconnect is one more attempt on the curve (the first after a loss that had lasted).
    const flapped = sessions.filter((at) => at < flapFrom + windowMs);
    checks.that(flapped.length >= 3, `the hub flapped ${flapped.length} times in ${windowMs} ms, expected at least 3 sessions`);
    const waits = backoffs(ctx);
    waits.forEach((wait, i) => {
      const { min, max } = policyWindow(policy, i + 1, i === 0);
      checks.within(`wait ${i + 1}`, wait, min, max, 'transient');
    });
    // Seen from the hub: no session starts sooner after the one before than the policy allows
    // (it lasted FLAP_SESSION_MS, then the device waited at least the attempt's minimum) ...
    for (let k = 1; k < flapped.length; k++) {
      const gap = flapped[k]! - flapped[k - 1]!;
      const least = FLAP_SESSION_MS + policyWindow(policy, k + 1, false).min - SLACK_MS;
      checks.that(gap >= least, `session ${k + 1} began ${Math.round(gap)} ms after session ${k}, the policy allows no sooner than ${Math.round(least)} ms`);
    }
    // ... so over the window it reconnected at most as often as the curve's minimum waits allow
    // (with the default policy's minute floor that is 4 sessions in the first minute).
    let allowed = 0;
    for (let elapsed = policyWindow(policy, 1, true).min; elapsed <= windowMs; elapsed += FLAP_SESSION_MS + policyWindow(policy, allowed + 1, false).min) allowed++;
    checks.that(flapped.length <= allowed, `${flapped.length} sessions in ${windowMs} ms, the policy allows at most ${allowed}`);
    // Recovered without DPS, and the connection that lasted reset the counters.
    checks.that(cloud.dps.lookups(deviceId).length === lookups, 'asked DPS where it belongs during a flapping hub');
    checks.that(cloud.dps.attempts(deviceId).length === registrations, 'registered with DPS during a flapping hub');
    const hubAttempts = ctx.device.actor.getSnapshot().context.hubAttempts;
    checks.that(hubAttempts === 0, `the connection that lasted left ${hubAttempts} hub attempts counted, expected 0`);
    checks.notes.push(`flapping hub: ${flapped.length} sessions in ${windowMs} ms (the policy allows ${allowed}); waits ${ms(waits)} ms`);
  },

  async DPS_OUTAGE(ctx, checks) {
    const { cloud, deviceId } = ctx;
    const mark = ctx.since().length;
    const lookups = cloud.dps.lookups(deviceId).length;
    const registrations = cloud.dps.attempts(deviceId).length;
    await cloud.dps.down();
    const from = ctx.now();
    const sentBefore = ctx.accepted().length;
    try {
      await ctx.until('the outage to last', () => ctx.now() >= from + DPS_OUTAGE_MS);
      // telemetry kept flowing to the hub while DPS was away
      await ctx.until('telemetry during the outage', () => ctx.accepted().length > sentBefore + 5 && ctx.lostOf(ctx.accepted().slice(sentBefore)).length === 0);
      checks.that(ctx.device.state() === 'Connected', `left Connected while DPS was away (now ${ctx.device.state()})`);
    } finally {
      await cloud.dps.up();
    }
    const changes = ctx.since().slice(mark);
    checks.that(changes.length === 0, `changed state while DPS was away and the hub was fine: ${changes.map((s) => s.value).join(' → ')}`);
    checks.that(cloud.dps.lookups(deviceId).length === lookups, 'asked DPS where it belongs while connected');
    checks.that(cloud.dps.attempts(deviceId).length === registrations, 'registered with DPS while connected');
  },

  async DPS_OUTAGE_REPROVISION(ctx, checks) {
    const { cloud, deviceId, policy } = ctx;
    const registrations = cloud.dps.registration(deviceId)?.registrations ?? 0;
    const answered = cloud.dps.answers(deviceId).length;
    await cloud.dps.down();
    try {
      ctx.device.reprovision(); // asked for (the application or a cloud command): it needs DPS now
      // past the quick retries, into the slow floor
      await ctx.until(`DPS unreachable ${policy.quickRetries + 1} times`, () => backoffs(ctx).length >= policy.quickRetries + 1, longestWaitsMs(policy, policy.quickRetries + 1));
      // DPS comes back overloaded: one 503, then it registers
      cloud.dps.failWith({ status: 503, count: 1, target: 'register' });
    } finally {
      await cloud.dps.up();
    }
    await ctx.until('connected after the outage', () => connectedAgain(ctx), 2 * Math.max(policy.maxDelayMs, SERVER_BUSY_MIN_DELAY_MS));

    const waits = backoffs(ctx);
    const unreachable = waits.slice(0, -1);
    const afterBusy = waits[waits.length - 1];
    checks.that(unreachable.length >= policy.quickRetries + 1, `${unreachable.length} waits while DPS was unreachable, expected at least ${policy.quickRetries + 1}`);
    unreachable.forEach((wait, i) => {
      // DPS attempts on the curve: the loss of DPS is not the loss of a connection that had lasted
      const { min, max } = policyWindow(policy, i + 1, false);
      checks.within(`wait ${i + 1} (DPS unreachable)`, wait, min, max, 'transient');
    });
    checks.within('the wait after the 503', afterBusy, SERVER_BUSY_MIN_DELAY_MS, Infinity, 'transient');
    // DPS saw the 503, then the next registration no sooner than the floor, and it succeeded
    const busy = cloud.dps.answers(deviceId).slice(answered).find((a) => a.request === 'register' && a.status === 503);
    checks.that(busy !== undefined, 'DPS never answered the injected 503');
    if (busy) {
      const next = cloud.dps.attempts(deviceId).filter((at) => at > busy.at);
      checks.that(next.length === 1, `${next.length} registrations after the 503, expected 1`);
      const gap = next.length > 0 ? ctx.fromWall(next[0]!) - ctx.fromWall(busy.at) : NaN;
      checks.that(gap >= SERVER_BUSY_MIN_DELAY_MS - SLACK_MS, `registered again ${Math.round(gap)} ms after the 503, before the ${SERVER_BUSY_MIN_DELAY_MS} ms floor`);
    }
    const registration = cloud.dps.registration(deviceId);
    checks.that(registration?.registrations === registrations + 1, `${(registration?.registrations ?? 0) - registrations} new registrations, expected 1`);
    checks.that(ctx.device.assignment()?.hubHost === registration?.assignedHub, `on ${ctx.device.assignment()?.hubHost}, DPS assigned ${registration?.assignedHub}`);
    checks.notes.push(`DPS outage while reprovisioning: waits ${ms(waits)} ms`);
  },

  async DISABLED_DEVICE(ctx, checks) {
    const { cloud, deviceId, hubName, policy, refusalCode } = ctx;
    const hub = cloud.hub(hubName);
    const lookups = cloud.dps.lookups(deviceId).length;
    const registrations = cloud.dps.attempts(deviceId).length;
    const refusedBefore = hub.refusals(deviceId).length;
    hub.disableDevice(deviceId, 'operator', refusalCode);
    try {
      // refused, DPS asked once (it still names this hub), refused again on the hub's backoff
      await ctx.until(
        'refused twice, backing off',
        () => hub.refusals(deviceId).length >= refusedBefore + 2 && backoffs(ctx).length >= 3,
        policy.firstRetryMaxMs + 2 * Math.max(SERVER_BUSY_MIN_DELAY_MS, policy.maxDelayMs),
      );
    } finally {
      hub.enableDevice(deviceId);
    }
    await ctx.until('connected once enabled', () => connectedAgain(ctx), Math.max(SERVER_BUSY_MIN_DELAY_MS, policy.maxDelayMs));

    const refusals = hub.refusals(deviceId).slice(refusedBefore);
    const seen = refusals.map((r) => `${r.code} ${r.reason}`).join(', ');
    checks.that(seen === `${refusalCode} disabled, ${refusalCode} disabled`, `refusals ${seen || 'none'}, expected two CONNACK ${refusalCode} as disabled`);
    const newLookups = cloud.dps.lookups(deviceId).slice(lookups).map((l) => l.status);
    checks.that(newLookups.join() === '200', `DPS lookups answered ${newLookups.join(', ') || 'none'}, expected one (200)`);
    checks.that(cloud.dps.attempts(deviceId).length === registrations, 'registered with DPS while disabled');
    // The waits on the hub: the short one after the loss, then the hub's backoff — on the curve
    // for CONNACK 5, at least the floor of a busy hub for CONNACK 3 (DPS confirmed the hub).
    const waits = backoffs(ctx);
    checks.that(waits.length === 3, `${waits.length} waits, expected 3 (${ms(waits)} ms)`);
    checks.within('the wait after the loss', waits[0], 0, policyWindow(policy, 1, true).max);
    // the second wait follows DPS's answer (it names this hub), the third the hub's second refusal
    checks.that(waits[1]?.event === 'xstate.done.actor.lookupAssignment', `the second wait followed ${waits[1]?.event}, expected DPS's answer`);
    checks.that(waits[2]?.errorClass === (refusalCode === 3 ? 'transient' : 'reprovision'), `the third wait is ${waits[2]?.errorClass}, expected ${refusalCode === 3 ? 'transient' : 'reprovision'}`);
    for (const [i, wait] of waits.slice(1, 3).entries()) {
      if (refusalCode === 3) checks.within(`wait ${i + 2}`, wait, SERVER_BUSY_MIN_DELAY_MS);
      else {
        const { min, max } = policyWindow(policy, i + 2, false);
        checks.within(`wait ${i + 2}`, wait, min, max);
      }
    }
    if (refusals.length >= 2) {
      const floor = refusalCode === 3 ? SERVER_BUSY_MIN_DELAY_MS : policyWindow(policy, 2, false).min;
      const gap = ctx.fromWall(refusals[1]!.at) - ctx.fromWall(refusals[0]!.at);
      checks.that(gap >= floor - SLACK_MS, `refused again ${Math.round(gap)} ms after the first refusal, before the ${Math.round(floor)} ms floor`);
    }
    checks.notes.push(`disabled device (CONNACK ${refusalCode}): waits ${ms(waits)} ms`);
  },
};
