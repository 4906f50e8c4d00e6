/**
 * Reported properties waiting for the hub: the latest value of each property wins, whatever
 * happened while the device was offline, and a delivered value leaves only if nothing newer
 * replaced it meanwhile. With a data directory the queue is a small JSON file, written atomically,
 * so what was reported (acknowledgements included) survives a restart.
 *
 * The latest delivered value of each property is remembered too (in the same file): a device
 * that moves to another ID scope (DeviceMove) lands on a hub whose twin is new, and reports them
 * again there (`requeueDelivered`). Always, not only with the `migration` option: a move persisted
 * under it completes at the next start whatever the options say, and a fleet may turn the option
 * on later. One component is left out (`unremembered`): the device's own resilience report, sent
 * in full at a connection to another hub, whose two dozen values cost about 3 KB a device.
 */
import { join } from 'node:path';
import { readStoreFile, writeFileAtomic } from '../store/files';
import { ackOf } from './properties';
import { isPlainObject } from './schema';
import { PropertiesRejectedError } from './types';
import { twinSize } from './twin-size';
import { jsonDepth, jsonOddity, MAX_TWIN_DEPTH } from '../json';
import { Listeners } from '../listeners';
import type { PartLogger } from '../logger';

/** IoT Hub's limit for the reported section of a twin. */
export const MAX_REPORTED_BYTES = 32 * 1024;

interface Entry {
  component?: string;
  name: string;
  value: unknown;
  generation: number;
}

/** What one flush took: the patch and which versions of which entries it carries. */
export interface ReportedBatch {
  patch: Record<string, unknown>;
  taken: Array<[key: string, generation: number]>;
}

/** Reported properties given up: the hub refused the PATCH that carried them for good. */
export interface DroppedProperties {
  reason: 'refused';
  /** The hub's status (400, 413). */
  status: number;
  /** `name`, or `component.name` for a component property. */
  properties: string[];
  /** The hub's message, when it sent one. */
  detail?: string;
}

/** Names IoT Hub accepts in a twin: no `.`, `$`, space or control characters, at most 1 KB. */
function checkName(name: unknown, what: string): void {
  if (typeof name !== 'string') throw new PropertiesRejectedError('invalid', `${what} must be a string (got ${typeof name})`);
  // eslint-disable-next-line no-control-regex
  if (name.length === 0 || Buffer.byteLength(name) > 1024 || /[.$ \u0000-\u001f\u007f-\u009f]/.test(name)) {
    throw new PropertiesRejectedError('invalid', `${what} '${name}' is not a valid twin name (no '.', '$', spaces or control characters)`);
  }
}

const keyOf = (component: string | undefined, name: string) => `${component ?? ''}\u0000${name}`;
const displayName = (entry: Entry) => (entry.component === undefined ? entry.name : `${entry.component}.${entry.name}`);

export function reportedQueuePath(dataDir: string, registrationId: string): string {
  return join(dataDir, `reported-${encodeURIComponent(registrationId)}.json`);
}

export class ReportedQueue {
  private readonly entries = new Map<string, Entry>();
  /** The latest value of each property the hub accepted (bounded: at most one twin's reported section). */
  private readonly delivered = new Map<string, Omit<Entry, 'generation'>>();
  private generation = 0;
  private readonly listeners = new Listeners();
  private readonly droppedListeners = new Listeners<[DroppedProperties]>();

  constructor(
    private readonly logger: PartLogger,
    private readonly path?: string,
    /** A component whose delivered values are not remembered (it reports itself in full at a connection to another hub). */
    private readonly unremembered?: string,
  ) {
    if (path) this.load(path);
  }

