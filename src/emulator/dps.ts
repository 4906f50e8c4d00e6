/**
 * An emulated Azure Device Provisioning Service (MQTT device API, symmetric keys).
 *
 * Enrollments: one symmetric-key group enrollment (id scope + group key, device key derived per
 * registration id) and optional individual enrollments, which take precedence.
 * Flow: register → 202 `assigning` (+ `retry-after`) → polls → 200 `assigned` with the registration
 * state. Faults: down/up, injected 429s and error statuses, a registration rate limit, and
 * enrollments whose registrations end `failed` or `disabled`.
 */
import type EventEmitter from 'node:events';
import { randomBytes, randomUUID } from 'node:crypto';
import type { AuthenticateError, Client as AedesClient } from 'aedes';
import { MqttEndpoint, type EndpointHooks } from './endpoint';
import type { EmulatorLogger } from './logger';
import { deriveDeviceKey, dpsResource, verifySasToken } from './sas';
import {
  EmulatorError,
  type AllocationPolicy,
  type DpsAnswer,
  type DpsMetrics,
  type EnrollmentStatus,
  type LocalCloudEvents,
  type RegistrationRecord,
  type RegistrationSubstatus,
} from './types';
import { PeakRate, RingBuffer, TokenBucket, isJsonObject, parseJsonOr, parsePropertyBag } from './util';

/** Status codes `failWith` can inject. */
export type InjectedDpsStatus = 400 | 401 | 403 | 404 | 500 | 503;

/** Resolved DPS settings. */
export interface DpsSettings {
  rateLimitPerSec?: number;
  retryAfterSec: number;
  assigningPolls: number;
  pollRetryAfterSec: number;
  allocation: AllocationPolicy;
  staticHub?: string;
  returnData?: (registrationId: string, requestPayload: unknown) => unknown;
  attemptHistory: number;
}

/** A hub as DPS sees it. */
export interface DpsHubRef {
  name: string;
  host: string;
  /** False while the hub is killed: like IoT Central, DPS then assigns to a linked hub that is up. */
  up?: boolean;
}

/** What DPS needs from the cloud. */
export interface DpsContext {
  tls: { key: string; cert: string };
  idScope: string;
  groupKey: string;
  settings: DpsSettings;
  hubs: () => readonly DpsHubRef[];
  /** Called for every completed assignment: make sure the identity exists on the hub. */
  onAssigned: (record: RegistrationRecord, deviceKey: string) => void;
  events: EventEmitter<LocalCloudEvents>;
  logger: EmulatorLogger;
}

interface Enrollment {
  key?: string;
  status: EnrollmentStatus;
}

interface Operation {
  operationId: string;
  registrationId: string;
  key: string;
  payload: unknown;
  pollsLeft: number;
}

interface DpsSession {
  registrationId: string;
  key: string;
}

const MAX_OPERATIONS = 50_000;

const ERROR_TEXT: Record<number, [number, string]> = {
  400: [400001, 'Bad request.'],
  401: [401002, 'The device is unauthorized.'],
  403: [403000, 'Forbidden.'],
  404: [404201, 'Not found.'],
  429: [429001, 'Operations are being throttled for this tenant.'],
  500: [500000, 'Internal server error.'],
  503: [503000, 'Service unavailable.'],
};

function refusal(message: string): AuthenticateError {
  return Object.assign(new Error(message), { returnCode: 5 }) as unknown as AuthenticateError;
}

/** Parsed DPS username `{idScope}/registrations/{registrationId}/api-version=...`. */
export function parseDpsUsername(username: string | undefined): { idScope: string; registrationId: string; params: Record<string, string> } | undefined {
  if (!username) return undefined;
  const parts = username.split('/');
  if (parts.length < 4 || parts[1] !== 'registrations' || !parts[0] || !parts[2]) return undefined;
  return { idScope: parts[0], registrationId: parts[2], params: parsePropertyBag(parts.slice(3).join('/')) };
}

function etag(): string {
  return `"${randomBytes(8).toString('hex')}"`;
}

