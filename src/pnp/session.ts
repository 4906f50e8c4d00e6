/**
 * Plug and Play on one hub connection (a SessionFeature): the only place here that talks to the
 * SDK. On every connection, in this order:
 *   1. subscribe to desired patches (patches that arrive now are held back),
 *   2. subscribe to direct methods and C2D (offline commands),
 *   3. send the reported properties queued while offline (acknowledgements included),
 *   4. GET the full twin and answer every writable property whose desired $version is newer
 *      than its acknowledgement, then the held-back patches that are newer than the twin.
 * Twin operations go straight to the MQTT transport, with a deadline of ours: the SDK's twin has
 * none, ignores the response status and can leave a GET unsettled forever. A timeout or a lost
 * subscription ends the session (HUB_LOST); the machine reconnects, and all of this runs again.
 * After cleanup nothing here touches the transport: a discarded SDK client would reconnect.
 *
 * The listeners for what the hub sends (methods, C2D, twin messages) are the feature's `inbound`
 * part, attached before the connection opens: a hub that kept the device's MQTT session delivers
 * queued C2D and waiting method requests right after the CONNACK, before the session starts.
 */
import type { Message } from 'azure-iot-common';
import type { DeviceMethodResponse } from 'azure-iot-device';
import type { HubSession, SessionFeature } from '../actors/hub';
import { interceptMethodRequests, interceptMqttMessages } from '../actors/sdk-internals';
import { withDeadline, type Clock } from '../clock';
import type { Commands } from './commands';
import type { OfflineCommands } from './offline';
import type { TwinDoc, WritableProperties } from './properties';
import type { ReportedBatch, ReportedQueue } from './reported';
import { isPlainObject } from './schema';
import { ServiceProtocolError } from '../errors';
import { jsonDepth, MAX_TWIN_DEPTH } from '../json';
import { curveCapMs, nextRandom, seedFrom } from '../policy/backoff';
import type { PartLogger } from '../logger';

/** Why a twin message from the hub would crash the SDK's parser, or undefined when it is sound. */
export function invalidTwinMessage(topic: string, payload: Buffer | string | undefined): string | undefined {
  const isResponse = topic.startsWith('$iothub/twin/res/');
  const isDesiredPatch = topic.startsWith('$iothub/twin/PATCH/properties/desired/');
  if (!isResponse && !isDesiredPatch) return undefined;
  const text = payload === undefined ? '' : payload.toString();
  if (isResponse && text === '') return undefined; // e.g. 204 to a reported patch
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return `${isResponse ? 'twin answer' : 'desired patch'} that is not JSON`;
  }
  if (isDesiredPatch && !isPlainObject(body)) return 'desired patch that is not a JSON object';
  // IoT Hub keeps twins within 10 levels (a GET answer wraps them in one more object); deeper
  // would overflow the stack of whatever walks it next (the acknowledgement, the handler).
  const allowed = isResponse ? MAX_TWIN_DEPTH + 1 : MAX_TWIN_DEPTH;
  if (jsonDepth(body, allowed) > allowed) return `${isResponse ? 'twin answer' : 'desired patch'} nested deeper than IoT Hub allows (${MAX_TWIN_DEPTH} levels)`;
  return undefined;
}

/** The SDK's own pattern for C2D topics (`devices/{id}/messages/devicebound/{bag}`). */
const C2D_TOPIC = /^devices\/.*\/messages\/devicebound\/.*$/;

/**
 * False for a C2D topic whose property bag the SDK's decoding (decodeURIComponent of each key and
 * value, inside its MQTT message handler) would throw on; true for any other topic.
 */
export function c2dPropertyBagDecodes(topic: string): boolean {
  if (!C2D_TOPIC.test(topic)) return true;
  const bag = topic.split('/')[4];
  if (!bag) return true;
  try {
    for (const pair of bag.split('&')) {
      const [key, value] = pair.split('=');
      decodeURIComponent(key!);
      if (value !== undefined) decodeURIComponent(value);
    }
    return true;
  } catch {
    return false;
  }
}


