/**
 * (6) Module load: process start → `require('hubstate')` done, against the raw SDK's modules
 * (load-child.ts SDK_MODULES) in the same run, and against the SDK's modules plus XState (the two
 * runtimes the project's shape requires: the rest of the gap is our own code). Each sample is a
 * fresh `node` process; a "pair" is one sample of each side, in an order that rotates so all see
 * the same machine. Figures: medians, and the median of the per-pair ratios with its 95 %
 * confidence interval; each pair records the machine's load and the host's speed (stats.ts
 * `startLoadWindow`, `isQuiet`).
 */
import { execFile } from 'node:child_process';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { isQuiet, median, medianInterval, quietCriterion, round, startLoadWindow, type LoadWindow, type MedianInterval } from './stats';

export interface LoadSample {
  side: 'hubstate' | 'sdk' | 'sdk-xstate' | 'device';
  ms: number;
  files: number;
  /** The sample process's CPU time (µs), so the pair's load counts it as the bench's own. */
  cpuMicros: number;
}

export interface LoadPair {
  hubstateMs: number;
  sdkMs: number;
  ratio: number;
  /** The SDK's modules and XState (absent in records from before it was measured). */
  sdkXstateMs?: number;
  /** hubstateMs / sdkXstateMs: what our own code adds to the runtimes the project requires. */
  ratioOverSdkXstate?: number;
  load: LoadWindow;
  quiet: boolean;
}

export interface LoadFigures {
  pairs: number;
  hubstateMs: number;
  sdkMs: number;
  /** Median of the per-pair ratios, and its 95 % confidence interval (stats.ts medianInterval; absent in older records). */
  ratio: number;
  ratioInterval?: MedianInterval | null;
  /** Median of sdkXstateMs, and of the per-pair ratios over it, with that median's interval. */
  sdkXstateMs?: number;
  ratioOverSdkXstate?: number;
  ratioOverSdkXstateInterval?: MedianInterval | null;
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

/** The order of the three sides in pair i is SIDE_ORDERS[i % 3]: each goes first, second and third in turn. */
const SIDE_ORDERS = [
  ['hubstate', 'sdk', 'sdk-xstate'],
  ['sdk', 'sdk-xstate', 'hubstate'],
  ['sdk-xstate', 'hubstate', 'sdk'],
] as const;

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
    ratioInterval: medianInterval(pairs.map((p) => p.ratio)),
    ...(pairs.every((p) => p.sdkXstateMs !== undefined && p.ratioOverSdkXstate !== undefined)
      ? {
          sdkXstateMs: round(median(pairs.map((p) => p.sdkXstateMs!)), 1),
          ratioOverSdkXstate: round(median(pairs.map((p) => p.ratioOverSdkXstate!)), 3),
          ratioOverSdkXstateInterval: medianInterval(pairs.map((p) => p.ratioOverSdkXstate!)),
        }
      : {}),
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
  await sample('sdk-xstate');
  const perPair: LoadPair[] = [];
  for (let i = 0; i < runs; i++) {
    const probe = startLoadWindow();
    const samples = {} as Record<(typeof SIDE_ORDERS)[number][number], LoadSample>;
    for (const side of SIDE_ORDERS[i % SIDE_ORDERS.length]!) samples[side] = await sample(side);
    const { hubstate, sdk, 'sdk-xstate': sdkXstate } = samples;
    // The sample processes' CPU is the bench's own, not another worker's (node start-up before
    // the script runs is not in it: a little of each sample's time shows as foreign).
    const load = probe.end(hubstate.cpuMicros + sdk.cpuMicros + sdkXstate.cpuMicros);
    perPair.push({
      hubstateMs: round(hubstate.ms, 1),
      sdkMs: round(sdk.ms, 1),
      ratio: round(hubstate.ms / sdk.ms, 3),
      sdkXstateMs: round(sdkXstate.ms, 1),
      ratioOverSdkXstate: round(hubstate.ms / sdkXstate.ms, 3),
      load,
      quiet: false,
    });
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
    quietCriterion: quietCriterion(cores, "during the pair (the bench's processes: this one and its three sample processes)"),
    quiet,
    all,
    perPair: pairs,
    method: 'fresh `node` per sample, performance.now() after the require (time since process start), the three sides in rotating order, medians (95 % intervals: order statistics of the per-pair ratios); hubstate = require(\'hubstate\'), the package\'s build (dist/hubstate.js: one esbuild bundle, bundle.mjs), sdk = load-child.ts SDK_MODULES, sdk-xstate = those and xstate',
  };
}
