/**
 * Shared vocabulary of the pure policies and the machine. Everything here is plain JSON so it
 * can live in a persisted XState snapshot and in log lines.
 */

/**
 * The error classes; each drives exactly one kind of transition in the device machine. `parked`:
 * what an operator can fix remotely (a disabled registration, a blocked device, a clock not set
 * yet): retry the same step on a long jittered wait instead of stopping for good.
 */
export type ErrorClass = 'transient' | 'throttled' | 'reprovision' | 'parked' | 'fatal';

/**
 * Where an error happened. The same SDK error means different things in different phases.
 * `dps-lookup` is the Device Registration Status Lookup (asking DPS where the device belongs).
 */
export type Phase = 'dps' | 'dps-lookup' | 'hub-connect' | 'hub-session';

/** What `classify` decides about one error. */
export interface Classification {
  errorClass: ErrorClass;
  /** Service-given wait (retry-after), in ms. Never retried earlier than this. */
  retryAfterMs?: number;
  /** A floor for the next delay (e.g. 5 s after a hub 5xx, per the DPS at-scale guidance). */
  minDelayMs?: number;
  /** The table row that matched, for logs and tests (e.g. "connack-5-after-connect"). */
  rule: string;
  /**
   * The hub's answer may mean the device now belongs on another hub (refused as moved or
   * disabled, unknown, unauthorized): ask DPS where it belongs (status lookup) before deciding.
   */
  assignmentInDoubt?: true;
  /**
   * The service is up but busy (5xx, CONNACK 3 "server unavailable", a hub throttling or over its
   * daily quota): wait on it. Never a reason on its own to leave a hub for DPS, however long it lasts.
   */
  serverBusy?: true;
}

/** A failure as the machine stores it: classified, stamped, JSON-safe, free of secrets. */
export interface Failure extends Classification {
  phase: Phase;
  /** Error name as the SDK built it (UnauthorizedError, NotConnectedError, ...). */
  name: string;
  message: string;
  /** transportError.code / socket code / DPS status, when there is one. */
  code?: string | number;
  /**
   * When the failure was observed, in machine time (`monotonicNow` of the actor's clock): the
   * machine subtracts it. Shown as a date only through `wallTimeOf`.
   */
  at: number;
}

/** Backoff knobs. All delays in ms. */
export interface BackoffPolicy {
  /** First retry after losing a working connection: uniform in [0, firstRetryMaxMs]. */
  firstRetryMaxMs: number;
  /** Exponential curve: the cap of attempt n is min(maxDelayMs, minDelayMs * 2^(n-1)). */
  minDelayMs: number;
  maxDelayMs: number;
  /** Throttled without retry-after: same shape, starting here. */
  throttledMinDelayMs: number;
  /**
   * Jitter on top of retry-after R: uniform in [R, R + max(R/2, retryAfterJitterMs)], so a fleet
   * throttled together does not come back within one second, and a short R still spreads.
   */
  retryAfterJitterMs: number;
  /**
   * The first `quickRetries` attempts of a step follow the exponential curve; later ones wait at
   * least `slowRetryMinMs` (seed 004: "a gap of at least a minute before a retry").
   */
  quickRetries: number;
  slowRetryMinMs: number;
  /**
   * Parked retries (what an operator can fix remotely) wait uniformly in [parkedMinDelayMs,
   * parkedMaxDelayMs]: minutes, so a disabled fleet never storms DPS (at most every 15-30 min).
   */
  parkedMinDelayMs: number;
  parkedMaxDelayMs: number;
  /**
   * DPS at-scale fleet formula: when set, delays are uniform in [minDelayMs, max] with
   * max = (devices / ratePerSec) / load seconds (T = N / cps), instead of the exponential curve
   * (parked waits stay parked, stretched to max when it is longer than parkedMaxDelayMs);
   * [0, max] for the first retry after a lost connection; a floor (retry-after, 5xx minimum)
   * shifts the window up by the floor's excess over its start (same width, never clamped).
   */
  fleet?: { devices: number; ratePerSec: number; load: number };
  /**
   * A fixed wait with no jitter and no growth (only to reproduce the official sample's strategy
   * as a benchmark baseline: 90 s, DPS on every reconnect). Overrides the curves when set.
   */
  fixedDelayMs?: number;
}

/** When to give up on the current hub and go back to DPS. */
export interface HubBudget {
  /**
   * A connection counts as a success (resetting the backoff and the hub budget) only once it has
   * lasted this long; a session that ends sooner is the next attempt on the curve (AWS IoT SDK: 30 s).
   */
  stableConnectionMs: number;
  /** Failed attempts on one hub before reprovisioning; a backstop, the window decides by default. */
  maxHubAttempts: number;
  /**
   * A hub this device worked on that stays unreachable (refused sockets, timeouts) this long is
   * asked about: DPS may have moved the device elsewhere (IoT Central: "unreachable hub" means
   * reprovision). A lookup DPS answers holds for the hub window; one DPS could not answer (busy,
   * unreachable) confirms nothing, so the next refusal asks again, after that refusal's own backoff
   * (at least a minute apart once the quick retries are spent). The hub budget decides registrations.
   */
  lookupAfterUnreachableMs: number;
  /** Time since the first failure on one hub before reprovisioning (DPS guidance: 15–30 min). */
  hubRetryWindowMs: number;
  /**
   * Each time DPS names the failing hub again during one outage (a status lookup confirming it, a
   * registration handing it back), the hub window doubles, up to this (never below
   * `hubRetryWindowMs`): asking sooner cannot change DPS's answer, and a sustained outage under a
   * short window (`iotCentral`: 60 s) would cost DPS a registration and a lookup per device every
   * ~80 s, all day. A connection that lasts, or DPS naming another hub, starts over.
   */
  hubRetryWindowMaxMs: number;
  /** Go back to DPS after every lost connection (the official sample's behaviour; baseline only). */
  reprovisionOnLoss?: boolean;
}

export interface RetryPolicy extends BackoffPolicy, HubBudget {}

/** Inputs to one delay decision. */
export interface DelayRequest {
  errorClass: ErrorClass;
  /** 1-based count of consecutive failures in the current step (DPS or hub). */
  attempt: number;
  /** True when this failure ended a working hub connection (the first retry is short). */
  afterLoss: boolean;
  retryAfterMs?: number;
  minDelayMs?: number;
}

/** A delay decision and the next state of the seeded RNG (kept in machine context). */
export interface DelayDecision {
  delayMs: number;
  /** The upper bound of the curve for this attempt (for logs and property tests). */
  capMs: number;
  rngState: number;
}
