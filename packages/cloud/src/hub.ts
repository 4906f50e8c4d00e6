/**
 * An emulated Azure IoT Hub (device-facing MQTT surface only).
 *
 * Device identities are created when DPS assigns a device here (or with {@link EmulatedHub.addDevice}).
 * The broker never routes one device's topics to another: every request is answered by the hub
 * itself through `Client#publish` to the requesting connection.
 */
import type EventEmitter from 'node:events';
import { randomUUID } from 'node:crypto';
import type { Writable } from 'node:stream';
import type { AuthenticateError, Client as AedesClient } from 'aedes';
import { MqttEndpoint, type EndpointHooks } from './endpoint';
import type { EmulatorLogger } from './logger';
import { hubResource, verifySasToken } from './sas';
import { TelemetryStore } from './telemetry';
import { checkAttestation, peerChainOf, type CloudPki, type X509Attestation } from './x509';
import {
  EmulatorError,
  type C2DProperties,
  type C2DSendOptions,
  type C2DSendResult,
  type ConnackRefusal,
  type DeviceInfo,
  type DisabledReason,
  type ExpiredCertificateRefusal,
  type HubMetrics,
  type LocalCloudEvents,
  type MethodInvokeOptions,
  type MethodResult,
  type MovedDeviceRefusal,
  type RefusalReason,
  type RefusalRecord,
  type TelemetryRecord,
  type TwinDocument,
  type WithholdOptions,
} from './types';
import {
  D2C_MESSAGE_LIMIT_BYTES,
  RingBuffer,
  TWIN_SECTION_LIMIT_BYTES,
  TokenBucket,
  d2cMessageSize,
  formatPropertyBag,
  isJsonObject,
  jsonDepth,
  MAX_TWIN_DEPTH,
  mergePatch,
  parseJsonOr,
  ServiceClock,
  parsePropertyBag,
  twinPatchProblem,
  twinSize,
  withoutTwinMetadata,
  type JsonObject,
} from './util';

/** Marks packets the emulator itself publishes; only these are forwarded to devices. */
export const EMULATOR_CLIENT_ID = '$local-cloud';

/** Refusals remembered per device. */
const REFUSAL_HISTORY = 32;
const MAX_TIMER_MS = 2 ** 31 - 1;

/** IoT Hub's limit for a direct method's payload ("Understand direct methods"). */
const METHOD_PAYLOAD_LIMIT_BYTES = 128 * 1024;
/** IoT Hub's bounds for `responseTimeoutInSeconds` and `connectTimeoutInSeconds`. */
const METHOD_RESPONSE_TIMEOUT_SEC = { min: 5, max: 300 } as const;
const METHOD_CONNECT_TIMEOUT_MAX_SEC = 300;

/** IoT Hub's C2D settings ("Send cloud-to-device messages"): TTL default 1 hour, 1 minute to 2 days. */
const C2D_DEFAULT_TTL_MS = 60 * 60_000;
const C2D_MIN_DEFAULT_TTL_MS = 60_000;
const C2D_MAX_TTL_MS = 48 * 60 * 60_000;

/** maxDeliveryCount: default 10, 1 to 100. */
const C2D_DEFAULT_MAX_DELIVERY_COUNT = 10;
const C2D_MAX_DELIVERY_COUNT_LIMIT = 100;

/** Twin, key and model of a device, as moved between hubs by a failover. */
export interface IdentitySnapshot {
  key: string;
  secondaryKey?: string;
  /** Set for an X.509 identity: authenticated by its TLS client certificate, never by a key. */
  x509?: X509Attestation;
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
  /** Epoch ms after which the message is dropped instead of delivered. */
  expiresAt: number;
  /** Times written to the device (a delivery not acknowledged before a disconnect counts). */
  deliveryCount: number;
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
  /**
   * The subscriptions of the device's persistent MQTT session (it connected with clean=false),
   * kept across connections as IoT Hub keeps them; absent after a clean connect.
   */
  mqttSession?: Set<Subscription>;
}

type Subscription = 'c2d' | 'methods' | 'desired' | 'twin';

/** The topic filter of each subscription the hub serves (as the SDK subscribes). */
const SUBSCRIPTION_FILTERS: ReadonlyArray<[Subscription, (deviceId: string) => string]> = [
  ['c2d', (deviceId) => `devices/${deviceId}/messages/devicebound/#`],
  ['methods', () => '$iothub/methods/POST/#'],
  ['desired', () => '$iothub/twin/PATCH/properties/desired/#'],
  ['twin', () => '$iothub/twin/res/#'],
];

