/**
 * `runFleet`: a cold boot of a whole fleet, until every device is Connected (or a timeout), with
 * a progress bar and a summary measured against the floor T = N / R.
 */
import type { DpsMetrics } from 'hubstate-cloud';
import { Fleet, type FleetCounts, type FleetOptions, type FleetShard } from './fleet';
import { ProgressBar } from './progress';

export interface FleetRunOptions extends FleetOptions {
  /** Give up after this long. Default: max(60 s, 5 × the floor). */
  timeoutMs?: number;
  /** Where the progress bar goes (null: none). Default none. */
  progress?: (NodeJS.WritableStream & { isTTY?: boolean; columns?: number }) | null;
  /** DPS-side counters (429s, peak rates), when the DPS is ours to read (the local cloud). */
  dpsMetrics?: () => DpsMetrics | Promise<DpsMetrics>;
  /** Called once everything is Connected, before the fleet stops (e.g. to measure memory). */
  beforeStop?: (fleet: Fleet) => void | Promise<void>;
}

export interface FleetSummary {
  /** The whole fleet's N (every shard's). */
  devices: number;
  /** The shard this process ran (absent: the whole fleet). */
  shard?: FleetShard;
  /** Devices this process ran: `devices`, or the shard's members. */
  members: number;
  dpsRatePerSec: number;
  naive: boolean;
  /** T = N / R: no fleet can be Connected sooner through a DPS limited to R (ms). A shard's members are spread over the same T. */
  floorMs: number;
  /** From the first batch until every device was Connected (ms); null on timeout. */
  allConnectedMs: number | null;
  /** allConnectedMs / floorMs. */
  ratio: number | null;
  connected: number;
  /** Per device, first Connected after the fleet start (ms). */
  connectedAtMs: { p50: number; p95: number; max: number } | null;
  /** Per device, from its own start to its first Connected (ms): DPS + hub + any waits. */
  bootMs: { p50: number; p95: number; max: number } | null;
  /** Failures the devices saw, by class (each DPS 429 is one `throttled`). */
  deviceFailures: FleetCounts['failures'];
  /** DPS counters over the run (when `dpsMetrics` was given). */
  dps: (Pick<DpsMetrics, 'registerRequests' | 'registrations' | 'throttled' | 'requestsTotal' | 'peakRequestsPerSec'> & { peakRegisterRequestsPerSec?: number; throttledPerDevice: number }) | null;
  /** Device-process memory with everything Connected. */
  rssBytes: number;
  heapUsedBytes: number;
  timedOut: boolean;
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

export async function runFleet(options: FleetRunOptions): Promise<FleetSummary> {
  const floorMs = (options.devices / options.dpsRatePerSec) * 1000;
  const timeoutMs = options.timeoutMs ?? Math.max(60_000, 5 * floorMs);
  const before = options.dpsMetrics ? await options.dpsMetrics() : null;
  const fleet = new Fleet(options);
  const bar = options.progress ? new ProgressBar(options.progress, fleet.memberCount) : null;
  const line = (c: FleetCounts): string => {
    const elapsed = ((Date.now() - fleet.startedAt) / 1000).toFixed(1);
    const s = c.byState;
    return `connected  ${elapsed}s (floor ${(floorMs / 1000).toFixed(1)}s)  started ${c.started}  dps ${s.Provisioning + s.Reprovisioning}  hub ${s.Connecting}  backoff ${s.BackingOff}  429 ${c.failures.throttled}${s.Failed ? `  FAILED ${s.Failed}` : ''}`;
  };
  let ticker: NodeJS.Timeout | null = null;
  let timedOut = false;
  let memory = { rss: 0, heapUsed: 0 };
  let after: DpsMetrics | null = null;
  try {
    fleet.start();
    if (bar) ticker = setInterval(() => bar.update(fleet.counts().byState.Connected, line(fleet.counts())), 250);
    try {
      await fleet.waitFor((c) => c.byState.Connected === c.total, timeoutMs, 'all devices Connected');
    } catch {
      timedOut = true;
    }
    const doneAt = Date.now();
    memory = process.memoryUsage();
    if (ticker) clearInterval(ticker);
    ticker = null;
    bar?.finish(fleet.counts().byState.Connected, line(fleet.counts()));
    after = options.dpsMetrics ? await options.dpsMetrics() : null;
    if (options.beforeStop) await options.beforeStop(fleet);
    const connectedAt = Array.from(fleet.firstConnectedAt)
      .filter((t) => t > 0)
      .map((t) => t - fleet.startedAt)
      .sort((a, b) => a - b);
    const boot = Array.from(fleet.firstConnectedAt)
      .map((t, i) => (t > 0 ? t - fleet.launchedAt[i]! : -1))
      .filter((t) => t >= 0)
      .sort((a, b) => a - b);
    const counts = fleet.counts();
    const allConnectedMs = timedOut ? null : doneAt - fleet.startedAt;
    const diff = <K extends keyof DpsMetrics>(k: K): number => (after![k] as number) - (before![k] as number);
    return {
      devices: options.devices,
      ...(options.shard ? { shard: options.shard } : {}),
      members: fleet.memberCount,
      dpsRatePerSec: options.dpsRatePerSec,
      naive: options.naive === true,
      floorMs,
      allConnectedMs,
      ratio: allConnectedMs === null ? null : allConnectedMs / floorMs,
      connected: counts.byState.Connected,
      connectedAtMs: connectedAt.length ? { p50: quantile(connectedAt, 0.5), p95: quantile(connectedAt, 0.95), max: connectedAt[connectedAt.length - 1]! } : null,
      bootMs: boot.length ? { p50: quantile(boot, 0.5), p95: quantile(boot, 0.95), max: boot[boot.length - 1]! } : null,
      deviceFailures: counts.failures,
      dps:
        after && before
          ? {
              registerRequests: diff('registerRequests'),
              registrations: diff('registrations'),
              throttled: diff('throttled'),
              requestsTotal: diff('requestsTotal'),
              // Peaks are not differences: the run's own peak, provided the DPS was fresh.
              peakRequestsPerSec: after.peakRequestsPerSec,
              ...(after.peakRegisterRequestsPerSec !== undefined ? { peakRegisterRequestsPerSec: after.peakRegisterRequestsPerSec } : {}),
              throttledPerDevice: diff('throttled') / fleet.memberCount,
            }
          : null,
      rssBytes: memory.rss,
      heapUsedBytes: memory.heapUsed,
      timedOut,
    };
  } finally {
    if (ticker) clearInterval(ticker);
    await fleet.stop();
  }
}
