/**
 * Controllable fake actors for the device machine: each invocation parks a pending promise
 * that the test settles (resolve / reject with a classified Failure), so a test decides every
 * outcome and the SimulatedClock decides every delay.
 */
import { createActor, fromCallback, fromPromise, SimulatedClock, type EventObject } from 'xstate';
import { deviceMachine, leafStateName, type DeviceEvent, type DeviceMachine, type HubAttemptInput, type LookupResult, type ProvisionResult } from '../../machines/device.machine';
import { waitUntilWork } from '../../src/actors/wait';
import type { ErrorClass, Failure, Phase, RetryPolicy } from '../../src/policy/types';

interface Pending<T> {
  input: unknown;
  resolve(value: T): void;
  reject(failure: Failure): void;
  /** Set when the machine stopped the invoking actor (its state was left) before it settled. */
  aborted: boolean;
}

function park<T>(queue: Pending<T>[], input: unknown, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const pending: Pending<T> = { input, resolve, reject, aborted: false };
    signal.addEventListener('abort', () => (pending.aborted = true), { once: true });
    queue.push(pending);
  });
}

/** The machine tests' policy: the defaults' shape with a small hub budget (4 attempts) so its paths are short. */
export const MACHINE_TEST_POLICY: RetryPolicy = {
  firstRetryMaxMs: 1000,
  minDelayMs: 1000,
  maxDelayMs: 60_000,
  throttledMinDelayMs: 5000,
  retryAfterJitterMs: 1000,
  quickRetries: 10,
  slowRetryMinMs: 60_000,
  parkedMinDelayMs: 15 * 60_000,
  parkedMaxDelayMs: 30 * 60_000,
  stableConnectionMs: 30_000,
  lookupAfterUnreachableMs: 60_000,
  maxHubAttempts: 4,
  hubRetryWindowMs: 15 * 60_000,
  hubRetryWindowMaxMs: 15 * 60_000,
};

export class FakeCloud {
  readonly clock = new SimulatedClock();
  readonly provisions: Pending<ProvisionResult>[] = [];
  readonly opens: Pending<{ connectedAt: number }>[] = [];
  readonly lookups: Pending<LookupResult>[] = [];
  /** closeHub invocations, parked only when `parkCloses` is set (otherwise closeHub resolves at once). */
  readonly closes: Pending<void>[] = [];
  parkCloses = false;
  readonly sessions = new Map<number, (event: DeviceEvent) => void>();
  readonly calls = { provision: 0, lookupAssignment: 0, openHub: 0, closeHub: 0, saveAssignment: 0 };
  hub = { hubHost: 'hub-a.local', deviceId: 'dev-1' };

  constructor(startAt = 1_700_000_000_000) {
    this.clock.set(startAt);
  }

  failure(errorClass: ErrorClass, extra: Partial<Failure> = {}, phase: Phase = 'hub-connect'): Failure {
    return { errorClass, rule: `test-${errorClass}`, phase, name: 'TestError', message: errorClass, at: this.clock.now(), ...extra };
  }

  /** The machine with the fake actors; `base` lets a test run a variant (e.g. a mutant) of the device machine. */
  machine(base: DeviceMachine = deviceMachine) {
    return base.provide({
      actors: {
        provision: fromPromise<ProvisionResult, { registrationId: string; attempt: number }>(({ input, signal }) => {
          this.calls.provision++;
          return park(this.provisions, input, signal);
        }),
        lookupAssignment: fromPromise<LookupResult, { registrationId: string }>(({ input, signal }) => {
          this.calls.lookupAssignment++;
          return park(this.lookups, input, signal);
        }),
        openHub: fromPromise<{ connectedAt: number }, HubAttemptInput>(({ input, signal }) => {
          this.calls.openHub++;
          return park(this.opens, input, signal);
        }),
        hubSession: fromCallback<EventObject, HubAttemptInput>(({ input, sendBack }) => {
          this.sessions.set(input.epoch, sendBack);
          return () => this.sessions.delete(input.epoch);
        }),
        closeHub: fromPromise<void, { epoch: number }>(async ({ input, signal }) => {
          this.calls.closeHub++;
          if (this.parkCloses) return park(this.closes, input, signal);
        }),
        // The device's own wait, on the simulated clock.
        waitUntil: fromPromise(waitUntilWork(this.clock)),
      },
      actions: {
        saveAssignment: () => {
          this.calls.saveAssignment++;
        },
      },
    });
  }

