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

// ---------------------------------------------------------------------------------------------
// Twin rules, as "Understand device twins" states them (Tags and properties format; Device twin size)

/** Deepest nesting IoT Hub accepts in desired and reported properties. */
export const MAX_TWIN_DEPTH = 10;

/**
 * Nesting depth of a JSON value (0 for a primitive, 1 for `{}`), counted without recursion and
 * only up to `limit` (returns `limit + 1` past it): a hostile patch costs the hub nothing more.
 * The device library has its own check; the local cloud imports nothing from it.
 */
export function jsonDepth(value: unknown, limit = MAX_TWIN_DEPTH): number {
  let deepest = 0;
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [node, above] = stack.pop()!;
    if (typeof node !== 'object' || node === null) continue;
    const depth = above + 1;
    if (depth > limit) return limit + 1;
    if (depth > deepest) deepest = depth;
    for (const child of Array.isArray(node) ? node : Object.values(node)) {
      if (typeof child === 'object' && child !== null) stack.push([child, depth]);
    }
  }
  return deepest;
}

/** IoT Hub's limit for each of the desired and reported sections. */
export const TWIN_SECTION_LIMIT_BYTES = 32 * 1024;
/** IoT Hub's limit for a twin property name (UTF-8 bytes). */
export const TWIN_NAME_LIMIT_BYTES = 1024;
/** Read-only metadata IoT Hub keeps at the top of a section: a patch carrying them changes nothing. */
export const TWIN_METADATA_KEYS: ReadonlySet<string> = new Set(['$metadata', '$version']);

// eslint-disable-next-line no-control-regex
const UNICODE_CONTROL = /[\u0000-\u001f\u007f-\u009f]/gu;

/** UTF-8 bytes of `text` without its Unicode control characters (C0 and C1), as IoT Hub counts twin strings. */
function twinStringSize(text: string): number {
  return Buffer.byteLength(text.replace(UNICODE_CONTROL, ''), 'utf8');
}

/**
 * Why IoT Hub refuses `name` as a twin property name, or undefined when it accepts it: at most
 * 1 KB (UTF-8), no `.`, `$`, space or Unicode control character.
 */
export function twinNameProblem(name: string): string | undefined {
  if (Buffer.byteLength(name, 'utf8') > TWIN_NAME_LIMIT_BYTES) return `property name longer than ${TWIN_NAME_LIMIT_BYTES} bytes`;
  // eslint-disable-next-line no-control-regex
  const bad = /[.$ \u0000-\u001f\u007f-\u009f]/u.exec(name)?.[0];
  if (bad === undefined) return undefined;
  const shown = /[.$ ]/.test(bad) ? `'${bad}'` : `U+${bad.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`;
  return `property name '${name.slice(0, 64)}' contains ${shown}`;
}

/**
 * The first property name in a twin patch IoT Hub would refuse (at any depth, inside arrays too),
 * or undefined. The top-level metadata keys ($version, $metadata) are read-only, not invalid.
 * Iterative: the caller bounds the depth first (jsonDepth).
 */
export function twinPatchProblem(patch: JsonObject): string | undefined {
  const stack: Array<{ value: unknown; top: boolean }> = [{ value: patch, top: true }];
  while (stack.length > 0) {
    const { value, top } = stack.pop()!;
    if (Array.isArray(value)) {
      for (const item of value) stack.push({ value: item, top: false });
    } else if (isPlainObject(value)) {
      for (const [name, child] of Object.entries(value)) {
        if (!(top && TWIN_METADATA_KEYS.has(name))) {
          const problem = twinNameProblem(name);
          if (problem) return problem;
        }
        stack.push({ value: child, top: false });
      }
    }
  }
  return undefined;
}

/**
 * Size of a twin section as IoT Hub counts it against the 32 KB limit: for every property its
 * name plus its value, names and strings as UTF-8 without control characters, a number 8 bytes,
 * a boolean 4, an object the sum of its members (array elements count as values, null as 0).
 * The top-level metadata keys are excluded. Not JSON's length: `{"a":1}` is 9 bytes here, 7 in JSON.
 */
export function twinSize(section: JsonObject): number {
  let size = 0;
  const stack: Array<{ value: unknown; top: boolean }> = [{ value: section, top: true }];
  while (stack.length > 0) {
    const { value, top } = stack.pop()!;
    if (typeof value === 'string') size += twinStringSize(value);
    else if (typeof value === 'number') size += 8;
    else if (typeof value === 'boolean') size += 4;
    else if (Array.isArray(value)) for (const item of value) stack.push({ value: item, top: false });
    else if (isPlainObject(value)) {
      for (const [name, child] of Object.entries(value)) {
        if (top && TWIN_METADATA_KEYS.has(name)) continue;
        size += twinStringSize(name);
        stack.push({ value: child, top: false });
      }
    }
  }
  return size;
}

/** `patch` without the read-only metadata keys IoT Hub ignores in an update. */
export function withoutTwinMetadata(patch: JsonObject): JsonObject {
  const out: JsonObject = {};
  for (const [name, value] of Object.entries(patch)) if (!TWIN_METADATA_KEYS.has(name)) out[name] = value;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Device-to-cloud message size ("Create and read IoT Hub messages", Message size)

/** IoT Hub's limit for a device-to-cloud message. */
export const D2C_MESSAGE_LIMIT_BYTES = 256 * 1024;

/**
 * Size of a device-to-cloud message as IoT Hub measures it: the body, plus the values of the
 * system properties (`$.mid`, `$.ct` ...), plus the names and values of the application
 * properties; all decoded (the topic's %-escapes do not count).
 */
export function d2cMessageSize(body: Buffer, properties: Readonly<Record<string, string>>): number {
  let size = body.length;
  for (const [name, value] of Object.entries(properties)) {
    size += Buffer.byteLength(value, 'utf8');
    if (!name.startsWith('$.')) size += Buffer.byteLength(name, 'utf8');
  }
  return size;
}

/**
 * The local cloud's clock: the machine's time plus an offset, so a test can put a device's clock
 * off (a cloud 3 hours ahead is a device 3 hours behind) without touching the process's clock.
 * SAS expiry checks, the enforced token expiry and DPS's `Date` header use it.
 */
export class ServiceClock {
  offsetMs = 0;

  nowMs(): number {
    return Date.now() + this.offsetMs;
  }

  nowSec(): number {
    return Math.floor(this.nowMs() / 1000);
  }
}