export interface PnpSessionSettings {
  clock: Clock;
  logger: PartLogger;
  /** Deadline of each twin GET/PATCH and of each subscription. */
  twinTimeoutMs: number;
  reported: ReportedQueue;
  properties: WritableProperties;
  commands: Commands;
  /** Offline (C2D) commands: stored (with a data directory) before the PUBACK, then run. */
  offline: OfflineCommands;
}

/** What the MQTT transport hands to `method_<name>` listeners. */
interface MethodMessage {
  methods?: { methodName?: string };
  requestId?: string;
  body?: Buffer;
}

function timeoutError(message: string): Error {
  const error = new Error(message);
  error.name = 'TimeoutError';
  return error;
}

/**
 * The twin client reports a service refusal (an `errorCode` body) as a plain `Error`; transport
 * trouble comes as a named SDK error (NotConnectedError ...) or as our TimeoutError.
 */
function isServiceRefusal(error: unknown): boolean {
  return error instanceof Error && error.name === 'Error' && error.constructor === Error;
}

/** The status of a twin answer (`$iothub/twin/res/{status}/?$rid=…`), or undefined for other topics. */
export function twinResponseStatus(topic: string): number | undefined {
  if (!topic.startsWith('$iothub/twin/res/')) return undefined;
  const status = Number(topic.split('/')[3]);
  return Number.isInteger(status) ? status : undefined;
}

/**
 * Retries of a twin operation the hub answered but did not do: a reported PATCH answered 429, 5xx
 * or another status it may not repeat, a GET answered 429 or 5xx. Doubling from 1 s to 15 min
 * (per connection: a new one starts again at 1 s). Each PATCH is a billed twin update; a hub that
 * throttles for a day gets ~100–200 of them, not one every 30–60 s (~1,920).
 */
export const TWIN_RETRY_BASE_MS = 1000;
export const TWIN_RETRY_MAX_MS = 900_000;

/** Warn on retries 1, 2, 4, 8…: a day of throttling is 7–8 warnings, the others at debug. */
const isWarnedRetry = (attempt: number) => (attempt & (attempt - 1)) === 0;

/**
 * What to do with a reported PATCH, from the status of the hub's answer (the SDK ignores it: an
 * `errorCode` body becomes a bare Error, any other body a success) or, when the status is not
 * known (a transport without the SDK's MQTT base), from the error alone.
 */
export function reportedPatchVerdict(status: number | undefined, error: unknown): 'delivered' | 'refused' | 'retry' | 'lost' {
  if (status !== undefined) {
    if (status >= 200 && status < 300) return 'delivered';
    // The only answers that will not change by sending the same patch again.
    if (status === 400 || status === 413) return 'refused';
    return 'retry';
  }
  if (error === undefined || error === null) return 'delivered';
  // A refusal whose status we could not read: keep it (never lost), the retries are bounded in rate.
  return isServiceRefusal(error) ? 'retry' : 'lost';
}

/** The listeners of one connection for what the hub sends. */
interface Inbound {
  /** Status of the twin answer being dispatched right now (its request's callback runs inside). */
  twinStatus: number | undefined;
  /** The connection's logger (its epoch bound), shared with its session. */
  readonly logger: PartLogger;
  detach(): void;
}

function asTwinDoc(value: unknown): TwinDoc | undefined {
  if (!isPlainObject(value) || !isPlainObject(value.desired) || !isPlainObject(value.reported)) return undefined;
  if (typeof value.desired.$version !== 'number') return undefined;
  return value as unknown as TwinDoc;
}

/**
 * What the hub sends on one connection: direct methods (one interception point for every name, so
 * an unknown command gets its 404 instead of the caller's timeout), C2D offline commands, and
 * every MQTT message checked before the SDK's handlers parse it.
 */
class InboundListeners implements Inbound {
  twinStatus: number | undefined = undefined;
  readonly logger: PartLogger;
  private detached = false;
  private readonly restoreMethodRequests: () => void;
  private readonly restoreMqttMessages: (() => void) | undefined;
  /** A listener of the transport's: its identity is what `removeListener` needs. */
  private readonly onC2D = (message: Message) => this.c2d(message);