/** The emulated DPS. Create through `startLocalCloud`. */
export class EmulatedDps {
  private readonly enrollments = new Map<string, Enrollment>();
  private readonly records = new Map<string, RegistrationRecord>();
  private readonly counts = new Map<string, number>();
  private readonly operations = new Map<string, Operation>();
  private readonly sessionsByClient = new WeakMap<AedesClient, DpsSession>();
  private readonly attemptLog = new Map<string, RingBuffer<number>>();
  private readonly answerLog = new Map<string, RingBuffer<DpsAnswer>>();
  private bucket?: TokenBucket;
  private throttleFault: { retryAfterSec: number; remaining: number } | null = null;
  private failFault: { status: InjectedDpsStatus; remaining: number; retryAfterSec?: number } | null = null;
  private rawFault: { status: number; body: string; remaining: number } | null = null;
  private readonly peak = new PeakRate();
  private readonly peakRegister = new PeakRate();
  private readonly counters = {
    requestsTotal: 0,
    registerRequests: 0,
    pollRequests: 0,
    registrations: 0,
    throttled: 0,
    failuresInjected: 0,
    registrationsRefused: 0,
    connects: 0,
    refusedConnects: 0,
    currentConnections: 0,
  };
  private endpoint!: MqttEndpoint;

  private constructor(private readonly ctx: DpsContext) {
    if (ctx.settings.rateLimitPerSec) this.bucket = new TokenBucket(ctx.settings.rateLimitPerSec);
  }

  /** @internal */
  static async start(ctx: DpsContext): Promise<EmulatedDps> {
    const dps = new EmulatedDps(ctx);
    const hooks: EndpointHooks = {
      preConnect: (_client, packet, cb) => {
        packet.clean = true;
        cb(null, true);
      },
      authenticate: (client, username, password, cb) => dps.authenticate(client, username, password, cb),
      authorizePublish: (client, packet, cb) => dps.authorizePublish(client, packet, cb),
      authorizeSubscribe: (_client, sub, cb) => cb(null, sub.topic === '$dps/registrations/res/#' ? sub : null),
      authorizeForward: (_client, packet) => ((packet as { clientId?: string }).clientId === DPS_CLIENT_ID ? packet : null),
    };
    dps.endpoint = await MqttEndpoint.start({ name: 'dps', tls: ctx.tls, hooks, logger: ctx.logger });
    dps.endpoint.broker.on('client', () => {
      dps.counters.connects++;
      dps.counters.currentConnections++;
    });
    dps.endpoint.broker.on('clientDisconnect', () => dps.counters.currentConnections--);
    return dps;
  }

  /** `localhost:PORT`, the provisioning host devices use. */
  get host(): string {
    return this.endpoint.host;
  }

  get port(): number {
    return this.endpoint.listenPort;
  }

  get idScope(): string {
    return this.ctx.idScope;
  }

  /** True while the listener accepts connections. */
  get isUp(): boolean {
    return this.endpoint.isListening;
  }

  // -------------------------------------------------------------------------------------------
  // Enrollments

  /** Adds (or re-keys) an individual symmetric-key enrollment. Returns its key (random when omitted). */
  addIndividualEnrollment(registrationId: string, key: string = randomBytes(32).toString('base64')): string {
    const e = this.enrollments.get(registrationId);
    if (e) e.key = key;
    else this.enrollments.set(registrationId, { key, status: 'enabled' });
    return key;
  }

  /** Removes an individual enrollment (the device falls back to the group enrollment). */
  removeIndividualEnrollment(registrationId: string): void {
    const e = this.enrollments.get(registrationId);
    if (!e) return;
    delete e.key;
    if (e.status === 'enabled') this.enrollments.delete(registrationId);
  }

  /**
   * Sets the enrollment state of one registration id: `failed` or `disabled` makes its next
   * registrations end with that status (DeviceRegistrationFailedError in the SDK for `failed`).
   */
  setEnrollmentStatus(registrationId: string, status: EnrollmentStatus): void {
    const e = this.enrollments.get(registrationId);
    if (e) e.status = status;
    else if (status !== 'enabled') this.enrollments.set(registrationId, { status });
  }

