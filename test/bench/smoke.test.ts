/**
 * Smoke run of the benchmark code (tiny N, cloud in this process) so it cannot rot. It asserts
 * the result shapes and sane values, never timings: the full run is `npm run bench`.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchColdBoot } from '../../bench/fleet-boot';
import { benchFailover } from '../../bench/failover';
import { benchHerd } from '../../bench/herd';
import { summarizeLoad } from '../../bench/load';
import { measureMemory, summarizeMemory } from '../../bench/memory';
import { renderTable } from '../../bench/report';
import { medianInterval, summarize } from '../../bench/stats';
import { benchThroughput } from '../../bench/throughput';
import { fleetPolicy, runFleetCommand, staggerSchedule } from 'hubstate-tools/fleet';
import { resolvePolicy } from '../../src/policy/backoff';

jest.setTimeout(120_000);

describe('fleet library', () => {
  test('stagger: batches sized to the rate, every device scheduled once; naive starts all at once', () => {
    const schedule = staggerSchedule(2000, 95, 100);
    expect(schedule.reduce((n, b) => n + b.count, 0)).toBe(2000);
    expect(Math.max(...schedule.map((b) => b.count))).toBeLessThanOrEqual(10);
    // 2000 devices at 95/s: the last batch starts just before 2000/95 s.
    expect(schedule[schedule.length - 1]!.atMs).toBeGreaterThan(20_000);
    expect(schedule[schedule.length - 1]!.atMs).toBeLessThan(21_100);
    expect(staggerSchedule(2000, 100, 100, true)).toEqual([{ atMs: 0, count: 2000 }]);
  });

  test('policies: ours carries the fleet formula, naive has no jitter; both resolve', () => {
    const ours = resolvePolicy(fleetPolicy({ devices: 1000, dpsRatePerSec: 100 }));
    expect(ours.fleet).toEqual({ devices: 1000, ratePerSec: 100, load: 0.95 });
    expect(ours.maxHubAttempts).toBe(2);
    const naive = resolvePolicy(fleetPolicy({ devices: 1000, dpsRatePerSec: 100, naive: true }));
    expect(naive.fixedDelayMs).toBe(1000);
    expect(naive.fleet).toBeUndefined();
  });

  test('summarize: median and nearest-rank p95', () => {
    expect(summarize([5, 1, 3, 2, 4])).toEqual({ n: 5, median: 3, p95: 5, min: 1, max: 5 });
    expect(summarize(Array.from({ length: 20 }, (_, i) => i + 1)).p95).toBe(19);
  });

  test('medianInterval: the order statistics the binomial law picks for 95 %; none under 6 samples', () => {
    const ranks = (n: number) => Array.from({ length: n }, (_, i) => n - i); // descending: it sorts
    expect(medianInterval(ranks(5))).toBeNull();
    expect(medianInterval(ranks(6))).toEqual({ low: 1, high: 6, confidence: 1 - 2 / 64 });
    expect(medianInterval(ranks(9))).toEqual({ low: 2, high: 8, confidence: 1 - 20 / 512 });
    // Published tables (e.g. Conover, Practical Nonparametric Statistics): n = 28 → (9, 20), n = 100 → (40, 61).
    expect(medianInterval(ranks(28))).toMatchObject({ low: 9, high: 20 });
    expect(medianInterval(ranks(100))).toMatchObject({ low: 40, high: 61 });
    expect(medianInterval(ranks(100))!.confidence).toBeGreaterThanOrEqual(0.95);
    expect(medianInterval([...ranks(9), NaN])).toEqual(medianInterval(ranks(9)));
  });

  test('module load: the table gives the ratio\'s interval, says when it spans the goal, and our share over SDK + XState', () => {
    const window = { load1: 1, foreignCores: 0, ownCores: 1, hostSpeedMs: 1 };
    const ratios = [1.05, 1.07, 1.08, 1.09, 1.1, 1.11, 1.12, 1.14];
    const load = {
      ...summarizeLoad(
        2,
        341,
        292,
        ratios.map((ratio) => ({ hubstateMs: 100 * ratio, sdkMs: 100, ratio, sdkXstateMs: 105, ratioOverSdkXstate: (100 * ratio) / 105, load: window, quiet: false })),
      ),
      withDevice: { ms: 130, files: 370, samples: [130] },
    };
    expect(load.quiet?.ratioInterval).toEqual({ low: 1.05, high: 1.14, confidence: 1 - 2 / 256 });
    expect(load.quiet?.sdkXstateMs).toBe(105);
    const row = renderTable({ load }).split('\n').find((line) => line.startsWith('| 6 module load'))!;
    expect(row).toMatch(/99 % CI 1\.05–1\.14/);
    expect(row).toMatch(/SDK modules \+ XState .*: 105 ms, ours 1\.0[0-9]× it/);
    // Median 1.095 (the mean of the middle two of eight) meets 1.1, but the interval reaches 1.14.
    expect(row).toMatch(/\| yes \(the interval spans the goal\) \|$/);
  });

  test('hubstate fleet: progress and a summary against the floor', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hubstate-fleet-'));
    let text = '';
    const out = { write: (chunk: string) => ((text += chunk), true), isTTY: false } as unknown as NodeJS.WriteStream;
    try {
      const summary = await runFleetCommand({ devices: 6, dpsRatePerSec: 20, hubs: 2, naive: false, logFile: join(dir, 'fleet.log'), out });
      expect(summary.connected).toBe(6);
      expect(summary.floorMs).toBe(300);
      expect(summary.dps?.registrations).toBe(6);
      expect(text).toMatch(/6\/6 connected/);
      expect(text).toMatch(/all connected in [\d.]+ s — floor N\/R = 0\.3 s/);
      // No key in the device log.
      expect(readFileSync(join(dir, 'fleet.log'), 'utf8')).not.toMatch(/SharedAccessKey|sig=/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('benchmarks (smoke)', () => {
  test('cold boot, ours and naive: everyone connected, DPS counters consistent', async () => {
    const ours = await benchColdBoot({ devices: 12, dpsRatePerSec: 40, naive: false, cloudMode: 'in-process' });
    const naive = await benchColdBoot({ devices: 12, dpsRatePerSec: 4, naive: true, cloudMode: 'in-process' });
    for (const r of [ours, naive]) {
      expect(r.timedOut).toBe(false);
      expect(r.connected).toBe(12);
      expect(r.allConnectedMs).toBeGreaterThan(0);
      expect(r.dps!.registrations).toBe(12);
      expect(r.dps!.registerRequests).toBe(12 + r.dps!.throttled);
      expect(r.dps!.peakRegisterRequestsPerSec).toBeGreaterThan(0);
      expect(r.cloudMode).toBe('in-process');
    }
    expect(ours.floorMs).toBe(300);
    // 12 at once against 4/s: the token bucket (burst 4) throttles the rest.
    expect(naive.dps!.throttled).toBeGreaterThan(0);
    expect(naive.deviceFailures.throttled).toBe(naive.dps!.throttled);
  });

  test('herd: hub A killed for good, every device back on hub B', async () => {
    const r = await benchHerd({ devices: 8, dpsRatePerSec: 40, naive: false, cloudMode: 'in-process', bootRatePerSec: 100 });
    expect(r.timedOut).toBe(false);
    expect(r.onHubB).toBe(8);
    expect(r.recoveredMs).toBeGreaterThan(0);
    expect(r.dps.registrations).toBe(8);
    expect(r.recoveredAtMs!.max).toBeLessThanOrEqual(r.recoveredMs!);
  });

  test('failover: recovery measured per run under CONNACK 3 and 5, on the new hub, next to the raw-SDK floor', async () => {
    // settleMs 0: the smoke run checks the shape, not the figure (which waits for established connections).
    const r = await benchFailover({ runs: 1, seedSampleDevices: 0, skipSeedSample: true, cloudMode: 'in-process', settleMs: 0 });
    expect(r.allOnNewHub).toBe(true);
    expect(Object.keys(r.byRefusalCode).sort()).toEqual(['3', '5']);
    for (const code of [3, 5] as const) {
      const c = r.byRefusalCode[`${code}`]!;
      expect(c.refusalCode).toBe(code);
      expect(c.allOnNewHub).toBe(true);
      expect(c.oursMs.n).toBe(1);
      expect(c.floorMs.n).toBe(1);
      expect(c.oursMs.min).toBeGreaterThan(0);
      expect(c.oursP95OverFloorMs).toBe(c.oursMs.p95 - c.floorMs.median);
      expect(c.goalMs).toBe(c.floorMs.median + 1000);
      // The old hub refused with the code asked for; the device asked DPS where it belongs.
      expect(c.path.refusedByCode[`${code}`]).toBeGreaterThanOrEqual(1);
      expect(c.path.dpsLookups).toBeGreaterThanOrEqual(1);
    }
    expect(r.dpsPollRetryAfterSec).toBeGreaterThan(0);
    expect(r.seedSampleMs).toBeNull();
    const table = renderTable({ failover: r });
    expect(table).toMatch(/CONNACK 3 \(Azure\)/);
    expect(table).toMatch(/CONNACK 5/);
    expect(table).toMatch(new RegExp(`DPS poll retry-after ${r.dpsPollRetryAfterSec} s`));
  });

  test('throughput and memory: figures and ratios are positive; the table renders every row', async () => {
    const t = await benchThroughput({ messages: 300, repeats: 1, cloudMode: 'in-process' });
    expect(t.rawMsgsPerSec).toBeGreaterThan(0);
    expect(t.memoryMsgsPerSec).toBeGreaterThan(0);
    expect(t.durableMsgsPerSec).toBeGreaterThan(0);
    expect(t.memoryRatio).toBeGreaterThan(0);
    expect(t.runs.memory).toHaveLength(1);
    // Each round carries the machine's load; the headline is the quiet rounds' or, with none, all rounds' (marked busy).
    expect(t.perRound).toHaveLength(1);
    expect(t.perRound[0]!.load1).toBeGreaterThanOrEqual(0);
    expect(t.perRound[0]!.foreignCores).toBeGreaterThanOrEqual(0);
    expect(t.perRound[0]!.load.memory.hostSpeedMs).toBeGreaterThan(0);
    expect(t.busy).toBe(t.quiet === null);
    expect(t.memoryRatio).toBe((t.quiet ?? t.all).memoryRatio);
    const idle = await measureMemory('idle', 10, 'in-process');
    expect(idle.devices).toBe(10);
    expect(Number.isFinite(idle.rssPerDeviceBytes)).toBe(true);
    const idleDefaultLogger = await measureMemory('idle-default-logger', 10, 'in-process');
    expect(idleDefaultLogger.mode).toBe('idle-default-logger');
    expect(Number.isFinite(idleDefaultLogger.heapPerDeviceBytes)).toBe(true);
    const memory = summarizeMemory(10, [idle, idleDefaultLogger]);
    const window = { load1: 3, foreignCores: 1.5, ownCores: 1, hostSpeedMs: 1 };
    const load = {
      ...summarizeLoad(2, 300, 290, [
        { hubstateMs: 110, sdkMs: 100, ratio: 1.1, load: window, quiet: false },
        { hubstateMs: 120, sdkMs: 100, ratio: 1.2, load: { ...window, foreignCores: 0.1 }, quiet: false },
        { hubstateMs: 150, sdkMs: 100, ratio: 1.5, load: { ...window, foreignCores: 0.1, hostSpeedMs: 1.5 }, quiet: false },
      ]),
      withDevice: { ms: 130, files: 320, samples: [130] },
    };
    // Only the second pair was quiet: other processes kept 1.5 of 2 cores busy during the first,
    // and the host ran the speed workload 1.5× slower than its fastest during the third.
    expect(load.perPair.map((p) => p.quiet)).toEqual([false, true, false]);
    expect(load.quiet?.pairs).toBe(1);
    expect(load.ratio).toBe(1.2);
    expect(load.all.ratio).toBe(1.2);
    expect(load.all.maxHostSlowdown).toBe(1.5);
    expect(load.quiet?.maxHostSlowdown).toBe(1);
    expect(load.all.fastestHostSpeedMs).toBe(1);
    const table = renderTable({ throughput: t, memory, load });
    expect(table).toMatch(/4a throughput, in-memory outbox/);
    expect(table).toMatch(/4b throughput, durable SQLite outbox/);
    expect(table).toMatch(/5 memory, idle machine/);
    expect(table).toMatch(/5 memory, idle machine, no logger passed/);
    expect(table).toMatch(/6 module load/);
  });
});
