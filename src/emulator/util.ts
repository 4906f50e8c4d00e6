/** Small bounded data structures and codecs used by the emulator. */

/** Fixed-capacity ring buffer: keeps the newest `capacity` items. */
export class RingBuffer<T> {
  private items: T[] = [];
  private start = 0;
  /** Items pushed out because the buffer was full. */
  dropped = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('RingBuffer capacity must be a positive integer');
  }

  get size(): number {
    return this.items.length;
  }

  push(item: T): void {
    if (this.items.length < this.capacity) {
      this.items.push(item);
      return;
    }
    this.items[this.start] = item;
    this.start = (this.start + 1) % this.capacity;
    this.dropped++;
  }

  /** Oldest first. */
  toArray(): T[] {
    return this.start === 0 ? this.items.slice() : this.items.slice(this.start).concat(this.items.slice(0, this.start));
  }

  clear(): void {
    this.items = [];
    this.start = 0;
  }
}

/** Token bucket: `ratePerSec` refill, burst `capacity` (default one second's worth). No timers. */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    readonly ratePerSec: number,
    readonly capacity: number = Math.max(1, ratePerSec),
    now: number = Date.now(),
  ) {
    if (!(ratePerSec > 0)) throw new RangeError('TokenBucket rate must be > 0');
    this.tokens = this.capacity;
    this.last = now;
  }

  /** Takes one token if available. */
  tryTake(now: number = Date.now()): boolean {
    const elapsed = Math.max(0, now - this.last) / 1000;
    this.last = now;
    this.tokens = Math.min(this.capacity, this.tokens + elapsed * this.ratePerSec);
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    return false;
  }
}

/** Counts events per wall-clock second and remembers the busiest second. */
export class PeakRate {
  private second = -1;
  private count = 0;
  peak = 0;

  hit(now: number = Date.now()): void {
    const s = Math.floor(now / 1000);
    if (s !== this.second) {
      this.second = s;
      this.count = 0;
    }
    this.count++;
    if (this.count > this.peak) this.peak = this.count;
  }

  /** Forgets the peak (a new measurement window starts). */
  reset(): void {
    this.second = -1;
    this.count = 0;
    this.peak = 0;
  }
}

/**
 * Parses an IoT Hub property bag / topic query (`k=v&k2=v2`), URL-decoding keys and values.
 * Malformed escapes are kept verbatim.
 */
export function parsePropertyBag(bag: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!bag) return out;
  for (const part of bag.split('&')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    const k = eq < 0 ? part : part.slice(0, eq);
    const v = eq < 0 ? '' : part.slice(eq + 1);
    out[decodeLenient(k)] = decodeLenient(v);
  }
  return out;
}

function decodeLenient(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Formats a property bag as ONE topic segment: `/` becomes %2F and spaces %20. */
export function formatPropertyBag(props: Readonly<Record<string, string>>): string {
  return Object.entries(props)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
    .join('&');
}

/** A JSON object value. */
export type JsonObject = { [key: string]: unknown };

function isPlainObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** JSON merge patch (RFC 7386) as IoT Hub twins apply it: objects merge, `null` deletes, the rest replaces. */
export function mergePatch(target: JsonObject, patch: JsonObject): JsonObject {
  const out: JsonObject = { ...target };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else if (isPlainObject(v)) out[k] = mergePatch(isPlainObject(out[k]) ? (out[k] as JsonObject) : {}, v);
    else out[k] = structuredClone(v);
  }
  return out;
}

/** True when `v` is a JSON object (not null, not an array). */
export function isJsonObject(v: unknown): v is JsonObject {
  return isPlainObject(v);
}

/** `JSON.parse(text)`, or `fallback` when the text is not JSON. */
export function parseJsonOr(text: string, fallback: unknown): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return fallback;
  }
}
