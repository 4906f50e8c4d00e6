/**
 * Recovery after the faults. Recovered = Connected at the end of the run; recovery time = its last
 * entry into Connected after the clear (0 if it stayed connected through it). A reconnect after
 * the clear counts.
 */
import { percentile, type Bound } from './bounds';
import type { EndState, Track } from './fleet';
import { ms } from './format';

export interface RecoveryAudit {
  /** Per device (fleet order); Infinity: not Connected at the end. */
  recoveries: number[];
  maxMs: number;
  p50Ms: number;
  p95Ms: number;
  notConnectedAtEnd: number;
  /** Devices beyond the bound (or never back), for the report: `soak-3 (12000 ms)`. */
  late: string[];
  lateTracks: Track[];
}

export function auditRecovery(tracks: readonly Track[], endStates: readonly EndState[], clearAt: number, bound: Bound): RecoveryAudit {
  const recoveries = tracks.map((_, i) => {
    const end = endStates[i];
    if (clearAt === 0 || !end || end.state !== 'Connected' || end.connectedSince === null) return Infinity;
    return Math.max(0, end.connectedSince - clearAt);
  });
  const finite = recoveries.filter((r) => Number.isFinite(r));
  const isLate = (i: number) => !(recoveries[i]! <= bound.valueMs);
  return {
    recoveries,
    maxMs: finite.length === recoveries.length && finite.length > 0 ? Math.max(...finite) : Infinity,
    p50Ms: percentile(finite, 50),
    p95Ms: percentile(finite, 95),
    notConnectedAtEnd: recoveries.length - finite.length,
    late: tracks
      .map((t, i) => ({ t, i, r: recoveries[i]!, end: endStates[i] }))
      .filter(({ i }) => isLate(i))
      .map(({ t, r, end }) => `${t.registrationId} (${Number.isFinite(r) ? ms(r) : (end?.state ?? t.state)})`),
    lateTracks: tracks.filter((_, i) => isLate(i)),
  };
}
