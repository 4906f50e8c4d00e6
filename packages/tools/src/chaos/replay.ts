/**
 * "Same seed, same schedule", checked against another run: the schedule a previous report recorded
 * (another process, maybe other code or another machine) must be the one this run generated from
 * the same seed. Recomputing the schedule in the same process could not fail (it is a pure
 * function); a recorded one can, and is what a report's `reproduce` line promises.
 */
import { ConfigError } from 'hubstate';
import { readBoundedFile } from '../cli/files';
import type { InvariantResult } from './invariants';
import type { ResolvedScheduleOptions } from './schedule';

/** The schedule-shaping options a report records under `options`. */
const SHAPE_KEYS = ['devices', 'hubs', 'durationMs', 'faultRateMs', 'minFaultMs', 'maxFaultMs', 'longFaultMinMs', 'longFaultMaxMs'] as const;
type ScheduleShape = Record<(typeof SHAPE_KEYS)[number], unknown>;

/** What a previous report recorded of its schedule. */
export interface RecordedSchedule {
  /** Where it was read from, for the report. */
  source: string;
  seed: number | string;
  startedAt: string;
  shape: ScheduleShape;
  digest: string;
  list: string[];
}

/** A day's soak report is a few MB (an hour's is 0.7 MB); anything far larger is not one. */
const MAX_REPORT_BYTES = 64 * 1024 * 1024;

/** Reads the schedule out of a soak report (JSON as `runSoak` writes it); throws if it is not one. */
export function readRecordedSchedule(path: string): RecordedSchedule {
  const text = readBoundedFile(path, 'compare', 'a soak report', path, MAX_REPORT_BYTES);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ConfigError('compare', `a soak report (${path} is not JSON)`);
  }
  const report = (parsed ?? {}) as {
    seed?: unknown;
    startedAt?: unknown;
    options?: Record<string, unknown>;
    schedule?: { digest?: unknown; list?: unknown };
  };
  const { seed, options, schedule } = report;
  if ((typeof seed !== 'number' && typeof seed !== 'string') || !options || typeof schedule?.digest !== 'string' || !Array.isArray(schedule.list)) {
    throw new ConfigError('compare', `a soak report with seed, options and schedule.digest/list (${path} is not one)`);
  }
  return {
    source: path,
    seed,
    startedAt: typeof report.startedAt === 'string' ? report.startedAt : '?',
    shape: Object.fromEntries(SHAPE_KEYS.map((k) => [k, options[k]])) as ScheduleShape,
    digest: schedule.digest,
    list: schedule.list.map(String),
  };
}

/** The shape this run's schedule was generated with, as a report records it. */
function shapeOf(resolved: ResolvedScheduleOptions): ScheduleShape {
  return Object.fromEntries(SHAPE_KEYS.map((k) => [k, resolved[k]])) as ScheduleShape;
}

export function sameScheduleAsRecorded(
  recorded: RecordedSchedule,
  current: { resolved: ResolvedScheduleOptions; digest: string; list: readonly string[] },
): InvariantResult {
  const shape = shapeOf(current.resolved);
  const shapeDiffs = SHAPE_KEYS.filter((k) => recorded.shape[k] !== shape[k]).map((k) => `${k} ${String(shape[k])} here, ${String(recorded.shape[k])} there`);
  const firstDiff = current.list.findIndex((line, i) => recorded.list[i] !== line);
  const where =
    firstDiff >= 0
      ? `; first difference at fault #${firstDiff}: '${current.list[firstDiff]}' here, '${recorded.list[firstDiff] ?? 'none'}' there`
      : current.list.length !== recorded.list.length
        ? `; ${current.list.length} faults here, ${recorded.list.length} there`
        : '';
  return {
    name: 'same seed, same schedule',
    ok: current.digest === recorded.digest,
    measured:
      `${current.digest} here, ${recorded.digest} in ${recorded.source} (run ${recorded.startedAt})` +
      (shapeDiffs.length ? `; options differ: ${shapeDiffs.join(', ')}` : '') +
      (current.digest === recorded.digest ? '' : where),
    bound: `the schedule recorded by an earlier run with seed ${String(recorded.seed)} and the same options`,
  };
}
