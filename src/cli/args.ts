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

export function numberFlag(value: string | undefined, flag: string, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < min) throw new UsageError(`--${flag}: expected a number ≥ ${min}, got '${value}'`);
  return parsed;
}
