/**
 * The device statechart: every decision about provisioning, connecting, backing off,
 * reprovisioning and shutting down is taken here, and nowhere else.
 *
 * Layer rule: no I/O and no azure-iot-* import. The actors below are placeholders that fail
 * loudly; src/ provides the real ones with `deviceMachine.provide({ actors, actions })`, tests
 * provide fakes. The only imports are the pure policies (delays) and types.
 *
 * Time: the machine never reads a clock. Every failure arrives stamped with the time it was
 * observed (`Failure.at`), and the retry deadline is `at + delay`, kept in context as `retryAt`
 * and waited on by an invoked `waitUntil` actor. A snapshot persisted in BackingOff therefore
 * resumes and fires at the original deadline (XState's own `after` does not survive a restore).
 *
 * Randomness: the jitter RNG state lives in context (`rngState`), seeded from input, so a run is
 * reproducible and a restored snapshot continues the same sequence.
 */
import { assign, fromCallback, fromPromise, setup, type EventObject } from 'xstate';
import { nextDelay } from '../src/policy/backoff';
import type { ErrorClass, Failure, Phase, RetryPolicy } from '../src/policy/types';

/** Where the device is assigned: the IoT Hub and the device id DPS gave it. */
export interface Assignment {
  hubHost: string;
  deviceId: string;
  /** Whether it came from the provisioning cache (no DPS call) or from DPS in this run. */
  source: 'cache' | 'dps';
  /** Epoch ms of the DPS assignment. */
  assignedAt: number;
}

/** What the provision actor resolves with. */
export interface ProvisionResult {
  hubHost: string;
  deviceId: string;
  assignedAt: number;
}

/** What the status-lookup actor resolves with: where DPS says the device belongs now. */
export interface LookupResult {
  hubHost: string;
  deviceId: string;
  /** Epoch ms of the answer (the actor's clock; the machine never reads one). */
  checkedAt: number;
}

/** Which step a BackingOff wait returns to. */
export type RetryStep = 'Provisioning' | 'Reprovisioning' | 'Connecting' | 'CheckingAssignment';

export interface DeviceContext {
  registrationId: string;
  policy: RetryPolicy;
  assignment: Assignment | null;
  /** Connection epoch: bumped on every hub attempt; events of older SDK clients are ignored. */
  epoch: number;
  /** Failed DPS rounds since the last working hub connection (a refused fresh assignment counts). */
  dpsAttempts: number;
  /** Consecutive failed attempts on the current hub (resets on a successful connect). */
  hubAttempts: number;
  /** When the current run of hub failures began (for the hub retry window budget). */
  firstFailureAt: number | null;
  lastError: Failure | null;
  /** The service-given wait of the last failure, if any. */
  retryAfterMs: number | null;
  /** The chosen delay of the current (or last) wait. */
  delayMs: number | null;
  /** Deadline of the current wait, epoch ms. */
  retryAt: number | null;
  retryStep: RetryStep;
  rngState: number;
  /** When the current hub connection was accepted (the openHub actor's clock), while Connected. */
  connectedAt: number | null;
  /**
   * The current connection has lasted `policy.stableConnectionMs`: only then is it a success
   * that resets the backoff and the hub budget. A session that ends sooner is the next attempt.
   */
  connectionStable: boolean;
  /**
   * Whether the current assignment has worked at least once (a cached one is presumed to). A
   * fresh DPS assignment refused by its hub is not a reason to ask DPS again at once: that would
   * be a registration storm while, say, the device is disabled. It backs off first.
   */
  assignmentProven: boolean;
  /**
   * DPS confirmed (status lookup) that the current hub is still this device's, during the
   * current run of hub failures: further refusals are the hub's own trouble, backed off on it.
   */
  assignmentConfirmed: boolean;
  /** See {@link DeviceInput.lookupAtBoot}. */
  lookupAtBoot: boolean;
}

export interface DeviceInput {
  registrationId: string;
  policy: RetryPolicy;
  /** An assignment read from the provisioning cache: START goes straight to Connecting. */
  cachedAssignment?: Omit<Assignment, 'source'> | null;
  /** Seed of the jitter RNG (any 32-bit integer). */
  seed: number;
  /**
   * The device cannot keep a provisioning cache (no data directory): without a cached assignment
   * START asks DPS where it belongs (status lookup) instead of registering (seed 004, "Devices
   * that can't store a connection string"); it registers when DPS has no registration for it.
   */
  lookupAtBoot?: boolean;
}

