/**
 * The cloud side of the retry policy, from what the cloud recorded per device (its data stays
 * readable after the devices stop): the gap after each DPS 429/5xx and each CONNACK 3, and the
 * attempt rate per device, device side and cloud side.
 */
import type { RetryPolicy } from 'hubstate';
import { checkAttemptRate, countBetween, SERVER_ERROR_FLOOR_MS, type AttemptRateBound, type Bound } from './bounds';
import { TIMER_TOLERANCE_MS } from './backoff-audit';
import type { DpsExchange, HubAttempt, SoakCloud } from './cloud';
import type { Track } from './fleet';

const MAX_SAMPLES = 50;

/** What the cloud saw of one device. */
export interface CloudHistory {
  answers: DpsExchange[];
  registers: number[];
  /** Status lookups. */
  lookups: number[];
  /** Every hub connect attempt, accepted or refused. */
  hubAttempts: HubAttempt[];
  /** Accepted hub connects. */
  hubConnects: HubAttempt[];
}

/** Each device's history, fetched one by one; a failed fetch counts as an empty history and is reported once. */
export async function fetchCloudHistories(
  cloud: SoakCloud | undefined,
  tracks: readonly Track[],
  onError: (message: string) => void,
): Promise<Map<string, CloudHistory>> {
  const histories = new Map<string, CloudHistory>();
  for (const t of tracks) {
    let raw: { answers: DpsExchange[]; registers: number[]; hubAttempts: HubAttempt[] } = { answers: [], registers: [], hubAttempts: [] };
    try {
      raw = (await cloud?.commands.history(t.registrationId)) ?? raw;
    } catch (error) {
      onError(`cloud history: ${(error as Error).message}`);
    }
    histories.set(t.registrationId, {
      ...raw,
      lookups: raw.answers.filter((a) => a.request === 'lookup').map((a) => a.at),
      hubConnects: raw.hubAttempts.filter((h) => h.code === undefined),
    });
  }
  return histories;
}

/** Attempt rate over every device: the worst window and how many windows broke the bound. */
export interface FleetRate {
  maxCount: number;
  boundThere: number;
  worstRatio: number;
  violations: number;
  worstDevice: string;
}

export interface CloudGapAudit {
  dpsChecked: number;
  dpsExempt: number;
  dpsViolations: string[];
  minDpsSlackMs: number;
  hubChecked: number;
  hubExempt: number;
  hubViolations: string[];
  minHubSlackMs: number;
  deviceRate: FleetRate;
  cloudRate: FleetRate;
}

export interface CloudGapInput {
  tracks: readonly Track[];
  histories: ReadonlyMap<string, CloudHistory>;
  policy: RetryPolicy;
  rateBound: AttemptRateBound;
  backoffMax: Bound;
  startedAt: number;
}

export function auditCloudGaps(input: CloudGapInput): CloudGapAudit {
  const { tracks, histories, policy, rateBound, backoffMax, startedAt } = input;
  const audit: CloudGapAudit = {
    dpsChecked: 0,
    dpsExempt: 0,
    dpsViolations: [],
    minDpsSlackMs: Infinity,
    hubChecked: 0,
    hubExempt: 0,
    hubViolations: [],
    minHubSlackMs: Infinity,
    deviceRate: { maxCount: 0, boundThere: rateBound.base, worstRatio: 0, violations: 0, worstDevice: '' },
    cloudRate: { maxCount: 0, boundThere: rateBound.base, worstRatio: 0, violations: 0, worstDevice: '' },
  };
  for (const t of tracks) {
    const history = histories.get(t.registrationId)!;
    checkDpsGaps(audit, t, history, policy, startedAt);
    checkHubGaps(audit, t, history, startedAt);
    const fold = (into: FleetRate, times: number[]) => {
      const r = checkAttemptRate(times, t.losses, t.userCommands, rateBound, backoffMax.valueMs);
      into.violations += r.violations;
      if (r.maxCount > into.maxCount) {
        into.maxCount = r.maxCount;
        into.boundThere = r.boundThere;
      }
      if (r.worstRatio > into.worstRatio) {
        into.worstRatio = r.worstRatio;
        into.worstDevice = t.registrationId;
      }
    };
    fold(audit.deviceRate, t.attempts);
    fold(audit.cloudRate, [...history.registers, ...history.hubAttempts.map((h) => h.at)].sort((x, y) => x - y));
  }
  return audit;
}