  constructor(
    private readonly connection: HubSession,
    private readonly settings: PnpSessionSettings,
    private readonly registry: WeakMap<object, Inbound>,
  ) {
    const { transport, epoch } = connection;
    this.logger = settings.logger.child({ epoch });
    this.restoreMethodRequests = interceptMethodRequests(transport, (request) => this.method(request as MethodMessage));
    this.restoreMqttMessages = interceptMqttMessages(transport, (rawTopic, payload, deliver) => this.mqttMessage(String(rawTopic), payload as Buffer, deliver));
    transport.on('message', this.onC2D);
    registry.set(transport, this);
  }

  detach(): void {
    if (this.detached) return;
    this.detached = true;
    const { transport } = this.connection;
    this.registry.delete(transport);
    this.restoreMethodRequests();
    this.restoreMqttMessages?.();
    transport.removeListener('message', this.onC2D);
  }

  private lost(error: unknown): void {
    if (!this.detached) this.connection.lost(error);
  }

  private method(message: MethodMessage): void {
    if (this.detached) return;
    const name = message.methods?.methodName ?? '';
    const { logger } = this;
    logger.debug({ command: name, requestId: message.requestId }, 'command received');
    void this.settings.commands
      .invoke(name, message.body, { offline: false, requestId: message.requestId })
      .then((outcome) => this.respond(message, outcome))
      .catch((error: unknown) => logger.error({ command: name, requestId: message.requestId, err: (error as Error).message }, 'command failed after its handler'));
  }

  private respond(message: MethodMessage, outcome: { status: number; payload: unknown; after?: () => void }): void {
    const { logger } = this;
    if (this.detached) {
      logger.warn({ requestId: message.requestId, status: outcome.status }, 'command finished after its connection ended; no response sent');
      outcome.after?.();
      return;
    }
    const response = { requestId: message.requestId, status: outcome.status, payload: outcome.payload ?? null };
    try {
      this.connection.transport.sendMethodResponse(response as unknown as DeviceMethodResponse, (error?: Error) => {
        if (error) logger.warn({ requestId: message.requestId, err: error.message }, 'command response not sent');
        outcome.after?.();
      });
    } catch (error) {
      logger.warn({ requestId: message.requestId, err: (error as Error).message }, 'command response not sent');
      outcome.after?.();
    }
  }

  private c2d(message: Message): void {
    if (this.detached) return;
    let name: unknown;
    try {
      name = message.properties?.getValue('method-name');
    } catch {
      name = undefined;
    }
    if (typeof name !== 'string' || name === '') {
      this.logger.warn({ messageId: message.messageId }, 'C2D message without a method-name property; ignored');
      return;
    }
    const body = Buffer.isBuffer(message.data) ? message.data : message.data === undefined ? undefined : Buffer.from(String(message.data));
    // Synchronous up to the inbox write: mqtt.js sends the PUBACK when this event returns.
    this.settings.offline.receive(name, body, typeof message.messageId === 'string' && message.messageId !== '' ? message.messageId : undefined);
  }

  /**
   * Every MQTT message passes here before the SDK's handlers:
   * - twin: the SDK parses twin answers and desired patches with a bare JSON.parse inside its
   *   MQTT message handler, so junk from the hub would be an uncaught exception (measured). Junk
   *   ends the session (transient): the next connection re-reads the twin.
   * - C2D: the SDK decodes the property bag there too; a bag that does not decode (bad %-escape)
   *   would throw and take the process down. Such a message is logged and dropped.
   */
  private mqttMessage(topic: string, payload: Buffer, deliver: () => boolean): boolean {
    const problem = invalidTwinMessage(topic, payload);
    if (problem) {
      this.logger.warn({ topic: topic.slice(0, 200), problem }, 'invalid twin message from the hub; ending the session');
      this.lost(new ServiceProtocolError('hub', problem));
      return true;
    }
    if (!c2dPropertyBagDecodes(topic)) {
      this.logger.warn({ topic: topic.slice(0, 200) }, 'C2D message with an undecodable property bag; ignored');
      return true;
    }
    const status = twinResponseStatus(topic);
    if (status === undefined) return deliver();
    this.twinStatus = status;
    try {
      return deliver();
    } finally {
      this.twinStatus = undefined;
    }
  }
}

