/** The printed table: each figure next to its reference and its goal. */
import type { ColdBootResult } from './fleet-boot';
import type { FailoverResult } from './failover';
import type { HerdResult } from './herd';
import type { LoadFigures, LoadResult } from './load';
import type { MemoryResult } from './memory';
import type { MedianInterval } from './stats';
import type { ThroughputFigures, ThroughputResult } from './throughput';

export interface BenchResults {
  failover?: FailoverResult;
  coldboot?: { ours: ColdBootResult; naive: ColdBootResult };
  herd?: { ours: HerdResult; naive: HerdResult };
  throughput?: ThroughputResult;
  memory?: MemoryResult;
  load?: LoadResult;
}

const s = (ms: number | null | undefined, digits = 2): string => (ms === null || ms === undefined || !Number.isFinite(ms) ? 'n/a' : `${(ms / 1000).toFixed(digits)} s`);
const pct = (x: number): string => `${(x * 100).toFixed(x < 0.1 ? 2 : 1)} %`;
const yes = (ok: boolean): string => (ok ? 'yes' : '**no**');

function fleetCell(r: { devices: number; dps: { throttled: number; peakRegisterRequestsPerSec?: number } | null }, time: number | null, ratio: number | null): string {
  const throttled = r.dps?.throttled ?? NaN;
  return `${s(time, 1)} (${ratio === null ? 'n/a' : `${ratio.toFixed(2)}×`}), 429s ${throttled} (${pct(throttled / r.devices)}), peak ${r.dps?.peakRegisterRequestsPerSec ?? 'n/a'} reg/s`;
}

/** How busy and how fast the machine was over a set of rounds or pairs (host speed: records from before it was measured have none). */
interface MachineFigures {
  maxLoad1: number;
  maxForeignCores: number;
  maxHostSlowdown?: number;
  fastestHostSpeedMs?: number;
}

function machineNote(f: MachineFigures): string {
  const host =
    f.maxHostSlowdown === undefined || f.fastestHostSpeedMs === undefined
      ? ', no host-speed check'
      : `, host ≤ ${f.maxHostSlowdown}× its fastest (speed workload ${f.fastestHostSpeedMs} ms)`;
  return `load1 ≤ ${f.maxLoad1}, other processes ≤ ${f.maxForeignCores} cores${host}`;
}

/** ", 95 % CI 0.91–0.98" for a median ratio's interval; nothing for records without one. */
function intervalNote(interval: MedianInterval | null | undefined): string {
  return interval ? `, ${Math.round(interval.confidence * 100)} % CI ${interval.low.toFixed(2)}–${interval.high.toFixed(2)}` : '';
}

/** The "met" cell: yes/no on the median, and whether the median's interval lies across the goal. */
function metCell(met: boolean, interval: MedianInterval | null | undefined, goal: number): string {
  const spans = interval != null && interval.low <= goal && goal <= interval.high;
  return `${yes(met)}${spans ? ' (the interval spans the goal)' : ''}`;
}

