/**
 * The device's account of itself (issue 16): how often it connected, lost its hub, changed hubs
 * and asked DPS, how long it was connected, what waits in the outbox and what became of the
 * messages, and the last error with what the application should do about it. Everything is
 * derived from what the device already observes (its state transitions, the outbox's callbacks,
 * the telemetry pump's publishes), on the device's clock.
 *
 * Counters are JavaScript numbers that saturate at Number.MAX_SAFE_INTEGER (2^53 − 1): exact up
 * to there (a million events a second would take 285 years to reach it), and never wrap or lose
 * precision past it. The per-rule map is bounded too (MAX_RULE_KEYS).
 */
import { monotonicNow, wallTimeOf, type Clock } from './clock';
import type { DroppedMessage, Outbox } from './store/outbox';
import type { ErrorClass, Failure, Phase } from './policy/types';

/**
 * What the application should do about the last error, from a small closed set:
 * - `none`: nothing is wrong now (no error yet, or the device is connected again).
 * - `wait`: the device recovers on its own (network, a busy or throttled service, a failover).
 * - `check-credentials`: a key or certificate was refused or has expired; replace it with
 *   `updateCredentials` (the device tries it at once).
 * - `check-clock`: a certificate is out of its dates for this device's clock: set the clock.
 * - `check-registration`: DPS disabled or failed the registration, or does not know the device:
 *   an operator must act in DPS / IoT Central; the device retries on its long wait meanwhile.
 * - `check-configuration`: the options or the trusted CAs are wrong (the device has Failed).
 * - `call-retry`: the device has Failed for a reason that may have passed: fix it, then `retry()`.
 */
export type RecommendedAction = 'none' | 'wait' | 'check-credentials' | 'check-clock' | 'check-registration' | 'check-configuration' | 'call-retry';

/** The action of each error class, when its rule has no entry of its own in ACTION_BY_RULE. */
export const ACTION_BY_CLASS: Readonly<Record<ErrorClass, RecommendedAction>> = {
  transient: 'wait',
  throttled: 'wait',
  // The device goes back to DPS by itself (a failover, a moved device).
  reprovision: 'wait',
  // What an operator can fix remotely (a disabled registration, a blocked device).
  parked: 'check-registration',
  fatal: 'call-retry',
};

/**
 * The rules of the classifier (src/policy/classify.ts) whose action differs from their class's.
 * One table: `recommendedAction` reads nothing else.
 */
export const ACTION_BY_RULE: Readonly<Record<string, RecommendedAction>> = {
  'device-certificate-expired': 'check-credentials',
  'tls-certificate-time': 'check-clock',
  'tls-certificate': 'check-configuration',
  'config-error': 'check-configuration',
  'dps-bad-request': 'check-configuration',
  'dps-connack-rejected': 'check-credentials',
  'dps-unauthorized': 'check-credentials',
  'dps-forbidden': 'check-registration',
  'dps-not-found': 'check-registration',
  'registration-failed': 'check-registration',
};

/** The recommended action for a failure (by its rule, else by its class); 'none' without one. */
export function recommendedAction(failure: Pick<Failure, 'errorClass' | 'rule'> | null): RecommendedAction {
  if (failure === null) return 'none';
  return Object.hasOwn(ACTION_BY_RULE, failure.rule) ? ACTION_BY_RULE[failure.rule]! : ACTION_BY_CLASS[failure.errorClass];
}

/**
 * The device's figures at one moment (`device.stats()`, the `stats` event). Times are epoch ms on
 * the device's wall clock (as it reads now); durations are measured on its monotonic clock, so NTP
 * stepping the wall clock moves the dates, never `connected.ms` or `percent`.
 */