export type DeviceEvent =
  | { type: 'START' }
  | { type: 'STOP' }
  | { type: 'REPROVISION' }
  | { type: 'RETRY' }
  /** The hub session of `epoch` ended: the connection was lost or an operation failed for good. */
  | { type: 'HUB_LOST'; epoch: number; failure: Failure };

/** Input of the hub actors: one SDK client per epoch. */
export interface HubAttemptInput {
  assignment: Assignment;
  epoch: number;
}

function notProvided(name: string): never {
  throw new Error(`device machine: actor '${name}' was not provided (use deviceMachine.provide)`);
}

/**
 * Actors always reject with a classified `Failure`. Anything else is a bug in an actor; it is
 * treated as transient (the hub budget still bounds it) rather than crashing the device.
 */
function failureOf(error: unknown, phase: Phase): Failure {
  const candidate = error as Partial<Failure> | null;
  if (candidate && typeof candidate.errorClass === 'string' && typeof candidate.at === 'number') {
    return candidate as Failure;
  }
  const asError = error instanceof Error ? error : new Error(String(error));
  return {
    errorClass: 'transient',
    rule: 'unclassified-actor-error',
    phase,
    name: asError.name,
    message: asError.message,
    at: Date.now(),
  };
}

/** The failure carried by an actor error event or a HUB_LOST event. */
function failureFromEvent(event: EventObject, phase: Phase): Failure {
  if (event.type === 'HUB_LOST') return (event as Extract<DeviceEvent, { type: 'HUB_LOST' }>).failure;
  return failureOf((event as EventObject & { error?: unknown }).error, phase);
}

/** The next deadline after `failure`: the policy's delay for this attempt, from the failure's time. */
function scheduleRetry(context: DeviceContext, failure: Failure, attempt: number, afterLoss: boolean) {
  const decision = nextDelay(
    context.policy,
    { errorClass: failure.errorClass, attempt, afterLoss, retryAfterMs: failure.retryAfterMs, minDelayMs: failure.minDelayMs },
    context.rngState,
  );
  return {
    lastError: failure,
    retryAfterMs: failure.retryAfterMs ?? null,
    delayMs: decision.delayMs,
    retryAt: failure.at + decision.delayMs,
    rngState: decision.rngState,
  };
}

/** Context changes for a failure on the DPS step. */
function planDpsRetry(context: DeviceContext, failure: Failure, retryStep: RetryStep): Partial<DeviceContext> {
  const attempt = context.dpsAttempts + 1;
  return { ...scheduleRetry(context, failure, attempt, false), dpsAttempts: attempt, retryStep };
}

/** Context changes for a failure on the hub. */
function planHubRetry(context: DeviceContext, failure: Failure, afterLoss: boolean): Partial<DeviceContext> {
  const attempt = context.hubAttempts + 1;
  return {
    ...scheduleRetry(context, failure, attempt, afterLoss),
    hubAttempts: attempt,
    firstFailureAt: context.firstFailureAt ?? failure.at,
  };
}

/**
 * True when this hub failure spends the budget (attempt count or time window, first wins). A busy
 * service (5xx, CONNACK 3 on a hub DPS confirmed) never sends the device to DPS on its own.
 */
function hubBudgetSpent(context: DeviceContext, failure: Failure): boolean {
  if (failure.serverBusy === true) return false;
  const attempts = context.hubAttempts + 1;
  const since = context.firstFailureAt ?? failure.at;
  return attempts >= context.policy.maxHubAttempts || failure.at - since >= context.policy.hubRetryWindowMs;
}

