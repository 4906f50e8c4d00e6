/**
 * (6) Module load: process start → `require('hubstate')` done, against the raw SDK's modules
 * (load-child.ts SDK_MODULES) in the same run. Each sample is a fresh `node` process; the two
 * sides alternate (which goes first swaps each pair) so both see the same machine. Figures:
 * medians, and the median of the per-pair ratios; each pair records the machine's load and the
 * host's speed (stats.ts `startLoadWindow`, `isQuiet`).
 */
import { execFile } from 'node:child_process';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { isQuiet, median, quietCriterion, round, startLoadWindow, type LoadWindow } from './stats';

export interface LoadSample {
  side: 'hubstate' | 'sdk' | 'device';
  ms: number;
  files: number;
  /** The sample process's CPU time (µs), so the pair's load counts it as the bench's own. */
  cpuMicros: number;
}

export interface LoadPair {
  hubstateMs: number;
  sdkMs: number;
  ratio: number;
  load: LoadWindow;
  quiet: boolean;
}

export interface LoadFigures {
  pairs: number;
  hubstateMs: number;
  sdkMs: number;
  /** Median of the per-pair ratios. */
  ratio: number;
  maxLoad1: number;
  maxForeignCores: number;
  /** The run's fastest hostSpeedMs (ms): compare runs with it (a host slow for a whole run passes the quiet test). */
  fastestHostSpeedMs: number;
  /** The slowest pair's hostSpeedMs over the run's fastest. */
  maxHostSlowdown: number;
}

export interface LoadResult {
  runs: number;
  hubstateFiles: number;
  sdkFiles: number;
  /** Medians over the quiet pairs when there are any, else over all pairs (and `busy` is true). */
  hubstateMs: number;
  sdkMs: number;
  ratio: number;
  busy: boolean;
  quietCriterion: string;
  quiet: LoadFigures | null;
  all: LoadFigures;
  perPair: LoadPair[];
  /**
   * For reference, not the target: process start → hubstate loaded and one device created (not
   * started, default logger), median over `runs` samples taken after the pairs, with the files loaded.
   */
  withDevice: { ms: number; files: number; samples: number[] };
  method: string;
}

function sample(side: LoadSample['side']): Promise<LoadSample> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [join(__dirname, 'load-child.js'), side], { timeout: 60_000 }, (error, stdout, stderr) =>
      error ? reject(new Error(`load child (${side}) failed: ${error.message}\n${stderr}`)) : resolve(JSON.parse(stdout.trim().split('\n').pop()!) as LoadSample),
    ),
  );
}

function figuresOf(pairs: LoadPair[], fastestHostSpeedMs: number): LoadFigures {
  return {
    pairs: pairs.length,
    hubstateMs: round(median(pairs.map((p) => p.hubstateMs)), 1),
    sdkMs: round(median(pairs.map((p) => p.sdkMs)), 1),
    ratio: round(median(pairs.map((p) => p.ratio)), 3),
    maxLoad1: Math.max(...pairs.map((p) => p.load.load1)),
    maxForeignCores: Math.max(...pairs.map((p) => p.load.foreignCores)),
    fastestHostSpeedMs,
    maxHostSlowdown: round(Math.max(...pairs.map((p) => p.load.hostSpeedMs)) / fastestHostSpeedMs, 2),
  };
}

export async function benchLoad(runs: number): Promise<LoadResult> {
  const cores = cpus().length;
  // Warm the file-system cache once per side, not counted.
  const first = await sample('hubstate');
  const firstSdk = await sample('sdk');
  const perPair: LoadPair[] = [];
  for (let i = 0; i < runs; i++) {
    const probe = startLoadWindow();
    const [a, b] = i % 2 === 0 ? [await sample('hubstate'), await sample('sdk')] : [await sample('sdk'), await sample('hubstate')].reverse();
    // The sample processes' CPU is the bench's own, not another worker's (node start-up before
    // the script runs is not in it: a little of each sample's time shows as foreign).
    const load = probe.end(a!.cpuMicros + b!.cpuMicros);
    perPair.push({ hubstateMs: round(a!.ms, 1), sdkMs: round(b!.ms, 1), ratio: round(a!.ms / b!.ms, 3), load, quiet: false });
  }
  const withDevice: number[] = [];
  let deviceFiles = 0;
  for (let i = 0; i < runs; i++) {
    const s = await sample('device');
    withDevice.push(round(s.ms, 1));
    deviceFiles = s.files;
  }
  return { ...summarizeLoad(cores, first.files, firstSdk.files, perPair), withDevice: { ms: round(median(withDevice), 1), files: deviceFiles, samples: withDevice } };
}

export function summarizeLoad(cores: number, hubstateFiles: number, sdkFiles: number, pairs: LoadPair[]): Omit<LoadResult, 'withDevice'> {
  const fastest = Math.min(...pairs.map((p) => p.load.hostSpeedMs));
  for (const p of pairs) p.quiet = isQuiet([p.load], cores, fastest);
  const all = figuresOf(pairs, fastest);
  const quietPairs = pairs.filter((p) => p.quiet);
  const quiet = quietPairs.length > 0 ? figuresOf(quietPairs, fastest) : null;
  const headline = quiet ?? all;
  return {
    runs: pairs.length,
    hubstateFiles,
    sdkFiles,
    hubstateMs: headline.hubstateMs,
    sdkMs: headline.sdkMs,
    ratio: headline.ratio,
    busy: quiet === null,
    quietCriterion: quietCriterion(cores, "during the pair (the bench's processes: this one and its two sample processes)"),
    quiet,
    all,
    perPair: pairs,
    method: 'fresh `node` per sample, performance.now() after the require (time since process start), sides alternating first/second, medians; hubstate = the compiled src/index.js (as dist), sdk = load-child.ts SDK_MODULES',
  };
}
