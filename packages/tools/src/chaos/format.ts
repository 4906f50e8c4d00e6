/** Human-readable summary of a soak report: seed, schedule, invariants table. */
import type { SoakReport } from './report';

function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line.length > 0 && line.length + 1 + word.length > width) {
      out.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) out.push(line);
  return out.length ? out : [''];
}

export function formatReport(report: SoakReport): string {
  const lines: string[] = [];
  lines.push(`seed ${String(report.seed)}  (reproduce: ${report.reproduce})`);
  lines.push(`schedule ${report.schedule.digest}: ${report.schedule.faults} faults`);
  const kinds = Object.entries(report.schedule.byKind).map(([k, n]) => `${k} ${n}`);
  for (let i = 0; i < kinds.length; i += 4) lines.push(`  ${kinds.slice(i, i + 4).join(', ')}`);
  const t = report.timeline;
  lines.push(`timeline: boot ${(t.bootMs / 1000).toFixed(1)} s, faults ${(t.faultPhaseMs / 1000).toFixed(1)} s, quiet ${(t.quietMs / 1000).toFixed(1)} s, drain ${(t.drainMs / 1000).toFixed(1)} s, total ${(t.totalMs / 1000).toFixed(1)} s`);
  lines.push('');
  const nameWidth = Math.max(...report.invariants.map((i) => i.name.length));
  for (const inv of report.invariants) {
    const measured = wrap(inv.measured, 100);
    const bound = wrap(`bound: ${inv.bound}`, 100);
    lines.push(`${inv.ok ? 'PASS' : 'FAIL'}  ${inv.name.padEnd(nameWidth)}  ${measured[0]}`);
    for (const more of [...measured.slice(1), ...bound]) lines.push(`      ${''.padEnd(nameWidth)}  ${more}`);
  }
  lines.push('');
  lines.push(report.ok ? 'all invariants hold' : `FAILED: ${report.invariants.filter((i) => !i.ok).map((i) => i.name).join('; ')}`);
  return lines.join('\n');
}

/** A duration for an invariant's text: `1234 ms`. */
export const ms = (v: number) => `${Math.round(v)} ms`;
