#!/usr/bin/env node
/**
 * `npm run soak`: the chaos soak at fleet scale (200 devices, 5 minutes of faults by default).
 * Prints the seed first (replay with --seed), the schedule, progress, then the invariants table;
 * writes the JSON report; exits 1 when an invariant fails, 2 on a usage error.
 */
import { parseArgs } from 'node:util';
import { formatReport } from './format';
import { readRecordedSchedule } from './replay';
import { runSoak } from './soak';

const USAGE = `usage: npm run soak -- [--seed <int|text>] [--devices <n>] [--duration <s|90s|5m>] [--hubs <n>]
       [--fault-rate <ms>] [--quiet <s>] [--interval <ms>] [--report <file.json>] [--quiet-log]
       [--cloud-in-process]   (default: the local cloud runs in a process of its own)
       [--trace-debug]        as under DEBUG=*: the MQTT stack's traces scanned for secrets, not printed
       [--compare <report.json>]  check this run's schedule against the one an earlier run recorded
                              (its seed unless --seed is given; same options to replay it)`;

function seconds(value: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value.trim());
  if (!m) throw new Error(`--${flag}: expected a duration such as 300, 90s or 5m, got '${value}'`);
  const n = Number(m[1]);
  return m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000;
}

function positiveInt(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${flag}: expected a positive integer, got '${value}'`);
  return n;
}

async function main(argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: argv,
      options: {
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
      },
      strict: true,
      allowPositionals: false,
    }).values as Record<string, string | boolean | undefined>;
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  let options: Parameters<typeof runSoak>[0];
  try {
    const compareWith = values.compare ? readRecordedSchedule(values.compare as string) : undefined;
    const rawSeed = values.seed as string | undefined;
    const seed =
      rawSeed === undefined ? (compareWith?.seed ?? Math.floor(Math.random() * 2 ** 31)) : /^-?\d+$/.test(rawSeed) ? Number(rawSeed) : rawSeed;
    if (compareWith && compareWith.seed !== seed) throw new Error(`--compare: ${compareWith.source} ran seed ${String(compareWith.seed)}, not ${String(seed)}`);
    options = {
      seed,
      devices: values.devices ? positiveInt(values.devices as string, 'devices') : 200,
      durationMs: values.duration ? seconds(values.duration as string, 'duration') : 300_000,
      ...(values.hubs ? { hubs: positiveInt(values.hubs as string, 'hubs') } : {}),
      ...(values['fault-rate'] ? { faultRateMs: positiveInt(values['fault-rate'] as string, 'fault-rate') } : {}),
      ...(values.quiet ? { quietMs: seconds(values.quiet as string, 'quiet') } : {}),
      ...(values.interval ? { telemetryIntervalMs: positiveInt(values.interval as string, 'interval') } : {}),
      ...(values.report ? { reportPath: values.report as string } : {}),
      rssSampleMs: 2000,
      // The RSS invariant is about the devices: the cloud's records must not count.
      cloudProcess: values['cloud-in-process'] === true ? 'in-process' : 'child-process',
      traceDebug: values['trace-debug'] === true,
      ...(compareWith ? { compareWith } : {}),
    };
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const started = Date.now();
  const stamp = () => `[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s]`;
  process.stdout.write(`hubstate chaos soak: seed ${String(options.seed)} (replay with --seed ${String(options.seed)})\n`);
  const quietLog = values['quiet-log'] === true;
  const report = await runSoak({
    ...options,
    log: (line) => {
      if (quietLog && line.startsWith('  +')) return;
      process.stdout.write(`${stamp()} ${line}\n`);
    },
  });
  process.stdout.write(`\n${formatReport(report)}\n`);
  const path = options.reportPath ?? `bench/results/soak-${String(options.seed)}.json`;
  process.stdout.write(`report: ${path}\n`);
  return report.ok ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Sockets of stopped SDK clients may linger a moment; the verdict is already out.
    setTimeout(() => process.exit(code), 2000).unref();
  },
  (error: unknown) => {
    process.stderr.write(`soak: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
