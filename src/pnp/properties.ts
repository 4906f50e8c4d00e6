/**
 * Writable properties: which desired values to apply, and the acknowledgement of each
 * (`{ value, ac, av, ad }`), queued as reported properties. No SDK here: the session feature feeds
 * it the full twin and the desired patches of the current connection.
 *
 * What was already answered is read from the twin itself (the `av` of the reported
 * acknowledgement), so a restarted device does not apply an acknowledged value again; within a
 * process the versions it has started to answer are remembered too.
 *
 * A handler that has not settled after `handlerTimeoutMs` is acknowledged 500 and its `signal`
 * aborted, so a hung handler neither leaves the acknowledgement pending forever nor holds back
 * the next desired value; whatever it does afterwards is ignored.
 */
import { withDeadline, type Clock } from '../clock';
import { Listeners } from '../listeners';
import { PendingWork } from '../pending-work';
import type { ReportedQueue } from './reported';
import { checkValue, isPlainObject, jsonEqual } from './schema';
import {
  PropertyRejectedError,
  type WritablePropertyHandler,
  type WritablePropertyOptions,
} from './types';
import type { PartLogger } from '../logger';

/** The parts of a twin this module reads. */
export interface TwinDoc {
  desired: Record<string, unknown> & { $version: number };
  reported: Record<string, unknown>;
}

/**
 * An acknowledgement's description (`ad`) is cut to this many characters: a handler's error text
 * can be any size, and a twin's whole reported section holds 32 KB.
 */
export const MAX_ACK_DESCRIPTION_LENGTH = 1024;

export interface Ack {
  value?: unknown;
  ac: number;
  av: number;
  ad?: string;
}

interface PropertyState {
  name: string;
  component?: string;
  handler: WritablePropertyHandler;
  options: WritablePropertyOptions;
  /** Highest desired $version answered or being answered. */
  answered: number;
  /** The value actually in effect, when known (reported with 400/500 acknowledgements). */
  current?: { value: unknown };
  running: boolean;
  /** The newest desired value that arrived while the handler was running: it runs next. */
  next?: { value: unknown; version: number };
  defaultQueued: boolean;
}

const keyOf = (component: string | undefined, name: string) => `${component ?? ''}\u0000${name}`;

function sectionOf(root: Record<string, unknown>, component: string | undefined): Record<string, unknown> | undefined {
  if (component === undefined) return root;
  const section = root[component];
  return isPlainObject(section) ? section : undefined;
}

/** The value as a writable-property acknowledgement (`{ value?, ac, av, ad? }`), when it is one. */
export function ackOf(value: unknown): Ack | undefined {
  if (!isPlainObject(value)) return undefined;
  const { ac, av } = value;
  if (typeof ac !== 'number' || typeof av !== 'number') return undefined;
  return value as unknown as Ack;
}

export class WritableProperties {
  private readonly states = new Map<string, PropertyState>();
  /** Desired $version of the current connection's full twin (patches not newer are stale). */
  private sessionVersion = -1;
  private readonly registeredListeners = new Listeners();
  private readonly running = new PendingWork();

  constructor(
    private readonly reported: ReportedQueue,
    private readonly logger: PartLogger,
    private readonly settings: { clock: Clock; handlerTimeoutMs: number },
  ) {}

  register(name: string, handler: WritablePropertyHandler, options: WritablePropertyOptions = {}): void {
    if (typeof name !== 'string' || name.length === 0 || /[.$ ]/.test(name)) throw new TypeError(`invalid property name '${name}'`);
    if (typeof handler !== 'function') throw new TypeError('the handler must be a function');
    if (options.component !== undefined && (typeof options.component !== 'string' || /[.$ *]/.test(options.component) || options.component === '')) {
      throw new TypeError(`invalid component name '${options.component}'`);
    }
    const key = keyOf(options.component, name);
    if (this.states.has(key)) throw new Error(`a handler for writable property '${options.component ? `${options.component}.` : ''}${name}' is already registered`);
    this.states.set(key, { name, component: options.component, handler, options, answered: -1, running: false, defaultQueued: false });
    this.registeredListeners.emit();
  }

  get count(): number {
    return this.states.size;
  }

  /** Called when a property is registered (a live session then reads the twin again). */
  onRegistered(listener: () => void): () => void {
    return this.registeredListeners.add(listener);
  }

  /** A connection began: its full twin decides what is stale from now on. */
  reconcile(doc: TwinDoc): void {
    const version = doc.desired.$version;
    this.sessionVersion = Math.max(this.sessionVersion, version);
    for (const state of this.states.values()) {
      const desired = sectionOf(doc.desired, state.component)?.[state.name];
      const ack = ackOf(sectionOf(doc.reported, state.component)?.[state.name]);
      if (state.answered > version) {
        // A twin older than what this process answered is another document (the device was
        // re-allocated to a hub that started it afresh): its own acknowledgements count, not ours.
        state.answered = -1;
        state.defaultQueued = false;
      }
      if (ack && state.current === undefined && 'value' in ack) state.current = { value: ack.value };
      if (ack) state.answered = Math.max(state.answered, ack.av);
      if (desired !== undefined && desired !== null) {
        if (version <= state.answered) continue;
        if (ack && ack.ac === 200 && jsonEqual(ack.value, desired)) {
          // Same value, already applied; only the desired $version moved (another property changed).
          state.answered = version;
          this.acknowledge(state, { value: desired, ac: 200, av: version, ad: ack.ad ?? 'completed' });
          continue;
        }
        this.submit(state, desired, version);
      } else if (!ack && 'default' in state.options && state.options.default !== undefined && !state.defaultQueued) {
        // The device's own value: the default, or what it runs with if that twin was lost.
        state.defaultQueued = true;
        state.current ??= { value: state.options.default };
        this.acknowledge(state, { value: state.current.value, ac: 203, av: 0, ad: 'default value' });
      }
    }
  }