export function renderTable(results: BenchResults): string {
  const rows: string[][] = [];
  const f = results.failover;
  if (f && !f.byRefusalCode) {
    // A record from before the per-code figures: say so rather than print a figure under no code.
    rows.push(['1 failover → first ack on new hub', 'n/a (result predates the per-refusal-code run: `npm run bench -- --only failover`)', '–', '–', '–']);
  } else if (f) {
    for (const code of ['3', '5'] as const) {
      const r = f.byRefusalCode[code];
      if (!r) continue;
      const seed =
        f.seedSampleRefusalCode === r.refusalCode && f.seedSampleMs
          ? `; seedSample median ${s(f.seedSampleMs.median, 1)}, p95 ${s(f.seedSampleMs.p95, 1)} (n=${f.seedSampleMs.n}, in parallel)`
          : f.seedSampleMs
            ? ''
            : '; seedSample skipped';
      rows.push([
        `1 failover → first ack on new hub, old hub refuses with CONNACK ${code}${code === '3' ? ' (Azure)' : ''}`,
        `median ${s(r.oursMs.median)}, p95 ${s(r.oursMs.p95)} (n=${r.oursMs.n}); p95 − floor median = ${s(r.oursP95OverFloorMs)}`,
        `floor (raw SDK DPS + open + ack, DPS poll retry-after ${f.dpsPollRetryAfterSec} s) median ${s(r.floorMs.median)}, p95 ${s(r.floorMs.p95)}${seed}`,
        `p95 ≤ floor median + 1 s = ${s(r.goalMs)}`,
        yes(r.met),
      ]);
    }
  }
  const c = results.coldboot;
  if (c) {
    const ok = c.ours.ratio !== null && c.ours.ratio <= 1.2 && (c.ours.dps?.throttled ?? Infinity) < 0.01 * c.ours.devices;
    rows.push([
      `2 cold boot N=${c.ours.devices}, R=${c.ours.dpsRatePerSec}/s`,
      fleetCell(c.ours, c.ours.allConnectedMs, c.ours.ratio),
      `floor N/R = ${s(c.ours.floorMs, 1)}; naive ${fleetCell(c.naive, c.naive.allConnectedMs, c.naive.ratio)}`,
      '≤ 1.2× floor, 429s < 1 % of N',
      yes(ok),
    ]);
  }
  const h = results.herd;
  if (h) {
    const ok = h.ours.ratio !== null && h.ours.ratio <= 1.2 && h.ours.dps.throttled < 0.01 * h.ours.devices;
    rows.push([
      `3 herd N=${h.ours.devices} hub A killed, R=${h.ours.dpsRatePerSec}/s`,
      fleetCell(h.ours, h.ours.recoveredMs, h.ours.ratio),
      `floor N/R = ${s(h.ours.floorMs, 1)}; naive ${fleetCell(h.naive, h.naive.recoveredMs, h.naive.ratio)}`,
      '≤ 1.2× floor, 429s < 1 % of N',
      yes(ok),
    ]);
  }
  const t = results.throughput;
  if (t) {
    // Records from before the per-round load carry no `all`: their figures are all-rounds, load unknown.
    const all = t.all ?? { rounds: t.repeats, memoryRatio: t.memoryRatio, durableRatio: t.durableRatio, maxLoad1: NaN, maxForeignCores: NaN };
    const quiet = t.all ? t.quiet : null;
    const loadNote = (f: MachineFigures & { rounds: number }) =>
      Number.isFinite(f.maxLoad1) ? `${f.rounds} rounds, ${machineNote(f)}` : `${f.rounds} rounds, load not recorded`;
    for (const [label, key, goal] of [
      ['4a throughput, in-memory outbox', 'memoryRatio', 0.95],
      ['4b throughput, durable SQLite outbox', 'durableRatio', 0.85],
    ] as const) {
      const rate = key === 'memoryRatio' ? t.memoryMsgsPerSec : t.durableMsgsPerSec;
      const intervalKey = key === 'memoryRatio' ? 'memoryRatioInterval' : 'durableRatioInterval';
      const intervalOf = (f: Partial<ThroughputFigures>) => f[intervalKey];
      const headline = quiet
        ? `quiet: ${quiet[key].toFixed(2)}× raw (${loadNote(quiet)}${intervalNote(intervalOf(quiet))})`
        : `**busy machine** (no quiet round): ${all[key].toFixed(2)}× raw`;
      rows.push([
        label,
        `${rate} msg/s; ${headline}; all rounds: ${all[key].toFixed(2)}× (${loadNote(all)}${intervalNote(intervalOf(all))})`,
        `raw SDK sendEvent, ${t.inFlight} in flight: ${t.rawMsgsPerSec} msg/s`,
        `≥ ${goal}× raw (quiet rounds)`,
        quiet ? metCell(quiet[key] >= goal, intervalOf(quiet), goal) : `n/a (busy: ${yes(all[key] >= goal)} on all rounds)`,
      ]);
    }
  }
  const m = results.memory;
  /** Several rounds: the figures are the median runs', the ratio theirs; each round's ratio follows. */
  const roundsNote = (byRound: number[] | undefined) =>
    byRound && byRound.length > 1 ? ` (ratio of the medians of ${byRound.length} rounds; each round: ${byRound.map((r) => r.toFixed(2)).join(', ')}×)` : '';
  if (m) {
    rows.push([
      `5 memory, N=${m.devices} connected`,
      `${m.connectedRssPerDeviceKB} KB RSS/device (heap ${m.connectedHeapPerDeviceKB} KB)${m.connectedOverRaw !== undefined ? `, ${m.connectedOverRaw.toFixed(2)}× raw${roundsNote(m.connectedOverRawByRound)}` : ''}${m.breakdown ? `; native ${m.breakdown.connected.nativeKB} KB, heap free ${m.breakdown.connected.heapFreeKB} KB (of which the old space's ${m.breakdown.connected.oldSpaceFreeKB} KB), code space ${m.breakdown.connected.codeSpaceKB} KB, external ${m.breakdown.connected.externalKB} KB` : ''}`,
      `raw SDK client: ${m.rawRssPerClientKB} KB RSS (heap ${m.rawHeapPerClientKB} KB)${m.breakdown ? `; native ${m.breakdown.raw.nativeKB} KB, heap free ${m.breakdown.raw.heapFreeKB} KB (of which the old space's ${m.breakdown.raw.oldSpaceFreeKB} KB), code space ${m.breakdown.raw.codeSpaceKB} KB, external ${m.breakdown.raw.externalKB} KB` : ''}`,
      '≤ 1.0× raw',
      m.connectedOverRaw !== undefined ? yes(m.connectedOverRaw <= 1) : '–',
    ]);
    if (m.connectedOverRawPnp !== undefined) {
      rows.push([
        `5 memory, N=${m.devices} connected, against a raw client doing the same session`,
        `${m.connectedRssPerDeviceKB} KB RSS/device, ${m.connectedOverRawPnp.toFixed(2)}× raw-pnp${roundsNote(m.connectedOverRawPnpByRound)}`,
        `raw SDK client with model id, twin GET, desired/method/C2D listeners, one reported patch: ${m.rawPnpRssPerClientKB} KB RSS (heap ${m.rawPnpHeapPerClientKB} KB)${m.breakdown ? `; native ${m.breakdown.rawPnp.nativeKB} KB` : ''}`,
        '≤ 1.0× raw-pnp',
        yes(m.connectedOverRawPnp <= 1),
      ]);
    }
    if (m.connectedLookupOverRaw != null && m.breakdown?.connectedLookup) {
      const b = m.breakdown.connectedLookup;
      rows.push([
        `5 memory, N=${m.devices} connected, nowhere to cache the assignment (a DPS status lookup at every boot, then the registration)`,
        `${b.rssKB} KB RSS/device (heap ${b.heapUsedKB} KB), ${m.connectedLookupOverRaw.toFixed(2)}× raw (one run); heap free ${b.heapFreeKB} KB (of which the old space's ${b.oldSpaceFreeKB} KB), native ${b.nativeKB} KB`,
        'raw SDK client, as above (it registers and connects, no lookup)',
        'report',
        '–',
      ]);
    }
    if (m.fixedAllocator) {
      const f = m.fixedAllocator;
      rows.push([
        `5 memory, N=${m.devices} connected, glibc returning freed memory (GLIBC_TUNABLES=${f.glibcTunables})`,
        `${f.connectedRssPerDeviceKB} KB RSS/device, ${f.connectedOverRaw.toFixed(2)}× raw; native ${f.breakdown.connected.nativeKB} KB, heap used ${f.breakdown.connected.heapUsedKB} KB, heap free ${f.breakdown.connected.heapFreeKB} KB`,
        `raw SDK client: ${f.rawRssPerClientKB} KB RSS; native ${f.breakdown.raw.nativeKB} KB, heap used ${f.breakdown.raw.heapUsedKB} KB${f.connectedOverRawPnp !== undefined ? `; raw-pnp ${f.rawPnpRssPerClientKB} KB (${f.connectedOverRawPnp.toFixed(2)}×)` : ''}`,
        'report (what the devices hold, not what malloc keeps)',
        '–',
      ]);
    }
    const owners = m.heap?.connected.owners;
    if (owners && m.heap?.rawPnp.owners) {
      // The largest holders (bench/heap-diff.ts ownersOfGrowth); `Actor` is XState's, `constructor` the SDK's machina.js state machines.
      const largest = (rows: Array<{ name: string; bytes: number }>) => rows.slice(0, 10).map((r) => `${r.name} ${(r.bytes / 1024).toFixed(1)}`).join(', ');
      rows.push([`5 memory, N=${m.devices} connected: heap added per device by the object holding it (KB)`, `ours: ${largest(owners)}`, `raw-pnp: ${largest(m.heap.rawPnp.owners)}`, 'report', '–']);
    }
    rows.push(['5 memory, idle machine', `${m.idleRssPerMachineKB} KB RSS/machine (heap ${m.idleHeapPerMachineKB} KB)`, '–', 'report', '–']);
    if (Number.isFinite(m.idleDefaultLoggerRssKB)) {
      rows.push(['5 memory, idle machine, no logger passed (the default one)', `${m.idleDefaultLoggerRssKB} KB RSS/machine (heap ${m.idleDefaultLoggerHeapKB} KB)`, '–', 'report', '–']);
    }
  }
  const l = results.load;
  if (l) {
    const note = (f: LoadFigures) => `${f.pairs} pairs, ${machineNote(f)}${intervalNote(f.ratioInterval)}`;
    const headline = l.quiet
      ? `quiet: ${l.quiet.hubstateMs} ms (${l.quiet.ratio.toFixed(2)}×, ${note(l.quiet)})`
      : `**busy machine** (no quiet pair): ${l.all.hubstateMs} ms (${l.all.ratio.toFixed(2)}×)`;
    const headlineFigures = l.quiet ?? l.all;
    const overRuntimes =
      headlineFigures.sdkXstateMs !== undefined && headlineFigures.ratioOverSdkXstate !== undefined
        ? `; SDK modules + XState (the runtimes the project requires): ${headlineFigures.sdkXstateMs} ms, ours ${headlineFigures.ratioOverSdkXstate.toFixed(2)}× it${intervalNote(headlineFigures.ratioOverSdkXstateInterval)}`
        : '';
    rows.push([
      '6 module load, process start → require(hubstate)',
      `${headline}; all pairs: ${l.all.hubstateMs} ms (${l.all.ratio.toFixed(2)}×, ${note(l.all)}); ${l.hubstateFiles} files${l.withDevice ? `; loaded + one device created (default logger): ${l.withDevice.ms} ms, ${l.withDevice.files} files` : ''}`,
      `raw SDK modules (device, MQTT, DPS, SAS): ${l.sdkMs} ms; ${l.sdkFiles} files${overRuntimes}`,
      '≤ 1.1× SDK (quiet pairs)',
      l.quiet ? metCell(l.quiet.ratio <= 1.1, l.quiet.ratioInterval, 1.1) : `n/a (busy: ${yes(l.all.ratio <= 1.1)} on all pairs)`,
    ]);
  }
  const header = ['figure', 'ours', 'reference (same run, same local cloud)', 'goal', 'met'];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)];
  return lines.join('\n');
}
