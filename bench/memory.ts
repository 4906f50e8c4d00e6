/**
 * (5) Memory: RSS per connected device at N (createDevice in a Fleet, in-memory outbox), RSS per
 * idle machine (createDevice, not started), and the raw SDK's cost per connected client for
 * reference. Each figure is measured in a fresh process (`node --expose-gc`), after a forced GC,
 * as (RSS with N − RSS before) / N; the cloud runs in its own process.
 *
 * Where it goes: the RSS split into V8 heap used, heap reserved but free, external (Buffers,
 * ArrayBuffers) and the rest (native: OpenSSL, sockets, malloc), per device; and, in two more
 * fresh processes (raw and connected, so writing snapshots does not bend the RSS figures), a heap
 * snapshot diff per device by constructor name (heap-diff.ts), ours next to the raw SDK's.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { getHeapSpaceStatistics, writeHeapSnapshot } from 'node:v8';
import { join } from 'node:path';
import pino from 'pino';
// The device library as it ships (dist/hubstate.js; `npm run bench` builds it first).
import { createDevice, MemoryProvisioningCache, type Device } from 'hubstate';
import { Fleet, staggerSchedule } from 'hubstate-tools/fleet';
import { DEFAULT_POLICY } from '../src/policy/backoff';
import { launchCloud } from './cloud';
import { diffSnapshots, subtractDiffs, type HeapDiff, type HeapDiffRow } from './heap-diff';
import { closeQuietly, rawOpen, rawPlugAndPlaySession, rawRegister } from './raw-sdk';
import { sleep } from './stats';

/**
 * Devices (ours and raw alike) arrive at this rate, on the Fleet's schedule (batches every 100 ms),
 * each connecting without waiting for the others: the same arrival pattern for both, so neither
 * figure carries more connections in flight at once (transient TLS and heap memory that the
 * process keeps as RSS after it is freed) than the other.
 */
export const MEMORY_ARRIVALS_PER_SEC = 100;

/** The model id the raw-pnp clients announce (the length of a typical one). */
const RAW_MODEL_ID = 'dtmi:com:example:Thermostat;1';

/** When the connected figures are read: past the default policy's stableConnectionMs (30 s) after the last connect. */
export const STEADY_AFTER_MS = DEFAULT_POLICY.stableConnectionMs + 2000;

/**
 * `raw`: the raw SDK client, open (the reference); `raw-pnp`: the same client doing what an
 * IoT Central device does once open (rawPlugAndPlaySession), the same session hubstate keeps.
 * `connected`: ours, booting as the raw clients do (a DPS registration, then the hub): each device
 * with a provisioning cache, in memory here, as `dataDir` gives one on disk. `connected-lookup`:
 * ours with nowhere to cache, which asks DPS first (a status lookup over HTTPS at every boot, seed
 * 004) and then registers: one more TLS connection per device while the fleet boots.
 */
export type MemoryMode = 'connected' | 'connected-lookup' | 'idle' | 'idle-default-logger' | 'raw' | 'raw-pnp';

/**
 * Devices created and not started: `idle` with the application's logger (as the fleet passes
 * one), `idle-default-logger` with none (the library's default, one per process).
 */
const isIdle = (mode: MemoryMode) => mode === 'idle' || mode === 'idle-default-logger';

export interface MemorySample {
  mode: MemoryMode;
  devices: number;
  /** At steady state (STEADY_AFTER_MS after the last device connected; idle: 1 s). */
  rssPerDeviceBytes: number;
  heapPerDeviceBytes: number;
  /** 1 s after the last device connected (the figure before steady state was waited for). */
  rssPerDeviceAt1sBytes: number;
  heapPerDeviceAt1sBytes: number;
  rssBeforeBytes: number;
  rssAfterBytes: number;
  /** Per device: V8 heap reserved (used + free), external memory (Buffers), and of it ArrayBuffers. */
  heapTotalPerDeviceBytes: number;
  externalPerDeviceBytes: number;
  arrayBuffersPerDeviceBytes: number;
  /**
   * Per device, of the heap reserved: V8's old space left free (its free space after − before:
   * the holes that objects freed after their promotion leave, which V8 compacts only when a page
   * is mostly empty), and the code space's growth (compiled code, shared by all the devices).
   */
  oldSpaceFreePerDeviceBytes: number;
  codeSpacePerDeviceBytes: number;
  /** Set for the runs under FIXED_ALLOCATOR (glibc tunables), absent for the default allocator. */
  allocator?: string;
  /** Heap snapshots written (before, after) when asked; the RSS figures of such a run are not used. */
  snapshots?: { before: string; after: string };
}