interface Session {
  deviceId: string;
  client: AedesClient;
  identity: Identity;
  tokenSe: number;
  /** Authenticated by certificate: no token to expire. */
  x509?: true;
  modelId?: string;
  subs: Set<Subscription>;
  /** C2D written to the device, by MQTT message id, awaiting PUBACK (insertion order kept). */
  inflight: Map<number, PendingC2D>;
  nextMid: number;
  expiryTimer?: NodeJS.Timeout;
  registered: boolean;
  /** Connected with clean=false: subscription changes are kept in the identity's MQTT session. */
  persistent?: boolean;
  /** While set, writes to the device are held (corked) to leave in one write: see `resumeInOneWrite`. */
  burst?: { collecting: boolean; pending: number };
}

interface PendingMethod {
  deviceId: string;
  resolve: (r: MethodResult) => void;
  timer: NodeJS.Timeout;
}

/** The one aedes persistence call the hub answers: a returning client's subscriptions. */
interface SubscriptionLookup {
  subscriptionsByClient(client: { id: string }): Promise<Array<{ topic: string; qos: 0 | 1 }>>;
}

/** Resolved hub options. */
export interface HubSettings {
  connectRateLimitPerSec?: number;
  methodTimeoutMs: number;
  enforceTokenExpiry: boolean;
  c2dQueueLimit: number;
  refusalCode: MovedDeviceRefusal;
  expiredCertificateRefusal?: ExpiredCertificateRefusal;
}

/** Everything a hub shares with the rest of the cloud. */
export interface HubContext {
  name: string;
  tls: { key: string; cert: string };
  settings: HubSettings;
  telemetry: TelemetryStore;
  events: EventEmitter<LocalCloudEvents>;
  logger: EmulatorLogger;
  /** The X.509 enrollment group's CA and revocation list (X.509 identities refused without it). */
  pki?: CloudPki;
  /** The service's clock (token expiry). Default: the machine's. */
  clock?: ServiceClock;
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

/**
 * Response and connect timeouts of a method call in ms, or why IoT Hub would refuse them (400).
 * The older `timeoutMs` is taken as it is; the IoT Hub options are checked against its bounds.
 */
function methodTiming(opts: MethodInvokeOptions, defaultResponseMs: number): { responseTimeoutMs: number; connectTimeoutMs: number } | string {
  const { timeoutMs, responseTimeoutSec, connectTimeoutSec = 0 } = opts;
  if (timeoutMs !== undefined && responseTimeoutSec !== undefined) return 'Give timeoutMs or responseTimeoutSec, not both.';
  const { min, max } = METHOD_RESPONSE_TIMEOUT_SEC;
  if (responseTimeoutSec !== undefined && !(Number.isInteger(responseTimeoutSec) && responseTimeoutSec >= min && responseTimeoutSec <= max)) {
    return `responseTimeoutInSeconds must be a whole number from ${min} to ${max}.`;
  }
  if (!(Number.isInteger(connectTimeoutSec) && connectTimeoutSec >= 0 && connectTimeoutSec <= METHOD_CONNECT_TIMEOUT_MAX_SEC)) {
    return `connectTimeoutInSeconds must be a whole number from 0 to ${METHOD_CONNECT_TIMEOUT_MAX_SEC}.`;
  }
  const responseTimeoutMs = responseTimeoutSec !== undefined ? responseTimeoutSec * 1000 : (timeoutMs ?? defaultResponseMs);
  return { responseTimeoutMs, connectTimeoutMs: connectTimeoutSec * 1000 };
}

/** One emulated IoT Hub. Create through `startLocalCloud`. */
export class EmulatedHub {
  private readonly identities = new Map<string, Identity>();
  private readonly sessionsByClient = new WeakMap<AedesClient, Session>();
  private readonly sessions = new Map<string, Session>();
  /** Fault injection: the next twin GET of a device answered with this raw status and body. */
  private readonly rawTwinAnswers = new Map<string, { status: number; body: string }>();
  /** Fault injection: the next reported PATCHes of a device answered with this status (not applied). */
  private readonly reportedPatchAnswers = new Map<string, { status: number; body: string; remaining: number }>();
  private readonly pendingMethods = new Map<string, PendingMethod>();
  /** Method calls with a connect timeout, waiting for their device to subscribe to methods. */
  private readonly methodWaiters = new Map<string, Set<() => void>>();
  /** The `clean` flag of each CONNECT, until the connection is registered. */
  private readonly cleanRequested = new WeakMap<AedesClient, boolean>();
  private c2dDelivery: { defaultTtlMs: number; maxDeliveryCount: number | null } = {
    defaultTtlMs: C2D_DEFAULT_TTL_MS,
    maxDeliveryCount: C2D_DEFAULT_MAX_DELIVERY_COUNT,
  };
  private connectBucket?: TokenBucket;
  private refuseCode: ConnackRefusal | null = null;
  private withhold: { store: boolean } | null = null;
  private oneWriteResume = false;
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
    oversizedMessages: 0,
    qos2Publishes: 0,
    c2dExpired: 0,
    c2dDeadLettered: 0,
  };
  private endpoint!: MqttEndpoint;