  /** Let promise actors settle (they resolve on microtasks). */
  async flush(): Promise<void> {
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
  }

  async assign(): Promise<void> {
    this.provisions.shift()!.resolve({ ...this.hub, assignedAt: this.clock.now(), registeredAt: this.clock.now() });
    await this.flush();
  }

  async failProvision(failure: Failure): Promise<void> {
    this.provisions.shift()!.reject(failure);
    await this.flush();
  }

  /** DPS answers the status lookup: the device is on `hubHost` (default: the fake's current hub). */
  async answerLookup(hubHost: string = this.hub.hubHost): Promise<void> {
    this.lookups.shift()!.resolve({ hubHost, deviceId: this.hub.deviceId, checkedAt: this.clock.now(), assignedAt: this.clock.now() });
    await this.flush();
  }

  async failLookup(failure: Failure): Promise<void> {
    this.lookups.shift()!.reject(failure);
    await this.flush();
  }

  async connect(): Promise<void> {
    this.opens.shift()!.resolve({ connectedAt: this.clock.now() });
    await this.flush();
  }

  async failOpen(failure: Failure): Promise<void> {
    this.opens.shift()!.reject(failure);
    await this.flush();
  }

  async advance(ms: number): Promise<void> {
    this.clock.increment(ms);
    await this.flush();
  }
}

/** Starts the machine on `cloud`'s fakes (dev-1; MACHINE_TEST_POLICY unless given) and records its leaf states. */
export function startMachine(cloud: FakeCloud, options: { cached?: boolean; policy?: RetryPolicy; seed?: number } = {}) {
  const actor = createActor(cloud.machine(), {
    clock: cloud.clock,
    input: {
      registrationId: 'dev-1',
      policy: options.policy ?? MACHINE_TEST_POLICY,
      seed: options.seed ?? 42,
      cachedAssignment: options.cached ? { hubHost: 'cached-hub.local', deviceId: 'dev-1', assignedAt: 1 } : null,
    },
  });
  const states: string[] = [];
  actor.subscribe((snapshot) => {
    const value = leafStateName(snapshot.value);
    if (states[states.length - 1] !== value) states.push(value);
  });
  actor.start();
  actor.send({ type: 'START' });
  return { actor, states, value: () => leafStateName(actor.getSnapshot().value), context: () => actor.getSnapshot().context };
}

/**
 * After a parked DPS failure (MACHINE_TEST_POLICY): BackingOff for a delay within the parked
 * range, no DPS call before it ends, then DPS again, assigned and Connected.
 */
export async function expectParkedThenRegistersAgain(cloud: FakeCloud, device: ReturnType<typeof startMachine>): Promise<void> {
  expect(device.value()).toBe('BackingOff');
  expect(device.context().delayMs).toBeGreaterThanOrEqual(MACHINE_TEST_POLICY.parkedMinDelayMs);
  expect(device.context().delayMs).toBeLessThanOrEqual(MACHINE_TEST_POLICY.parkedMaxDelayMs);
  const calls = cloud.calls.provision;
  await cloud.advance(device.context().delayMs! - 1);
  expect(cloud.calls.provision).toBe(calls);
  await cloud.advance(1);
  expect(device.value()).toBe('Provisioning');
  await cloud.assign();
  await cloud.connect();
  expect(device.value()).toBe('Connected');
}