/** DPS failures: fatal ends in Failed; everything else waits and tries the same step again. */
function dpsFailureTransitions(step: 'Provisioning' | 'Reprovisioning') {
  const failure = ({ event }: { event: EventObject }) => failureFromEvent(event, 'dps');
  return [
    {
      guard: { type: 'failureIs', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }), errorClass: 'fatal' as const }) },
      target: 'Failed',
      actions: { type: 'recordFailure', params: ({ event }: { event: EventObject }) => ({ phase: 'dps' as const, failure: failure({ event }) }) },
    },
    {
      // A disabled registration, a DPS that failed it for now: ask again only after the long wait.
      guard: { type: 'failureIs', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }), errorClass: 'parked' as const }) },
      target: 'BackingOff',
      actions: { type: 'planDpsRetry', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }), step }) },
    },
    ...(step === 'Reprovisioning'
      ? [
          {
            guard: 'hasAssignment',
            target: 'BackingOff',
            actions: { type: 'planDpsRetry', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }), step: 'Connecting' as const }) },
          } as const,
        ]
      : []),
    {
      target: 'BackingOff',
      actions: { type: 'planDpsRetry', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }), step }) },
    },
  ] as const;
}

/**
 * Hub failures, on connect and in session. Guard order matters: fatal, then the reprovision
 * class, then the budget (so the counter cannot grow without bound), then back off on this hub.
 */
function hubFailureTransitions(phase: 'hub-connect' | 'hub-session', afterLoss: boolean) {
  const failure = ({ event }: { event: EventObject }) => failureFromEvent(event, phase);
  const leave = { type: 'leaveHub', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }) }) } as const;
  return [
    {
      guard: { type: 'failureIs', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }), errorClass: 'fatal' as const }) },
      target: 'Failed',
      actions: { type: 'recordFailure', params: ({ event }: { event: EventObject }) => ({ phase, failure: failure({ event }) }) },
    },
    {
      // What an operator can fix remotely (a blocked device, a clock not set yet): retry this hub
      // on the long parked wait, without spending the hub budget.
      guard: { type: 'failureIs', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }), errorClass: 'parked' as const }) },
      target: 'BackingOff',
      actions: { type: 'planParkedRetry', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }), step: 'Connecting' as const }) },
    },
    ...(phase === 'hub-connect'
      ? [
          {
            guard: { type: 'freshAssignmentRefused', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }) }) },
            target: 'BackingOff',
            actions: { type: 'planReprovisionRetry', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }) }) },
          } as const,
        ]
      : []),
    // A refused connect asks DPS at once (the attempt itself was already spread by its backoff);
    // a lost session waits the short spread first, so a fleet dropped together does not ask together.
    phase === 'hub-connect'
      ? ({
          guard: { type: 'shouldCheckAssignment', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }) }) },
          target: 'CheckingAssignment',
          actions: { type: 'noteDoubtfulRefusal', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }) }) },
        } as const)
      : ({
          guard: { type: 'shouldCheckAssignment', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }) }) },
          target: 'BackingOff',
          actions: { type: 'planAssignmentCheck', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }) }) },
        } as const),
    {
      guard: { type: 'hubBudgetSpent', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }) }) },
      target: 'Reprovisioning',
      actions: leave,
    },
    {
      guard: { type: 'reprovisionUnlessConfirmed', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }) }) },
      target: 'Reprovisioning',
      actions: leave,
    },
    ...(afterLoss
      ? [
          {
            guard: 'reprovisionOnLoss',
            target: 'BackingOff',
            actions: { type: 'planHubRetry', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }), afterLoss, then: 'Reprovisioning' as const }) },
          } as const,
        ]
      : []),
    {
      target: 'BackingOff',
      actions: { type: 'planHubRetry', params: ({ event }: { event: EventObject }) => ({ failure: failure({ event }), afterLoss, then: 'Connecting' as const }) },
    },
  ] as const;
}

