/**
 * An emulated Azure IoT Hub (device-facing MQTT surface only).
 *
 * Device identities are created when DPS assigns a device here (or with {@link EmulatedHub.addDevice}).
 * The broker never routes one device's topics to another: every request is answered by the hub
 * itself through `Client#publish` to the requesting connection.
 */
import type EventEmitter from 'node:events';
import { randomUUID } from 'node:crypto';
import type { AuthenticateError, Client as AedesClient } from 'aedes';
import { MqttEndpoint, type EndpointHooks } from './endpoint';
import type { EmulatorLogger } from './logger';
import { hubResource, verifySasToken } from './sas';
import { TelemetryStore } from './telemetry';
import {
  EmulatorError,
  type C2DProperties,
  type C2DSendResult,
  type ConnackRefusal,
  type DeviceInfo,
  type DisabledReason,
  type HubMetrics,
  type LocalCloudEvents,
  type MethodResult,
  type MovedDeviceRefusal,
  type RefusalReason,
  type RefusalRecord,
  type TelemetryRecord,
  type TwinDocument,
  type WithholdOptions,
} from './types';
import { jsonDepth, MAX_TWIN_DEPTH } from '../json';
import { RingBuffer, TokenBucket, formatPropertyBag, isJsonObject, mergePatch, parseJsonOr, parsePropertyBag, type JsonObject } from './util';

/** Marks packets the emulator itself publishes; only these are forwarded to devices. */
export const EMULATOR_CLIENT_ID = '$local-cloud';

const TWIN_SECTION_LIMIT = 32 * 1024;
/** Refusals remembered per device. */
const REFUSAL_HISTORY = 32;
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Twin, key and model of a device, as moved between hubs by a failover. */
export interface IdentitySnapshot {
  key: string;
  modelId?: string;
  desired: JsonObject;
  desiredVersion: number;
  reported: JsonObject;
  reportedVersion: number;
}

interface PendingC2D {
  messageId: string;
  topic: string;
  payload: Buffer;
}

interface Identity extends IdentitySnapshot {
  deviceId: string;
  status: 'enabled' | 'disabled';
  disabledReason?: DisabledReason;
  /** The code this device is refused with while disabled (a failover may choose its own). */
  refusalCode?: MovedDeviceRefusal;
  connects: number;
  lastConnectedAt?: number;
  c2dQueue: PendingC2D[];
  /** Its refused CONNECTs, newest last (bounded). */
  refusals: RingBuffer<RefusalRecord>;
  /** Tokens with `se` at or before this are refused (emulated expiry). */
  revokedThroughSec?: number;
}

type Subscription = 'c2d' | 'methods' | 'desired' | 'twin';

interface Session {
  deviceId: string;
  client: AedesClient;
  identity: Identity;
  tokenSe: number;
  modelId?: string;
  subs: Set<Subscription>;
  /** C2D written to the device, by MQTT message id, awaiting PUBACK (insertion order kept). */
  inflight: Map<number, PendingC2D>;
  nextMid: number;
  expiryTimer?: NodeJS.Timeout;
  registered: boolean;
}

interface PendingMethod {
  deviceId: string;
  resolve: (r: MethodResult) => void;
  timer: NodeJS.Timeout;
}

/** Resolved hub options. */
export interface HubSettings {
  connectRateLimitPerSec?: number;
  methodTimeoutMs: number;
  enforceTokenExpiry: boolean;
  c2dQueueLimit: number;
  refusalCode: MovedDeviceRefusal;
}

/** Everything a hub shares with the rest of the cloud. */
export interface HubContext {
  name: string;
  tls: { key: string; cert: string };
  settings: HubSettings;
  telemetry: TelemetryStore;
  events: EventEmitter<LocalCloudEvents>;
  logger: EmulatorLogger;
}

/** Parsed hub MQTT username: `{host}/{deviceId}/?api-version=...&model-id=...`. */
export function parseHubUsername(username: string | undefined): { host: string; deviceId: string; params: Record<string, string> } | undefined {
  if (!username) return undefined;
  const first = username.indexOf('/');
  if (first <= 0) return undefined;
  const second = username.indexOf('/', first + 1);
  if (second <= first + 1) return undefined;
  const rest = username.slice(second + 1);
  const q = rest.startsWith('?') ? rest.slice(1) : rest;
  return { host: username.slice(0, first), deviceId: username.slice(first + 1, second), params: parsePropertyBag(q) };
}