/** RSS per device split by where it lives (KB). */
export interface RssBreakdown {
  rssKB: number;
  heapUsedKB: number;
  /** Heap reserved by V8 but not used (young generation, fragmentation). */
  heapFreeKB: number;
  /** Of the heap: the old space's free space (fragmentation), and the code space. */
  oldSpaceFreeKB: number;
  codeSpaceKB: number;
  /** Buffers / ArrayBuffers outside the V8 heap. */
  externalKB: number;
  /** RSS − heap reserved − external: native memory (OpenSSL, sockets, libuv, malloc arenas). */
  nativeKB: number;
}

export interface MemoryResult {
  devices: number;
  connectedRssPerDeviceKB: number;
  connectedHeapPerDeviceKB: number;
  idleRssPerMachineKB: number;
  idleHeapPerMachineKB: number;
  /** Idle devices created without a logger (NaN when not measured). */
  idleDefaultLoggerRssKB: number;
  idleDefaultLoggerHeapKB: number;
  rawRssPerClientKB: number;
  rawHeapPerClientKB: number;
  /** The raw client doing an IoT Central device's session (raw-pnp). */
  rawPnpRssPerClientKB: number;
  rawPnpHeapPerClientKB: number;
  /** The same figures 1 s after the last connect (before steady state). */
  at1s: { connectedRssPerDeviceKB: number; connectedHeapPerDeviceKB: number; rawRssPerClientKB: number; rawHeapPerClientKB: number };
  /** Connected RSS / raw RSS per device: the ratio of the medians of MEMORY_ROUNDS rounds. */
  connectedOverRaw: number;
  /** Each round's connected / raw (a round runs raw, raw-pnp and connected, each in its own process). */
  connectedOverRawByRound: number[];
  /** Connected RSS / raw-pnp RSS per device: against a raw client doing the same job (ratio of the medians). */
  connectedOverRawPnp: number;
  connectedOverRawPnpByRound: number[];
  /** `connected-lookup` (no provisioning cache: a status lookup at boot) / raw, one run; null when not measured. */
  connectedLookupOverRaw: number | null;
  breakdown: { connected: RssBreakdown; connectedLookup: RssBreakdown; raw: RssBreakdown; rawPnp: RssBreakdown; idle: RssBreakdown };
  /** The same two figures with FIXED_ALLOCATOR (freed native memory returned): what the devices hold, not what malloc keeps. Linux only. */
  fixedAllocator: {
    glibcTunables: string;
    connectedRssPerDeviceKB: number;
    rawRssPerClientKB: number;
    rawPnpRssPerClientKB: number;
    connectedOverRaw: number;
    connectedOverRawPnp: number;
    breakdown: { connected: RssBreakdown; raw: RssBreakdown; rawPnp: RssBreakdown };
  } | null;
  /** Heap snapshot diffs per device (absent when not taken, e.g. the smoke test). */
  heap?: {
    connected: HeapDiff;
    raw: HeapDiff;
    rawPnp: HeapDiff;
    /** Ours (connected) minus the raw SDK's, by constructor: what hubstate adds per device. */
    oursMinusRaw: HeapDiffRow[];
    /** Ours minus the raw client doing the same session. */
    oursMinusRawPnp: HeapDiffRow[];
  };
  samples: MemorySample[];
  method: string;
}

/**
 * Forced GCs, then four more a second apart, for every mode alike. One GC right after a burst of
 * activity (our devices' stable-connection timers fire near the reading; raw clients have none)
 * leaves V8's young generation at its grown size, ~30 MB kept per process and read as ~29 KB per
 * device at N = 1,000; spaced GCs let V8 shrink it, so the figure is the devices' memory.
 */
