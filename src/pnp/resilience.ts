/**
 * The device's own figures (DeviceStats) as a Plug and Play component, interface
 * `dtmi:hubstate:Resilience;1` (examples/dtmi-hubstate-resilience-1.json), reported through the
 * reported-properties queue. Coalesced: one patch at a connection to another hub, then at most
 * one per interval while the connection lasts, and only when something happened since the last
 * one (`eventFigures`; a reconnection is), so an operator sees failovers and outages without the
 * device writing its twin on every event or every interval. The queue keeps only the latest value of each
 * property and flushes on its own PATCH path: telemetry never waits for it.
 *
 * Why not every interval: IoT Hub charges each twin update from a device as a message (4 KB
 * chunks, "Azure IoT Hub billing information"), so a patch a minute is 1,440 messages a day
 * per device, whatever its telemetry: an S1 unit's 400,000 would carry ~280 such devices.
 */
import { monotonicNow, type Clock } from '../clock';
import type { DeviceStats } from '../stats';
import type { PartLogger } from '../logger';

/** The component's interface (DTDL), as in examples/dtmi-hubstate-resilience-1.json. */
export const RESILIENCE_INTERFACE_ID = 'dtmi:hubstate:Resilience;1';
export const DEFAULT_RESILIENCE_COMPONENT = 'resilience';
export const DEFAULT_RESILIENCE_INTERVAL_MS = 60_000;

export interface ResilienceSettings {
  /** Report the component to the cloud (false: the `stats` event and `stats()` only). */
  report: boolean;
  /** The component's name in the device's model. */
  component: string;
  /** At most one report (and one `stats` event) per interval while connected. */
  intervalMs: number;
}

const isoOrNull = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/**
 * The component's reported properties (names and schemas of the DTDL interface). Null removes a
 * property from the twin (no oldest message, no delivery yet, no error yet). The error's message
 * stays on the device: its rule and class say what it was.
 */
export function resiliencePatch(stats: DeviceStats): Record<string, unknown> {
  return {
    since: isoOrNull(stats.since),
    connects: stats.connects,
    disconnects: stats.disconnects.total,
    disconnectsByClass: stats.disconnects.byClass,
    disconnectsByRule: stats.disconnects.byRule,
    hubChanges: stats.hubChanges,
    hubHost: stats.hubHost,
    dpsRegistrations: stats.dps.registrations,
    dpsStatusLookups: stats.dps.statusLookups,
    connectedMs: stats.connected.ms,
    connectedPercent: stats.connected.percent,
    outboxDepth: stats.outbox.depth,
    outboxMaxDepth: stats.outbox.maxDepth,
    outboxBytes: stats.outbox.bytes,
    outboxOldestAgeMs: stats.outbox.oldestAgeMs,
    delivered: stats.messages.delivered,
    resent: stats.messages.resent,
    dropped: stats.messages.dropped,
    droppedByReason: stats.messages.droppedByReason,
    sinceLastDeliveredMs: stats.messages.sinceLastDeliveredMs,
    lastErrorClass: stats.lastError?.errorClass ?? null,
    lastErrorRule: stats.lastError?.rule ?? null,
    lastErrorAt: isoOrNull(stats.lastError?.at ?? null),
    recommendedAction: stats.recommendedAction,
  };
}

/**
 * The figures that move only when something happens: a connection or its loss, a failover, a DPS
 * call, a resend or a drop, a deeper outbox, a new error, delivery stalling (the oldest message's
 * wait, coarsely: under a minute, 10 minutes, an hour, more). Not those that move with time or
 * with each delivery (connected time, exact ages, depth, delivered), nor the error's date (a wall
 * clock stepped by NTP moves it): a report whose only news is those is not sent.
 */
export function eventFigures(stats: DeviceStats): string {
  const { messages, lastError } = stats;
  return [
    stats.connects,
    stats.disconnects.total,
    stats.hubChanges,
    stats.hubHost,
    stats.dps.registrations,
    stats.dps.statusLookups,
    messages.resent,
    messages.dropped,
    stats.outbox.maxDepth,
    OUTBOX_WAIT_STEPS_MS.filter((step) => (stats.outbox.oldestAgeMs ?? 0) >= step).length,
    lastError?.errorClass,
    lastError?.rule,
    lastError?.phase,
    lastError?.message,
    stats.recommendedAction,
  ].join('|');
}

/** The oldest message's waits that are news when crossed (and when it falls back under them). */
const OUTBOX_WAIT_STEPS_MS = [60_000, 600_000, 3_600_000];