function refusal(code: ConnackRefusal, message: string): AuthenticateError {
  return Object.assign(new Error(message), { returnCode: code }) as unknown as AuthenticateError;
}

function splitTopic(topic: string): { path: string; query: Record<string, string> } {
  const q = topic.indexOf('?');
  return q < 0 ? { path: topic, query: {} } : { path: topic.slice(0, q), query: parsePropertyBag(topic.slice(q + 1)) };
}

function toBuffer(body: unknown): Buffer {
  if (Buffer.isBuffer(body)) return body;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  return Buffer.from(JSON.stringify(body ?? null), 'utf8');
}

/** One emulated IoT Hub. Create through `startLocalCloud`. */
export class EmulatedHub {
  private readonly identities = new Map<string, Identity>();
  private readonly sessionsByClient = new WeakMap<AedesClient, Session>();
  private readonly sessions = new Map<string, Session>();
  /** Fault injection: the next twin GET of a device answered with this raw status and body. */
  private readonly rawTwinAnswers = new Map<string, { status: number; body: string }>();
  private readonly pendingMethods = new Map<string, PendingMethod>();
  private connectBucket?: TokenBucket;
  private refuseCode: ConnackRefusal | null = null;
  private withhold: { store: boolean } | null = null;
  private ridCounter = 0;
  private stopped = false;
  private readonly counters = {
    connects: 0,
    refusedConnects: 0,
    refusedByCode: {} as Record<string, number>,
    refusedByReason: {} as Partial<Record<RefusalReason, number>>,
    messages: 0,
    twinGets: 0,
    reportedPatches: 0,
    desiredPushes: 0,
    methodCalls: 0,
    c2dSent: 0,
    c2dCompleted: 0,
  };
  private endpoint!: MqttEndpoint;

  private constructor(private readonly ctx: HubContext) {
    if (ctx.settings.connectRateLimitPerSec) this.connectBucket = new TokenBucket(ctx.settings.connectRateLimitPerSec);
  }

  /** @internal Creates and starts a hub. */
  static async start(ctx: HubContext): Promise<EmulatedHub> {
    const hub = new EmulatedHub(ctx);
    const hooks: EndpointHooks = {
      preConnect: (client, packet, cb) => {
        // Sessions are emulated by the hub itself; keep aedes from persisting/replaying anything.
        packet.clean = true;
        cb(null, true);
      },
      authenticate: (client, username, password, cb) => hub.authenticate(client, username, password, cb),
      authorizePublish: (client, packet, cb) => hub.authorizePublish(client, packet, cb),
      authorizeSubscribe: (client, sub, cb) => cb(null, hub.subscriptionKind(client, sub.topic) ? sub : null),
      authorizeForward: (_client, packet) => {
        // Only the hub's own packets reach devices. A C2D carries its MQTT message id after '#'
        // so the PUBACK can be matched (aedes keeps a message id that is already set).
        const marker = (packet as { clientId?: string }).clientId;
        if (!marker?.startsWith(EMULATOR_CLIENT_ID)) return null;
        const hash = marker.indexOf('#');
        if (hash > 0) packet.messageId = Number(marker.slice(hash + 1));
        return packet;
      },
    };
    hub.endpoint = await MqttEndpoint.start({
      name: ctx.name,
      tls: ctx.tls,
      hooks,
      logger: ctx.logger,
      onPuback: (client, messageId) => hub.onPuback(client, messageId),
    });
    const broker = hub.endpoint.broker;
    broker.on('client', (client) => hub.onRegistered(client));
    broker.on('clientDisconnect', (client) => hub.onGone(client));
    broker.on('subscribe', (subs, client) => hub.onSubscribed(client, subs.map((s) => s.topic), true));
    broker.on('unsubscribe', (topics, client) => hub.onSubscribed(client, topics, false));
    return hub;
  }

  /** Hub name (`hub-0` ...). */
  get name(): string {
    return this.ctx.name;
  }

  /** Host devices connect to: `localhost:PORT`. */
  get host(): string {
    return this.endpoint.host;
  }

  get port(): number {
    return this.endpoint.listenPort;
  }

  /** True while the listener accepts connections (false after {@link kill}). */
  get isUp(): boolean {
    return this.endpoint.isListening;
  }

  // -------------------------------------------------------------------------------------------
  // Connection handling