async function settle(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) return;
  gc();
  gc();
  for (let i = 0; i < SPACED_GCS; i++) {
    await sleep(1000);
    gc();
  }
}

const SPACED_GCS = 4;

interface HeapSpaces {
  oldSpaceFree: number;
  codeSpaceSize: number;
}

function heapSpaces(): HeapSpaces {
  const spaces = getHeapSpaceStatistics();
  const space = (name: string) => spaces.find((s) => s.space_name === name);
  const old = space('old_space');
  return { oldSpaceFree: old ? old.space_size - old.space_used_size : NaN, codeSpaceSize: space('code_space')?.space_size ?? NaN };
}

/** Runs one measurement in this process (it must be a fresh one started with --expose-gc). */
export async function measureMemory(
  mode: MemoryMode,
  devices: number,
  cloudMode: 'in-process' | 'child-process',
  snapshotDir?: string,
  arrivalsPerSec = MEMORY_ARRIVALS_PER_SEC,
): Promise<MemorySample> {
  const cloud = isIdle(mode) ? null : await launchCloud({ hubs: 2 }, cloudMode);
  const logger = pino({ level: 'silent' });
  // What each device is given: the application's logger, or none in idle-default-logger (the library's default).
  const loggerOption = mode === 'idle-default-logger' ? {} : { logger };
  // Warm the modules and code paths with one device, so the figure is per device, not per process.
  const warm = cloud ? new Fleet({ cloud: cloud.info, devices: 1, dpsRatePerSec: 1000, prefix: 'warm-', logger }) : null;
  if (warm) {
    warm.start();
    await warm.allConnected();
  } else {
    // The default logger's first device makes the process's logger: warmed here, not counted per device.
    createDevice({ idScope: 'warmup', registrationId: 'warm', groupKey: Buffer.alloc(32, 1).toString('base64'), ...loggerOption });
  }
  await sleep(200);
  await settle();
  const before = process.memoryUsage();
  const spacesBefore = heapSpaces();
  const snapshots = snapshotDir ? { before: join(snapshotDir, `${mode}-before.heapsnapshot`), after: join(snapshotDir, `${mode}-after.heapsnapshot`) } : undefined;
  if (snapshots) writeHeapSnapshot(snapshots.before);
  let after: NodeJS.MemoryUsage;
  let early: NodeJS.MemoryUsage;
  let spacesAfter: HeapSpaces;
  const keep: Device[] = [];
  const rawClients: Array<Awaited<ReturnType<typeof rawOpen>>> = [];
  let fleet: Fleet | null = null;
  try {
    if (isIdle(mode)) {
      for (let i = 0; i < devices; i++) {
        keep.push(createDevice({ idScope: 'idleScope', registrationId: `idle-${i}`, groupKey: Buffer.alloc(32, 1).toString('base64'), ...loggerOption }));
      }
    } else if (mode === 'connected' || mode === 'connected-lookup') {
      const deviceOptions = mode === 'connected' ? () => ({ cache: new MemoryProvisioningCache() }) : undefined;
      fleet = new Fleet({ cloud: cloud!.info, devices, dpsRatePerSec: 1000, staggerRatePerSec: arrivalsPerSec, logger, deviceOptions });
      fleet.start();
      await fleet.allConnected();
    } else {
      // The Fleet's schedule: each batch starts on time, whether the earlier ones are done or not.
      const started = Date.now();
      const opening: Array<Promise<void>> = [];
      let index = 0;
      for (const { atMs, count } of staggerSchedule(devices, arrivalsPerSec, 100)) {
        await sleep(Math.max(0, started + atMs - Date.now()));
        for (let k = 0; k < count; k++) {
          const id = `raw-${index++}`;
          opening.push(
            (async () => {
              const { assignedHub, deviceId } = await rawRegister(cloud!.info, id);
              const client = await rawOpen(cloud!.info, assignedHub, deviceId, id, mode === 'raw-pnp' ? RAW_MODEL_ID : undefined);
              if (mode === 'raw-pnp') await rawPlugAndPlaySession(client);
              rawClients.push(client);
            })(),
          );
        }
      }
      await Promise.all(opening);
    }
    await sleep(1000);
    await settle();
    early = process.memoryUsage();
    if (!isIdle(mode)) {
      // Steady state: every device past its first stableConnectionMs (the machine's 'stable
      // connection' wait ends then), the raw clients given the same time.
      await sleep(STEADY_AFTER_MS - 1000);
      await settle();
    }
    after = process.memoryUsage();
    spacesAfter = heapSpaces();
    if (snapshots) writeHeapSnapshot(snapshots.after);
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
    rssPerDeviceAt1sBytes: (early.rss - before.rss) / devices,
    heapPerDeviceAt1sBytes: (early.heapUsed - before.heapUsed) / devices,
    heapPerDeviceBytes: (after.heapUsed - before.heapUsed) / devices,
    rssBeforeBytes: before.rss,
    rssAfterBytes: after.rss,
    heapTotalPerDeviceBytes: (after.heapTotal - before.heapTotal) / devices,
    externalPerDeviceBytes: (after.external - before.external) / devices,
    arrayBuffersPerDeviceBytes: (after.arrayBuffers - before.arrayBuffers) / devices,
    oldSpaceFreePerDeviceBytes: (spacesAfter.oldSpaceFree - spacesBefore.oldSpaceFree) / devices,
    codeSpacePerDeviceBytes: (spacesAfter.codeSpaceSize - spacesBefore.codeSpaceSize) / devices,
    ...(snapshots ? { snapshots } : {}),
  };
}