const userCommandBetween = (t: Track, from: number, to: number) => t.userCommands.some((c) => c > from && c <= to);

/** After a DPS 429 or 5xx, the device's next DPS request waits the retry-after (and the 5xx floor). */
function checkDpsGaps(audit: CloudGapAudit, t: Track, { answers }: CloudHistory, policy: RetryPolicy, startedAt: number): void {
  for (let i = 0; i + 1 < answers.length; i++) {
    const a = answers[i]!;
    if (a.status !== 429 && a.status < 500) continue;
    const ra = a.retryAfterSec !== undefined ? a.retryAfterSec * 1000 : undefined;
    const required = a.status === 429 ? (ra ?? policy.throttledMinDelayMs / 2) : Math.max(ra ?? 0, SERVER_ERROR_FLOOR_MS);
    const next = answers[i + 1]!;
    if (userCommandBetween(t, a.at, next.at)) {
      audit.dpsExempt++;
      continue;
    }
    audit.dpsChecked++;
    const slack = next.at - a.at - required;
    audit.minDpsSlackMs = Math.min(audit.minDpsSlackMs, slack);
    if (slack < -TIMER_TOLERANCE_MS && audit.dpsViolations.length < MAX_SAMPLES) {
      audit.dpsViolations.push(`${t.registrationId}: DPS ${a.status} (retry-after ${ra ?? '-'} ms) at ${a.at - startedAt} ms, next ${next.request} ${next.at - a.at} ms later (< ${required} ms)`);
    }
  }
}

/** After a CONNACK 3, the device's next connect to the same hub waits the server-error floor. */
function checkHubGaps(audit: CloudGapAudit, t: Track, { hubAttempts: hub, registers }: CloudHistory, startedAt: number): void {
  for (let i = 0; i + 1 < hub.length; i++) {
    const a = hub[i]!;
    if (a.code !== 3) continue;
    const next = hub[i + 1]!;
    // The floor is for the hub that said 3: a device that DPS (registration or status lookup)
    // sent to another hub owes that hub nothing.
    if (next.hub !== a.hub || registers.some((r) => r > a.at && r <= next.at) || userCommandBetween(t, a.at, next.at)) {
      audit.hubExempt++;
      continue;
    }
    audit.hubChecked++;
    const slack = next.at - a.at - SERVER_ERROR_FLOOR_MS;
    audit.minHubSlackMs = Math.min(audit.minHubSlackMs, slack);
    if (slack < -TIMER_TOLERANCE_MS && audit.hubViolations.length < MAX_SAMPLES) {
      audit.hubViolations.push(`${t.registrationId}: CONNACK 3 from ${a.hub} at ${a.at - startedAt} ms, next connect ${next.at - a.at} ms later (< ${SERVER_ERROR_FLOOR_MS} ms)`);
    }
  }
}

/** Whole-run DPS load the cloud saw (registrations and status lookups), per device per hour. */
export interface DpsLoad {
  registrations: number;
  lookups: number;
  hours: number;
  registrationsPerDevicePerHour: number;
  lookupsPerDevicePerHour: number;
}

/** Counts requests within `counted`; the rate is over `runMs` (the two differ only in a run that broke off). */
export function dpsLoad(histories: ReadonlyMap<string, CloudHistory>, devices: number, counted: { from: number; to: number }, runMs: number): DpsLoad {
  const runHours = Math.max(1e-9, runMs / 3_600_000);
  const registrations = [...histories.values()].reduce((n, h) => n + countBetween(h.registers, counted.from, counted.to), 0);
  const lookups = [...histories.values()].reduce((n, h) => n + countBetween(h.lookups, counted.from, counted.to), 0);
  const perDeviceHour = (n: number) => Math.round((n / Math.max(1, devices) / runHours) * 10) / 10;
  return {
    registrations,
    lookups,
    hours: Math.round(runHours * 1000) / 1000,
    registrationsPerDevicePerHour: perDeviceHour(registrations),
    lookupsPerDevicePerHour: perDeviceHour(lookups),
  };
}
