/** The soak's JSON report: its shape, and writing it. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { RetryPolicy } from 'hubstate';
import type { RssVerdict } from './bounds';
import type { DebugTrace } from './debug-trace';
import type { FaultOutcome } from './faults';
import type { InvariantResult } from './invariants';
import type { FaultKind } from './schedule';
import type { ScanReport } from './secrets';

export interface SoakReport {
  ok: boolean;
  seed: number | string;
  reproduce: string;
  startedAt: string;
  options: Record<string, unknown>;
  policy: RetryPolicy;
  schedule: { digest: string; faults: number; byKind: Record<FaultKind, number>; list: string[] };
  timeline: { bootMs: number; faultPhaseMs: number; quietMs: number; drainMs: number; totalMs: number };
  invariants: InvariantResult[];
  figures: Record<string, unknown>;
  faults: FaultOutcome[];
  security: ScanReport & { debugTrace?: ReturnType<DebugTrace['counts']> };
  /** series: [seconds since start, RSS MB, heap used MB (after a full GC), messages queued, external MB, open fds, heap committed MB]. */
  rss: RssVerdict & { series: number[][]; forcedGc: boolean };
  process: { unhandledRejections: string[]; uncaughtExceptions: string[]; warnings: string[] };
  runError?: string;
}

export function writeReport(path: string, report: SoakReport): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(report, null, 2)}\n`);
}

/** What the scanner reports when the run broke off before it existed: nothing scanned. */
export const NOTHING_SCANNED: ScanReport = {
  scanned: { log: { items: 0, bytes: 0 }, snapshot: { items: 0, bytes: 0 }, error: { items: 0, bytes: 0 }, event: { items: 0, bytes: 0 } },
  hits: {},
  total: 0,
  samples: [],
};
