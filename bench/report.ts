/** The printed table: each figure next to its reference and its goal. */
import type { ColdBootResult } from './fleet-boot';
import type { FailoverResult } from './failover';
import type { HerdResult } from './herd';
import type { MemoryResult } from './memory';
import type { ThroughputResult } from './throughput';

export interface BenchResults {
  failover?: FailoverResult;
  coldboot?: { ours: ColdBootResult; naive: ColdBootResult };
  herd?: { ours: HerdResult; naive: HerdResult };
  throughput?: ThroughputResult;
  memory?: MemoryResult;
}

const s = (ms: number | null | undefined, digits = 2): string => (ms === null || ms === undefined || !Number.isFinite(ms) ? 'n/a' : `${(ms / 1000).toFixed(digits)} s`);
const pct = (x: number): string => `${(x * 100).toFixed(x < 0.1 ? 2 : 1)} %`;
const yes = (ok: boolean): string => (ok ? 'yes' : '**no**');

function fleetCell(r: { devices: number; dps: { throttled: number; peakRegisterRequestsPerSec?: number } | null }, time: number | null, ratio: number | null): string {
  const throttled = r.dps?.throttled ?? NaN;
  return `${s(time, 1)} (${ratio === null ? 'n/a' : `${ratio.toFixed(2)}×`}), 429s ${throttled} (${pct(throttled / r.devices)}), peak ${r.dps?.peakRegisterRequestsPerSec ?? 'n/a'} reg/s`;
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
    rows.push([
      '4a throughput, in-memory outbox',
      `${t.memoryMsgsPerSec} msg/s (${t.memoryRatio.toFixed(2)}× raw)`,
      `raw SDK sendEvent, ${t.inFlight} in flight: ${t.rawMsgsPerSec} msg/s`,
      '≥ 0.9× raw',
      yes(t.memoryRatio >= 0.9),
    ]);
    rows.push([
      '4b throughput, durable SQLite outbox',
      `${t.durableMsgsPerSec} msg/s (${t.durableRatio.toFixed(2)}× raw)`,
      `raw SDK sendEvent, ${t.inFlight} in flight: ${t.rawMsgsPerSec} msg/s`,
      '≥ 0.7× raw',
      yes(t.durableRatio >= 0.7),
    ]);
  }
  const m = results.memory;
  if (m) {
    rows.push([
      `5 memory, N=${m.devices} connected`,
      `${m.connectedRssPerDeviceKB} KB RSS/device (heap ${m.connectedHeapPerDeviceKB} KB)`,
      `raw SDK client: ${m.rawRssPerClientKB} KB RSS (heap ${m.rawHeapPerClientKB} KB)`,
      'report',
      '–',
    ]);
    rows.push(['5 memory, idle machine', `${m.idleRssPerMachineKB} KB RSS/machine (heap ${m.idleHeapPerMachineKB} KB)`, '–', 'report', '–']);
  }
  const header = ['figure', 'ours', 'reference (same run, same local cloud)', 'goal', 'met'];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)];
  return lines.join('\n');
}