/**
 * glibc malloc with a fixed mmap threshold and a low trim threshold: freed native memory (TLS
 * handshake buffers and the like) goes back to the system instead of staying in the process's
 * heap. By default the threshold grows with the first large block freed, after which such
 * buffers come from the heap and their free space stays in RSS. Run for raw and ours alike, it
 * tells the memory a device holds from the memory the allocator keeps.
 */
export const FIXED_ALLOCATOR = 'glibc.malloc.mmap_threshold=32768:glibc.malloc.trim_threshold=65536';

function runMemoryChild(mode: MemoryMode, devices: number, snapshotDir?: string, allocator?: string): Promise<MemorySample> {
  const args = ['--expose-gc', join(__dirname, 'memory-child.js'), mode, String(devices), snapshotDir ?? ''];
  const env = allocator ? { ...process.env, GLIBC_TUNABLES: allocator } : process.env;
  return new Promise<MemorySample>((resolve, reject) =>
    execFile(process.execPath, args, { maxBuffer: 1 << 20, timeout: 600_000, env }, (error, stdout, stderr) => {
      if (error) return reject(new Error(`memory child (${mode}) failed: ${error.message}\n${stderr}`));
      const sample = JSON.parse(stdout.trim().split('\n').pop()!) as MemorySample;
      resolve(allocator ? { ...sample, allocator } : sample);
    }),
  );
}

/**
 * Rounds of the raw clients and ours, each a fresh process: one process's RSS per device moves by
 * a few KB from run to run (V8's and malloc's growth steps), as much as the difference measured,
 * so each figure is its mode's median run, the ratio that of the medians, and every round's
 * ratio is kept. The order turns each round, so that no mode always runs first.
 */
export const MEMORY_ROUNDS = 3;

