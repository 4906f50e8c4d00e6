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
 * Every time the machine compares or subtracts (`Failure.at`, `retryAt`, `connectedAt`,
 * `checkedAt`, `firstFailureAt`, `assignmentConfirmedAt`) is machine time: the actors stamp it
 * with `monotonicNow(clock)`, which NTP stepping the wall clock does not move, so a step neither
 * spends the hub window at once nor stretches it by hours. Dates (`assignedAt`) are wall time.
 *
 * Randomness: the jitter RNG state lives in context (`rngState`), seeded from input, so a run is
 * reproducible and a restored snapshot continues the same sequence.
 */
import { assign, fromCallback, fromPromise, setup, stopChild, type EventObject, type StateValue } from 'xstate';
import { nextDelay, nextRandom, POLICY_BOUNDS } from '../src/policy/backoff';
import type { Failure, Phase, RetryPolicy } from '../src/policy/types';

/** Where the device is assigned: the IoT Hub and the device id DPS gave it. */
export interface Assignment {
  hubHost: string;
  deviceId: string;
  /** Whether it came from the provisioning cache (no DPS call) or from DPS in this run. */
  source: 'cache' | 'dps';
  /** Epoch ms of the DPS assignment (wall time: it is written to the cache, never subtracted). */
  assignedAt: number;
}

/** What the provision actor resolves with. */
export interface ProvisionResult {
  hubHost: string;
  deviceId: string;
  /** Wall time of the assignment, epoch ms (written to the cache). */
  assignedAt: number;
  /** Machine time of DPS's answer (the actor's monotonic clock): when it confirmed a hub, if it handed back the same one. */
  registeredAt: number;
}

