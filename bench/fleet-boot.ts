/**
 * (2) Fleet cold boot: N devices, DPS limited to R registrations/s → floor T = N / R.
 * Ours (staggered batches + fleet-formula jitter) against naive (all at once, no jitter),
 * each on a fresh local cloud so the DPS counters and peaks belong to that run alone.
 */
import { runFleet, type FleetSummary } from 'hubstate-tools/fleet';
import { launchCloud, type BenchCloud } from './cloud';

export interface ColdBootOptions {
  devices: number;
  dpsRatePerSec: number;
  naive: boolean;
  batchIntervalMs?: number;
  load?: number;
  cloudMode: 'in-process' | 'child-process';
  timeoutMs?: number;
  progress?: NodeJS.WriteStream | null;
}

export interface ColdBootResult extends FleetSummary {
  cloudMode: string;
  cloudRssBytes: number;
}

export async function benchColdBoot(options: ColdBootOptions): Promise<ColdBootResult> {
  const cloud: BenchCloud = await launchCloud({ hubs: 2, dpsRatePerSec: options.dpsRatePerSec, retryAfterSec: 1 }, options.cloudMode);
  try {
    let cloudRssBytes = 0;
    const summary = await runFleet({
      cloud: cloud.info,
      devices: options.devices,
      dpsRatePerSec: options.dpsRatePerSec,
      naive: options.naive,
      ...(options.batchIntervalMs ? { batchIntervalMs: options.batchIntervalMs } : {}),
      ...(options.load ? { load: options.load } : {}),
      prefix: options.naive ? 'naive-' : 'ours-',
      progress: options.progress ?? null,
      dpsMetrics: () => cloud.commands.dpsMetrics(),
      ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
      beforeStop: async () => {
        cloudRssBytes = await cloud.commands.rss();
      },
    });
    return { ...summary, cloudMode: cloud.mode, cloudRssBytes };
  } finally {
    await cloud.stop();
  }
}
