/**
 * `npm run bench`: every figure next to its reference, on the same local cloud, figures to
 * bench/results/*.json and a table on stdout.
 *
 * Each scenario runs in a fresh child process (devices) with the local cloud in another child
 * process, so the devices' event loop and the cloud's do not share one core and no scenario
 * inherits another's heap. Flags: --only <name[,name]> (failover, coldboot, herd, throughput,
 * memory, load, fleet10k), --quick (small N, for a try-out; results go to bench/results/tmp/).
 *
 * fleet10k (issue 16) runs only when named in --only: cold boots of ours alone (no naive round) at
 * fleet sizes one process has to hold, each `devices@rate` round of `--fleet-rounds` (default
 * 10000@1000,10000@100) on a fresh cloud in its own process, with the devices' and the cloud's RSS.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { BENCH_DPS_POLL_SEC } from './cloud';
import { renderTable, type BenchResults } from './report';

export interface ScenarioSpec {
  name: 'failover' | 'coldboot' | 'herd' | 'throughput' | 'memory' | 'load' | 'fleet10k';
  params: Record<string, unknown>;
}

/** Scenarios left out of a run unless named in --only (long, and not in the table's rows). */
const OPT_IN = new Set<ScenarioSpec['name']>(['fleet10k']);

/** `--fleet-rounds 10000@1000,2000@100`: the fleet10k rounds, devices@registrations per second. */
export function fleetRounds(value: string | undefined, quick: boolean): Array<{ devices: number; dpsRatePerSec: number }> {
  const text = value ?? (quick ? '500@500' : '10000@1000,10000@100');
  return text.split(',').map((round) => {
    const match = /^(\d+)@(\d+(?:\.\d+)?)$/.exec(round.trim());
    if (!match) throw new Error(`--fleet-rounds: expected devices@rate[,devices@rate...], got '${round}'`);
    return { devices: Number(match[1]), dpsRatePerSec: Number(match[2]) };
  });
}

export function fullPlan(quick: boolean, fleetRoundsFlag?: string): ScenarioSpec[] {
  const fleet10k: ScenarioSpec = { name: 'fleet10k', params: { rounds: fleetRounds(fleetRoundsFlag, quick) } };
  return quick
    ? [
        { name: 'failover', params: { runs: 5, seedSampleDevices: 3, skipSeedSample: true } },
        { name: 'coldboot', params: { devices: 200, dpsRatePerSec: 100 } },
        { name: 'herd', params: { devices: 200, dpsRatePerSec: 100 } },
        { name: 'throughput', params: { messages: 5000, repeats: 2 } },
        { name: 'memory', params: { devices: 200 } },
        { name: 'load', params: { runs: 5 } },
        fleet10k,
      ]
    : [
        { name: 'failover', params: { runs: 30, seedSampleDevices: 20 } },
        { name: 'coldboot', params: { devices: 2000, dpsRatePerSec: 100 } },
        { name: 'herd', params: { devices: 1000, dpsRatePerSec: 100 } },
        { name: 'throughput', params: { messages: 20_000, repeats: 30 } },
        { name: 'memory', params: { devices: 1000 } },
        { name: 'load', params: { runs: 31 } },
        fleet10k,
      ];
}

function runChild(spec: ScenarioSpec): Promise<unknown> {
  return new Promise((resolvePromise, reject) => {
    execFile(
      process.execPath,
      ['--expose-gc', join(__dirname, 'scenario-child.js'), JSON.stringify(spec)],
      { maxBuffer: 16 << 20, timeout: 40 * 60_000 },
      (error, stdout, stderr) => {
        if (error) return reject(new Error(`${spec.name} failed: ${error.message}\n${stderr.slice(-4000)}`));
        const last = stdout.trim().split('\n').pop() ?? '';
        try {
          resolvePromise(JSON.parse(last));
        } catch {
          reject(new Error(`${spec.name}: no JSON result\n${stdout.slice(-2000)}\n${stderr.slice(-2000)}`));
        }
      },
    );
  });
}

async function main(argv: string[]): Promise<void> {
  const quick = argv.includes('--quick');
  const onlyIndex = argv.indexOf('--only');
  const only = onlyIndex >= 0 ? new Set((argv[onlyIndex + 1] ?? '').split(',')) : null;
  const root = resolve(__dirname.includes('node_modules') ? process.cwd() : join(__dirname, '..'));
  const outDir = join(root, 'bench', 'results', quick ? 'tmp' : '');
  mkdirSync(outDir, { recursive: true });
  const results: BenchResults = {};
  const roundsIndex = argv.indexOf('--fleet-rounds');
  for (const spec of fullPlan(quick, roundsIndex >= 0 ? argv[roundsIndex + 1] : undefined)) {
    if (only ? !only.has(spec.name) : OPT_IN.has(spec.name)) continue;
    process.stdout.write(`running ${spec.name} ${JSON.stringify(spec.params)} ...\n`);
    const started = Date.now();
    const result = await runChild(spec);
    const record = {
      scenario: spec.name,
      params: spec.params,
      measuredAt: new Date().toISOString(),
      durationSec: Math.round((Date.now() - started) / 100) / 10,
      machine: { cpus: cpus().length, node: process.version, loadavg1mAtEnd: Math.round(loadavg()[0]! * 100) / 100 },
      settings: { dpsPollRetryAfterSec: BENCH_DPS_POLL_SEC },
      result,
    };
    writeFileSync(join(outDir, `${spec.name}.json`), `${JSON.stringify(record, null, 2)}\n`);
    (results as Record<string, unknown>)[spec.name] = result;
    process.stdout.write(`  done in ${record.durationSec} s → ${join(outDir, `${spec.name}.json`)}\n`);
  }
  // The table covers every figure on disk (a partial run with --only keeps the others).
  for (const name of ['failover', 'coldboot', 'herd', 'throughput', 'memory', 'load'] as const) {
    if (results[name]) continue;
    try {
      (results as Record<string, unknown>)[name] = (JSON.parse(readFileSync(join(outDir, `${name}.json`), 'utf8')) as { result: unknown }).result;
    } catch {
      // not measured yet
    }
  }
  const table = renderTable(results);
  writeFileSync(join(outDir, 'table.md'), `${table}\n`);
  process.stdout.write(`\n${table}\n`);
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    process.stderr.write(`bench: ${(error as Error).stack ?? String(error)}\n`);
    process.exitCode = 1;
  });
}
