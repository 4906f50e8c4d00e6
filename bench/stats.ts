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

/**
 * How busy the machine was during a window, apart from the bench itself: the 1-minute load
 * average (os.loadavg()[0], the highest seen at the window's start and end; it counts the bench's
 * own processes too) and the cores other processes kept busy (machine CPU time − this process's −
 * the cloud process's, over the window's wall time).
 */
export interface LoadWindow {
  load1: number;
  /** Cores used by processes other than the bench's (this one and its cloud), on average. */
  foreignCores: number;
  /** Cores the bench's own processes used, on average. */
  ownCores: number;
}

export interface LoadProbe {
  /** Ends the window. `helperCpuMicros`: CPU time the bench's other processes (its cloud, a sample child) used in the window. */
  end(helperCpuMicros?: number): LoadWindow;
}

export function startLoadWindow(): LoadProbe {
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
      };
    },
  };
}