/**
 * One connection's Plug and Play session: subscriptions, the reported-properties flush and the
 * twin synchronisation. Methods rather than closures: a device holds one for each connection.
 */
class PnpSession {
  private stopped = false;
  private subscribed = false;
  private synced = false;
  private syncing: Promise<void> | null = null;
  private resync = false;
  private flushing: Promise<void> | null = null;
  private readonly heldBack: Array<Record<string, unknown>> = [];
  /** The rejections of transport calls still pending: cleanup settles them, so no deadline timer outlives the session. */
  private readonly pending = new Set<(error: Error) => void>();
  private retryTimer: unknown = null;
  private retries = 0;
  /** The twin GET answered 429/5xx: retried on this connection (the connection itself works). */
  private getRetryTimer: unknown = null;
  private getRetries = 0;
  /** Keys of a refused batch, sent one by one so only what the hub refuses is dropped. */
  private readonly isolate: string[] = [];
  private readonly logger: PartLogger;
  /** A listener of the transport's: its identity is what `removeListener` needs. */
  private readonly onPatch = (patch: unknown) => this.desiredPatch(patch);
  private readonly unsubscribeReported: () => void;
  private readonly unsubscribeRegistered: () => void;

  constructor(
    private readonly settings: PnpSessionSettings,
    private readonly session: HubSession,
    private readonly inbound: Inbound,
    /** Inbound listeners this session attached itself (the hub had not): they end with it. */
    private readonly ownInbound: Inbound | undefined,
  ) {
    this.logger = inbound.logger;
    session.transport.on('twinDesiredPropertiesUpdate', this.onPatch);
    this.unsubscribeReported = settings.reported.onChange(() => {
      if (this.subscribed && !this.stopped) this.flush().catch((error: unknown) => this.lost(error));
    });
    this.unsubscribeRegistered = settings.properties.onRegistered(() => {
      if (this.synced && !this.stopped) this.sync().catch((error: unknown) => this.lost(error));
    });
    this.subscribeAndSync().catch((error: unknown) => this.lost(error));
  }

  stop(): void {
    this.stopped = true;
    if (this.retryTimer !== null) this.settings.clock.clearTimeout(this.retryTimer);
    if (this.getRetryTimer !== null) this.settings.clock.clearTimeout(this.getRetryTimer);
    for (const abandon of [...this.pending]) abandon(new Error('session ended'));
    this.settings.properties.endSession();
    this.session.transport.removeListener('twinDesiredPropertiesUpdate', this.onPatch);
    this.unsubscribeReported();
    this.unsubscribeRegistered();
    this.ownInbound?.detach();
  }

  private lost(error: unknown): void {
    if (!this.stopped) this.session.lost(error);
  }

  private async subscribeAndSync(): Promise<void> {
    const { transport } = this.session;
    await this.call<void>('subscribe to desired properties', (done) => transport.enableTwinDesiredPropertiesUpdates(done));
    await this.call<void>('subscribe to direct methods', (done) => transport.enableMethods(done));
    await this.call<void>('subscribe to C2D messages', (done) => transport.enableC2D(done));
    this.subscribed = true;
    await this.sync();
  }

  /** A transport call as a promise, with our deadline; never settles after cleanup matters. */
  private call<T>(what: string, operation: (done: (error?: Error | null, result?: T) => void) => void): Promise<T> {
    if (this.stopped) return Promise.reject(new Error('session ended'));
    let abandon!: (error: Error) => void;
    const work = new Promise<T>((resolve, reject) => {
      abandon = reject;
      try {
        operation((error, result) => (error ? reject(error) : resolve(result as T)));
      } catch (error) {
        reject(error);
      }
    });
    this.pending.add(abandon);
    const { clock, twinTimeoutMs } = this.settings;
    return withDeadline(clock, work, twinTimeoutMs, () => timeoutError(`${what}: no answer from the hub within ${twinTimeoutMs} ms`)).finally(() =>
      this.pending.delete(abandon),
    );
  }