export interface DeviceStats {
  /** When counting began: the device's start(). Null before it. */
  since: number | null;
  /** When these figures were taken. */
  at: number;
  /** Hub connections accepted. */
  connects: number;
  /** Connections lost (not the ones stop() closed), in all, by error class and by classifier rule. */
  disconnects: {
    total: number;
    byClass: Partial<Record<ErrorClass, number>>;
    /** At most MAX_RULE_KEYS rules; later new ones are counted under 'other'. */
    byRule: Record<string, number>;
  };
  /** Connections to another hub than the previous connection's (failovers, moves). */
  hubChanges: number;
  /** The hub of the current (or last) connection. */
  hubHost: string | null;
  dps: {
    /** DPS registrations attempted (Provisioning and Reprovisioning). */
    registrations: number;
    /** Device Registration Status Lookups attempted (CheckingAssignment). */
    statusLookups: number;
  };
  connected: {
    /** Time spent Connected since `since`. */
    ms: number;
    /** `ms` as a percentage of the time since `since` (0 to 100, two decimals). */
    percent: number;
  };
  outbox: {
    depth: number;
    /** The deepest the outbox has been since `since` (sampled on every accepted message). */
    maxDepth: number;
    bytes: number;
    /** Age of the oldest waiting message; null when the outbox is empty (or cannot be read). */
    oldestAgeMs: number | null;
  };
  messages: {
    /** Acknowledged by the hub (PUBACK). */
    delivered: number;
    /**
     * Published again after a connection ended before their PUBACK: each may reach the cloud
     * twice (the hub may have had the first copy), so this is an upper bound of the duplicates.
     */
    resent: number;
    dropped: number;
    droppedByReason: Partial<Record<DroppedMessage['reason'], number>>;
    /** Time since the last delivered message; null before the first. */
    sinceLastDeliveredMs: number | null;
  };
  /** The last failure the device met (kept after it recovers; see recommendedAction). */
  lastError: { errorClass: ErrorClass; rule: string; phase: Phase; message: string; at: number } | null;
  /** What to do now: 'none' while connected or before any error, else the last error's action. */
  recommendedAction: RecommendedAction;
}

/** Distinct rules counted by name in `disconnects.byRule`; the classifier has about 60. */
export const MAX_RULE_KEYS = 64;

/** +1, saturating at Number.MAX_SAFE_INTEGER: every counter of DeviceStats goes through it. */
export function saturatingIncrement(value: number): number {
  return value < Number.MAX_SAFE_INTEGER ? value + 1 : value;
}

function bumpKey<K extends string>(counts: Partial<Record<K, number>>, key: K): void {
  counts[key] = saturatingIncrement(counts[key] ?? 0);
}

/**
 * Told of each count as the collector makes it (src/metrics.ts feeds its OpenTelemetry counters
 * from here, so the metrics and the stats are one accounting). `disconnected` gets the rule as
 * counted: 'other' past MAX_RULE_KEYS.
 */
export interface StatsCountListener {
  counted(what: 'connects' | 'hubChanges' | 'registrations' | 'statusLookups' | 'delivered' | 'resent'): void;
  disconnected(errorClass: ErrorClass, rule: string): void;
  dropped(reason: DroppedMessage['reason']): void;
}

/** What the collector reads from one transition of the device. */
export interface ObservedTransition {
  value: string;
  previous: string;
  event: string;
  /** The hub of the current assignment. */
  hubHost: string | null;
  lastError: Failure | null;
}

/** Counts what the device observes; `snapshot()` turns it into DeviceStats. */
export class StatsCollector {
  /** Machine time (monotonicNow) of start(), as are every `…At`/`…Since` below. */
  #since: number | null = null;
  #connects = 0;
  #disconnects = 0;
  readonly #disconnectsByClass: Partial<Record<ErrorClass, number>> = {};
  readonly #disconnectsByRule: Record<string, number> = {};
  #hubChanges = 0;
  #hubHost: string | null = null;
  #registrations = 0;
  #statusLookups = 0;
  #connectedMs = 0;
  /** When the current connection began, while Connected. */
  #connectedSince: number | null = null;
  #maxDepth = 0;
  #delivered = 0;
  #resent = 0;
  #dropped = 0;
  readonly #droppedByReason: Partial<Record<DroppedMessage['reason'], number>> = {};
  #lastDeliveredAt: number | null = null;
  #lastError: Failure | null = null;
  /**
   * The highest outbox seq published so far. The pump publishes in seq order and, after a
   * connection ends, starts again from the oldest message not yet acknowledged, and every new
   * message gets a higher seq: a publish at or below this mark is a resend. (One number instead
   * of a set of ids: no hashing per message and nothing to bound.)
   */
  #publishedUpTo = -Infinity;
  #listener: StatsCountListener | null = null;

  constructor(
    private readonly clock: Clock,
    private readonly outbox: Outbox,
  ) {}

  /** The one listener told of every count from now on (null: none). */
  onCount(listener: StatsCountListener | null): void {
    this.#listener = listener;
  }

  /** The device started: the time base of `connected.percent`. */
  started(): void {
    this.#since ??= monotonicNow(this.clock);
  }