  private authenticate(
    client: AedesClient,
    username: string | undefined,
    password: Buffer | undefined,
    done: (error: AuthenticateError | null, success: boolean | null) => void,
  ): void {
    const deviceId = client.id;
    const identity = this.identities.get(deviceId);
    const refuse = (code: ConnackRefusal, reason: RefusalReason, detail: string): void => {
      this.counters.refusedConnects++;
      this.counters.refusedByCode[code] = (this.counters.refusedByCode[code] ?? 0) + 1;
      this.counters.refusedByReason[reason] = (this.counters.refusedByReason[reason] ?? 0) + 1;
      identity?.refusals.push({ at: Date.now(), code, reason });
      this.ctx.logger.debug({ clientId: client.id, code, reason, detail }, 'connect refused');
      done(refusal(code, detail), false);
    };
    if (this.stopped) return refuse(3, 'stopped', 'stopped');
    if (this.refuseCode !== null) return refuse(this.refuseCode, 'injected', 'refusing connections');
    if (this.connectBucket && !this.connectBucket.tryTake()) return refuse(3, 'overloaded', 'connection rate limit');
    const user = parseHubUsername(username);
    if (!user || user.deviceId !== deviceId) return refuse(5, 'unauthorized', 'bad username');
    if (!identity) return refuse(5, 'unknown-device', 'unknown device');
    if (identity.status !== 'enabled') {
      // A moved or disabled device: Azure answers 3 (see the README's fidelity table), 5 selectable.
      const moved = identity.disabledReason === 'failover';
      return refuse(identity.refusalCode ?? this.ctx.settings.refusalCode, moved ? 'moved' : 'disabled', `device disabled (${identity.disabledReason ?? 'operator'})`);
    }
    const check = verifySasToken(password?.toString('utf8'), {
      keys: [identity.key],
      resource: hubResource(this.host, deviceId),
      ...(identity.revokedThroughSec === undefined ? {} : { revokedThroughSec: identity.revokedThroughSec }),
    });
    if (!check.ok) return refuse(5, 'unauthorized', `token ${check.reason}`);
    const modelId = user.params['model-id'];
    const session: Session = {
      deviceId,
      client,
      identity,
      tokenSe: check.token.se,
      subs: new Set(),
      inflight: new Map(),
      nextMid: 1,
      registered: false,
      ...(modelId ? { modelId } : {}),
    };
    this.sessionsByClient.set(client, session);
    done(null, true);
  }

  private onRegistered(client: AedesClient): void {
    const s = this.sessionsByClient.get(client);
    if (!s) return;
    s.registered = true;
    // The identity may have been replaced (failback re-import) or removed meanwhile.
    const identity = this.identities.get(s.deviceId);
    if (!identity || identity.status !== 'enabled') {
      client.close();
      return;
    }
    s.identity = identity;
    this.sessions.set(s.deviceId, s);
    this.counters.connects++;
    identity.connects++;
    identity.lastConnectedAt = Date.now();
    if (s.modelId) identity.modelId = s.modelId;
    if (this.ctx.settings.enforceTokenExpiry) {
      const ms = s.tokenSe * 1000 - Date.now();
      s.expiryTimer = setTimeout(() => {
        if (this.sessions.get(s.deviceId) === s) {
          this.ctx.logger.debug({ deviceId: s.deviceId }, 'token expired: disconnecting');
          s.client.close();
        }
      }, Math.min(Math.max(ms, 0), MAX_TIMER_MS));
    }
    this.ctx.events.emit('deviceConnected', { hub: this.name, deviceId: s.deviceId, ...(s.modelId ? { modelId: s.modelId } : {}) });
  }

  private onGone(client: AedesClient): void {
    const s = this.sessionsByClient.get(client);
    if (!s) return;
    if (s.expiryTimer) clearTimeout(s.expiryTimer);
    s.subs.clear();
    if (s.inflight.size) {
      s.identity.c2dQueue.unshift(...s.inflight.values());
      s.inflight.clear();
    }
    if (this.sessions.get(s.deviceId) === s) {
      this.sessions.delete(s.deviceId);
      this.ctx.events.emit('deviceDisconnected', { hub: this.name, deviceId: s.deviceId });
    }
  }

  private subscriptionKind(client: AedesClient, topic: string): Subscription | undefined {
    const s = this.sessionsByClient.get(client);
    if (!s) return undefined;
    if (topic === `devices/${s.deviceId}/messages/devicebound/#`) return 'c2d';
    if (topic === '$iothub/methods/POST/#') return 'methods';
    if (topic === '$iothub/twin/PATCH/properties/desired/#') return 'desired';
    if (topic === '$iothub/twin/res/#') return 'twin';
    return undefined;
  }