  /** The key a device must sign with: its individual enrollment key, else the group-derived key. */
  deviceKey(registrationId: string): string {
    return this.enrollments.get(registrationId)?.key ?? deriveDeviceKey(this.ctx.groupKey, registrationId);
  }

  // -------------------------------------------------------------------------------------------
  // Registrations

  /** A registration record (a copy), if the device has registered. */
  registration(registrationId: string): RegistrationRecord | undefined {
    const r = this.records.get(registrationId);
    return r && structuredClone(r);
  }

  /** All registration records (copies). */
  registrations(): RegistrationRecord[] {
    return [...this.records.values()].map((r) => structuredClone(r));
  }

  /** Assigned devices per hub name. */
  hubCounts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const h of this.ctx.hubs()) out[h.name] = this.counts.get(h.name) ?? 0;
    return out;
  }

  /** @internal Moves a registration to another hub (failover / failback). */
  moveRegistration(registrationId: string, hub: DpsHubRef, substatus: RegistrationSubstatus): RegistrationRecord {
    const r = this.records.get(registrationId);
    if (!r) throw new EmulatorError('UNKNOWN_REGISTRATION', `'${registrationId}' has not registered`);
    this.counts.set(r.hubName, (this.counts.get(r.hubName) ?? 1) - 1);
    this.counts.set(hub.name, (this.counts.get(hub.name) ?? 0) + 1);
    r.hubName = hub.name;
    r.assignedHub = hub.host;
    r.substatus = substatus;
    r.lastUpdatedDateTimeUtc = new Date().toISOString();
    r.etag = etag();
    return structuredClone(r);
  }

  /** Request timestamps (epoch ms) of a device's registration requests, oldest first (bounded). */
  attempts(registrationId: string): number[] {
    return this.attemptLog.get(registrationId)?.toArray() ?? [];
  }

  /**
   * Answers sent to a device (register and poll requests alike), oldest first (bounded like
   * {@link attempts}): how soon a device came back after a 429 or a 5xx can be read from here.
   */
  answers(registrationId: string): DpsAnswer[] {
    return this.answerLog.get(registrationId)?.toArray() ?? [];
  }

  /** Starts a new window for the peak rates in {@link metrics} (the counters keep counting). */
  resetPeaks(): void {
    this.peak.reset();
    this.peakRegister.reset();
  }

  metrics(): DpsMetrics {
    return { ...this.counters, peakRequestsPerSec: this.peak.peak, peakRegisterRequestsPerSec: this.peakRegister.peak };
  }

  // -------------------------------------------------------------------------------------------
  // Faults

  /** Listener closed and every connection destroyed. */
  async down(): Promise<void> {
    await this.endpoint.kill();
  }

  /** Listens again on the same port. */
  async up(): Promise<void> {
    await this.endpoint.restart();
  }

  /** Accept TCP/TLS but never answer an MQTT packet; established connections go silent too. */
  blackhole(on: boolean): void {
    this.endpoint.setBlackhole(on);
  }

  /** The next `count` requests (default: all until cleared) get 429 with `retry-after`. */
  throttle(opts: { retryAfterSec: number; count?: number } | null): void {
    this.throttleFault = opts ? { retryAfterSec: opts.retryAfterSec, remaining: opts.count ?? Infinity } : null;
  }

  /**
   * The next `count` requests (default: all until cleared) get this status and an error body,
   * with a `retry-after` when given (the SDK re-polls 5xx after retry-after, else 2 s).
   */
  failWith(opts: { status: InjectedDpsStatus; count?: number; retryAfterSec?: number } | null): void {
    this.failFault = opts
      ? { status: opts.status, remaining: opts.count ?? Infinity, ...(opts.retryAfterSec !== undefined ? { retryAfterSec: opts.retryAfterSec } : {}) }
      : null;
  }

  /**
   * The next `count` requests (default 1) get this status with this raw body, verbatim: junk
   * JSON, missing fields, unknown statuses. For testing how a device copes with a broken service.
   */
  respondRaw(opts: { status: number; body: string; count?: number } | null): void {
    this.rawFault = opts ? { status: opts.status, body: opts.body, remaining: opts.count ?? 1 } : null;
  }

  /** Clears throttle, failWith and respondRaw. */
  clearFaults(): void {
    this.throttleFault = null;
    this.failFault = null;
    this.rawFault = null;
  }

  /** Changes the registration rate limit (null: unlimited). */
  setRateLimit(perSec: number | null, retryAfterSec?: number): void {
    this.bucket = perSec ? new TokenBucket(perSec) : undefined;
    if (retryAfterSec !== undefined) this.ctx.settings.retryAfterSec = retryAfterSec;
  }

  // -------------------------------------------------------------------------------------------
  // MQTT

  private authenticate(
    client: AedesClient,
    username: string | undefined,
    password: Buffer | undefined,
    done: (error: AuthenticateError | null, success: boolean | null) => void,
  ): void {
    const refuse = (reason: string): void => {
      this.counters.refusedConnects++;
      this.ctx.logger.debug({ clientId: client.id, reason }, 'DPS connect refused');
      done(refusal(reason), false);
    };
    const user = parseDpsUsername(username);
    if (!user || user.registrationId !== client.id) return refuse('bad username');
    if (user.idScope !== this.ctx.idScope) return refuse('unknown id scope');
    const key = this.deviceKey(user.registrationId);
    const check = verifySasToken(password?.toString('utf8'), { keys: [key], resource: dpsResource(user.idScope, user.registrationId) });
    if (!check.ok) return refuse(`token ${check.reason}`);
    this.sessionsByClient.set(client, { registrationId: user.registrationId, key });
    done(null, true);
  }

  private authorizePublish(
    client: AedesClient | null,
    packet: { topic: string; payload: string | Buffer },
    cb: (error?: Error | null) => void,
  ): void {
    const s = client ? this.sessionsByClient.get(client) : undefined;
    if (!client || !s) return cb(new Error('not authenticated'));
    const topic = packet.topic;
    const q = topic.indexOf('?');
    const path = q < 0 ? topic : topic.slice(0, q);
    const query = q < 0 ? {} : parsePropertyBag(topic.slice(q + 1));
    if (path !== '$dps/registrations/PUT/iotdps-register/' && path !== '$dps/registrations/GET/iotdps-get-operationstatus/') {
      return cb(new Error(`topic not allowed: ${topic}`));
    }
    cb(null);
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload.toString('utf8') : packet.payload;
    this.onRequest(client, s, path.includes('iotdps-register'), query, payload);
  }

  private reply(client: AedesClient, rid: string, status: number, body: unknown, retryAfterSec?: number, raw = false): void {
    let topic = `$dps/registrations/res/${status}/?$rid=${encodeURIComponent(rid)}`;
    if (retryAfterSec !== undefined) topic += `&retry-after=${retryAfterSec}`;
    const payload = raw ? String(body) : JSON.stringify(body);
    client.publish(
      { cmd: 'publish', topic, payload, qos: 0, dup: false, retain: false, clientId: DPS_CLIENT_ID } as never,
      (err?: Error) => {
        if (err) this.ctx.logger.debug({ clientId: client.id, err: err.message }, 'DPS reply failed');
      },
    );
  }

  private errorBody(status: number, message?: string): object {
    const [errorCode, text] = ERROR_TEXT[status] ?? [status * 1000, 'Error.'];
    return { errorCode, trackingId: randomUUID(), message: message ?? text, timestampUtc: new Date().toISOString() };
  }

  private onRequest(client: AedesClient, s: DpsSession, isRegister: boolean, query: Record<string, string>, payload: string): void {
    const now = Date.now();
    const rid = query['$rid'] ?? '';
    const answer = (status: number, body: unknown, retryAfterSec?: number, raw = false): void => {
      let log = this.answerLog.get(s.registrationId);
      if (!log) this.answerLog.set(s.registrationId, (log = new RingBuffer<DpsAnswer>(this.ctx.settings.attemptHistory)));
      log.push({ at: Date.now(), request: isRegister ? 'register' : 'poll', status, ...(retryAfterSec !== undefined ? { retryAfterSec } : {}) });
      this.reply(client, rid, status, body, retryAfterSec, raw);
    };
    this.counters.requestsTotal++;
    this.peak.hit(now);
    if (isRegister) {
      this.counters.registerRequests++;
      this.peakRegister.hit(now);
      let log = this.attemptLog.get(s.registrationId);
      if (!log) this.attemptLog.set(s.registrationId, (log = new RingBuffer<number>(this.ctx.settings.attemptHistory)));
      log.push(now);
    } else {
      this.counters.pollRequests++;
    }

    if (this.rawFault) {
      const { status, body } = this.rawFault;
      if (--this.rawFault.remaining <= 0) this.rawFault = null;
      this.counters.failuresInjected++;
      return answer(status, body, undefined, true);
    }
    if (this.failFault) {
      const { status, retryAfterSec } = this.failFault;
      if (--this.failFault.remaining <= 0) this.failFault = null;
      this.counters.failuresInjected++;
      return answer(status, this.errorBody(status), retryAfterSec);
    }
    if (this.throttleFault) {
      const retryAfter = this.throttleFault.retryAfterSec;
      if (--this.throttleFault.remaining <= 0) this.throttleFault = null;
      this.counters.throttled++;
      return answer(429, this.errorBody(429), retryAfter);
    }

    if (isRegister) {
      if (this.bucket && !this.bucket.tryTake(now)) {
        this.counters.throttled++;
        return answer(429, this.errorBody(429), this.ctx.settings.retryAfterSec);
      }
      const body = parseJsonOr(payload, undefined);
      if (!isJsonObject(body) || body['registrationId'] !== s.registrationId) {
        return answer(400, this.errorBody(400, 'registrationId in the body must match the connection.'));
      }
      const operationId = `4.${randomBytes(8).toString('hex')}.${randomUUID()}`;
      if (this.operations.size >= MAX_OPERATIONS) this.operations.delete(this.operations.keys().next().value!);
      this.operations.set(operationId, {
        operationId,
        registrationId: s.registrationId,
        key: s.key,
        payload: body['payload'],
        pollsLeft: this.ctx.settings.assigningPolls,
      });
      return answer(202, { operationId, status: 'assigning' }, this.ctx.settings.pollRetryAfterSec);
    }

    const operationId = query['operationId'] ?? '';
    const op = this.operations.get(operationId);
    if (!op || op.registrationId !== s.registrationId) {
      return answer(404, this.errorBody(404, 'Operation not found.'));
    }
    if (op.pollsLeft > 0) {
      op.pollsLeft--;
      return answer(
        202,
        { operationId, status: 'assigning', registrationState: { registrationId: op.registrationId, status: 'assigning' } },
        this.ctx.settings.pollRetryAfterSec,
      );
    }
    this.operations.delete(operationId);
    answer(200, this.complete(op));
  }

  private complete(op: Operation): object {
    const nowIso = new Date().toISOString();
    const enrollment = this.enrollments.get(op.registrationId);
    const refusedState = (status: 'failed' | 'disabled', errorCode: number, errorMessage: string): object => {
      this.counters.registrationsRefused++;
      return {
        operationId: op.operationId,
        status,
        registrationState: {
          registrationId: op.registrationId,
          createdDateTimeUtc: this.records.get(op.registrationId)?.createdDateTimeUtc ?? nowIso,
          status,
          errorCode,
          errorMessage,
          lastUpdatedDateTimeUtc: nowIso,
          etag: etag(),
        },
      };
    };
    if (enrollment?.status === 'failed') return refusedState('failed', 400209, 'Device registration failed (enrollment marked failed).');
    if (enrollment?.status === 'disabled') return refusedState('disabled', 401003, 'The enrollment is disabled.');

    let record = this.records.get(op.registrationId);
    const modelId = isJsonObject(op.payload) && typeof op.payload['modelId'] === 'string' ? op.payload['modelId'] : undefined;
    const recordHub = record && this.ctx.hubs().find((h) => h.name === record!.hubName);
    if (record && recordHub && recordHub.up === false && this.ctx.hubs().some((h) => h.up !== false)) {
      // The assigned hub is down: re-evaluate the allocation among the hubs that are up. The
      // device's data cannot be migrated from a dead hub, hence deviceDataReset.
      const target = this.allocate(op.registrationId);
      this.counts.set(record.hubName, Math.max(0, (this.counts.get(record.hubName) ?? 1) - 1));
      this.counts.set(target.name, (this.counts.get(target.name) ?? 0) + 1);
      record.assignedHub = target.host;
      record.hubName = target.name;
      record.substatus = 'deviceDataReset';
    }
    if (record) {
      record.lastUpdatedDateTimeUtc = nowIso;
      record.etag = etag();
      record.registrations++;
    } else {
      let hub: DpsHubRef;
      try {
        hub = this.allocate(op.registrationId);
      } catch (err) {
        return refusedState('failed', 400207, `Custom allocation failed: ${(err as Error).message}`);
      }
      record = {
        registrationId: op.registrationId,
        deviceId: op.registrationId,
        assignedHub: hub.host,
        hubName: hub.name,
        status: 'assigned',
        substatus: 'initialAssignment',
        createdDateTimeUtc: nowIso,
        lastUpdatedDateTimeUtc: nowIso,
        etag: etag(),
        registrations: 1,
      };
      this.records.set(op.registrationId, record);
      this.counts.set(hub.name, (this.counts.get(hub.name) ?? 0) + 1);
    }
    if (modelId) record.modelId = modelId;
    if (op.payload !== undefined) record.requestPayload = structuredClone(op.payload);
    this.counters.registrations++;
    this.ctx.onAssigned(structuredClone(record), op.key);
    this.ctx.events.emit('registered', structuredClone(record));
    const returned = this.ctx.settings.returnData?.(op.registrationId, op.payload);
    return {
      operationId: op.operationId,
      status: 'assigned',
      registrationState: {
        registrationId: record.registrationId,
        createdDateTimeUtc: record.createdDateTimeUtc,
        assignedHub: record.assignedHub,
        deviceId: record.deviceId,
        status: 'assigned',
        substatus: record.substatus,
        lastUpdatedDateTimeUtc: record.lastUpdatedDateTimeUtc,
        etag: record.etag,
        ...(returned !== undefined ? { payload: returned } : {}),
      },
    };
  }

  private resolveHub(nameOrHost: string): DpsHubRef {
    const hub = this.ctx.hubs().find((h) => h.name === nameOrHost || h.host === nameOrHost);
    if (!hub) throw new EmulatorError('UNKNOWN_HUB', `unknown hub '${nameOrHost}'`);
    return hub;
  }

  private allocate(registrationId: string): DpsHubRef {
    const all = this.ctx.hubs();
    const up = all.filter((h) => h.up !== false);
    const hubs = up.length > 0 ? up : all;
    const policy = this.ctx.settings.allocation;
    if (policy === 'static') return this.ctx.settings.staticHub ? this.resolveHub(this.ctx.settings.staticHub) : hubs[0]!;
    if (policy === 'even') {
      let best = hubs[0]!;
      for (const h of hubs) if ((this.counts.get(h.name) ?? 0) < (this.counts.get(best.name) ?? 0)) best = h;
      return best;
    }
    return this.resolveHub(policy(registrationId, hubs.map((h) => h.name), this.hubCounts()));
  }

  /** @internal JSON-friendly state. */
  state(): object {
    return {
      host: this.host,
      idScope: this.idScope,
      up: this.isUp,
      blackholed: this.endpoint.isBlackholed,
      faults: { throttle: this.throttleFault, failWith: this.failFault, rateLimitPerSec: this.bucket?.ratePerSec ?? null },
      metrics: this.metrics(),
      hubCounts: this.hubCounts(),
    };
  }

  /** @internal */
  async stop(): Promise<void> {
    await this.endpoint.close();
  }
}

/** Marks packets DPS itself publishes. */
export const DPS_CLIENT_ID = '$local-dps';