  /** Queue a patch (validated now, so a bad one fails at the caller). */
  set(patch: Record<string, unknown>, component?: string): void {
    // A Map, Date or Buffer would be read as its own fields ({} or indexes): a plain object only.
    if (!isPlainObject(patch) || ![Object.prototype, null].includes(Object.getPrototypeOf(patch) as object | null)) {
      throw new PropertiesRejectedError('invalid', 'a reported-properties patch must be a plain JSON object');
    }
    if (component !== undefined) checkName(component, 'component');
    const updates: Array<[string, Entry]> = [];
    for (const [name, value] of Object.entries(patch)) {
      checkName(name, 'property');
      if (component !== undefined && name === '__t') throw new PropertiesRejectedError('invalid', "'__t' is set by hubstate");
      // The reported section is level 1 and a component level 2: IoT Hub refuses past 10 levels.
      const room = MAX_TWIN_DEPTH - (component === undefined ? 1 : 2);
      if (jsonDepth(value, room) > room) {
        throw new PropertiesRejectedError('invalid', `property '${name}' is nested deeper than IoT Hub allows (${MAX_TWIN_DEPTH} levels in the twin)`);
      }
      const oddity = jsonOddity(value);
      if (oddity) throw new PropertiesRejectedError('invalid', `property '${name}': ${oddity}`);
      let text: string | undefined;
      try {
        text = JSON.stringify(value);
      } catch (error) {
        throw new PropertiesRejectedError('invalid', `property '${name}': ${(error as Error).message}`);
      }
      if (text === undefined) throw new PropertiesRejectedError('invalid', `property '${name}' has no JSON value`);
      updates.push([keyOf(component, name), { component, name, value: JSON.parse(text) as unknown, generation: 0 }]);
    }
    // Counted as IoT Hub counts a twin (numbers 8 bytes, no JSON punctuation), not as JSON text.
    const bytes = twinSize(this.build(updates.map(([, entry]) => entry)));
    if (bytes > MAX_REPORTED_BYTES) {
      throw new PropertiesRejectedError('too-large', `${bytes} bytes as IoT Hub counts a twin; its reported section holds at most ${MAX_REPORTED_BYTES}`);
    }
    for (const [key, entry] of updates) {
      entry.generation = ++this.generation;
      this.entries.set(key, entry);
    }
    this.persist();
    this.listeners.emit();
  }

  get size(): number {
    return this.entries.size;
  }

  /** Everything pending, as one patch (components carry `"__t": "c"`), or null when empty. */
  take(): ReportedBatch | null {
    return this.batchOf([...this.entries.entries()]);
  }

  /** One pending property (by its key in a batch's `taken`) as a patch of its own, or null when it left. */
  takeOne(key: string): ReportedBatch | null {
    const entry = this.entries.get(key);
    return entry ? this.batchOf([[key, entry]]) : null;
  }

  private batchOf(entries: Array<[string, Entry]>): ReportedBatch | null {
    if (entries.length === 0) return null;
    return {
      patch: this.build(entries.map(([, entry]) => entry)),
      taken: entries.map(([key, entry]) => [key, entry.generation]),
    };
  }

  /** The batch reached the hub (or the hub refused it for good): forget what nothing replaced. */
  settle(batch: ReportedBatch): void {
    for (const [key, generation] of batch.taken) {
      const entry = this.entries.get(key);
      if (entry?.generation !== generation) continue;
      this.entries.delete(key);
      this.remember(key, entry);
    }
    this.trimDelivered();
    this.persist();
  }

  /**
   * Queue again every delivered property nothing newer replaced: for a hub whose twin does not
   * have them (the device moved to another ID scope). Writable-property acknowledgements are not
   * resent: their `av` is the old hub's desired version, meaningless on the new one.
   */
  requeueDelivered(): number {
    let count = 0;
    for (const [key, { component, name, value }] of this.delivered) {
      if (this.entries.has(key) || ackOf(value)) continue;
      this.entries.set(key, { component, name, value, generation: ++this.generation });
      count++;
    }
    if (count === 0) return 0;
    this.persist();
    this.listeners.emit();
    return count;
  }

  /** Remembers a delivered value, as the newest (trimDelivered bounds them). */
  private remember(key: string, { component, name, value }: Entry): void {
    if (component !== undefined && component === this.unremembered) return;
    this.delivered.delete(key);
    this.delivered.set(key, { component, name, value });
  }

  /**
   * Beyond a twin's reported section, the oldest delivered values are forgotten. Sized once per
   * round, not once per value (that was quadratic: seconds for a few thousand properties): a
   * round drops the oldest until their sizes alone cover the excess, then sizes the rest again
   * (a value's own size counts its component's wrapper too, so a round may drop too few, never
   * too many).
   */
  private trimDelivered(): void {
    if (this.delivered.size === 0) return;
    const sizeOf = (entries: Iterable<Omit<Entry, 'generation'>>) => twinSize(this.build([...entries].map((e) => ({ ...e, generation: 0 }))));
    let excess = sizeOf(this.delivered.values()) - MAX_REPORTED_BYTES;
    while (excess > 0 && this.delivered.size > 1) {
      for (const [key, entry] of this.delivered) {
        if (excess <= 0 || this.delivered.size === 1) break;
        this.delivered.delete(key);
        excess -= sizeOf([entry]);
      }
      excess = sizeOf(this.delivered.values()) - MAX_REPORTED_BYTES;
    }
  }