  private onSubscribed(client: AedesClient, topics: string[], on: boolean): void {
    const s = this.sessionsByClient.get(client);
    if (!s) return;
    for (const t of topics) {
      const kind = this.subscriptionKind(client, t);
      if (!kind) continue;
      if (on) s.subs.add(kind);
      else s.subs.delete(kind);
    }
    if (on && s.subs.has('c2d')) this.pumpC2D(s);
  }

  private onPuback(client: AedesClient, messageId: number): void {
    const s = this.sessionsByClient.get(client);
    if (s?.inflight.delete(messageId)) this.counters.c2dCompleted++;
  }

  private publishTo(s: Session, topic: string, payload: Buffer | string, qos: 0 | 1, messageId?: number): void {
    const clientId = messageId === undefined ? EMULATOR_CLIENT_ID : `${EMULATOR_CLIENT_ID}#${messageId}`;
    s.client.publish(
      { cmd: 'publish', topic, payload, qos, dup: false, retain: false, clientId } as never,
      (err?: Error) => {
        if (err) this.ctx.logger.debug({ deviceId: s.deviceId, topic, err: err.message }, 'publish to device failed');
      },
    );
  }

  // -------------------------------------------------------------------------------------------
  // Device requests

  private authorizePublish(
    client: AedesClient | null,
    packet: { topic: string; payload: string | Buffer; qos: 0 | 1 | 2 },
    cb: (error?: Error | null) => void,
  ): void {
    const s = client ? this.sessionsByClient.get(client) : undefined;
    if (!s) return cb(new Error('not authenticated'));
    const topic = packet.topic;
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    const events = `devices/${s.deviceId}/messages/events/`;
    if (topic.startsWith(events)) {
      if (!this.withhold || this.withhold.store) this.storeTelemetry(s, topic.slice(events.length), payload);
      if (this.withhold && packet.qos === 1) packet.qos = 0; // processed, but no PUBACK goes back
      return cb(null);
    }
    if (topic.startsWith('$iothub/twin/')) {
      this.onTwinRequest(s, topic, payload);
      return cb(null);
    }
    if (topic.startsWith('$iothub/methods/res/')) {
      this.onMethodResponse(s, topic, payload);
      return cb(null);
    }
    // IoT Hub drops the connection on a publish to a topic it does not serve.
    cb(new Error(`topic not allowed: ${topic}`));
  }

  private storeTelemetry(s: Session, bag: string, body: Buffer): void {
    const all = parsePropertyBag(bag.endsWith('/') ? bag.slice(0, -1) : bag);
    const systemProperties: Record<string, string> = {};
    const properties: Record<string, string> = {};
    for (const [k, v] of Object.entries(all)) {
      if (k.startsWith('$.')) systemProperties[k] = v;
      else properties[k] = v;
    }
    const sp = systemProperties;
    const created = properties['iothub-creation-time-utc'];
    const record = this.ctx.telemetry.add({
      hub: this.name,
      deviceId: s.deviceId,
      body,
      properties,
      systemProperties,
      receivedAt: Date.now(),
      ...(sp['$.mid'] !== undefined ? { messageId: sp['$.mid'] } : {}),
      ...(sp['$.cid'] !== undefined ? { correlationId: sp['$.cid'] } : {}),
      ...(sp['$.ct'] !== undefined ? { contentType: sp['$.ct'] } : {}),
      ...(sp['$.ce'] !== undefined ? { contentEncoding: sp['$.ce'] } : {}),
      ...(sp['$.sub'] !== undefined ? { component: sp['$.sub'] } : {}),
      ...(created !== undefined ? { creationTimeUtc: created } : {}),
    });
    this.counters.messages++;
    this.ctx.events.emit('telemetry', record);
  }

  private twinDocument(identity: Identity): TwinDocument {
    return {
      desired: { ...structuredClone(identity.desired), $version: identity.desiredVersion },
      reported: { ...structuredClone(identity.reported), $version: identity.reportedVersion },
    };
  }

