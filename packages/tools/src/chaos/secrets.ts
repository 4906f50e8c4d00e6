/**
 * Searches everything a run produces (log lines, state snapshots, error messages) for secrets as
 * it is produced: nothing is kept but counts and a few redacted samples, so a long soak can scan
 * gigabytes without holding them (which would also spoil its RSS measurement).
 */
import { redactSecrets } from 'hubstate';

export type ScanSource = 'log' | 'snapshot' | 'error' | 'event';

export interface Secret {
  /** Class of secret, for the counts: 'group key', 'device key'. */
  kind: string;
  /** Which one, for samples (never the value): 'device key of soak-3'. */
  label: string;
  value: string;
}

/** Text that must never appear, whatever follows it (case-insensitive). */
export const SECRET_MARKERS = ['SharedAccessSignature', 'SharedAccessKey=', 'sig='] as const;

export interface ScanFinding {
  source: ScanSource;
  what: string;
  /** The offending text with every known secret replaced by its label, cut to 300 characters. */
  sample: string;
}

export interface ScanReport {
  scanned: Record<ScanSource, { items: number; bytes: number }>;
  /** Hits per needle class: 'group key', 'device key', and each marker. */
  hits: Record<string, number>;
  total: number;
  samples: ScanFinding[];
}

/** Runs of key-ish characters long enough to hold a 32-byte key (44 base64 chars), URL-encoded or not. */
const CANDIDATE_RUN = /[A-Za-z0-9+/=%]{43,}/g;

export class SecretScanner {
  private readonly needles: Array<{ kind: string; label: string; value: string }> = [];
  private readonly scanned: ScanReport['scanned'] = {
    log: { items: 0, bytes: 0 },
    snapshot: { items: 0, bytes: 0 },
    error: { items: 0, bytes: 0 },
    event: { items: 0, bytes: 0 },
  };
  private readonly hits: Record<string, number> = {};
  private readonly samples: ScanFinding[] = [];
  private shortestNeedle = Infinity;

  constructor(
    secrets: readonly Secret[],
    private readonly maxSamples = 10,
  ) {
    for (const s of secrets) {
      if (s.value.length === 0) continue;
      const kind = s.kind;
      const variants = new Set([s.value, encodeURIComponent(s.value), s.value.replace(/\+/g, '-').replace(/\//g, '_')]);
      for (const value of variants) {
        this.needles.push({ kind, label: s.label, value });
        this.shortestNeedle = Math.min(this.shortestNeedle, value.length);
      }
      this.hits[kind] = 0;
    }
    for (const m of SECRET_MARKERS) this.hits[m] = 0;
  }

  scan(text: string, source: ScanSource): void {
    this.scanned[source].items++;
    this.scanned[source].bytes += text.length;
    const found: string[] = [];
    // Keys: only runs of key characters can contain one; logs rarely have any.
    if (text.length >= this.shortestNeedle) {
      for (const run of text.match(CANDIDATE_RUN) ?? []) {
        for (const n of this.needles) {
          if (run.includes(n.value)) {
            this.hits[n.kind] = (this.hits[n.kind] ?? 0) + 1;
            found.push(n.label);
          }
        }
      }
    }
    const lower = text.toLowerCase();
    for (const m of SECRET_MARKERS) {
      if (lower.includes(m.toLowerCase())) {
        this.hits[m]!++;
        found.push(m);
      }
    }
    if (found.length > 0 && this.samples.length < this.maxSamples) {
      this.samples.push({ source, what: [...new Set(found)].join(', '), sample: this.redact(text).slice(0, 300) });
    }
  }

  /** Known secrets replaced by their labels, then the generic redactor. */
  redact(text: string): string {
    let out = text;
    for (const n of this.needles) out = out.split(n.value).join(`<${n.label}>`);
    return redactSecrets(out);
  }

  report(): ScanReport {
    const total = Object.values(this.hits).reduce((a, b) => a + b, 0);
    return { scanned: structuredClone(this.scanned), hits: { ...this.hits }, total, samples: this.samples.slice() };
  }
}
