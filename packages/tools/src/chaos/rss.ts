/** RSS sampling for the soak's memory invariant, with a full GC before each sample when available. */
import { readdirSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { RssSample } from './bounds';

/** `gc()` even without --expose-gc (V8 flag set at runtime, function taken from a fresh context). */
export function exposeGc(): (() => void) | undefined {
  const existing = (globalThis as { gc?: () => void }).gc;
  if (typeof existing === 'function') return existing;
  try {
    setFlagsFromString('--expose_gc');
    const fn = runInNewContext('gc') as unknown;
    return typeof fn === 'function' ? (fn as () => void) : undefined;
  } catch {
    return undefined;
  }
}

/** Open file descriptors (Linux), or -1: leaked sockets show up here before they show up in RSS. */
function openFds(): number {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return -1;
  }
}

const TENTH_OF_MB = 104857.6;

export class RssSampler {
  readonly samples: RssSample[] = [];
  private readonly gc: (() => void) | undefined;

  /** `queued`: messages waiting in the devices' outboxes, sampled alongside. */
  constructor(
    forceGc: boolean,
    private readonly queued: () => number,
  ) {
    this.gc = forceGc ? exposeGc() : undefined;
  }

  get forcedGc(): boolean {
    return this.gc !== undefined;
  }

  sample(): void {
    this.gc?.();
    const m = process.memoryUsage();
    this.samples.push({ at: Date.now(), rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, queued: this.queued(), external: m.external, fds: openFds() });
  }

  latestRssMb(): number {
    return this.samples.length ? Math.round(this.samples[this.samples.length - 1]!.rss / 1048576) : 0;
  }

  /** The report's series: [seconds since start, RSS MB, heap used MB, messages queued, external MB, open fds, heap committed MB]. */
  series(startedAt: number): number[][] {
    return this.samples.map((s) => [
      Math.round((s.at - startedAt) / 100) / 10,
      Math.round(s.rss / TENTH_OF_MB) / 10,
      Math.round(s.heapUsed / TENTH_OF_MB) / 10,
      s.queued ?? 0,
      Math.round((s.external ?? 0) / TENTH_OF_MB) / 10,
      s.fds ?? -1,
      Math.round((s.heapTotal ?? 0) / TENTH_OF_MB) / 10,
    ]);
  }
}