  transition({ value, previous, event, hubHost, lastError }: ObservedTransition): void {
    const now = monotonicNow(this.clock);
    if (lastError !== null) this.#lastError = lastError;
    if (value === 'Provisioning' || value === 'Reprovisioning') {
      this.#registrations = saturatingIncrement(this.#registrations);
      this.#listener?.counted('registrations');
    }
    if (value === 'CheckingAssignment') {
      this.#statusLookups = saturatingIncrement(this.#statusLookups);
      this.#listener?.counted('statusLookups');
    }
    if (value === 'Connected') {
      this.#connects = saturatingIncrement(this.#connects);
      this.#listener?.counted('connects');
      if (this.#hubHost !== null && hubHost !== null && hubHost !== this.#hubHost) {
        this.#hubChanges = saturatingIncrement(this.#hubChanges);
        this.#listener?.counted('hubChanges');
      }
      if (hubHost !== null) this.#hubHost = hubHost;
      this.#connectedSince = now;
    }
    if (previous === 'Connected' && value !== 'Connected') {
      this.#closeConnectedSpan(now);
      // stop() closing the connection is not a disconnect; a lost session is.
      if (event === 'HUB_LOST' && lastError !== null) {
        this.#disconnects = saturatingIncrement(this.#disconnects);
        bumpKey(this.#disconnectsByClass, lastError.errorClass);
        const rule = Object.hasOwn(this.#disconnectsByRule, lastError.rule) || Object.keys(this.#disconnectsByRule).length < MAX_RULE_KEYS - 1 ? lastError.rule : 'other';
        bumpKey(this.#disconnectsByRule, rule);
        this.#listener?.disconnected(lastError.errorClass, rule);
      }
    }
  }

  /** A telemetry message, by its outbox seq, was handed to the SDK. */
  published(seq: number): void {
    if (seq > this.#publishedUpTo) {
      this.#publishedUpTo = seq;
      return;
    }
    this.#resent = saturatingIncrement(this.#resent);
    this.#listener?.counted('resent');
  }

  delivered(): void {
    this.#delivered = saturatingIncrement(this.#delivered);
    this.#lastDeliveredAt = monotonicNow(this.clock);
    this.#listener?.counted('delivered');
  }

  dropped(dropped: DroppedMessage): void {
    this.#dropped = saturatingIncrement(this.#dropped);
    bumpKey(this.#droppedByReason, dropped.reason);
    this.#listener?.dropped(dropped.reason);
  }

  /** A message was accepted: the depth it left the outbox at. */
  added(): void {
    const { count } = this.outbox.stats();
    if (count > this.#maxDepth) this.#maxDepth = count;
  }

  snapshot(): DeviceStats {
    // Durations on machine time (NTP stepping the wall clock moves none); dates converted to wall time.
    const at = monotonicNow(this.clock);
    const connectedMs = this.#connectedMs + (this.#connectedSince === null ? 0 : Math.max(0, at - this.#connectedSince));
    const elapsed = this.#since === null ? 0 : at - this.#since;
    const percent = elapsed > 0 ? Math.min(100, Math.round((connectedMs / elapsed) * 10_000) / 100) : 0;
    const { count, bytes } = this.outbox.stats();
    if (count > this.#maxDepth) this.#maxDepth = count;
    const lastError = this.#lastError;
    return {
      since: this.#since === null ? null : wallTimeOf(this.clock, this.#since),
      at: this.clock.now(),
      connects: this.#connects,
      disconnects: { total: this.#disconnects, byClass: { ...this.#disconnectsByClass }, byRule: { ...this.#disconnectsByRule } },
      hubChanges: this.#hubChanges,
      hubHost: this.#hubHost,
      dps: { registrations: this.#registrations, statusLookups: this.#statusLookups },
      connected: { ms: connectedMs, percent },
      outbox: { depth: count, maxDepth: this.#maxDepth, bytes, oldestAgeMs: count === 0 ? null : this.#oldestAgeMs(this.clock.now()) },
      messages: {
        delivered: this.#delivered,
        resent: this.#resent,
        dropped: this.#dropped,
        droppedByReason: { ...this.#droppedByReason },
        sinceLastDeliveredMs: this.#lastDeliveredAt === null ? null : Math.max(0, at - this.#lastDeliveredAt),
      },
      lastError:
        lastError === null
          ? null
          : { errorClass: lastError.errorClass, rule: lastError.rule, phase: lastError.phase, message: lastError.message, at: wallTimeOf(this.clock, lastError.at) },
      recommendedAction: this.#connectedSince !== null ? 'none' : recommendedAction(lastError),
    };
  }

  #closeConnectedSpan(now: number): void {
    if (this.#connectedSince === null) return;
    this.#connectedMs = Math.min(Number.MAX_SAFE_INTEGER, this.#connectedMs + Math.max(0, now - this.#connectedSince));
    this.#connectedSince = null;
  }

  /** The oldest message's age on the wall clock (its createdAt is on disk), or null when the outbox cannot be read (closed, storage error). */
  #oldestAgeMs(now: number): number | null {
    try {
      const [oldest] = this.outbox.after(0, 1);
      return oldest === undefined ? null : Math.max(0, now - oldest.createdAt);
    } catch {
      return null;
    }
  }
}