  private onTwinRequest(s: Session, topic: string, payload: Buffer): void {
    const { path, query } = splitTopic(topic);
    const rid = query['$rid'] ?? '';
    const reply = (status: number, body: string, extra = ''): void =>
      this.publishTo(s, `$iothub/twin/res/${status}/?$rid=${encodeURIComponent(rid)}${extra}`, body, 0);
    const error = (status: number, errorCode: number, message: string): void =>
      reply(status, JSON.stringify({ errorCode, message, trackingId: randomUUID(), timestampUtc: new Date().toISOString() }));
    if (path === '$iothub/twin/GET/') {
      this.counters.twinGets++;
      const raw = this.rawTwinAnswers.get(s.identity.deviceId);
      if (raw) {
        this.rawTwinAnswers.delete(s.identity.deviceId);
        return reply(raw.status, raw.body);
      }
      return reply(200, JSON.stringify(this.twinDocument(s.identity)));
    }
    if (path === '$iothub/twin/PATCH/properties/reported/') {
      const patch = parseJsonOr(payload.toString('utf8'), undefined);
      if (!isJsonObject(patch)) return error(400, 400004, 'Reported properties patch must be a JSON object.');
      if (jsonDepth(patch) > MAX_TWIN_DEPTH) return error(400, 400004, `Reported properties are nested deeper than ${MAX_TWIN_DEPTH} levels.`);
      const next = mergePatch(s.identity.reported, patch);
      if (Buffer.byteLength(JSON.stringify(next)) > TWIN_SECTION_LIMIT) {
        return error(400, 400027, 'Reported properties exceed the 32 KB limit.');
      }
      s.identity.reported = next;
      s.identity.reportedVersion++;
      this.counters.reportedPatches++;
      return reply(204, '', `&$version=${s.identity.reportedVersion}`);
    }
    error(400, 400001, `Unsupported twin operation: ${path}`);
  }

  private onMethodResponse(s: Session, topic: string, payload: Buffer): void {
    const { path, query } = splitTopic(topic);
    const status = Number(path.split('/')[3]);
    const rid = query['$rid'];
    const pending = rid === undefined ? undefined : this.pendingMethods.get(rid);
    if (!pending || pending.deviceId !== s.deviceId) return;
    this.pendingMethods.delete(rid!);
    clearTimeout(pending.timer);
    const text = payload.toString('utf8');
    pending.resolve({ status: Number.isFinite(status) ? status : 500, payload: text === '' ? null : parseJsonOr(text, text) });
  }