export const deviceMachine = setup({
  types: {
    context: {} as DeviceContext,
    events: {} as DeviceEvent,
    input: {} as DeviceInput,
  },
  actors: {
    /** Register with DPS; resolves with the assigned hub, rejects with a classified Failure. */
    provision: fromPromise<ProvisionResult, { registrationId: string; attempt: number }>(async () =>
      notProvided('provision'),
    ),
    /** Open an SDK client on the assigned hub for one epoch; rejects with a classified Failure. */
    openHub: fromPromise<{ connectedAt: number }, HubAttemptInput>(async () => notProvided('openHub')),
    /** Live hub session of one epoch: drains the outbox, reports HUB_LOST, closes on exit. */
    hubSession: fromCallback<EventObject, HubAttemptInput>(() => notProvided('hubSession')),
    /** Ask DPS where the device belongs now (status lookup, not a registration); rejects with a classified Failure. */
    lookupAssignment: fromPromise<LookupResult, { registrationId: string }>(async () => notProvided('lookupAssignment')),
    /** Close whatever client is still open (bounded by a timeout). */
    closeHub: fromPromise<void, { epoch: number }>(async () => notProvided('closeHub')),
    /** Resolves at the deadline `retryAt` (epoch ms), on the actor system's clock. */
    waitUntil: fromPromise<void, { retryAt: number }>(async () => notProvided('waitUntil')),
  },
  actions: {
    /** Persist the assignment to the provisioning cache (provided by src/). */
    saveAssignment: (_args, _params: { assignment: Assignment }) => {},
    adoptAssignment: assign(({ event }) => {
      const output = (event as unknown as { output: ProvisionResult }).output;
      return {
        assignment: { ...output, source: 'dps' as const },
        assignmentProven: false,
        // dpsAttempts is kept until the assignment works: a refused fresh assignment keeps growing the backoff.
        hubAttempts: 0,
        firstFailureAt: null,
        lastError: null,
      };
    }),
    nextEpoch: assign({ epoch: ({ context }) => context.epoch + 1 }),
    /** The hub accepted the device: the assignment works. The counters wait until it has lasted. */
    markConnected: assign(({ event }) => ({
      assignmentProven: true,
      connectionStable: false,
      connectedAt: (event as unknown as { output: { connectedAt: number } }).output.connectedAt,
    })),
    /** The connection has lasted `stableConnectionMs`: a success, every failure run is over. */
    markStable: assign({
      connectionStable: true,
      assignmentConfirmed: false,
      hubAttempts: 0,
      dpsAttempts: 0,
      firstFailureAt: null,
    }),
    recordFailure: assign((_, params: { phase: Phase; failure: Failure }) => ({ lastError: params.failure })),
    /** Leaving the hub: its failure run is over. */
    leaveHub: assign((_, params: { failure: Failure }) => ({
      lastError: params.failure,
      hubAttempts: 0,
      firstFailureAt: null,
    })),
    /** Going to DPS from a lookup: the hub's failure run is over (the refusal stays the last error). */
    resetHubRun: assign({ hubAttempts: 0, firstFailureAt: null, assignmentConfirmed: false }),
    planDpsRetry: assign(({ context }, params: { failure: Failure; step: RetryStep }) =>
      planDpsRetry(context, params.failure, params.step),
    ),
    /**
     * A fresh assignment refused by its hub: DPS again, but only after a DPS-style backoff; once
     * the quick retries are spent the device is disabled or blocked there (an operator must act):
     * parked, so it asks DPS at most every 15-30 minutes instead of every minute forever.
     */
    planReprovisionRetry: assign(({ context }, params: { failure: Failure }) => {
      const parked = context.dpsAttempts + 1 > context.policy.quickRetries;
      const failure: Failure = parked ? { ...params.failure, errorClass: 'parked' } : params.failure;
      return { ...planDpsRetry(context, failure, 'Reprovisioning'), hubAttempts: 0, firstFailureAt: null };
    }),
    /** Parked: the same step again after the long wait; the counters stay as they are. */
    planParkedRetry: assign(({ context }, params: { failure: Failure; step: RetryStep }) => ({
      ...scheduleRetry(context, params.failure, 1, false),
      retryStep: params.step,
    })),
    planHubRetry: assign(({ context }, params: { failure: Failure; afterLoss: boolean; then: RetryStep }) => ({
      // Only the loss of a connection that had lasted gets the short first retry.
      ...planHubRetry(context, params.failure, params.afterLoss && context.connectionStable),
      retryStep: params.then,
    })),
    resetCounters: assign({ dpsAttempts: 0, hubAttempts: 0, firstFailureAt: null }),
    reprovisionAfterWait: assign({ retryStep: 'Reprovisioning' as const }),
    /** A hub this device worked on refused a connect in a way that may mean it was moved. */
    noteDoubtfulRefusal: assign(({ context }, params: { failure: Failure }) => ({
      lastError: params.failure,
      retryAfterMs: params.failure.retryAfterMs ?? null,
      firstFailureAt: context.firstFailureAt ?? params.failure.at,
    })),
    /**
     * A session ended in a way that may mean the device was moved: ask DPS, after the short
     * spread wait of a first retry (or the fleet window) so that a fleet dropped together does
     * not become a lookup storm. No floor: the wait is for DPS, not the hub.
     */
    planAssignmentCheck: assign(({ context }, params: { failure: Failure }) => {
      const spread: Failure = { ...params.failure, errorClass: 'transient' };
      delete spread.retryAfterMs;
      delete spread.minDelayMs;
      return {
        ...scheduleRetry(context, spread, 1, true),
        lastError: params.failure,
        retryAfterMs: params.failure.retryAfterMs ?? null,
        firstFailureAt: context.firstFailureAt ?? params.failure.at,
        retryStep: 'CheckingAssignment' as const,
      };
    }),
    /**
     * DPS moved the device: connect to the hub it names now. Like a fresh registration it is not
     * proven until it works, so a refusal there is not looked up again (no ping-pong between hubs).
     */
    adoptLookedUpAssignment: assign(({ event }) => {
      const output = (event as unknown as { output: LookupResult }).output;
      return {
        assignment: { hubHost: output.hubHost, deviceId: output.deviceId, assignedAt: output.checkedAt, source: 'dps' as const },
        assignmentProven: false,
        assignmentConfirmed: false,
        hubAttempts: 0,
        firstFailureAt: null,
      };
    }),
    /**
     * DPS still places the device here (or could not answer): the refusal is the hub's own
     * trouble. Back off on it; the hub budget decides when to register again. A confirmed
     * assignment is not looked up again until a connection works.
     */
    planRetryOnSameHub: assign(({ context }, params: { at: number; confirmed: boolean }) => {
      const refusal: Failure = { ...(context.lastError ?? failureOf(new Error('hub refused'), 'hub-connect')), at: params.at };
      return { ...planHubRetry(context, refusal, false), lastError: refusal, retryStep: 'Connecting' as const, assignmentConfirmed: params.confirmed };
    }),
  },
  guards: {
    hasAssignment: ({ context }) => context.assignment !== null,
    noAssignment: ({ context }) => context.assignment === null,
    lookupAtBoot: ({ context }) => context.lookupAtBoot,
    /** The current wait is a DPS retry-after (its next step is a registration). */
    waitingOnDpsRetryAfter: ({ context }) => context.retryAfterMs !== null && context.lastError?.phase === 'dps',
    /** The hub refused (reprovision class) an assignment DPS just gave and that never worked. */
    freshAssignmentRefused: ({ context }, params: { failure: Failure }) =>
      params.failure.errorClass === 'reprovision' && !context.assignmentProven,
    isCurrentEpoch: ({ context, event }) => event.type === 'HUB_LOST' && event.epoch === context.epoch,
    isStaleEpoch: ({ context, event }) => event.type === 'HUB_LOST' && event.epoch !== context.epoch,
    retryStepIs: ({ context }, params: { step: RetryStep }) => context.retryStep === params.step,
    failureIs: (_, params: { failure: Failure; errorClass: ErrorClass }) =>
      params.failure.errorClass === params.errorClass,
    hubBudgetSpent: ({ context }, params: { failure: Failure }) => hubBudgetSpent(context, params.failure),
    /**
     * Ask DPS (status lookup) before acting: the hub's answer may mean the device was moved, the
     * assignment has worked before, DPS has not confirmed it in this run, and the preset is not
     * the official sample's (which re-registers on every loss).
     */
    shouldCheckAssignment: ({ context }, params: { failure: Failure }) =>
      params.failure.assignmentInDoubt === true &&
      context.assignmentProven &&
      !context.assignmentConfirmed &&
      context.policy.reprovisionOnLoss !== true,
    /** A reprovision-class failure goes to DPS unless DPS just confirmed this hub (then: back off on it). */
    reprovisionUnlessConfirmed: ({ context }, params: { failure: Failure }) =>
      params.failure.errorClass === 'reprovision' && !context.assignmentConfirmed,
    /** The lookup names another hub (or another device id) than the one that refused. */
    lookupMovedDevice: ({ context, event }) => {
      const output = (event as unknown as { output: LookupResult }).output;
      return output.hubHost !== context.assignment?.hubHost || output.deviceId !== context.assignment?.deviceId;
    },
    /** The hub's refusal, counted at `at` (after the lookup), spends the hub budget: register with DPS. */
    refusalSpendsBudget: ({ context }, params: { at: number }) =>
      context.lastError !== null && hubBudgetSpent(context, { ...context.lastError, at: params.at }),
    /** Baseline preset only: go back to DPS after every lost connection, like the official sample. */
    reprovisionOnLoss: ({ context }) => context.policy.reprovisionOnLoss === true,
  },
}).createMachine({
  id: 'device',
  initial: 'Idle',
  context: ({ input }) => ({
    registrationId: input.registrationId,
    policy: input.policy,
    assignment: input.cachedAssignment ? { ...input.cachedAssignment, source: 'cache' } : null,
    epoch: 0,
    dpsAttempts: 0,
    hubAttempts: 0,
    firstFailureAt: null,
    lastError: null,
    retryAfterMs: null,
    delayMs: null,
    retryAt: null,
    retryStep: 'Provisioning',
    rngState: input.seed >>> 0,
    connectedAt: null,
    connectionStable: false,
    assignmentProven: true,
    assignmentConfirmed: false,
    lookupAtBoot: input.lookupAtBoot === true,
  }),
  states: {
    Idle: {
      on: {
        START: [{ guard: 'hasAssignment', target: 'Connecting' }, { guard: 'lookupAtBoot', target: 'CheckingAssignment' }, { target: 'Provisioning' }],
        STOP: { target: 'Stopped' },
      },
    },

    Provisioning: {
      invoke: {
        id: 'provision',
        src: 'provision',
        input: ({ context }) => ({ registrationId: context.registrationId, attempt: context.dpsAttempts + 1 }),
        onDone: {
          target: 'Connecting',
          actions: ['adoptAssignment', { type: 'saveAssignment', params: ({ context }) => ({ assignment: context.assignment! }) }],
        },
        onError: dpsFailureTransitions('Provisioning'),
      },
      on: { STOP: { target: 'Disconnecting' } },
    },

    Reprovisioning: {
      // The old assignment (and the cache) stays until DPS answers with a new one: if DPS fails,
      // the device goes back to the old hub instead of being offline until DPS answers.
      invoke: {
        id: 'reprovision',
        src: 'provision',
        input: ({ context }) => ({ registrationId: context.registrationId, attempt: context.dpsAttempts + 1 }),
        onDone: {
          target: 'Connecting',
          actions: ['adoptAssignment', { type: 'saveAssignment', params: ({ context }) => ({ assignment: context.assignment! }) }],
        },
        onError: dpsFailureTransitions('Reprovisioning'),
      },
      on: { STOP: { target: 'Disconnecting' } },
    },

    CheckingAssignment: {
      invoke: {
        id: 'lookupAssignment',
        src: 'lookupAssignment',
        input: ({ context }) => ({ registrationId: context.registrationId }),
        onDone: [
          {
            guard: 'lookupMovedDevice',
            target: 'Connecting',
            actions: ['adoptLookedUpAssignment', { type: 'saveAssignment', params: ({ context }) => ({ assignment: context.assignment! }) }],
          },
          {
            guard: { type: 'refusalSpendsBudget', params: ({ event }) => ({ at: (event as unknown as { output: LookupResult }).output.checkedAt }) },
            target: 'Reprovisioning',
            actions: 'resetHubRun',
          },
          {
            target: 'BackingOff',
            actions: {
              type: 'planRetryOnSameHub',
              params: ({ event }) => ({ at: (event as unknown as { output: LookupResult }).output.checkedAt, confirmed: true }),
            },
          },
        ],
        onError: [
          {
            guard: { type: 'failureIs', params: ({ event }) => ({ failure: failureFromEvent(event, 'dps-lookup'), errorClass: 'fatal' as const }) },
            target: 'Failed',
            actions: { type: 'recordFailure', params: ({ event }) => ({ phase: 'dps-lookup' as const, failure: failureFromEvent(event, 'dps-lookup') }) },
          },
          {
            // Seed 004: no answer (401/403/404) → a full registration.
            guard: { type: 'failureIs', params: ({ event }) => ({ failure: failureFromEvent(event, 'dps-lookup'), errorClass: 'reprovision' as const }) },
            target: 'Reprovisioning',
            actions: 'resetHubRun',
          },
          {
            guard: { type: 'refusalSpendsBudget', params: ({ event }) => ({ at: failureFromEvent(event, 'dps-lookup').at }) },
            target: 'Reprovisioning',
            actions: 'resetHubRun',
          },
          {
            // At boot with nothing cached, DPS unreachable: the registration is the next step.
            guard: { type: 'noAssignment' },
            target: 'BackingOff',
            actions: { type: 'planDpsRetry', params: ({ event }) => ({ failure: failureFromEvent(event, 'dps-lookup'), step: 'Provisioning' as const }) },
          },
          {
            // DPS busy or unreachable: carry on with the cached hub; the next refusal asks again.
            target: 'BackingOff',
            actions: { type: 'planRetryOnSameHub', params: ({ event }) => ({ at: failureFromEvent(event, 'dps-lookup').at, confirmed: false }) },
          },
        ],
      },
      on: {
        STOP: { target: 'Disconnecting' },
        REPROVISION: { target: 'Reprovisioning' },
      },
    },

    Connecting: {
      entry: 'nextEpoch',
      invoke: {
        id: 'openHub',
        src: 'openHub',
        input: ({ context }) => ({ assignment: context.assignment!, epoch: context.epoch }),
        onDone: { target: 'Connected', actions: 'markConnected' },
        onError: hubFailureTransitions('hub-connect', false),
      },
      on: {
        STOP: { target: 'Disconnecting' },
        REPROVISION: { target: 'Reprovisioning' },
      },
    },

    Connected: {
      invoke: [
        {
          id: 'hubSession',
          src: 'hubSession',
          input: ({ context }) => ({ assignment: context.assignment!, epoch: context.epoch }),
        },
        {
          // A connection is a success only once it has lasted (a hub that accepts and drops at
          // once must not get a fresh budget and a sub-second retry every time).
          id: 'stableConnection',
          src: 'waitUntil',
          input: ({ context }) => ({ retryAt: (context.connectedAt ?? 0) + context.policy.stableConnectionMs }),
          onDone: { actions: 'markStable' },
        },
      ],
      on: {
        // A lost session of an older epoch is history: ignore it, whatever it says.
        HUB_LOST: [{ guard: 'isStaleEpoch' }, ...hubFailureTransitions('hub-session', true)],
        STOP: { target: 'Disconnecting' },
        REPROVISION: { target: 'Reprovisioning' },
      },
    },

    BackingOff: {
      invoke: {
        id: 'waitUntil',
        src: 'waitUntil',
        input: ({ context }) => ({ retryAt: context.retryAt ?? 0 }),
        onDone: [
          { guard: { type: 'retryStepIs', params: { step: 'Connecting' } }, target: 'Connecting' },
          { guard: { type: 'retryStepIs', params: { step: 'Reprovisioning' } }, target: 'Reprovisioning' },
          { guard: { type: 'retryStepIs', params: { step: 'CheckingAssignment' } }, target: 'CheckingAssignment' },
          { target: 'Provisioning' },
        ],
      },
      on: {
        STOP: { target: 'Disconnecting' },
        REPROVISION: [
          // DPS said when to come back: a reprovision asked for meanwhile waits for that too.
          { guard: 'waitingOnDpsRetryAfter', actions: 'reprovisionAfterWait' },
          { target: 'Reprovisioning' },
        ],
      },
    },

    Disconnecting: {
      invoke: {
        id: 'closeHub',
        src: 'closeHub',
        input: ({ context }) => ({ epoch: context.epoch }),
        onDone: { target: 'Stopped' },
        onError: { target: 'Stopped' },
      },
    },

    Failed: {
      on: {
        RETRY: { target: 'Provisioning', actions: 'resetCounters' },
        REPROVISION: { target: 'Reprovisioning' },
        STOP: { target: 'Stopped' },
      },
    },

    Stopped: { type: 'final' },
  },
});

export type DeviceMachine = typeof deviceMachine;
