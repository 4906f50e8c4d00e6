import { parseArgs, type ParseArgsConfig } from 'node:util';

/** A command-line mistake: printed as one line naming the flag, exit code 2, no stack trace. */
export class UsageError extends Error {
  override name = 'UsageError';
}

type FlagOptions = NonNullable<ParseArgsConfig['options']>;

export function parseFlags(argv: string[], options: FlagOptions): Record<string, string | boolean | undefined> {
  try {
    return parseArgs({ args: argv, options, allowPositionals: false, strict: true }).values as Record<string, string | boolean | undefined>;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** Decimal notation only (no hex, no 'Infinity', no blanks): 30, 1.5, 2e3. */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** Node's longest timer (2³¹−1 ms, 24.8 days): a longer one fires after 1 ms. */
export const MAX_TIMER_MS = 2_147_483_647;
export const MAX_TIMER_SECONDS = Math.floor(MAX_TIMER_MS / 1000);

/** A number flag within [min, max] (every number flag has an upper bound), else a UsageError naming it. */
export function numberFlag(value: string | undefined, flag: string, fallback: number, min = 0, max = MAX_TIMER_MS): number {
  if (value === undefined) return fallback;
  const parsed = DECIMAL.test(value) ? Number(value) : NaN;
  if (!Number.isFinite(parsed) || parsed < min || parsed > max) {
    throw new UsageError(`--${flag}: expected a number from ${min} to ${max}, got '${shorten(value)}'`);
  }
  return parsed;
}

/** A whole-number flag within [min, max], else a UsageError naming it. */
export function intFlag(value: string | undefined, flag: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const parsed = DECIMAL.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(parsed) || parsed < min || parsed > max) {
    throw new UsageError(`--${flag}: expected a whole number from ${min} to ${max}, got '${shorten(value)}'`);
  }
  return parsed;
}

/**
 * `--shard i/N`: shard i (counted from 0, as Kubernetes' JOB_COMPLETION_INDEX) of N, with N from
 * 1 to the fleet's device count (a shard with no device is a mistake, not an idle pod).
 */
export function shardFlag(value: string | undefined, flag: string, devices: number): { index: number; count: number } | undefined {
  if (value === undefined) return undefined;
  const match = /^(\d{1,9})\/(\d{1,9})$/.exec(value);
  const index = match ? Number(match[1]) : NaN;
  const count = match ? Number(match[2]) : NaN;
  if (!match || count < 1 || count > devices || index >= count) {
    throw new UsageError(`--${flag}: expected i/N with N from 1 to the ${devices} devices and i from 0 to N-1, got '${shorten(value)}'`);
  }
  return { index, count };
}

const shorten = (value: string): string => (value.length > 40 ? `${value.slice(0, 37)}...` : value);
