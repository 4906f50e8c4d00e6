/**
 * The chaos soak as a command: flags → runSoak → the invariants table and the JSON report. Run by
 * `hubstate soak` and `npm run soak` (main.ts).
 */
import { ConfigError } from 'hubstate';
import { intFlag, MAX_TIMER_MS, MAX_TIMER_SECONDS, parseFlags, UsageError } from '../cli/args';
import { formatReport } from './format';
import { readRecordedSchedule } from './replay';
import { runSoak } from './soak';

export const SOAK_USAGE = `usage: hubstate soak [--seed <int|text>] [--devices <n>] [--duration <s|90s|5m>] [--hubs <n>]
       [--fault-rate <ms>] [--quiet <s>] [--interval <ms>] [--report <file.json>] [--quiet-log]
       [--cloud-in-process]   (default: the local cloud runs in a process of its own)
       [--trace-debug]        as under DEBUG=*: the MQTT stack's traces scanned for secrets, not printed
       [--compare <report.json>]  check this run's schedule against the one an earlier run recorded
                              (its seed unless --seed is given; same options to replay it)`;

/** Upper bounds of the soak's counts (every number flag has one): a fleet and a cloud of the CLI's sizes. */
const MAX_SOAK_DEVICES = 100_000;
const MAX_SOAK_HUBS = 100;

/** A duration flag: 300 (seconds), 90s, 5m or 500ms, at most Node's longest timer. */
function durationFlag(value: string | undefined, flag: string, fallbackMs: number): number {
  if (value === undefined) return fallbackMs;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value.trim());
  const ms = m ? Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 'm' ? 60_000 : 1000) : NaN;
  if (!(ms >= 1 && ms <= MAX_TIMER_MS)) throw new UsageError(`--${flag}: expected a duration such as 300, 90s or 5m (at most ${MAX_TIMER_SECONDS} s), got '${value.slice(0, 40)}'`);
  return ms;
}

/** `hubstate soak` / `npm run soak`: returns the exit code (0 all invariants held, 1 one failed, 2 a usage error). */
export async function soakCommand(
  argv: string[],
  out: NodeJS.WritableStream = process.stdout,
  err: NodeJS.WritableStream = process.stderr,
  { dryRun = false }: { dryRun?: boolean } = {},
): Promise<number> {
  try {
    const options = soakOptionsOf(argv);
    if (options === 'help') {
      out.write(`${SOAK_USAGE}\n`);
      return 0;
    }
    return dryRun ? 0 : await soak(options, out);
  } catch (error) {
    if (!(error instanceof UsageError || error instanceof ConfigError)) throw error;
    err.write(`hubstate: ${error.message}\n${SOAK_USAGE}\n`);
    return 2;
  }
}

/** The flags as runSoak's options (every number bounded), or a UsageError naming the flag. */
function soakOptionsOf(argv: string[]): (Parameters<typeof runSoak>[0] & { quietLog?: boolean }) | 'help' {
  const values = parseFlags(argv, {
    seed: { type: 'string' },
    devices: { type: 'string' },
    duration: { type: 'string' },
    hubs: { type: 'string' },
    'fault-rate': { type: 'string' },
    quiet: { type: 'string' },
    interval: { type: 'string' },
    report: { type: 'string' },
    'quiet-log': { type: 'boolean' },
    'cloud-in-process': { type: 'boolean' },
    'trace-debug': { type: 'boolean' },
    compare: { type: 'string' },
    help: { type: 'boolean' },
  });
  if (values.help) return 'help';
  const compareWith = values.compare ? readRecordedSchedule(values.compare as string) : undefined;
  const rawSeed = values.seed as string | undefined;
  const seed = rawSeed === undefined ? (compareWith?.seed ?? Math.floor(Math.random() * 2 ** 31)) : /^-?\d+$/.test(rawSeed) ? Number(rawSeed) : rawSeed;
  if (compareWith && compareWith.seed !== seed) throw new UsageError(`--compare: ${compareWith.source} ran seed ${String(compareWith.seed)}, not ${String(seed)}`);
  const flag = (name: string) => values[name] as string | undefined;
  const quietLog = values['quiet-log'] === true;
  return {
    seed,
    devices: intFlag(flag('devices'), 'devices', 200, 1, MAX_SOAK_DEVICES),
    durationMs: durationFlag(flag('duration'), 'duration', 300_000),
    ...(values.hubs ? { hubs: intFlag(flag('hubs'), 'hubs', 2, 1, MAX_SOAK_HUBS) } : {}),
    ...(values['fault-rate'] ? { faultRateMs: intFlag(flag('fault-rate'), 'fault-rate', 0, 1, MAX_TIMER_MS) } : {}),
    ...(values.quiet ? { quietMs: durationFlag(flag('quiet'), 'quiet', 0) } : {}),
    ...(values.interval ? { telemetryIntervalMs: intFlag(flag('interval'), 'interval', 0, 1, MAX_TIMER_MS) } : {}),
    ...(values.report ? { reportPath: values.report as string } : {}),
    rssSampleMs: 2000,
    // The RSS invariant is about the devices: the cloud's records must not count.
    cloudProcess: values['cloud-in-process'] === true ? 'in-process' : 'child-process',
    traceDebug: values['trace-debug'] === true,
    ...(compareWith ? { compareWith } : {}),
    ...(quietLog ? { quietLog } : {}),
  };
}

async function soak(options: Parameters<typeof runSoak>[0] & { quietLog?: boolean }, out: NodeJS.WritableStream): Promise<number> {
  const { quietLog, ...soakOptions } = options;
  const started = Date.now();
  const stamp = () => `[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s]`;
  out.write(`hubstate chaos soak: seed ${String(options.seed)} (replay with --seed ${String(options.seed)})\n`);
  const report = await runSoak({
    ...soakOptions,
    log: (line) => {
      if (quietLog && line.startsWith('  +')) return;
      out.write(`${stamp()} ${line}\n`);
    },
  });
  out.write(`\n${formatReport(report)}\n`);
  const path = options.reportPath ?? `bench/results/soak-${String(options.seed)}.json`;
  out.write(`report: ${path}\n`);
  return report.ok ? 0 : 1;
}
