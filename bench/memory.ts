/**
 * (5) Memory: RSS per connected device at N (createDevice in a Fleet, in-memory outbox), RSS per
 * idle machine (createDevice, not started), and the raw SDK's cost per connected client for
 * reference. Each figure is measured in a fresh process (`node --expose-gc`), after a forced GC,
 * as (RSS with N − RSS before) / N; the cloud runs in its own process.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import pino from 'pino';
import { createDevice, type Device } from '../src/device';
import { Fleet } from 'hubstate-tools/fleet';
import { launchCloud } from './cloud';
import { closeQuietly, rawOpen, rawRegister } from './raw-sdk';
import { sleep } from './stats';

export type MemoryMode = 'connected' | 'idle' | 'raw';

export interface MemorySample {
  mode: MemoryMode;
  devices: number;
  rssPerDeviceBytes: number;
  heapPerDeviceBytes: number;
  rssBeforeBytes: number;
  rssAfterBytes: number;
}

export interface MemoryResult {
  devices: number;
  connectedRssPerDeviceKB: number;
  connectedHeapPerDeviceKB: number;
  idleRssPerMachineKB: number;
  idleHeapPerMachineKB: number;
  rawRssPerClientKB: number;
  rawHeapPerClientKB: number;
  samples: MemorySample[];
  method: string;
}

function settle(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    gc();
    gc();
  }
}

/** Runs one measurement in this process (it must be a fresh one started with --expose-gc). */
export async function measureMemory(mode: MemoryMode, devices: number, cloudMode: 'in-process' | 'child-process'): Promise<MemorySample> {
  const cloud = mode === 'idle' ? null : await launchCloud({ hubs: 2 }, cloudMode);
  const logger = pino({ level: 'silent' });
  // Warm the modules and code paths with one device, so the figure is per device, not per process.
  const warm = cloud ? new Fleet({ cloud: cloud.info, devices: 1, dpsRatePerSec: 1000, prefix: 'warm-', logger }) : null;
  if (warm) {
    warm.start();
    await warm.allConnected();
  } else {
    createDevice({ idScope: 'warmup', registrationId: 'warm', groupKey: Buffer.alloc(32, 1).toString('base64'), logger });
  }
  await sleep(200);
  settle();
  const before = process.memoryUsage();
  let after: NodeJS.MemoryUsage;
  const keep: Device[] = [];
  const rawClients: Array<Awaited<ReturnType<typeof rawOpen>>> = [];
  let fleet: Fleet | null = null;
  try {
    if (mode === 'idle') {
      for (let i = 0; i < devices; i++) {
        keep.push(createDevice({ idScope: 'idleScope', registrationId: `idle-${i}`, groupKey: Buffer.alloc(32, 1).toString('base64'), logger }));
      }
    } else if (mode === 'connected') {
      fleet = new Fleet({ cloud: cloud!.info, devices, dpsRatePerSec: 1000, staggerRatePerSec: 400, logger });
      fleet.start();
      await fleet.allConnected();
    } else {
      for (let i = 0; i < devices; i += 20) {
        const batch = Array.from({ length: Math.min(20, devices - i) }, (_, k) => `raw-${i + k}`);
        rawClients.push(
          ...(await Promise.all(
            batch.map(async (id) => {
              const { assignedHub, deviceId } = await rawRegister(cloud!.info, id);
              return rawOpen(cloud!.info, assignedHub, deviceId, id);
            }),
          )),
        );
      }
    }
    await sleep(1000);
    settle();
    after = process.memoryUsage();
  } finally {
    await fleet?.stop();
    await warm?.stop();
    await Promise.all(rawClients.map((c) => closeQuietly(c)));
    await cloud?.stop();
  }
  return {
    mode,
    devices,
    rssPerDeviceBytes: (after.rss - before.rss) / devices,
    heapPerDeviceBytes: (after.heapUsed - before.heapUsed) / devices,
    rssBeforeBytes: before.rss,
    rssAfterBytes: after.rss,
  };
}

/** Each mode in a fresh `node --expose-gc` process (compiled bench only). */
export async function benchMemory(devices: number): Promise<MemoryResult> {
  const samples: MemorySample[] = [];
  for (const mode of ['idle', 'raw', 'connected'] as MemoryMode[]) {
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, ['--expose-gc', join(__dirname, 'memory-child.js'), mode, String(devices)], { maxBuffer: 1 << 20, timeout: 600_000 }, (error, stdout, stderr) =>
        error ? reject(new Error(`memory child (${mode}) failed: ${error.message}\n${stderr}`)) : resolve(stdout),
      ),
    );
    samples.push(JSON.parse(out.trim().split('\n').pop()!) as MemorySample);
  }
  return summarizeMemory(devices, samples);
}

export function summarizeMemory(devices: number, samples: MemorySample[]): MemoryResult {
  const kb = (mode: MemoryMode, field: 'rssPerDeviceBytes' | 'heapPerDeviceBytes') => Math.round((samples.find((s) => s.mode === mode)?.[field] ?? NaN) / 102.4) / 10;
  return {
    devices,
    connectedRssPerDeviceKB: kb('connected', 'rssPerDeviceBytes'),
    connectedHeapPerDeviceKB: kb('connected', 'heapPerDeviceBytes'),
    idleRssPerMachineKB: kb('idle', 'rssPerDeviceBytes'),
    idleHeapPerMachineKB: kb('idle', 'heapPerDeviceBytes'),
    rawRssPerClientKB: kb('raw', 'rssPerDeviceBytes'),
    rawHeapPerClientKB: kb('raw', 'heapPerDeviceBytes'),
    samples,
    method: 'fresh node --expose-gc process per figure, forced GC, (RSS with N - RSS before) / N; cloud in its own process',
  };
}