  private pumpC2D(s: Session): void {
    if (!s.subs.has('c2d') || s.client.closed || this.sessions.get(s.deviceId) !== s) return;
    const queue = s.identity.c2dQueue;
    while (queue.length) {
      const m = queue.shift()!;
      let mid = s.nextMid;
      while (s.inflight.has(mid)) mid = (mid % 65535) + 1;
      s.nextMid = (mid % 65535) + 1;
      s.inflight.set(mid, m);
      this.counters.c2dSent++;
      this.publishTo(s, m.topic, m.payload, 1, mid);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Identity registry (service side)

  private identity(deviceId: string): Identity {
    const identity = this.identities.get(deviceId);
    if (!identity) throw new EmulatorError('UNKNOWN_DEVICE', `device '${deviceId}' does not exist on ${this.name}`);
    return identity;
  }

  /** Creates a device identity (as DPS or an operator would). Existing identities get the new key. */
  addDevice(deviceId: string, key: string): void {
    const existing = this.identities.get(deviceId);
    if (existing) {
      existing.key = key;
      return;
    }
    this.identities.set(deviceId, {
      deviceId,
      key,
      status: 'enabled',
      connects: 0,
      c2dQueue: [],
      refusals: new RingBuffer<RefusalRecord>(REFUSAL_HISTORY),
      desired: {},
      desiredVersion: 1,
      reported: {},
      reportedVersion: 1,
    });
  }

  /** True when the identity exists here. */
  hasDevice(deviceId: string): boolean {
    return this.identities.has(deviceId);
  }

  /** @internal Twin, key and model for a migration. */
  exportIdentity(deviceId: string): IdentitySnapshot {
    const i = this.identity(deviceId);
    return {
      key: i.key,
      desired: structuredClone(i.desired),
      desiredVersion: i.desiredVersion,
      reported: structuredClone(i.reported),
      reportedVersion: i.reportedVersion,
      ...(i.modelId ? { modelId: i.modelId } : {}),
    };
  }

  /** @internal Creates or overwrites an identity from a migration snapshot and enables it. */
  importIdentity(deviceId: string, snap: IdentitySnapshot): void {
    this.addDevice(deviceId, snap.key);
    const i = this.identity(deviceId);
    i.desired = structuredClone(snap.desired);
    i.desiredVersion = snap.desiredVersion;
    i.reported = structuredClone(snap.reported);
    i.reportedVersion = snap.reportedVersion;
    if (snap.modelId) i.modelId = snap.modelId;
    i.status = 'enabled';
    delete i.disabledReason;
    delete i.refusalCode;
  }

  /** Snapshot of one identity (undefined when absent). */
  device(deviceId: string): DeviceInfo | undefined {
    const i = this.identities.get(deviceId);
    if (!i) return undefined;
    const s = this.sessions.get(deviceId);
    return {
      deviceId,
      hub: this.name,
      status: i.status,
      connected: !!s,
      connects: i.connects,
      c2dPending: i.c2dQueue.length + (s?.inflight.size ?? 0),
      ...(i.disabledReason ? { disabledReason: i.disabledReason } : {}),
      ...(i.modelId ? { modelId: i.modelId } : {}),
      ...(i.lastConnectedAt ? { lastConnectedAt: i.lastConnectedAt } : {}),
    };
  }

  /** Snapshots of all identities. */
  devices(): DeviceInfo[] {
    return [...this.identities.keys()].map((id) => this.device(id)!);
  }

  /** True while the device has a live connection to this hub. */
  isConnected(deviceId: string): boolean {
    return this.sessions.has(deviceId);
  }

  /**
   * Disables the identity and drops its connection; it is refused from now on with `refusalCode`
   * (default: the hub's `refusalCode`, 3 like Azure).
   */
  disableDevice(deviceId: string, reason: DisabledReason = 'operator', refusalCode?: MovedDeviceRefusal): void {
    const i = this.identity(deviceId);
    i.status = 'disabled';
    i.disabledReason = reason;
    if (refusalCode === undefined) delete i.refusalCode;
    else i.refusalCode = refusalCode;
    this.disconnect(deviceId);
  }

  /** Enables the identity again. */
  enableDevice(deviceId: string): void {
    const i = this.identity(deviceId);
    i.status = 'enabled';
    delete i.disabledReason;
    delete i.refusalCode;
  }

  /** The device's refused CONNECTs here, oldest first (bounded): why and with which code. */
  refusals(deviceId: string): RefusalRecord[] {
    return this.identity(deviceId).refusals.toArray();
  }

  /** Deletes the identity (twin and queued C2D included) and drops its connection. */
  deleteDevice(deviceId: string): void {
    this.identity(deviceId);
    this.identities.delete(deviceId);
    this.disconnect(deviceId);
  }

  /** Closes the device's connection, if any (a server-side disconnect: the device sees a close). */
  disconnect(deviceId: string): boolean {
    const s = this.sessions.get(deviceId);
    if (!s) return false;
    s.client.close();
    return true;
  }

  /**
   * Emulates token expiry: the current connection is dropped and every token with an expiry
   * (`se`) up to the current one (at least up to now) is refused with CONNACK 5. A token the
   * device signs later has a later `se` and is accepted.
   */
  expireTokens(deviceId: string): void {
    const i = this.identity(deviceId);
    const s = this.sessions.get(deviceId);
    const now = Math.floor(Date.now() / 1000);
    i.revokedThroughSec = Math.max(i.revokedThroughSec ?? 0, s?.tokenSe ?? 0, now);
    this.disconnect(deviceId);
  }

  // -------------------------------------------------------------------------------------------
  // Twin, methods, C2D (service side)

  /** The device twin (a copy). */
  getTwin(deviceId: string): TwinDocument {
    return this.twinDocument(this.identity(deviceId));
  }

  /**
   * Applies a desired-properties patch (merge patch, null deletes), bumps the desired `$version`
   * and pushes the patch with its `$version` to the device when it is connected and subscribed.
   * Returns the new desired `$version`.
   */
  updateDesired(deviceId: string, patch: JsonObject): number {
    if (!isJsonObject(patch)) throw new EmulatorError('INVALID_ARGUMENT', 'desired patch must be a JSON object');
    if (jsonDepth(patch) > MAX_TWIN_DEPTH) throw new EmulatorError('INVALID_ARGUMENT', `desired patch nested deeper than ${MAX_TWIN_DEPTH} levels`);
    const i = this.identity(deviceId);
    const next = mergePatch(i.desired, patch);
    if (Buffer.byteLength(JSON.stringify(next)) > TWIN_SECTION_LIMIT) {
      throw new EmulatorError('INVALID_ARGUMENT', 'desired properties exceed the 32 KB limit');
    }
    i.desired = next;
    i.desiredVersion++;
    const s = this.sessions.get(deviceId);
    if (s?.subs.has('desired')) {
      this.counters.desiredPushes++;
      const body = JSON.stringify({ ...patch, $version: i.desiredVersion });
      this.publishTo(s, `$iothub/twin/PATCH/properties/desired/?$version=${i.desiredVersion}`, body, 0);
    }
    return i.desiredVersion;
  }

  /**
   * Fault injection: answer the device's next twin GET with this status and raw body (junk JSON,
   * missing sections, ...), verbatim. No real hub does this; devices must survive it anyway.
   */
  answerNextTwinGetRaw(deviceId: string, status: number, body: string): void {
    this.identity(deviceId);
    this.rawTwinAnswers.set(deviceId, { status, body });
  }

  /**
   * Fault injection: push a desired-properties patch with this raw body to the connected device
   * (junk JSON, an array, ...). The stored twin is not changed.
   * @returns false when the device is not connected and subscribed to desired patches.
   */
  pushRawDesired(deviceId: string, body: string): boolean {
    const i = this.identity(deviceId);
    const s = this.sessions.get(deviceId);
    if (!s?.subs.has('desired')) return false;
    this.publishTo(s, `$iothub/twin/PATCH/properties/desired/?$version=${i.desiredVersion + 1}`, body, 0);
    return true;
  }

  /**
   * Invokes a direct method. Resolves (never rejects) with the device's status and payload,
   * 404 when the device is unknown, not connected or not subscribed to methods, 504 on timeout.
   */
  invokeMethod(deviceId: string, methodName: string, payload?: unknown, opts: { timeoutMs?: number } = {}): Promise<MethodResult> {
    this.counters.methodCalls++;
    const now = new Date().toISOString();
    if (!this.identities.has(deviceId)) {
      return Promise.resolve({ status: 404, payload: { errorCode: 404001, message: `Device '${deviceId}' not found.`, timestampUtc: now } });
    }
    const s = this.sessions.get(deviceId);
    if (!s || !s.subs.has('methods') || this.stopped) {
      return Promise.resolve({ status: 404, payload: { errorCode: 404103, message: 'Timed out waiting for device to connect.', timestampUtc: now } });
    }
    const rid = (++this.ridCounter).toString(16);
    const timeoutMs = opts.timeoutMs ?? this.ctx.settings.methodTimeoutMs;
    return new Promise<MethodResult>((resolve) => {
      const timer = setTimeout(() => {
        this.pendingMethods.delete(rid);
        resolve({ status: 504, payload: { errorCode: 504101, message: 'Timed out waiting for the response from device.', timestampUtc: new Date().toISOString() } });
      }, Math.min(timeoutMs, MAX_TIMER_MS));
      this.pendingMethods.set(rid, { deviceId, resolve, timer });
      this.publishTo(s, `$iothub/methods/POST/${methodName}/?$rid=${rid}`, JSON.stringify(payload ?? null), 0);
    });
  }

  /**
   * Sends a cloud-to-device message: written now when the device is subscribed, otherwise
   * queued (up to the queue limit, 50 by default) and delivered when it subscribes. Messages
   * not acknowledged (PUBACK) before a disconnect are queued again.
   * @throws EmulatorError C2D_QUEUE_FULL, UNKNOWN_DEVICE
   */
  sendC2D(deviceId: string, body: Buffer | string | JsonObject, properties: C2DProperties = {}): C2DSendResult {
    const i = this.identity(deviceId);
    const s = this.sessions.get(deviceId);
    const pending = i.c2dQueue.length + (s?.inflight.size ?? 0);
    if (pending >= this.ctx.settings.c2dQueueLimit) {
      throw new EmulatorError('C2D_QUEUE_FULL', `device '${deviceId}' already has ${pending} pending C2D messages`);
    }
    const { messageId = randomUUID(), correlationId, ...user } = properties;
    const bag: Record<string, string> = { '$.mid': messageId, '$.to': `/devices/${deviceId}/messages/devicebound` };
    if (correlationId) bag['$.cid'] = correlationId;
    for (const [k, v] of Object.entries(user)) if (v !== undefined) bag[k] = v;
    i.c2dQueue.push({ messageId, topic: `devices/${deviceId}/messages/devicebound/${formatPropertyBag(bag)}`, payload: toBuffer(body) });
    if (s?.subs.has('c2d')) {
      this.pumpC2D(s);
      return { messageId, status: 'sent' };
    }
    return { messageId, status: 'queued' };
  }

  /**
   * Fault injection: a C2D message whose property bag is sent exactly as given (e.g. a malformed
   * %-escape that no real hub would produce), queued and delivered like {@link sendC2D}.
   * @throws EmulatorError C2D_QUEUE_FULL, UNKNOWN_DEVICE
   */
  sendC2DRaw(deviceId: string, body: Buffer | string, rawPropertyBag: string): C2DSendResult {
    const i = this.identity(deviceId);
    const s = this.sessions.get(deviceId);
    const pending = i.c2dQueue.length + (s?.inflight.size ?? 0);
    if (pending >= this.ctx.settings.c2dQueueLimit) {
      throw new EmulatorError('C2D_QUEUE_FULL', `device '${deviceId}' already has ${pending} pending C2D messages`);
    }
    const messageId = randomUUID();
    i.c2dQueue.push({ messageId, topic: `devices/${deviceId}/messages/devicebound/${rawPropertyBag}`, payload: toBuffer(body) });
    if (s?.subs.has('c2d')) {
      this.pumpC2D(s);
      return { messageId, status: 'sent' };
    }
    return { messageId, status: 'queued' };
  }

  // -------------------------------------------------------------------------------------------
  // Telemetry and metrics

  /** Telemetry stored by this hub, oldest first. */
  telemetry(deviceId?: string): TelemetryRecord[] {
    return this.ctx.telemetry.list({ hub: this.name, ...(deviceId ? { deviceId } : {}) });
  }

  /** Forgets this hub's stored telemetry. */
  clearTelemetry(): void {
    this.ctx.telemetry.clear({ hub: this.name });
  }

  metrics(): HubMetrics {
    return {
      ...this.counters,
      refusedByCode: { ...this.counters.refusedByCode },
      refusedByReason: { ...this.counters.refusedByReason },
      currentConnections: this.sessions.size,
      mutedConnections: this.endpoint.mutedSockets,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Faults

  /** Listener closed and every connection destroyed (devices see ECONNREFUSED until restart). */
  async kill(): Promise<void> {
    await this.endpoint.kill();
  }

  /** Listens again on the same port. */
  async restart(): Promise<void> {
    await this.endpoint.restart();
  }

  /** Answer every CONNECT with this CONNACK code (3 = server unavailable); null to stop. */
  refuse(code: ConnackRefusal | null): void {
    this.refuseCode = code;
  }

  /** Accept TCP/TLS but never answer an MQTT packet; established connections go silent too. */
  blackhole(on: boolean): void {
    this.endpoint.setBlackhole(on);
  }

  get isBlackholed(): boolean {
    return this.endpoint.isBlackholed;
  }

  /** Stop sending PUBACKs for telemetry (the connection stays alive and pings are answered). */
  withholdPubacks(on: boolean, opts: WithholdOptions = {}): void {
    this.withhold = on ? { store: opts.store ?? true } : null;
  }

  /** Change the connection rate limit (null: unlimited). */
  setConnectRateLimit(perSec: number | null): void {
    this.connectBucket = perSec ? new TokenBucket(perSec) : undefined;
  }

  /** @internal JSON-friendly state. */
  state(): object {
    return {
      name: this.name,
      host: this.host,
      up: this.isUp,
      blackholed: this.isBlackholed,
      refusing: this.refuseCode,
      withholdingPubacks: !!this.withhold,
      metrics: this.metrics(),
      devices: this.devices(),
    };
  }

  /** @internal Stops the hub: pending method calls resolve with 503, sockets and timers go. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const [rid, p] of this.pendingMethods) {
      clearTimeout(p.timer);
      this.pendingMethods.delete(rid);
      p.resolve({ status: 503, payload: { errorCode: 503001, message: 'Hub stopped.' } });
    }
    for (const s of this.sessions.values()) if (s.expiryTimer) clearTimeout(s.expiryTimer);
    await this.endpoint.close();
    for (const s of this.sessions.values()) if (s.expiryTimer) clearTimeout(s.expiryTimer);
    this.sessions.clear();
  }
}
