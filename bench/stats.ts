/** Small statistics for benchmark figures. */
import { cpus, loadavg } from 'node:os';

export interface Summary {
  n: number;
  median: number;
  p95: number;
  min: number;
  max: number;
}

/** Nearest-rank quantile of an ascending array. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

export function summarize(values: readonly number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    n: sorted.length,
    median: sorted.length % 2 ? sorted[(sorted.length - 1) / 2]! : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2,
    p95: quantile(sorted, 0.95),
    min: sorted[0] ?? NaN,
    max: sorted[sorted.length - 1] ?? NaN,
  };
}

export function median(values: readonly number[]): number {
  return summarize(values).median;
}

/**
 * A distribution-free confidence interval for the median: the order statistics x(k) and
 * x(n+1-k), with k the largest for which P(Binomial(n, ½) < k) ≤ (1 − level)/2. No assumption
 * about the spread of the samples (per-round ratios are skewed when the host slows), and no
 * resampling to seed. `confidence` is the interval's exact coverage (≥ `level`); null when n is
 * too small for any interval at that level (n < 6 at 95 %).
 */
export interface MedianInterval {
  low: number;
  high: number;
  confidence: number;
}

export function medianInterval(values: readonly number[], level = 0.95): MedianInterval | null {
  const sorted = [...values].filter(Number.isFinite).sort((a, b) => a - b);
  const n = sorted.length;
  const tail = (1 - level) / 2;
  // P(X = i) for X ~ Binomial(n, ½), in log space so that no n underflows 2^-n.
  let logP = -n * Math.LN2;
  let below = 0; // P(X < k)
  let k = 0;
  for (let i = 0; i < n / 2; i++) {
    const next = below + Math.exp(logP);
    if (next > tail) break;
    below = next;
    k = i + 1;
    logP += Math.log((n - i) / (i + 1));
  }
  if (k === 0) return null;
  return { low: sorted[k - 1]!, high: sorted[n - k]!, confidence: 1 - 2 * below };
}

export const round = (x: number, digits = 1): number => (Number.isFinite(x) ? Math.round(x * 10 ** digits) / 10 ** digits : x);

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Busy and total CPU time of the whole machine so far (ms, summed over cores; os.cpus()). */
function machineCpuMs(): { busy: number; total: number } {
  let busy = 0;
  let total = 0;
  for (const { times } of cpus()) {
    const all = times.user + times.nice + times.sys + times.irq + times.idle;
    total += all;
    busy += all - times.idle;
  }
  return { busy, total };
}

/** Iterations of the host-speed workload: about a millisecond at this machine's usual speed. */
const HOST_SPEED_ITERATIONS = 150_000;

/** The host-speed workload: integer work V8 cannot skip (the caller keeps the result). */
function spin(iterations: number): number {
  let sink = 0;
  for (let i = 0; i < iterations; i++) sink = (sink * 31 + i) % 1_000_003;
  return sink;
}

let spinWarmed = false;

/**
 * How long a fixed CPU workload takes right now (ms, the fastest of three tries). A host that
 * slows its guest (CPU capping, a busy neighbour) shows here and nowhere in the guest's own CPU
 * accounting: on this 2-core VM the same work took from 1× to 2.5× as long within one afternoon,
 * with os.cpus() showing other processes idle, and ratios measured then moved by 15 %.
 */
export function hostSpeedMs(): number {
  let sink = 0;
  // Optimised before the first timing: unwarmed, the first window of a run would look slow.
  if (!spinWarmed) for (let warm = 0; warm < 5; warm++) sink += spin(HOST_SPEED_ITERATIONS);
  spinWarmed = true;
  let fastest = Infinity;
  for (let attempt = 0; attempt < 3; attempt++) {
    const start = process.hrtime.bigint();
    sink += spin(HOST_SPEED_ITERATIONS);
    fastest = Math.min(fastest, Number(process.hrtime.bigint() - start) / 1e6);
  }
  if (sink < 0) throw new Error('unreachable: keeps the work from being optimised away');
  return round(fastest, 3);
}

/** A window is quiet when other processes kept less than this share of the cores busy... */
export const QUIET_FOREIGN_SHARE = 0.25;
/** ...and the host ran the speed workload within this factor of the run's fastest. */
export const SLOW_HOST_FACTOR = 1.3;

/**
 * How busy the machine was during a window, apart from the bench itself: the 1-minute load
 * average (os.loadavg()[0], the highest seen at the window's start and end; it counts the bench's
 * own processes too), the cores other processes kept busy (machine CPU time − this process's −
 * the cloud process's, over the window's wall time), and how fast the host ran (hostSpeedMs at
 * the window's start and end, the slower).
 */
export interface LoadWindow {
  load1: number;
  /** Cores used by processes other than the bench's (this one and its cloud), on average. */
  foreignCores: number;
  /** Cores the bench's own processes used, on average. */
  ownCores: number;
  /** hostSpeedMs, the slower of the window's start and end. */
  hostSpeedMs: number;
}

/**
 * Whether every window of a round (or pair) was quiet: other processes under a quarter of the
 * cores, and the host no slower than SLOW_HOST_FACTOR × `fastestHostSpeedMs` (the run's fastest).
 */
export function isQuiet(windows: readonly LoadWindow[], cores: number, fastestHostSpeedMs: number): boolean {
  return windows.every((w) => w.foreignCores < QUIET_FOREIGN_SHARE * cores && w.hostSpeedMs <= SLOW_HOST_FACTOR * fastestHostSpeedMs);
}

/** The quiet criterion, as the results files state it. `what`: the bench's processes in a window. */
export function quietCriterion(cores: number, what: string): string {
  return `${what}, processes other than the bench's used < ${QUIET_FOREIGN_SHARE} × ${cores} cores (machine CPU time from os.cpus() minus the bench's own process.cpuUsage()), and a fixed CPU workload (hostSpeedMs, at the window's start and end) took ≤ ${SLOW_HOST_FACTOR}× the run's fastest: a slowed host shows only there; load1 = os.loadavg()[0], highest at the window's start or end, recorded beside it`;
}

export interface LoadProbe {
  /** Ends the window. `helperCpuMicros`: CPU time the bench's other processes (its cloud, a sample child) used in the window. */
  end(helperCpuMicros?: number): LoadWindow;
}

export function startLoadWindow(): LoadProbe {
  const speedStart = hostSpeedMs();
  const load1Start = loadavg()[0]!;
  const machine0 = machineCpuMs();
  const own0 = process.cpuUsage();
  const wall0 = process.hrtime.bigint();
  return {
    end(helperCpuMicros = 0): LoadWindow {
      const wallMs = Number(process.hrtime.bigint() - wall0) / 1e6;
      const machine1 = machineCpuMs();
      const own = process.cpuUsage(own0);
      const ownMs = (own.user + own.system + helperCpuMicros) / 1000;
      const machineBusyMs = machine1.busy - machine0.busy;
      return {
        load1: round(Math.max(load1Start, loadavg()[0]!), 2),
        foreignCores: round(Math.max(0, machineBusyMs - ownMs) / wallMs, 2),
        ownCores: round(ownMs / wallMs, 2),
        hostSpeedMs: Math.max(speedStart, hostSpeedMs()),
      };
    },
  };
}