/** Each mode in a fresh `node --expose-gc` process (compiled bench only); then the heap snapshot runs. */
export async function benchMemory(devices: number, options: { heapSnapshots?: boolean } = {}): Promise<MemoryResult> {
  const samples: MemorySample[] = [];
  for (const mode of ['idle', 'idle-default-logger'] as MemoryMode[]) samples.push(await runMemoryChild(mode, devices));
  const compared: MemoryMode[] = ['raw', 'raw-pnp', 'connected'];
  for (let round = 0; round < MEMORY_ROUNDS; round++) {
    const first = round % compared.length;
    for (const mode of [...compared.slice(first), ...compared.slice(0, first)]) samples.push(await runMemoryChild(mode, devices));
  }
  samples.push(await runMemoryChild('connected-lookup', devices));
  if (process.platform === 'linux') {
    for (const mode of ['raw', 'raw-pnp', 'connected'] as MemoryMode[]) samples.push(await runMemoryChild(mode, devices, undefined, FIXED_ALLOCATOR));
  }
  if (options.heapSnapshots === false) return summarizeMemory(devices, samples);
  const dir = mkdtempSync(join(tmpdir(), 'hubstate-heap-'));
  try {
    const diffs: Partial<Record<MemoryMode, HeapDiff>> = {};
    for (const mode of ['raw', 'raw-pnp', 'connected'] as MemoryMode[]) {
      const sample = await runMemoryChild(mode, devices, dir);
      diffs[mode] = diffSnapshots(sample.snapshots!.before, sample.snapshots!.after, devices, mode === 'connected' ? 'HubstateDevice' : 'Client');
      rmSync(sample.snapshots!.before, { force: true });
      rmSync(sample.snapshots!.after, { force: true });
    }
    const connected = diffs.connected!;
    const raw = diffs.raw!;
    const rawPnp = diffs['raw-pnp']!;
    const top = (d: HeapDiff): HeapDiff => ({ ...d, byConstructor: d.byConstructor.slice(0, 40), closures: d.closures.slice(0, 30), owners: d.owners.slice(0, 40) });
    return {
      ...summarizeMemory(devices, samples),
      heap: {
        connected: top(connected),
        raw: top(raw),
        rawPnp: top(rawPnp),
        oursMinusRaw: subtractDiffs(connected, raw).slice(0, 40),
        oursMinusRawPnp: subtractDiffs(connected, rawPnp).slice(0, 40),
      },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The runs of `mode` (under `allocator`), in the order they ran. */
const runsOf = (samples: MemorySample[], mode: MemoryMode, allocator?: string) => samples.filter((s) => s.mode === mode && s.allocator === allocator);

/** The run whose RSS per device is the median of its mode's (the lower middle of an even count). */
function medianRun(samples: MemorySample[], mode: MemoryMode, allocator?: string): MemorySample | undefined {
  const runs = runsOf(samples, mode, allocator).sort((a, b) => a.rssPerDeviceBytes - b.rssPerDeviceBytes);
  return runs[Math.floor((runs.length - 1) / 2)];
}

function breakdownOf(samples: MemorySample[], mode: MemoryMode, allocator?: string): RssBreakdown {
  const s = medianRun(samples, mode, allocator);
  const k = (bytes: number | undefined) => (bytes === undefined ? NaN : Math.round(bytes / 102.4) / 10);
  if (!s) return { rssKB: NaN, heapUsedKB: NaN, heapFreeKB: NaN, oldSpaceFreeKB: NaN, codeSpaceKB: NaN, externalKB: NaN, nativeKB: NaN };
  return {
    rssKB: k(s.rssPerDeviceBytes),
    heapUsedKB: k(s.heapPerDeviceBytes),
    heapFreeKB: k(s.heapTotalPerDeviceBytes - s.heapPerDeviceBytes),
    oldSpaceFreeKB: k(s.oldSpaceFreePerDeviceBytes),
    codeSpaceKB: k(s.codeSpacePerDeviceBytes),
    externalKB: k(s.externalPerDeviceBytes),
    nativeKB: k(s.rssPerDeviceBytes - s.heapTotalPerDeviceBytes - s.externalPerDeviceBytes),
  };
}

export function summarizeMemory(devices: number, samples: MemorySample[]): MemoryResult {
  // Every figure of a mode from its median run, so that a row's figures come from one process.
  const kb = (mode: MemoryMode, field: 'rssPerDeviceBytes' | 'heapPerDeviceBytes' | 'rssPerDeviceAt1sBytes' | 'heapPerDeviceAt1sBytes', allocator?: string) =>
    Math.round((medianRun(samples, mode, allocator)?.[field] ?? NaN) / 102.4) / 10;
  const byRound = (reference: MemoryMode) => {
    const references = runsOf(samples, reference);
    return runsOf(samples, 'connected').map((run, i) => Math.round((run.rssPerDeviceBytes / (references[i]?.rssPerDeviceBytes ?? NaN)) * 1000) / 1000);
  };
  const fixed = samples.some((s) => s.allocator === FIXED_ALLOCATOR);
  const ratio = (reference: MemoryMode, allocator?: string, mode: MemoryMode = 'connected') =>
    Math.round((kb(mode, 'rssPerDeviceBytes', allocator) / kb(reference, 'rssPerDeviceBytes', allocator)) * 1000) / 1000;
  return {
    devices,
    connectedRssPerDeviceKB: kb('connected', 'rssPerDeviceBytes'),
    connectedHeapPerDeviceKB: kb('connected', 'heapPerDeviceBytes'),
    idleRssPerMachineKB: kb('idle', 'rssPerDeviceBytes'),
    idleHeapPerMachineKB: kb('idle', 'heapPerDeviceBytes'),
    idleDefaultLoggerRssKB: kb('idle-default-logger', 'rssPerDeviceBytes'),
    idleDefaultLoggerHeapKB: kb('idle-default-logger', 'heapPerDeviceBytes'),
    rawRssPerClientKB: kb('raw', 'rssPerDeviceBytes'),
    rawHeapPerClientKB: kb('raw', 'heapPerDeviceBytes'),
    rawPnpRssPerClientKB: kb('raw-pnp', 'rssPerDeviceBytes'),
    rawPnpHeapPerClientKB: kb('raw-pnp', 'heapPerDeviceBytes'),
    at1s: {
      connectedRssPerDeviceKB: kb('connected', 'rssPerDeviceAt1sBytes'),
      connectedHeapPerDeviceKB: kb('connected', 'heapPerDeviceAt1sBytes'),
      rawRssPerClientKB: kb('raw', 'rssPerDeviceAt1sBytes'),
      rawHeapPerClientKB: kb('raw', 'heapPerDeviceAt1sBytes'),
    },
    connectedOverRaw: ratio('raw'),
    connectedOverRawByRound: byRound('raw'),
    connectedOverRawPnp: ratio('raw-pnp'),
    connectedOverRawPnpByRound: byRound('raw-pnp'),
    connectedLookupOverRaw: runsOf(samples, 'connected-lookup').length > 0 ? ratio('raw', undefined, 'connected-lookup') : null,
    breakdown: {
      connected: breakdownOf(samples, 'connected'),
      connectedLookup: breakdownOf(samples, 'connected-lookup'),
      raw: breakdownOf(samples, 'raw'),
      rawPnp: breakdownOf(samples, 'raw-pnp'),
      idle: breakdownOf(samples, 'idle'),
    },
    fixedAllocator: fixed
      ? {
          glibcTunables: FIXED_ALLOCATOR,
          connectedRssPerDeviceKB: kb('connected', 'rssPerDeviceBytes', FIXED_ALLOCATOR),
          rawRssPerClientKB: kb('raw', 'rssPerDeviceBytes', FIXED_ALLOCATOR),
          rawPnpRssPerClientKB: kb('raw-pnp', 'rssPerDeviceBytes', FIXED_ALLOCATOR),
          connectedOverRaw: ratio('raw', FIXED_ALLOCATOR),
          connectedOverRawPnp: ratio('raw-pnp', FIXED_ALLOCATOR),
          breakdown: {
            connected: breakdownOf(samples, 'connected', FIXED_ALLOCATOR),
            raw: breakdownOf(samples, 'raw', FIXED_ALLOCATOR),
            rawPnp: breakdownOf(samples, 'raw-pnp', FIXED_ALLOCATOR),
          },
        }
      : null,
    samples,
    method: `fresh node --expose-gc process per figure, raw, raw-pnp and connected in ${MEMORY_ROUNDS} rounds, the order turned each round (each figure from the mode's median-RSS run, ratios of the medians), forced GCs (two, then four a second apart, every mode alike), (RSS with N - RSS before) / N; cloud in its own process; ours and raw arrive alike, ${MEMORY_ARRIVALS_PER_SEC}/s on the Fleet schedule; read at steady state, ${STEADY_AFTER_MS} ms after the last connect (rssPerDeviceAt1sBytes: 1 s after). heap: three more fresh processes (raw, raw-pnp, connected) writing v8 heap snapshots before and after the N (after a forced GC), self sizes aggregated by constructor name, (after - before) / N, and the objects new in after charged to their nearest holder with a class of its own (bench/heap-diff.ts)`,
  };
}