/** What the status-lookup actor resolves with: where DPS says the device belongs now. */
export interface LookupResult {
  hubHost: string;
  deviceId: string;
  /** Machine time of the answer (the actor's monotonic clock; the machine never reads one). */
  checkedAt: number;
  /** Wall time of the answer, epoch ms: the date of the assignment, if DPS moved the device. */
  assignedAt: number;
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
  /** Deadline of the current wait, machine time (`Failure.at + delayMs`). */
  retryAt: number | null;
  retryStep: RetryStep;
  rngState: number;
  /** When the current hub connection was accepted (the openHub actor's machine time), while Connected. */
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
  /**
   * When DPS last confirmed it. A confirmation holds for one hub window (`hubWindowMs`):
   * refusals that outlast it ask DPS again, since the device may have been moved after the lookup
   * answered (a failover racing the lookup would otherwise leave it knocking on a hub that refuses
   * it forever).
   */
  assignmentConfirmedAt: number | null;
  /**
   * How often DPS has named the failing hub again during this outage (lookups confirming it,
   * registrations handing it back), at most HUB_WINDOW_DOUBLINGS: each doubles the hub window up
   * to `policy.hubRetryWindowMaxMs`. Zero again once a connection lasts or DPS names another hub.
   */
  sameHubAnswers: number;
  /**
   * Machine time before which DPS is not asked again (a status lookup answered 429 + retry-after,
   * or 5xx; jittered like any retry-after; see also dpsRestUntil): meanwhile the device stays with
   * its hub and retries it on the hub's own curve, so a hub that recovers is not left waiting for DPS (a hub that refused
   * the device outright waits for DPS too). Null once DPS answers, or once a connection has
   * lasted past it.
   */
  dpsBusyUntil: number | null;
  /**
   * A lookup DPS asked to wait for found the hub budget already spent: once DPS's wait is over the
   * next DPS request is the registration, not another lookup a still-busy DPS would throttle
   * again, for ever (a moved device would stay refused). Cleared with dpsBusyUntil's reasons.
   */
  registerWhenDpsFree: boolean;
  /**
   * Status lookups in a row that DPS did not answer (a timeout, a 5xx, a 429), at most
   * FAILED_LOOKUPS_COUNTED: from the second, DPS rests before it is asked again (dpsRestUntil).
   * Zero once DPS answers or a connection lasts.
   */
  failedLookups: number;
  /**
   * Machine time before which DPS is not asked again after `failedLookups` failed lookups
   * (`failedLookupRest`), like dpsBusyUntil (the later of the two counts). Null once DPS answers or
   * a connection lasts: unlike DPS's own wait, a rest is ours, and a device that works again
   * starts afresh.
   */
  dpsRestUntil: number | null;
  /** See {@link DeviceInput.lookupAtBoot}. */
  lookupAtBoot: boolean;
  /**
   * A REPROVISION (application or cloud command) is pending until DPS answers: a failed
   * registration then tries DPS again instead of falling back to the old hub.
   */
  reprovisionRequested: boolean;
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

/** Which step failed, from the event itself: the actor that rejected, or a lost session. */
function phaseOfEvent(event: EventObject): Phase {
  if (event.type === 'HUB_LOST') return 'hub-session';
  if (event.type === 'xstate.error.actor.openHub') return 'hub-connect';
  if (event.type === 'xstate.error.actor.lookupAssignment') return 'dps-lookup';
  return 'dps';
}

function isFailure(value: unknown): value is Failure {
  const candidate = value as Partial<Failure> | null;
  return !!candidate && typeof candidate.errorClass === 'string' && typeof candidate.at === 'number';
}

/**
 * The failure an actor error event or a HUB_LOST carries. Actors always reject with a classified
 * `Failure`; anything else is a bug in an actor, treated as transient (the hub budget still
 * bounds it) rather than crashing the device, and dated at the latest time the machine knows:
 * the machine never reads a clock.
 */
function failureIn(event: EventObject, context: DeviceContext): Failure {
  if (event.type === 'HUB_LOST') return (event as Extract<DeviceEvent, { type: 'HUB_LOST' }>).failure;
  const error = (event as EventObject & { error?: unknown }).error;
  if (isFailure(error)) return error;
  const asError = error instanceof Error ? error : new Error(String(error));
  return {
    errorClass: 'transient',
    rule: 'unclassified-actor-error',
    phase: phaseOfEvent(event),
    name: asError.name,
    message: asError.message,
    at: Math.max(context.lastError?.at ?? 0, context.connectedAt ?? 0, context.retryAt ?? 0),
  };
}

/** The status lookup's answer (on its done event). */
function lookupAnswer(event: EventObject): LookupResult {
  return (event as unknown as { output: LookupResult }).output;
}

/** When the lookup ended: its answer's time, or its failure's. */
function lookupEndedAt(event: EventObject, context: DeviceContext): number {
  return event.type === 'xstate.done.actor.lookupAssignment' ? lookupAnswer(event).checkedAt : failureIn(event, context).at;
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

/**
 * Attempts are counted up to the largest budget a policy may set (a hub refusing for years stays a
 * bounded number): beyond it no guard or backoff tells one count from the next.
 */
const MAX_COUNTED_ATTEMPTS = POLICY_BOUNDS.maxHubAttempts;

/** When DPS may be asked again: the later of its own wait and our rest after failed lookups; null if neither runs. */
function dpsWaitEnds(context: DeviceContext): number | null {
  const busy = context.dpsBusyUntil;
  // `?? null`: a snapshot persisted before the field existed has none.
  const rest = context.dpsRestUntil ?? null;
  return busy === null ? rest : rest === null ? busy : Math.max(busy, rest);
}

/** `plan`, moved to DPS's wait (`dpsWaitEnds`) if it came earlier. */
function notBeforeDpsWait(context: DeviceContext, plan: ReturnType<typeof scheduleRetry>): ReturnType<typeof scheduleRetry> {
  const until = dpsWaitEnds(context);
  if (until === null || plan.retryAt >= until) return plan;
  return { ...plan, retryAt: until, delayMs: plan.delayMs + (until - plan.retryAt) };
}

/** Context changes for a failure on the DPS step: never back at DPS before its own wait. */
function planDpsRetry(context: DeviceContext, failure: Failure, retryStep: RetryStep): Partial<DeviceContext> {
  const attempt = Math.min(context.dpsAttempts + 1, MAX_COUNTED_ATTEMPTS);
  return { ...notBeforeDpsWait(context, scheduleRetry(context, failure, attempt, false)), dpsAttempts: attempt, retryStep };
}

/**
 * Context changes for a failure on the hub. A hub that said "not you" (reprovision class) is not
 * retried before DPS may be asked where to go instead: a fleet would knock on it every minute.
 */
function planHubRetry(context: DeviceContext, failure: Failure, afterLoss: boolean): Partial<DeviceContext> {
  const attempt = Math.min(context.hubAttempts + 1, MAX_COUNTED_ATTEMPTS);
  const plan = scheduleRetry(context, failure, attempt, afterLoss);
  return {
    ...(failure.errorClass === 'reprovision' ? notBeforeDpsWait(context, plan) : plan),
    hubAttempts: attempt,
    firstFailureAt: context.firstFailureAt ?? failure.at,
  };
}

/** Doublings of the hub window counted at most (2^20 × any window is beyond every cap). */
const HUB_WINDOW_DOUBLINGS = 20;

/**
 * How long this device stays on a failing hub before DPS is asked again: the policy's window,
 * doubled for each time DPS has named this hub again during the outage, up to
 * `hubRetryWindowMaxMs` (never below the policy's window). A short window (iotCentral's 60 s)
 * catches a failover fast; a sustained outage then costs DPS about one request per device per
 * quarter hour instead of two every ~80 s.
 */
function hubWindowMs(context: DeviceContext): number {
  const { hubRetryWindowMs, hubRetryWindowMaxMs } = context.policy;
  const doublings = Math.max(0, context.sameHubAnswers - 1);
  return Math.min(Math.max(hubRetryWindowMs, hubRetryWindowMaxMs), hubRetryWindowMs * 2 ** doublings);
}

/** Failed lookups counted at most (2^20 × any delay is beyond every cap). */
const FAILED_LOOKUPS_COUNTED = 20;

/**
 * How long DPS is left alone after `failedLookups` status lookups in a row went unanswered: not
 * after the first (the next refusal asks again), then uniform in [cap/2, cap], the cap the slowest
 * retry doubled per failure up to the longest hub window (jittered: a fleet refused together must
 * not come back to DPS in the same second). A hub refusing with CONNACK 3 never spends its budget
 * and each refusal is in doubt: without a rest, a device asked a failing DPS at every hub retry,
 * all day (1,151 lookups a day; 2,516 with dpsAtScale).
 */
function failedLookupRest(policy: RetryPolicy, failedLookups: number, rngState: number): { restMs: number; rngState: number } {
  if (failedLookups <= 1) return { restMs: 0, rngState };
  const longestWindowMs = Math.max(policy.hubRetryWindowMs, policy.hubRetryWindowMaxMs);
  const capMs = Math.min(longestWindowMs, policy.maxDelayMs * 2 ** (failedLookups - 1));
  const [u, next] = nextRandom(rngState);
  return { restMs: capMs / 2 + (u * capMs) / 2, rngState: next };
}

/** One more DPS answer naming the failing hub (bounded: see HUB_WINDOW_DOUBLINGS). */
function oneMoreSameHubAnswer(context: DeviceContext): number {
  return Math.min(context.sameHubAnswers + 1, HUB_WINDOW_DOUBLINGS + 1);
}

/**
 * True when this hub failure spends the budget (attempt count or time window, first wins). A busy
 * service (5xx, CONNACK 3 on a hub DPS confirmed, a hub throttling) never sends the device to DPS on its own.
 */
function hubBudgetSpent(context: DeviceContext, failure: Failure): boolean {
  if (failure.serverBusy === true) return false;
  const attempts = context.hubAttempts + 1;
  const since = context.firstFailureAt ?? failure.at;
  return attempts >= context.policy.maxHubAttempts || failure.at - since >= hubWindowMs(context);
}

/** The hub's refusal, counted when the lookup (`event`) ended, spends the hub budget. */
function refusalSpendsBudget(context: DeviceContext, event: EventObject): boolean {
  return context.lastError !== null && hubBudgetSpent(context, { ...context.lastError, at: lookupEndedAt(event, context) });
}

/** How long a failed DPS request asked not to be asked again (retry-after, 5xx floor); 0 if it did not. */
function lookupWaitMs(failure: Failure): number {
  return Math.max(failure.retryAfterMs ?? 0, failure.minDelayMs ?? 0);
}

/** See {@link DeviceContext.registerWhenDpsFree}: the refusal goes on to hubBudgetSpent, a registration. */
function registrationDueAfterDpsWait(context: DeviceContext, failure: Failure): boolean {
  return context.registerWhenDpsFree && hubBudgetSpent(context, failure);
}

/** `until` if it is later than `at`, else null (a wait that is over is no wait). */
function waitStillRunning(until: number | null, at: number): number | null {
  return until !== null && until > at ? until : null;
}

/** DPS asked not to be asked again before a time that `failure` comes earlier than. */
function dpsAskedToWait(context: DeviceContext, failure: Failure): boolean {
  const until = dpsWaitEnds(context);
  return until !== null && failure.at < until;
}

/** DPS confirmed this hub during this failure run, less than one hub window before `failure`. */
function confirmationCurrent(context: DeviceContext, failure: Failure): boolean {
  if (!context.assignmentConfirmed) return false;
  return failure.at - (context.assignmentConfirmedAt ?? failure.at) < hubWindowMs(context);
}

/**
 * This run of failures on the hub has lasted one hub window. An assignment that never worked is
 * then looked up too (a busy answer never spends the budget, so a device moved before it first
 * connected would otherwise be refused forever); once per window, so hubs never ping-pong.
 */
function refusedForAWindow(context: DeviceContext, failure: Failure): boolean {
  return context.firstFailureAt !== null && failure.at - context.firstFailureAt >= hubWindowMs(context);
}

/**
 * The hub has been unreachable (not refusing, not busy: no answer, a refused socket) since the
 * first failure of this run for `lookupAfterUnreachableMs`: DPS may have moved the device.
 */
function unreachableTooLong(context: DeviceContext, failure: Failure): boolean {
  if (failure.errorClass !== 'transient' || failure.serverBusy === true || context.firstFailureAt === null) return false;
  return failure.at - context.firstFailureAt >= context.policy.lookupAfterUnreachableMs;
}

/**
 * The context a device starts with, built by named stores one field at a time rather than as a
 * literal. XState makes every context by `Object.assign({}, context, update)`; V8 turns an object
 * that grows past ~19 properties that way into a dictionary (1.6 KB a device, and slower reads in
 * every guard) unless that chain of shapes already exists, and named stores create it. The machine
 * test checks the contexts stay compact and that every field is set (the cast cannot).
 */
function initialContext(input: DeviceInput): DeviceContext {
  const context = {} as DeviceContext;
  context.registrationId = input.registrationId;
  context.policy = input.policy;
  context.assignment = input.cachedAssignment ? { ...input.cachedAssignment, source: 'cache' } : null;
  context.epoch = 0;
  context.dpsAttempts = 0;
  context.hubAttempts = 0;
  context.firstFailureAt = null;
  context.lastError = null;
  context.retryAfterMs = null;
  context.delayMs = null;
  context.retryAt = null;
  context.retryStep = 'Provisioning';
  context.rngState = input.seed >>> 0;
  context.connectedAt = null;
  context.connectionStable = false;
  context.assignmentProven = true;
  context.assignmentConfirmed = false;
  context.assignmentConfirmedAt = null;
  context.sameHubAnswers = 0;
  context.dpsBusyUntil = null;
  context.registerWhenDpsFree = false;
  context.failedLookups = 0;
  context.dpsRestUntil = null;
  context.lookupAtBoot = input.lookupAtBoot === true;
  context.reprovisionRequested = false;
  return context;
}

/**
 * The state a device reports: the leaf of the snapshot value (`{ Active: 'Connected' }` →
 * `Connected`). `Active` only groups the working states; it is never a state of its own.
 */
export function leafStateName(value: StateValue): string {
  let leaf = value;
  while (typeof leaf !== 'string') leaf = Object.values(leaf)[0]!;
  return leaf;
}

/**
 * Provisioning and Reprovisioning: one DPS registration each; they differ in what a failed
 * registration falls back to (Reprovisioning keeps the old assignment and can go back to it).
 */
function registrationState(id: 'provision' | 'reprovision') {
  const step = id === 'provision' ? ('Provisioning' as const) : ('Reprovisioning' as const);
  return {
    invoke: {
      id,
      src: 'provision',
      input: ({ context }: { context: DeviceContext }) => ({ registrationId: context.registrationId, attempt: context.dpsAttempts + 1 }),
      onDone: {
        target: 'Connecting',
        actions: ['adoptAssignment', { type: 'saveAssignment', params: ({ context }: { context: DeviceContext }) => ({ assignment: context.assignment! }) }],
      },
      onError: [
        { guard: 'isFatal', target: '#device.Failed', actions: 'recordFailure' },
        // A disabled registration, a DPS that failed it for now: ask again only after the long wait.
        { guard: 'isParked', target: 'BackingOff', actions: { type: 'planDpsRetry', params: { step } } },
        // The old assignment (and the cache) stays until DPS answers with a new one: if DPS
        // fails, go back to the old hub instead of being offline until DPS answers.
        // A reprovision the application (or the cloud's command) asked for is not dropped: DPS again.
        ...(step === 'Reprovisioning' ? [{ guard: 'mayFallBackToOldHub', target: 'BackingOff', actions: { type: 'planDpsRetry', params: { step: 'Connecting' } } } as const] : []),
        { target: 'BackingOff', actions: { type: 'planDpsRetry', params: { step } } },
      ],
    },
    // STOP comes from Active. A REPROVISION is already under way: the event does not restart the
    // registration from Active, but it is noted: if this one fails, the device registers again
    // rather than going back to the old hub (e.g. a DeviceMove answered meanwhile).
    on: { REPROVISION: { actions: 'noteReprovisionRequest' } },
  } as const;
}

/**
 * Hub failures, on connect and in session. Guard order matters: fatal, parked, a fresh assignment
 * refused, a refusal in doubt (ask DPS), then the budget (so the counter cannot grow without
 * bound), the reprovision class, then back off on this hub.
 */
function hubFailureTransitions(phase: 'hub-connect' | 'hub-session') {
  return [
    { guard: 'isFatal', target: '#device.Failed', actions: 'recordFailure' },
    // What an operator can fix remotely (a blocked device, a clock not set yet): retry this hub on
    // the long parked wait, without spending the hub budget.
    { guard: 'isParked', target: 'BackingOff', actions: { type: 'planParkedRetry', params: { step: 'Connecting' } } },
    ...(phase === 'hub-connect' ? [{ guard: 'freshAssignmentRefused', target: 'BackingOff', actions: 'planReprovisionRetry' } as const] : []),
    // A refused connect asks DPS at once (the attempt itself was already spread by its backoff);
    // a lost session waits the short spread first, so a fleet dropped together does not ask together.
    phase === 'hub-connect'
      ? ({ guard: 'shouldCheckAssignment', target: 'CheckingAssignment', actions: 'noteDoubtfulRefusal' } as const)
      : ({ guard: 'shouldCheckAssignment', target: 'BackingOff', actions: 'planAssignmentCheck' } as const),
    { guard: 'hubBudgetSpent', target: 'Reprovisioning', actions: 'leaveHub' },
    { guard: 'reprovisionUnlessConfirmed', target: 'Reprovisioning', actions: 'leaveHub' },
    ...(phase === 'hub-session' ? [{ guard: 'reprovisionOnLoss', target: 'BackingOff', actions: { type: 'planHubRetry', params: { then: 'Reprovisioning' } } } as const] : []),
    { target: 'BackingOff', actions: { type: 'planHubRetry', params: { then: 'Connecting' } } },
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
    adoptAssignment: assign(({ context, event }) => {
      const output = (event as unknown as { output: ProvisionResult }).output;
      // DPS handed back the hub the device was leaving: a confirmation of it, and the hub window grows.
      const sameHub = context.assignment?.hubHost === output.hubHost && context.assignment.deviceId === output.deviceId;
      return {
        assignment: { hubHost: output.hubHost, deviceId: output.deviceId, assignedAt: output.assignedAt, source: 'dps' as const },
        assignmentProven: false,
        assignmentConfirmed: sameHub,
        assignmentConfirmedAt: sameHub ? output.registeredAt : null,
        sameHubAnswers: sameHub ? oneMoreSameHubAnswer(context) : 0,
        dpsBusyUntil: null,
        registerWhenDpsFree: false,
        failedLookups: 0,
        dpsRestUntil: null,
        // dpsAttempts is kept until the assignment works: a refused fresh assignment keeps growing the backoff.
        hubAttempts: 0,
        firstFailureAt: null,
        lastError: null,
        reprovisionRequested: false,
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
    markStable: assign(({ context }) => ({
      connectionStable: true,
      assignmentConfirmed: false,
      sameHubAnswers: 0,
      // A connection that lasted ends the failure run, not DPS's wait if it is still running.
      dpsBusyUntil: waitStillRunning(context.dpsBusyUntil, (context.connectedAt ?? 0) + context.policy.stableConnectionMs),
      registerWhenDpsFree: false,
      failedLookups: 0,
      dpsRestUntil: null,
      hubAttempts: 0,
      dpsAttempts: 0,
      firstFailureAt: null,
    })),
    recordFailure: assign(({ context, event }) => ({ lastError: failureIn(event, context) })),
    /** Leaving the hub: its failure run is over. */
    leaveHub: assign(({ context, event }) => ({
      lastError: failureIn(event, context),
      hubAttempts: 0,
      firstFailureAt: null,
    })),
    /** Going to DPS from a lookup: the hub's failure run is over (the refusal stays the last error). */
    resetHubRun: assign({ hubAttempts: 0, firstFailureAt: null, assignmentConfirmed: false }),
    planDpsRetry: assign(({ context, event }, params: { step: RetryStep }) => planDpsRetry(context, failureIn(event, context), params.step)),
    /**
     * A fresh assignment refused by its hub: DPS again, but only after a DPS-style backoff; once
     * the quick retries are spent the device is disabled or blocked there (an operator must act):
     * parked, so it asks DPS at most every 15-30 minutes instead of every minute forever.
     */
    planReprovisionRetry: assign(({ context, event }) => {
      const refusal = failureIn(event, context);
      const parked = context.dpsAttempts + 1 > context.policy.quickRetries;
      const failure: Failure = parked ? { ...refusal, errorClass: 'parked' } : refusal;
      return { ...planDpsRetry(context, failure, 'Reprovisioning'), hubAttempts: 0, firstFailureAt: null };
    }),
    /** Parked: the same step again after the long wait; the counters stay as they are. */
    planParkedRetry: assign(({ context, event }, params: { step: RetryStep }) => ({
      ...scheduleRetry(context, failureIn(event, context), 1, false),
      retryStep: params.step,
    })),
    planHubRetry: assign(({ context, event }, params: { then: RetryStep }) => ({
      // Only the loss of a connection that had lasted gets the short first retry.
      ...planHubRetry(context, failureIn(event, context), event.type === 'HUB_LOST' && context.connectionStable),
      retryStep: params.then,
    })),
    resetCounters: assign({ dpsAttempts: 0, hubAttempts: 0, firstFailureAt: null, failedLookups: 0, dpsRestUntil: null }),
    /** DPS answered a lookup (another registration follows): no failed lookups in a row any more, no rest. */
    dpsAnswered: assign({ failedLookups: 0, dpsRestUntil: null }),
    reprovisionAfterWait: assign({ retryStep: 'Reprovisioning' as const }),
    noteReprovisionRequest: assign({ reprovisionRequested: true }),
    /** A hub this device worked on refused a connect in a way that may mean it was moved. */
    noteDoubtfulRefusal: assign(({ context, event }) => {
      const refusal = failureIn(event, context);
      return {
        lastError: refusal,
        retryAfterMs: refusal.retryAfterMs ?? null,
        firstFailureAt: context.firstFailureAt ?? refusal.at,
      };
    }),
    /**
     * A session ended in a way that may mean the device was moved: ask DPS, after the short
     * spread wait of a first retry (or the fleet window) so that a fleet dropped together does
     * not become a lookup storm. No floor: the wait is for DPS, not the hub.
     */
    planAssignmentCheck: assign(({ context, event }) => {
      const loss = failureIn(event, context);
      const spread: Failure = { ...loss, errorClass: 'transient' };
      delete spread.retryAfterMs;
      delete spread.minDelayMs;
      return {
        ...scheduleRetry(context, spread, 1, true),
        lastError: loss,
        retryAfterMs: loss.retryAfterMs ?? null,
        firstFailureAt: context.firstFailureAt ?? loss.at,
        retryStep: 'CheckingAssignment' as const,
      };
    }),
    /**
     * DPS moved the device: connect to the hub it names now. Like a fresh registration it is not
     * proven until it works, so a refusal there is not looked up again (no ping-pong between hubs).
     */
    adoptLookedUpAssignment: assign(({ event }) => {
      const answer = lookupAnswer(event);
      return {
        assignment: { hubHost: answer.hubHost, deviceId: answer.deviceId, assignedAt: answer.assignedAt, source: 'dps' as const },
        assignmentProven: false,
        assignmentConfirmed: false,
        sameHubAnswers: 0,
        dpsBusyUntil: null,
        registerWhenDpsFree: false,
        failedLookups: 0,
        dpsRestUntil: null,
        hubAttempts: 0,
        firstFailureAt: null,
      };
    }),
    /**
     * DPS still places the device here (`confirmed`) or could not answer: the refusal is the hub's
     * own trouble. Back off on it; the hub budget decides when to register again. A confirmed
     * assignment is not looked up again for one hub window, or until a connection lasts.
     */
    planRetryOnSameHub: assign(({ context, event }, params: { confirmed: boolean }) => {
      const at = lookupEndedAt(event, context);
      const lookupFailure = (event as EventObject).type === 'xstate.done.actor.lookupAssignment' ? undefined : failureIn(event, context);
      // A busy DPS (429 + retry-after, 5xx) is not asked again before its own wait is over,
      // spread like any retry-after (a fleet throttled together must not come back together);
      // the hub needs no DPS, so it is retried on its own curve meanwhile (guards: dpsAskedToWait).
      const dpsWait = lookupFailure !== undefined && lookupWaitMs(lookupFailure) > 0 ? scheduleRetry(context, lookupFailure, 1, false) : undefined;
      const dpsBusyUntil = dpsWait ? Math.max(dpsWait.retryAt, context.dpsBusyUntil ?? 0) : params.confirmed ? null : context.dpsBusyUntil;
      // DPS failing lookups in a row (its own waits a few seconds, or none) rests longer and longer.
      const failedLookups = params.confirmed ? 0 : Math.min((context.failedLookups ?? 0) + 1, FAILED_LOOKUPS_COUNTED);
      const rest = failedLookupRest(context.policy, failedLookups, dpsWait?.rngState ?? context.rngState);
      const dpsRestUntil = rest.restMs > 0 ? at + rest.restMs : params.confirmed ? null : context.dpsRestUntil;
      // The lookup found the budget spent (budgetSpentNoDpsWait let DPS's wait through to here).
      const registerWhenDpsFree = params.confirmed ? false : context.registerWhenDpsFree || (dpsWait !== undefined && refusalSpendsBudget(context, event));
      const refusal: Failure = { ...(context.lastError ?? failureIn(event, context)), at };
      return {
        ...planHubRetry({ ...context, dpsBusyUntil, dpsRestUntil, rngState: rest.rngState }, refusal, false),
        lastError: refusal,
        retryStep: 'Connecting' as const,
        assignmentConfirmed: params.confirmed,
        assignmentConfirmedAt: params.confirmed ? at : null,
        // A lookup DPS could not answer keeps the count: it confirmed nothing, and reset nothing.
        sameHubAnswers: params.confirmed ? oneMoreSameHubAnswer(context) : context.sameHubAnswers,
        dpsBusyUntil,
        registerWhenDpsFree,
        failedLookups,
        dpsRestUntil,
      };
    }),
  },
  guards: {
    hasAssignment: ({ context }) => context.assignment !== null,
    noAssignment: ({ context }) => context.assignment === null,
    /** A failed registration may go back to the old hub, unless the reprovision was asked for. */
    mayFallBackToOldHub: ({ context }) => context.assignment !== null && !context.reprovisionRequested,
    lookupAtBoot: ({ context }) => context.lookupAtBoot,
    /** The current wait is a DPS retry-after (its next step is a registration). */
    waitingOnDpsRetryAfter: ({ context }) => context.retryAfterMs !== null && context.lastError?.phase === 'dps',
    isFatal: ({ context, event }) => failureIn(event, context).errorClass === 'fatal',
    isParked: ({ context, event }) => failureIn(event, context).errorClass === 'parked',
    isReprovisionClass: ({ context, event }) => failureIn(event, context).errorClass === 'reprovision',
    /** The hub refused (reprovision class) an assignment DPS just gave and that never worked. */
    freshAssignmentRefused: ({ context, event }) => failureIn(event, context).errorClass === 'reprovision' && !context.assignmentProven,
    isStaleEpoch: ({ context, event }) => event.type === 'HUB_LOST' && event.epoch !== context.epoch,
    retryStepIs: ({ context }, params: { step: RetryStep }) => context.retryStep === params.step,
    /** The hub budget is spent and DPS may be asked (else the hub is retried until it may). */
    hubBudgetSpent: ({ context, event }) => {
      const failure = failureIn(event, context);
      return hubBudgetSpent(context, failure) && !dpsAskedToWait(context, failure);
    },
    /**
     * Ask DPS (status lookup) before acting: the hub's answer may mean the device was moved, the
     * assignment has worked before (or has been refused for a hub window), DPS has not confirmed it
     * within the last window, and the preset is not
     * the official sample's (which re-registers on every loss).
     */
    shouldCheckAssignment: ({ context, event }) => {
      const failure = failureIn(event, context);
      return (
        (failure.assignmentInDoubt === true || unreachableTooLong(context, failure)) &&
        (context.assignmentProven || refusedForAWindow(context, failure)) &&
        !confirmationCurrent(context, failure) &&
        !dpsAskedToWait(context, failure) &&
        !registrationDueAfterDpsWait(context, failure) &&
        context.policy.reprovisionOnLoss !== true
      );
    },
    /**
     * A reprovision-class failure goes to DPS unless DPS just confirmed this hub or asked to wait
     * (then: back off on it).
     */
    reprovisionUnlessConfirmed: ({ context, event }) => {
      const failure = failureIn(event, context);
      return failure.errorClass === 'reprovision' && !confirmationCurrent(context, failure) && !dpsAskedToWait(context, failure);
    },
    /** The lookup names another hub (or another device id) than the one that refused. */
    lookupMovedDevice: ({ context, event }) => {
      const answer = lookupAnswer(event);
      return answer.hubHost !== context.assignment?.hubHost || answer.deviceId !== context.assignment?.deviceId;
    },
    /** The hub's refusal, counted when the lookup ended, spends the hub budget: register with DPS. */
    refusalSpendsBudget: ({ context, event }) => refusalSpendsBudget(context, event),
    /** refusalSpendsBudget, and the lookup failed without a wait of DPS's own (429 + retry-after, a 5xx floor). */
    budgetSpentNoDpsWait: ({ context, event }) => refusalSpendsBudget(context, event) && lookupWaitMs(failureIn(event, context)) === 0,
    /** Baseline preset only: go back to DPS after every lost connection, like the official sample. */
    reprovisionOnLoss: ({ context }) => context.policy.reprovisionOnLoss === true,
  },
}).createMachine({
  id: 'device',
  initial: 'Idle',
  context: ({ input }) => initialContext(input),
  states: {
    Idle: {
      on: {
        START: [
          { guard: 'hasAssignment', target: 'Active.Connecting' },
          { guard: 'lookupAtBoot', target: 'Active.CheckingAssignment' },
          { target: 'Active.Provisioning' },
        ],
        // Nothing is open yet: nothing to close.
        STOP: { target: 'Stopped' },
      },
    },

    /**
     * The working states. Leaving Active (STOP) exits the current one first, which stops its
     * invoked actor (a registration, a connect, the hub session, a wait). Every transition into
     * Active names its step; `initial` is the first boot's, which XState requires.
     */
    Active: {
      initial: 'Provisioning',
      on: {
        STOP: { target: 'Disconnecting' },
        REPROVISION: { target: '.Reprovisioning', actions: 'noteReprovisionRequest' },
      },
      states: {
        Provisioning: registrationState('provision'),

        Reprovisioning: registrationState('reprovision'),

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
              { guard: 'refusalSpendsBudget', target: 'Reprovisioning', actions: ['resetHubRun', 'dpsAnswered'] },
              { target: 'BackingOff', actions: { type: 'planRetryOnSameHub', params: { confirmed: true } } },
            ],
            onError: [
              { guard: 'isFatal', target: '#device.Failed', actions: 'recordFailure' },
              // Seed 004: no answer (401/403/404) → a full registration.
              { guard: 'isReprovisionClass', target: 'Reprovisioning', actions: ['resetHubRun', 'dpsAnswered'] },
              // The hub budget is spent and DPS did not answer, nor say when to come back: register
              // after a DPS backoff. (A DPS that asked to wait is asked again only after it, the hub
              // retried meanwhile: the last branch.)
              { guard: 'budgetSpentNoDpsWait', target: 'BackingOff', actions: ['resetHubRun', { type: 'planDpsRetry', params: { step: 'Reprovisioning' } }] },
              // At boot with nothing cached, DPS unreachable: the registration is the next step.
              { guard: 'noAssignment', target: 'BackingOff', actions: { type: 'planDpsRetry', params: { step: 'Provisioning' } } },
              // DPS busy or unreachable: carry on with the cached hub; the next refusal asks again.
              { target: 'BackingOff', actions: { type: 'planRetryOnSameHub', params: { confirmed: false } } },
            ],
          },
        },

        Connecting: {
          entry: 'nextEpoch',
          invoke: {
            id: 'openHub',
            src: 'openHub',
            input: ({ context }) => ({ assignment: context.assignment!, epoch: context.epoch }),
            onDone: { target: 'Connected', actions: 'markConnected' },
            onError: hubFailureTransitions('hub-connect'),
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
              // The finished wait is let go: XState keeps a done child in the snapshot until its
              // state is left, and a connection may last months (~1.7 KB per device).
              onDone: { actions: ['markStable', stopChild('stableConnection')] },
            },
          ],
          on: {
            // A lost session of an older epoch is history: ignore it, whatever it says.
            HUB_LOST: [{ guard: 'isStaleEpoch' }, ...hubFailureTransitions('hub-session')],
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
            // DPS said when to come back: a reprovision asked for meanwhile waits for that too.
            // Otherwise Active's REPROVISION goes to DPS now.
            REPROVISION: { guard: 'waitingOnDpsRetryAfter', actions: ['reprovisionAfterWait', 'noteReprovisionRequest'] },
          },
        },
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

    // Outside Active: nothing runs, so STOP needs no Disconnecting.
    Failed: {
      on: {
        RETRY: { target: 'Active.Provisioning', actions: 'resetCounters' },
        REPROVISION: { target: 'Active.Reprovisioning', actions: 'noteReprovisionRequest' },
        STOP: { target: 'Stopped' },
      },
    },

    Stopped: { type: 'final' },
  },
});

export type DeviceMachine = typeof deviceMachine;