  // Reported properties: the queue is flushed whenever it changes, one PATCH at a time. A PATCH
  // answered 429/5xx stays queued and is sent again after a backoff (the flush returns meanwhile,
  // so the twin GET is not held up); one refused for good (400/413) is split into one PATCH per
  // property, so only what the hub refuses is dropped.

  private patchReported(patch: Record<string, unknown>): Promise<{ status: number | undefined; error: Error | undefined }> {
    return this.call('twin PATCH reported', (done) =>
      this.session.transport.updateTwinReportedProperties(patch, (error?: Error | null) => done(null, { status: this.inbound.twinStatus, error: error ?? undefined })),
    );
  }

  /**
   * Arms twin retry `attempt` of `operation` (TWIN_RETRY_*): in [cap/2, cap] of the doubling curve,
   * logged (a warning on attempts 1, 2, 4, 8…), `fire` called when it is due. Returns the timer.
   */
  private armTwinRetry(operation: 'patch' | 'get', attempt: number, fields: Record<string, unknown>, message: string, fire: () => void): unknown {
    const capMs = curveCapMs(TWIN_RETRY_BASE_MS, TWIN_RETRY_MAX_MS, attempt);
    // Jittered per device, connection and attempt: a throttled fleet does not come back in step.
    const salt = operation === 'patch' ? '' : ':get';
    const [u] = nextRandom(seedFrom(`${this.session.deviceId}:${this.session.epoch}:${attempt}${salt}`));
    const delayMs = Math.round(capMs / 2 + (u * capMs) / 2);
    const log = isWarnedRetry(attempt) ? this.logger.warn : this.logger.debug;
    log.call(this.logger, { ...fields, attempt, retryInMs: delayMs }, message);
    return this.settings.clock.setTimeout(fire, delayMs);
  }

  private scheduleRetry(batch: ReportedBatch, status: number | undefined, error: Error | undefined): void {
    this.retries++;
    const fields = { status, err: error?.message, properties: Object.keys(batch.patch) };
    this.retryTimer = this.armTwinRetry('patch', this.retries, fields, 'hub did not take the reported properties; kept, sent again later', () => {
      this.retryTimer = null;
      if (!this.stopped) this.flush().catch((e: unknown) => this.lost(e));
    });
  }

  private async flushLoop(): Promise<void> {
    const { reported } = this.settings;
    const { logger } = this;
    let batch: ReportedBatch | null;
    while (!this.stopped && this.retryTimer === null && (batch = this.isolate.length > 0 ? reported.takeOne(this.isolate.shift()!) : reported.take())) {
      let answer: { status: number | undefined; error: Error | undefined };
      try {
        answer = await this.patchReported(batch.patch);
      } catch (error) {
        if (!this.stopped) this.lost(error); // no answer (timeout) or transport trouble: kept for the next connection
        return;
      }
      if (this.stopped) return; // answered on a connection that is over: sent again next time (idempotent)
      const { status, error } = answer;
      const verdict = reportedPatchVerdict(status, error);
      // The hub answered (took it, or refused it for good): a later 429 starts the backoff again.
      if (verdict === 'delivered' || verdict === 'refused') this.retries = 0;
      if (verdict === 'delivered') {
        reported.settle(batch);
        logger.debug({ properties: Object.keys(batch.patch) }, 'reported properties sent');
      } else if (verdict === 'refused' && batch.taken.length > 1) {
        logger.warn({ status, properties: Object.keys(batch.patch) }, 'hub refused reported properties; sending them one by one');
        this.isolate.push(...batch.taken.map(([key]) => key));
      } else if (verdict === 'refused') {
        const dropped = reported.refuse(batch, status!, error?.message);
        if (dropped.length > 0) logger.error({ status, properties: dropped, err: error?.message }, 'hub refused reported properties; dropped');
      } else if (verdict === 'retry') {
        this.scheduleRetry(batch, status, error);
        return;
      } else {
        this.lost(error);
        return;
      }
    }
  }