/** With nothing new, the figures at the cloud (time connected, delivered, ages) are refreshed once a day. */
export const RESILIENCE_REFRESH_MS = 86_400_000;

/**
 * A reconnection to the hub of the last report reports at once only this long after it (else once
 * it has lasted an interval): a hub that drops every session at once is seen within 15 min, for
 * at most ~96 billed reports a day instead of one at each of ~1,100 reconnections.
 */
export const RECONNECTION_REPORT_GAP_MS = 15 * 60_000;

export interface ResilienceReporterParts {
  clock: Clock;
  logger: PartLogger;
  settings: ResilienceSettings;
  /** The figures now. */
  read(): DeviceStats;
  /** The `stats` event. */
  emit(stats: DeviceStats): void;
  /** Queue a reported-properties patch for a component (the device's reported queue). */
  queue(patch: Record<string, unknown>, component: string): void;
}

/**
 * Reports at a connection to another hub than the last report's (or the first), or to the same
 * hub RECONNECTION_REPORT_GAP_MS after the last report; then every `intervalMs` while the
 * connection lasts when something happened (`eventFigures`: a reconnection is news) or a day has
 * passed since the last report; nothing between connections. The `stats` event fires at each
 * connection and every `intervalMs`.
 */
export class ResilienceReporter {
  #timer: unknown = null;
  /** `eventFigures` of the last patch queued (null before the first), when (machine time), and the hub it went to. */
  #lastReported: string | null = null;
  #lastReportedAt = 0;
  #lastReportedHub: string | null | undefined = undefined;

  constructor(private readonly parts: ResilienceReporterParts) {}

  /** A connection was accepted: report now if it is to another hub (see `#report`), then on the interval. */
  connected(): void {
    this.#cancel();
    const deferred = this.#report('connection');
    // A reconnection left for the interval goes RECONNECTION_REPORT_GAP_MS after the last report at the latest, whatever the interval.
    const untilGapMs = this.#lastReportedAt + RECONNECTION_REPORT_GAP_MS - monotonicNow(this.parts.clock);
    this.#schedule(deferred ? Math.max(0, Math.min(this.parts.settings.intervalMs, untilGapMs)) : this.parts.settings.intervalMs);
  }

  /** The connection ended: the figures wait for the next one (the queue would hold them anyway). */
  disconnected(): void {
    this.#cancel();
  }

  stop(): void {
    this.#cancel();
  }

  #schedule(delayMs = this.parts.settings.intervalMs): void {
    this.#timer = this.parts.clock.setTimeout(() => {
      this.#timer = null;
      this.#report('interval');
      this.#schedule();
    }, delayMs);
  }

  #cancel(): void {
    if (this.#timer === null) return;
    this.parts.clock.clearTimeout(this.#timer);
    this.#timer = null;
  }

  /**
   * At a connection to another hub the patch goes even when nothing happened: that hub's twin may
   * be stale or empty. To the same hub it waits for the interval (a connection that lasts) unless
   * the last report is RECONNECTION_REPORT_GAP_MS old: a hub that drops every session at once
   * would otherwise be sent a billed report at each reconnection. Returns true when a
   * connection's report was left for later.
   */
  #report(when: 'connection' | 'interval'): boolean {
    const { settings, logger } = this.parts;
    let stats: DeviceStats;
    try {
      stats = this.parts.read();
    } catch (error) {
      // The figures are an observer's: a failure to read them never touches the connection.
      logger.warn({ err: (error as Error).message }, 'could not read the device stats');
      return false;
    }
    this.parts.emit(stats);
    if (!settings.report) return false;
    const figures = eventFigures(stats);
    const now = monotonicNow(this.parts.clock);
    const sinceLastMs = now - this.#lastReportedAt;
    if (when === 'connection' && stats.hubHost === this.#lastReportedHub && sinceLastMs < RECONNECTION_REPORT_GAP_MS) return true;
    if (when === 'interval' && figures === this.#lastReported && sinceLastMs < RESILIENCE_REFRESH_MS) return false;
    try {
      this.parts.queue(resiliencePatch(stats), settings.component);
      this.#lastReported = figures;
      this.#lastReportedAt = now;
      this.#lastReportedHub = stats.hubHost;
    } catch (error) {
      logger.warn({ err: (error as Error).message, component: settings.component }, 'could not queue the resilience report');
    }
    return false;
  }
}
