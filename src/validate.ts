/**
 * Shared validation helpers: one way to refuse an unknown option key (with the nearest known
 * one), used by `createDevice`'s options, the retry policy, the outbox limits and the per-call
 * options of `stop()` and `sendTelemetry()`.
 */

/** Levenshtein distance, case-insensitive (a typo such as keepAliveSeconds is 1 away). */
function distance(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  let previous = Array.from({ length: y.length + 1 }, (_, j) => j);
  for (let i = 1; i <= x.length; i++) {
    const current = [i];
    for (let j = 1; j <= y.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (x[i - 1] === y[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[y.length]!;
}

/** The known key closest to `key`, when it is close enough to be a likely typo. */
export function nearestKey(key: string, known: Iterable<string>): string | undefined {
  const lower = key.toLowerCase();
  // A known key with something added or cut off ('dataDirectory', 'outboxLimit'): that one.
  for (const candidate of known) {
    const c = candidate.toLowerCase();
    if (Math.min(c.length, lower.length) >= 4 && (lower.startsWith(c) || c.startsWith(lower))) return candidate;
  }
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const d = distance(key, candidate);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  // A third of the key's length, at least 2: 'keepAliveSeconds' → 'keepaliveSeconds', 'transport' → nothing.
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(key.length / 3)) ? best : undefined;
}

/** What a ConfigError says about an unknown key: the nearest known one, or the list. */
export function unknownKeyExpectation(key: string, known: readonly string[]): string {
  const near = nearestKey(key, known);
  return near !== undefined ? `no such option (unknown key; did you mean '${near}'?)` : `no such option (unknown key; known: ${known.join(', ')})`;
}

/**
 * The first own key of `value` not in `known`, or undefined. Symbol keys are ignored (they are
 * not options anyone types).
 */
export function firstUnknownKey(value: object, known: readonly string[] | ReadonlySet<string>): string | undefined {
  const has = known instanceof Set ? (k: string) => known.has(k) : (k: string) => (known as readonly string[]).includes(k);
  return Object.keys(value).find((key) => !has(key));
}