  private flush(): Promise<void> {
    if (!this.flushing) this.flushing = this.flushLoop().finally(() => (this.flushing = null));
    return this.flushing;
  }

  // Writable properties: the full twin, then the patches held back while it was read.

  private desiredPatch(patch: unknown): void {
    if (this.stopped || !isPlainObject(patch)) return;
    if (!this.synced) this.heldBack.push(patch);
    else this.settings.properties.applyPatch(patch);
  }

  private async syncOnce(): Promise<void> {
    await this.flush();
    if (this.stopped) return;
    const doc = await this.readTwin();
    if (this.stopped || doc === undefined) return;
    const { properties } = this.settings;
    properties.reconcile(doc);
    this.synced = true;
    for (const patch of this.heldBack.splice(0)) properties.applyPatch(patch);
    this.logger.debug({ desiredVersion: doc.desired.$version }, 'twin synchronised');
  }

  /**
   * The full twin, or undefined when the hub answered 429/5xx: the GET is then sent again later on
   * this connection, which works (telemetry and commands carry on); reconnecting would only add a
   * connection, a twin GET and a resilience report each time, about every 75 s. Anything else
   * (no answer, another refusal, a document we cannot use) ends the session: the machine decides.
   */
  private async readTwin(): Promise<TwinDoc | undefined> {
    const { transport } = this.session;
    const answer = await this.call<{ status: number | undefined; error: Error | undefined; twin: unknown }>('twin GET', (done) =>
      transport.getTwin((error?: Error | null, twin?: unknown) => done(null, { status: this.inbound.twinStatus, error: error ?? undefined, twin })),
    );
    if (this.stopped) return undefined;
    const { status, error, twin } = answer;
    if (status === 429 || (status !== undefined && status >= 500)) {
      this.scheduleGetRetry(status, error);
      return undefined;
    }
    if (error) throw error;
    const doc = asTwinDoc(twin);
    if (!doc) throw new Error('twin GET answered without a usable document');
    this.getRetries = 0;
    return doc;
  }

  /** One chain at a time: `sync` sends no GET while a retry waits. */
  private scheduleGetRetry(status: number, error: Error | undefined): void {
    this.getRetries++;
    // The next GET goes after every patch held back so far: its answer includes them.
    this.heldBack.length = 0;
    this.getRetryTimer = this.armTwinRetry('get', this.getRetries, { status, err: error?.message }, 'hub did not answer the twin GET; asking again later', () => {
      this.getRetryTimer = null;
      if (!this.stopped) this.sync().catch((e: unknown) => this.lost(e));
    });
  }

  private sync(): Promise<void> {
    if (this.syncing) {
      this.resync = true;
      return this.syncing;
    }
    // A GET the hub throttled is asked again on its timer, which reads the twin for every reason.
    if (this.getRetryTimer !== null) return Promise.resolve();
    this.syncing = (async () => {
      do {
        this.resync = false;
        await this.syncOnce();
      } while (this.resync && !this.stopped && this.getRetryTimer === null);
    })().finally(() => (this.syncing = null));
    return this.syncing;
  }
}

export function createPnpSessionFeature(settings: PnpSessionSettings): SessionFeature {
  /** The inbound listeners of each connection, by its transport (attached before open()). */
  const inboundOf = new WeakMap<object, Inbound>();
  const startSession = (connection: HubSession) => {
    // The hub attaches the inbound listeners before open(); for a caller that does not, they live
    // with this session.
    const attached = inboundOf.get(connection.transport);
    const ownInbound = attached ? undefined : new InboundListeners(connection, settings, inboundOf);
    const session = new PnpSession(settings, connection, attached ?? ownInbound!, ownInbound);
    return () => session.stop();
  };
  return Object.assign(startSession, {
    inbound: (connection: HubSession) => {
      const inbound = new InboundListeners(connection, settings, inboundOf);
      return () => inbound.detach();
    },
  });
}