  /**
   * The hub refused the batch for good (400, 413). A writable-property acknowledgement that still
   * carries its value stays queued without it (`{ ac, av, ad }` always fits a twin): the service
   * must learn the outcome. Everything else the batch carried (and nothing replaced since) is
   * dropped and reported to the `onDropped` listeners. Returns the names dropped.
   */
  refuse(batch: ReportedBatch, status: number, detail?: string): string[] {
    const dropped: string[] = [];
    for (const [key, generation] of batch.taken) {
      const entry = this.entries.get(key);
      if (entry?.generation !== generation) continue;
      const ack = ackOf(entry.value);
      if (ack && 'value' in ack) {
        const { value: _refused, ...withoutValue } = ack;
        entry.value = { ...withoutValue, ad: `the hub refused the value (${status})` };
        entry.generation = ++this.generation;
        continue;
      }
      this.entries.delete(key);
      dropped.push(displayName(entry));
    }
    this.persist();
    if (dropped.length > 0) {
      const report: DroppedProperties = { reason: 'refused', status, properties: dropped, ...(detail !== undefined ? { detail } : {}) };
      this.droppedListeners.emit(report);
    }
    return dropped;
  }

  /** Called for every refusal that dropped properties. Returns an unsubscribe function. */
  onDropped(listener: (dropped: DroppedProperties) => void): () => void {
    return this.droppedListeners.add(listener);
  }

  onChange(listener: () => void): () => void {
    return this.listeners.add(listener);
  }

  private build(entries: Entry[]): Record<string, unknown> {
    const patch: Record<string, unknown> = {};
    for (const entry of entries) {
      if (entry.component === undefined) {
        patch[entry.name] = entry.value;
      } else {
        const section = (patch[entry.component] ??= { __t: 'c' }) as Record<string, unknown>;
        section[entry.name] = entry.value;
      }
    }
    return patch;
  }

  private persist(): void {
    if (!this.path) return;
    const entries = [...this.entries.values()].map(({ component, name, value }) => ({ component, name, value }));
    const delivered = [...this.delivered.values()];
    try {
      writeFileAtomic(this.path, JSON.stringify({ version: 1, entries, delivered }));
    } catch (error) {
      // Still queued in memory: only a restart before the next connection would lose it.
      this.logger.warn({ path: this.path, err: (error as Error).message }, 'could not persist pending reported properties');
    }
  }

  private load(path: string): void {
    let text: string | null;
    try {
      // Never through a symlink, never someone else's file (StorageError 'unsafe': a warning).
      text = readStoreFile(path);
    } catch (error) {
      this.logger.warn({ path, err: (error as Error).message }, 'pending reported properties refused; ignoring them');
      return;
    }
    if (text === null) return;
    try {
      const parsed = JSON.parse(text) as { entries?: unknown; delivered?: unknown };
      if (!Array.isArray(parsed.entries)) throw new Error('no entries');
      for (const item of parsed.entries as Array<Partial<Entry>>) {
        if (typeof item?.name !== 'string' || !('value' in item)) continue;
        const component = typeof item.component === 'string' ? item.component : undefined;
        this.entries.set(keyOf(component, item.name), { component, name: item.name, value: item.value, generation: ++this.generation });
      }
      // Written by this version and later only: an older file has none.
      for (const item of Array.isArray(parsed.delivered) ? (parsed.delivered as Array<Partial<Entry>>) : []) {
        if (typeof item?.name !== 'string' || !('value' in item)) continue;
        const component = typeof item.component === 'string' ? item.component : undefined;
        this.remember(keyOf(component, item.name), { component, name: item.name, value: item.value, generation: 0 });
      }
      this.trimDelivered();
    } catch {
      this.logger.warn({ path }, 'pending reported properties unreadable; ignoring them');
    }
  }
}