  /** Forget the session's twin version (a new connection must read the twin first). */
  endSession(): void {
    this.sessionVersion = -1;
  }

  /** A desired-properties patch pushed by the hub. Returns false when it was stale. */
  applyPatch(patch: Record<string, unknown>): boolean {
    const version = patch.$version;
    if (typeof version !== 'number') {
      this.logger.warn({ keys: Object.keys(patch) }, 'desired patch without $version ignored');
      return false;
    }
    if (version <= this.sessionVersion) {
      this.logger.debug({ version, known: this.sessionVersion }, 'stale desired patch ignored');
      return false;
    }
    this.sessionVersion = version;
    for (const state of this.states.values()) {
      const section = sectionOf(patch, state.component);
      if (!section || !(state.name in section)) continue;
      const value = section[state.name];
      if (value === null || value === undefined) continue; // a deleted desired value: nothing to apply
      if (version <= state.answered) continue;
      this.submit(state, value, version);
    }
    return true;
  }

  /** Resolves when every handler started so far has settled (tests, shutdown). */
  async idle(): Promise<void> {
    await this.running.settled();
  }

  private submit(state: PropertyState, value: unknown, version: number): void {
    state.answered = version;
    if (state.running) {
      state.next = { value, version }; // latest wins: an intermediate value is never applied
      return;
    }
    state.running = true;
    const run = (async () => {
      let item: { value: unknown; version: number } | undefined = { value, version };
      while (item) {
        try {
          await this.applyOne(state, item.value, item.version);
        } catch (error) {
          // Never expected (applyOne answers every outcome); logged, and the next value still runs.
          this.logger.error({ property: state.name, component: state.component, version: item.version, err: error instanceof Error ? error.message : String(error) }, 'writable property update failed');
        }
        item = state.next;
        state.next = undefined;
      }
    })().finally(() => {
      state.running = false;
    });
    this.running.track(run);
  }

  private async applyOne(state: PropertyState, value: unknown, version: number): Promise<void> {
    const actual = () => state.current?.value;
    const problem = checkValue(state.options.schema, value);
    if (problem !== undefined) {
      this.logger.warn({ property: state.name, component: state.component, version, problem }, 'desired value rejected');
      this.acknowledge(state, { value: actual(), ac: 400, av: version, ad: problem });
      return;
    }
    let settled = false;
    const controller = new AbortController();
    const context = {
      name: state.name,
      ...(state.component !== undefined ? { component: state.component } : {}),
      version,
      signal: controller.signal,
      inProgress: (description?: string) => {
        if (settled) return;
        this.acknowledge(state, { value, ac: 202, av: version, ad: description ?? 'in progress' });
      },
    };
    const { clock, handlerTimeoutMs } = this.settings;
    // The same deadline helper as commands and twin calls; a late settle is ignored.
    const timedOut = new Error('writable property handler timed out');
    try {
      const handled = Promise.resolve().then(() => state.handler(value, context));
      const result = await withDeadline(clock, handled, handlerTimeoutMs, () => timedOut);
      settled = true;
      const applied = result && typeof result === 'object' && 'value' in result ? result.value : value;
      state.current = { value: applied };
      const description = result && typeof result === 'object' && typeof result.description === 'string' ? result.description : 'completed';
      this.acknowledge(state, { value: applied, ac: 200, av: version, ad: description });
    } catch (error) {
      settled = true;
      if (error === timedOut) {
        this.logger.warn({ property: state.name, component: state.component, version, timeoutMs: handlerTimeoutMs }, 'writable property handler too slow; acknowledged 500');
        controller.abort(timedOut);
        this.acknowledge(state, { value: actual(), ac: 500, av: version, ad: `the handler did not complete within ${handlerTimeoutMs} ms` });
        return;
      }
      const message = error instanceof Error ? error.message : String(error);
      const rejected = error instanceof PropertyRejectedError;
      this.logger.warn({ property: state.name, component: state.component, version, err: message }, rejected ? 'desired value rejected by the handler' : 'writable property handler failed');
      this.acknowledge(state, { value: actual(), ac: rejected ? 400 : 500, av: version, ad: message });
    }
  }

  /** Queues the acknowledgement; never throws (a handler's error text is the caller's, any size). */
  private acknowledge(state: PropertyState, ack: Ack): void {
    const description = ack.ad !== undefined && ack.ad.length > MAX_ACK_DESCRIPTION_LENGTH ? `${ack.ad.slice(0, MAX_ACK_DESCRIPTION_LENGTH)}…` : ack.ad;
    const body: Record<string, unknown> = ack.value !== undefined ? { value: ack.value } : {};
    Object.assign(body, { ac: ack.ac, av: ack.av, ad: description });
    try {
      this.reported.set({ [state.name]: body }, state.component);
    } catch (error) {
      // The value cannot be reported (e.g. too large): acknowledge without it rather than not at all.
      this.logger.error({ property: state.name, err: (error as Error).message }, 'acknowledgement refused; sending it without the value');
      delete body.value;
      try {
        this.reported.set({ [state.name]: body }, state.component);
      } catch (second) {
        this.logger.error({ property: state.name, err: (second as Error).message }, 'acknowledgement not sent');
      }
    }
  }
}