  /** The service's clock: the cloud's, or the machine's for a hub started on its own. */
  private readonly clock: ServiceClock;

  private constructor(private readonly ctx: HubContext) {
    this.clock = ctx.clock ?? new ServiceClock();
    if (ctx.settings.connectRateLimitPerSec) this.connectBucket = new TokenBucket(ctx.settings.connectRateLimitPerSec);
  }

  /** @internal Creates and starts a hub. */
  static async start(ctx: HubContext): Promise<EmulatedHub> {
    const hub = new EmulatedHub(ctx);
    const hooks: EndpointHooks = {
      preConnect: (client, packet, cb) => {
        // The hub keeps MQTT sessions itself (Identity.mqttSession). `clean` reaches aedes as sent
        // only so that, for clean=false, it asks its persistence for the session's subscriptions
        // (answered by the hub below) and sets the CONNACK's sessionPresent from them.
        hub.cleanRequested.set(client, packet.clean !== false);
        cb(null, true);
      },
      authenticate: (client, username, password, cb) => {
        // aedes has just copied the CONNECT's flag onto the client: a clean client is one aedes
        // stores nothing for (no outgoing queue, no subscriptions, nothing replayed).
        (client as { clean: boolean }).clean = true;
        hub.authenticate(client, username, password, cb);
      },
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
    const persistence = (broker as unknown as { persistence: SubscriptionLookup }).persistence;
    persistence.subscriptionsByClient = (client) => Promise.resolve(hub.sessionFilters(client.id));
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
    if (identity.x509) {
      // X.509: the CONNECT has a username and no password; the TLS client certificate decides.
      const cert = this.ctx.pki
        ? checkAttestation(this.ctx.pki, peerChainOf(client.conn), identity.x509, deviceId)
        : ({ ok: false, reason: 'untrusted', detail: 'no X.509 CA configured' } as const);
      if (!cert.ok) {
        const outOfDates = cert.reason === 'expired' || cert.reason === 'not-yet-valid';
        if (outOfDates && (this.ctx.settings.expiredCertificateRefusal ?? 'close') === 'close') {
          this.counters.refusedConnects++;
          this.counters.refusedByReason.certificate = (this.counters.refusedByReason.certificate ?? 0) + 1;
          identity.refusals.push({ at: Date.now(), code: 5, reason: 'certificate', closed: true });
          this.ctx.logger.debug({ clientId: client.id, reason: cert.reason, detail: cert.detail }, 'certificate out of its dates: connection closed');
          (client.conn as unknown as Writable).destroy();
          return done(refusal(5, cert.detail), false);
        }
        return refuse(5, 'certificate', `certificate ${cert.reason}: ${cert.detail}`);
      }
      return this.accept(client, identity, user.params['model-id'], undefined, done);
    }
    const check = verifySasToken(password?.toString('utf8'), {
      keys: identity.secondaryKey === undefined ? [identity.key] : [identity.key, identity.secondaryKey],
      resource: hubResource(this.host, deviceId),
      nowSec: this.clock.nowSec(),
      ...(identity.revokedThroughSec === undefined ? {} : { revokedThroughSec: identity.revokedThroughSec }),
    });
    if (!check.ok) return refuse(5, 'unauthorized', `token ${check.reason}`);
    this.accept(client, identity, user.params['model-id'], check.token.se, done);
  }

  /** An authenticated CONNECT: the session starts (`tokenSe` undefined: by certificate, nothing expires). */
  private accept(
    client: AedesClient,
    identity: Identity,
    modelId: string | undefined,
    tokenSe: number | undefined,
    done: (error: AuthenticateError | null, success: boolean | null) => void,
  ): void {
    const session: Session = {
      deviceId: identity.deviceId,
      client,
      identity,
      tokenSe: tokenSe ?? 0,
      ...(tokenSe === undefined ? { x509: true as const } : {}),
      subs: new Set(),
      inflight: new Map(),
      nextMid: 1,
      registered: false,
      ...(modelId ? { modelId } : {}),
    };
    this.sessionsByClient.set(client, session);
    if (this.oneWriteResume && this.cleanRequested.get(client) === false && identity.mqttSession) {
      // Before aedes writes the CONNACK: it leaves together with the resumed session's deliveries.
      (client.conn as unknown as Writable).cork();
      session.burst = { collecting: true, pending: 0 };
    }
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
    // MQTT 3.1.1 (and IoT Hub): a clean connect discards the stored session, otherwise the session
    // starts or resumes with its subscriptions.
    s.persistent = this.cleanRequested.get(client) === false;
    if (s.persistent) identity.mqttSession ??= new Set();
    else delete identity.mqttSession;
    for (const kind of identity.mqttSession ?? []) s.subs.add(kind);
    this.sessions.set(s.deviceId, s);
    this.counters.connects++;
    identity.connects++;
    identity.lastConnectedAt = Date.now();
    if (s.modelId) identity.modelId = s.modelId;
    if (this.ctx.settings.enforceTokenExpiry && !s.x509) {
      const ms = s.tokenSe * 1000 - this.clock.nowMs();
      s.expiryTimer = setTimeout(() => {
        if (this.sessions.get(s.deviceId) === s) {
          this.ctx.logger.debug({ deviceId: s.deviceId }, 'token expired: disconnecting');
          s.client.close();
        }
      }, Math.min(Math.max(ms, 0), MAX_TIMER_MS));
    }
    this.ctx.events.emit('deviceConnected', { hub: this.name, deviceId: s.deviceId, ...(s.modelId ? { modelId: s.modelId } : {}) });
    // A resumed session gets its queued C2D now. No PUBLISH can precede the CONNACK: aedes writes
    // the CONNACK within this same call (or already did) and defers every delivery to setImmediate.
    this.onSubscriptionsAdded(s);
    if (s.burst) {
      // Method calls woken above publish from a promise continuation: still part of the burst.
      setImmediate(() => {
        if (!s.burst) return;
        s.burst.collecting = false;
        if (s.burst.pending === 0) this.endBurst(s);
      });
    }
  }

  /** Lets the held CONNACK and deliveries go, in one write. */
  private endBurst(s: Session): void {
    if (!s.burst) return;
    delete s.burst;
    (s.client.conn as unknown as Writable).uncork();
  }

  /** Topic filters of the device's stored MQTT session, for aedes (which then answers sessionPresent). */
  private sessionFilters(deviceId: string): Array<{ topic: string; qos: 0 | 1 }> {
    const session = this.identities.get(deviceId)?.mqttSession;
    if (!session) return [];
    return SUBSCRIPTION_FILTERS.filter(([kind]) => session.has(kind)).map(([kind, filter]) => ({
      topic: filter(deviceId),
      qos: kind === 'c2d' ? 1 : 0,
    }));
  }

  private onGone(client: AedesClient): void {
    const s = this.sessionsByClient.get(client);
    if (!s) return;
    if (s.expiryTimer) clearTimeout(s.expiryTimer);
    this.endBurst(s);
    s.subs.clear();
    if (s.inflight.size) {
      // Not acknowledged: back to the front of the queue, unless delivered too often already.
      const redeliverable = [...s.inflight.values()].filter((m) => this.mayRedeliver(s.deviceId, m));
      s.identity.c2dQueue.unshift(...redeliverable);
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
    return SUBSCRIPTION_FILTERS.find(([, filter]) => filter(s.deviceId) === topic)?.[0];
  }

  private onSubscribed(client: AedesClient, topics: string[], on: boolean): void {
    const s = this.sessionsByClient.get(client);
    if (!s) return;
    // aedes unsubscribes a closing client from everything: cleanup, not the device's doing.
    if (!on && client.closed) return;
    const stored = s.persistent ? s.identity.mqttSession : undefined;
    for (const t of topics) {
      const kind = this.subscriptionKind(client, t);
      if (!kind) continue;
      if (on) {
        s.subs.add(kind);
        stored?.add(kind);
      } else {
        s.subs.delete(kind);
        stored?.delete(kind);
      }
    }
    if (on) this.onSubscriptionsAdded(s);
  }

  /** Queued C2D goes out, and method calls waiting for this device (connect timeout) proceed. */
  private onSubscriptionsAdded(s: Session): void {
    if (s.subs.has('c2d')) this.pumpC2D(s);
    if (s.subs.has('methods')) for (const wake of [...(this.methodWaiters.get(s.deviceId) ?? [])]) wake();
  }

  private onPuback(client: AedesClient, messageId: number): void {
    const s = this.sessionsByClient.get(client);
    if (s?.inflight.delete(messageId)) this.counters.c2dCompleted++;
  }

  private publishTo(s: Session, topic: string, payload: Buffer | string, qos: 0 | 1, messageId?: number): void {
    const clientId = messageId === undefined ? EMULATOR_CLIENT_ID : `${EMULATOR_CLIENT_ID}#${messageId}`;
    const burst = s.burst?.collecting ? s.burst : undefined;
    if (burst) burst.pending++;
    s.client.publish(
      { cmd: 'publish', topic, payload, qos, dup: false, retain: false, clientId } as never,
      (err?: Error) => {
        if (err) this.ctx.logger.debug({ deviceId: s.deviceId, topic, err: err.message }, 'publish to device failed');
        if (burst && --burst.pending === 0 && !burst.collecting) this.endBurst(s);
      },
    );
  }

  // -------------------------------------------------------------------------------------------
  // Device requests

  private authorizePublish(
    client: AedesClient | null,
    packet: { topic: string; payload: string | Buffer; qos: 0 | 1 | 2; retain: boolean },
    cb: (error?: Error | null) => void,
  ): void {
    const s = client ? this.sessionsByClient.get(client) : undefined;
    if (!s) return cb(new Error('not authenticated'));
    // An error here makes aedes close the connection: no PUBACK, nothing stored.
    if (packet.qos === 2) {
      this.counters.qos2Publishes++;
      return cb(new Error('QoS 2 is not supported: IoT Hub closes the connection'));
    }
    // IoT Hub keeps no retained message (aedes would store it): telemetry is marked instead.
    const retained = packet.retain;
    packet.retain = false;
    const topic = packet.topic;
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    const events = `devices/${s.deviceId}/messages/events/`;
    if (topic.startsWith(events)) {
      const bag = topic.slice(events.length);
      const properties = parsePropertyBag(bag.endsWith('/') ? bag.slice(0, -1) : bag);
      const size = d2cMessageSize(payload, properties);
      if (size > D2C_MESSAGE_LIMIT_BYTES) {
        // As IoT Hub does (azure-iot-sdk-node#501): no error answer, the connection just ends.
        this.counters.oversizedMessages++;
        this.ctx.logger.debug({ deviceId: s.deviceId, size }, 'device-to-cloud message over 256 KB: closing the connection');
        return cb(new Error(`message of ${size} bytes exceeds ${D2C_MESSAGE_LIMIT_BYTES}`));
      }
      if (retained) properties['mqtt-retain'] = 'true';
      if (!this.withhold || this.withhold.store) this.storeTelemetry(s, properties, payload);
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

  private storeTelemetry(s: Session, all: Record<string, string>, body: Buffer): void {
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
      const injected = this.reportedPatchAnswers.get(s.identity.deviceId);
      if (injected) {
        if (--injected.remaining === 0) this.reportedPatchAnswers.delete(s.identity.deviceId);
        return reply(injected.status, injected.body);
      }
      const patch = parseJsonOr(payload.toString('utf8'), undefined);
      if (!isJsonObject(patch)) return error(400, 400004, 'Reported properties patch must be a JSON object.');
      if (jsonDepth(patch) > MAX_TWIN_DEPTH) return error(400, 400004, `Reported properties are nested deeper than ${MAX_TWIN_DEPTH} levels.`);
      const problem = twinPatchProblem(patch);
      if (problem) return error(400, 400004, `Invalid reported properties: ${problem}.`);
      const next = mergePatch(s.identity.reported, withoutTwinMetadata(patch));
      const size = twinSize(next);
      if (size > TWIN_SECTION_LIMIT_BYTES) {
        return error(400, 400004, `Reported properties would be ${size} bytes, over the ${TWIN_SECTION_LIMIT_BYTES}-byte limit.`);
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
    const now = Date.now();
    while (queue.length) {
      const m = queue.shift()!;
      if (m.expiresAt <= now) {
        this.counters.c2dExpired++;
        continue;
      }
      m.deliveryCount++;
      let mid = s.nextMid;
      while (s.inflight.has(mid)) mid = (mid % 65535) + 1;
      s.nextMid = (mid % 65535) + 1;
      s.inflight.set(mid, m);
      this.counters.c2dSent++;
      this.publishTo(s, m.topic, m.payload, 1, mid);
    }
  }

  /** False (and counted) when a message has been delivered `maxDeliveryCount` times already: dead-lettered. */
  private mayRedeliver(deviceId: string, m: PendingC2D): boolean {
    const max = this.c2dDelivery.maxDeliveryCount;
    if (max === null || m.deliveryCount < max) return true;
    this.counters.c2dDeadLettered++;
    this.ctx.logger.debug({ deviceId, messageId: m.messageId, deliveries: m.deliveryCount }, 'C2D message dead-lettered');
    return false;
  }

  /** Drops (and counts) the queued messages whose TTL has passed. */
  private dropExpiredC2D(i: Identity, now = Date.now()): void {
    const live = i.c2dQueue.filter((m) => m.expiresAt > now);
    this.counters.c2dExpired += i.c2dQueue.length - live.length;
    i.c2dQueue = live;
  }

  // -------------------------------------------------------------------------------------------
  // Identity registry (service side)

  private identity(deviceId: string): Identity {
    const identity = this.identities.get(deviceId);
    if (!identity) throw new EmulatorError('UNKNOWN_DEVICE', `device '${deviceId}' does not exist on ${this.name}`);
    return identity;
  }

  /**
   * Creates a device identity (as DPS or an operator would), with a primary and optionally a
   * secondary key; a CONNECT signed with either is accepted. Existing identities get the new keys.
   */
  addDevice(deviceId: string, key: string, secondaryKey?: string): void {
    const existing = this.identities.get(deviceId);
    if (existing) {
      existing.key = key;
      existing.secondaryKey = secondaryKey;
      return;
    }
    this.identities.set(deviceId, {
      deviceId,
      key,
      secondaryKey,
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

  /**
   * Makes an identity X.509-authenticated (`{ kind: 'ca' }`: CA-signed, CN = device id;
   * `{ kind: 'thumbprint', thumbprints }`: self-signed or individually enrolled), creating it if
   * needed; `undefined` makes it a key identity again. DPS does this when it assigns a device
   * that attested with a certificate.
   */
  setX509(deviceId: string, attestation: X509Attestation | undefined): void {
    if (!this.identities.has(deviceId)) this.addDevice(deviceId, '');
    const i = this.identity(deviceId);
    if (attestation) i.x509 = structuredClone(attestation);
    else delete i.x509;
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
      ...(i.secondaryKey === undefined ? {} : { secondaryKey: i.secondaryKey }),
      ...(i.x509 ? { x509: structuredClone(i.x509) } : {}),
      desired: structuredClone(i.desired),
      desiredVersion: i.desiredVersion,
      reported: structuredClone(i.reported),
      reportedVersion: i.reportedVersion,
      ...(i.modelId ? { modelId: i.modelId } : {}),
    };
  }

  /** @internal Creates or overwrites an identity from a migration snapshot and enables it. */
  importIdentity(deviceId: string, snap: IdentitySnapshot): void {
    this.addDevice(deviceId, snap.key, snap.secondaryKey);
    const i = this.identity(deviceId);
    i.desired = structuredClone(snap.desired);
    i.desiredVersion = snap.desiredVersion;
    i.reported = structuredClone(snap.reported);
    i.reportedVersion = snap.reportedVersion;
    if (snap.x509) i.x509 = structuredClone(snap.x509);
    else delete i.x509;
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
    this.dropExpiredC2D(i); // expired messages are not pending
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
    const problem = twinPatchProblem(patch);
    if (problem) throw new EmulatorError('INVALID_ARGUMENT', `invalid desired patch: ${problem}`);
    const i = this.identity(deviceId);
    const update = withoutTwinMetadata(patch);
    const next = mergePatch(i.desired, update);
    const size = twinSize(next);
    if (size > TWIN_SECTION_LIMIT_BYTES) {
      throw new EmulatorError('INVALID_ARGUMENT', `desired properties would be ${size} bytes, over the ${TWIN_SECTION_LIMIT_BYTES}-byte limit (32 KB)`);
    }
    i.desired = next;
    i.desiredVersion++;
    const s = this.sessions.get(deviceId);
    if (s?.subs.has('desired')) {
      this.counters.desiredPushes++;
      const body = JSON.stringify({ ...update, $version: i.desiredVersion });
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
   * Fault injection: answer the device's next `count` reported-properties PATCHes with `status`
   * (429 throttled, 503, 400, 413 …) and `body` (default: IoT Hub's error body, `errorCode`
   * status × 1000 + 1), without applying them.
   * @throws EmulatorError INVALID_ARGUMENT (status not 300-599, count not 1-1000), UNKNOWN_DEVICE
   */
  answerNextReportedPatch(deviceId: string, status: number, opts: { body?: string; count?: number } = {}): void {
    const { count = 1 } = opts;
    if (!(Number.isInteger(status) && status >= 300 && status <= 599)) throw new EmulatorError('INVALID_ARGUMENT', 'status must be an error status (300-599)');
    if (!(Number.isInteger(count) && count >= 1 && count <= 1000)) throw new EmulatorError('INVALID_ARGUMENT', 'count must be a whole number from 1 to 1000');
    this.identity(deviceId);
    const body = opts.body ?? JSON.stringify({ errorCode: status * 1000 + 1, message: `Injected answer ${status}.`, trackingId: randomUUID(), timestampUtc: new Date().toISOString() });
    this.reportedPatchAnswers.set(deviceId, { status, body, remaining: count });
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
   * Invokes a direct method as IoT Hub does. Resolves (never rejects) with the device's status
   * and payload; 400 for a payload over 128 KB or timeouts out of IoT Hub's bounds; 404 when the
   * device is unknown (404001) or not connected and subscribed to methods (404103), at once or,
   * with `connectTimeoutSec`, after waiting that long for it; 504 when it does not answer in time.
   * No payload (undefined) is sent as an empty body, `null` as `null`.
   */
  async invokeMethod(deviceId: string, methodName: string, payload?: unknown, opts: MethodInvokeOptions = {}): Promise<MethodResult> {
    this.counters.methodCalls++;
    const answer = (status: number, errorCode: number, message: string): MethodResult => ({
      status,
      payload: { errorCode, message, timestampUtc: new Date().toISOString() },
    });
    const timing = methodTiming(opts, this.ctx.settings.methodTimeoutMs);
    if (typeof timing === 'string') return answer(400, 400004, timing);
    let body: string;
    try {
      body = payload === undefined ? '' : (JSON.stringify(payload) ?? '');
    } catch (error) {
      return answer(400, 400004, `The payload is not JSON: ${(error as Error).message}`);
    }
    const bytes = Buffer.byteLength(body);
    if (bytes > METHOD_PAYLOAD_LIMIT_BYTES) {
      return answer(400, 400004, `'payload' size should be less than ${METHOD_PAYLOAD_LIMIT_BYTES} bytes; it is ${bytes}.`);
    }
    if (!this.identities.has(deviceId)) return answer(404, 404001, `Device '${deviceId}' not found.`);
    const s = await this.methodSubscriber(deviceId, timing.connectTimeoutMs);
    if (this.stopped) return answer(503, 503001, 'Hub stopped.');
    if (!s) return answer(404, 404103, 'Timed out waiting for device to connect.');
    const rid = (++this.ridCounter).toString(16);
    return new Promise<MethodResult>((resolve) => {
      const timer = setTimeout(() => {
        this.pendingMethods.delete(rid);
        resolve(answer(504, 504101, 'Timed out waiting for the response from device.'));
      }, Math.min(timing.responseTimeoutMs, MAX_TIMER_MS));
      this.pendingMethods.set(rid, { deviceId, resolve, timer });
      this.publishTo(s, `$iothub/methods/POST/${methodName}/?$rid=${rid}`, body, 0);
    });
  }

  /**
   * The device's connection when it is subscribed to methods, waiting up to `waitMs` for it to
   * connect and subscribe (IoT Hub's connect timeout); undefined when it does not in time.
   */
  private methodSubscriber(deviceId: string, waitMs: number): Promise<Session | undefined> {
    const now = (): Session | undefined => {
      const s = this.sessions.get(deviceId);
      return s?.subs.has('methods') && !this.stopped ? s : undefined;
    };
    const ready = now();
    if (ready || waitMs <= 0 || this.stopped) return Promise.resolve(ready);
    return new Promise((resolve) => {
      const waiters = this.methodWaiters.get(deviceId) ?? new Set<() => void>();
      this.methodWaiters.set(deviceId, waiters);
      const wake = (): void => {
        clearTimeout(timer);
        waiters.delete(wake);
        if (waiters.size === 0 && this.methodWaiters.get(deviceId) === waiters) this.methodWaiters.delete(deviceId);
        resolve(now());
      };
      const timer = setTimeout(wake, Math.min(waitMs, MAX_TIMER_MS));
      waiters.add(wake);
    });
  }

  /**
   * Sends a cloud-to-device message: written now when the device is subscribed, otherwise
   * queued (up to the queue limit, 50 by default) and delivered when it subscribes. Messages
   * not acknowledged (PUBACK) before a disconnect are queued again, until delivered
   * `maxDeliveryCount` times (dead-lettered then). A message whose TTL passes is dropped.
   * @throws EmulatorError C2D_QUEUE_FULL, UNKNOWN_DEVICE, INVALID_ARGUMENT (TTL)
   */
  sendC2D(deviceId: string, body: Buffer | string | JsonObject, properties: C2DProperties = {}, options: C2DSendOptions = {}): C2DSendResult {
    const expiresAt = this.c2dExpiry(options.ttlMs);
    const { messageId = randomUUID(), correlationId, ...user } = properties;
    // The bag as IoT Hub writes it: `$` and `/` escaped (%24, %2F), `to` ending in `deviceBound`.
    const bag: Record<string, string> = { '$.mid': messageId };
    if (options.ttlMs !== undefined) bag['$.exp'] = new Date(expiresAt).toISOString();
    bag['$.to'] = `/devices/${deviceId}/messages/deviceBound`;
    if (correlationId) bag['$.cid'] = correlationId;
    for (const [k, v] of Object.entries(user)) if (v !== undefined) bag[k] = v;
    const topic = `devices/${deviceId}/messages/devicebound/${formatPropertyBag(bag)}`;
    return this.enqueueC2D(deviceId, { messageId, topic, payload: toBuffer(body), expiresAt, deliveryCount: 0 });
  }

  /**
   * Fault injection: a C2D message whose property bag is sent exactly as given (e.g. a malformed
   * %-escape that no real hub would produce), queued and delivered like {@link sendC2D}.
   * @throws EmulatorError C2D_QUEUE_FULL, UNKNOWN_DEVICE
   */
  sendC2DRaw(deviceId: string, body: Buffer | string, rawPropertyBag: string): C2DSendResult {
    const topic = `devices/${deviceId}/messages/devicebound/${rawPropertyBag}`;
    return this.enqueueC2D(deviceId, { messageId: randomUUID(), topic, payload: toBuffer(body), expiresAt: this.c2dExpiry(undefined), deliveryCount: 0 });
  }

  private enqueueC2D(deviceId: string, message: PendingC2D): C2DSendResult {
    const i = this.identity(deviceId);
    const s = this.sessions.get(deviceId);
    this.dropExpiredC2D(i);
    const pending = i.c2dQueue.length + (s?.inflight.size ?? 0);
    if (pending >= this.ctx.settings.c2dQueueLimit) {
      throw new EmulatorError('C2D_QUEUE_FULL', `device '${deviceId}' already has ${pending} pending C2D messages`);
    }
    i.c2dQueue.push(message);
    if (s?.subs.has('c2d')) {
      this.pumpC2D(s);
      return { messageId: message.messageId, status: 'sent' };
    }
    return { messageId: message.messageId, status: 'queued' };
  }

  /** Expiry time of a C2D message sent now with this TTL (default: the hub's). */
  private c2dExpiry(ttlMs: number | undefined): number {
    if (ttlMs !== undefined && !(ttlMs > 0 && ttlMs <= C2D_MAX_TTL_MS)) {
      throw new EmulatorError('INVALID_ARGUMENT', `ttlMs must be > 0 and at most ${C2D_MAX_TTL_MS} (48 hours)`);
    }
    return Date.now() + (ttlMs ?? this.c2dDelivery.defaultTtlMs);
  }

  /**
   * The hub's C2D settings, as IoT Hub's `cloudToDevice` properties: `defaultTtlMs` (1 minute to
   * 2 days, default 1 hour) and `maxDeliveryCount` (1–100, default 10). `maxDeliveryCount: null`
   * counts no delivery: unacknowledged messages come back until their TTL ends (see the README).
   * @throws EmulatorError INVALID_ARGUMENT
   */
  setC2DDelivery(settings: { defaultTtlMs?: number; maxDeliveryCount?: number | null }): void {
    const { defaultTtlMs = this.c2dDelivery.defaultTtlMs, maxDeliveryCount = this.c2dDelivery.maxDeliveryCount } = settings;
    if (!(defaultTtlMs >= C2D_MIN_DEFAULT_TTL_MS && defaultTtlMs <= C2D_MAX_TTL_MS)) {
      throw new EmulatorError('INVALID_ARGUMENT', 'defaultTtlMs must be between 1 minute and 48 hours');
    }
    if (maxDeliveryCount !== null && !(Number.isInteger(maxDeliveryCount) && maxDeliveryCount >= 1 && maxDeliveryCount <= C2D_MAX_DELIVERY_COUNT_LIMIT)) {
      throw new EmulatorError('INVALID_ARGUMENT', `maxDeliveryCount must be a whole number from 1 to ${C2D_MAX_DELIVERY_COUNT_LIMIT}, or null`);
    }
    this.c2dDelivery = { defaultTtlMs, maxDeliveryCount };
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

  /** Refuse new MQTT connections (Azure's 8883 blocked) while MQTT over WebSockets keeps working. */
  blockRawMqtt(on: boolean): void {
    this.endpoint.setRawMqttBlocked(on);
  }

  get isBlackholed(): boolean {
    return this.endpoint.isBlackholed;
  }

  /** Stop sending PUBACKs for telemetry (the connection stays alive and pings are answered). */
  withholdPubacks(on: boolean, opts: WithholdOptions = {}): void {
    this.withhold = on ? { store: opts.store ?? true } : null;
  }

  /**
   * Network fidelity: the CONNACK of a resumed session (clean=false, subscriptions kept) and what
   * the hub delivers with it at once (queued C2D, method calls waiting for the device) leave in
   * one write, as they often arrive from a hub across a real network: the device reads them in
   * one go, before any code that waits for its connect to resolve. Off by default (loopback
   * writes otherwise reach the device one by one).
   */
  resumeInOneWrite(on: boolean): void {
    this.oneWriteResume = on;
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
    for (const waiters of [...this.methodWaiters.values()]) for (const wake of [...waiters]) wake();
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
