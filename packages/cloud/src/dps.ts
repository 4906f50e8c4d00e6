/**
 * An emulated Azure Device Provisioning Service (MQTT device API + the HTTP Device Registration
 * Status Lookup on the same port, symmetric keys).
 *
 * Enrollments: one symmetric-key group enrollment (id scope + group key, device key derived per
 * registration id) and optional individual enrollments, which take precedence. Registration ids
 * follow the documented rules and are case-insensitive.
 * Flow: register → 202 `assigning` (+ `retry-after`) → polls → 200 `assigned` with the registration
 * state. A wrong or expired token is not refused at CONNECT: every request is answered 401, as
 * Azure does. Lookup: `POST /{idScope}/registrations/{registrationId}?api-version=…` answers the
 * current registration (it never allocates). Faults: down/up, blackhole, injected 429s and error
 * statuses, registration and lookup rate limits, and enrollments whose registrations end `failed`
 * or `disabled`.
 */
import type EventEmitter from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes, randomUUID } from 'node:crypto';
import type { AuthenticateError, Client as AedesClient } from 'aedes';
import { MqttEndpoint, type EndpointHooks } from './endpoint';
import type { EmulatorLogger } from './logger';
import { deriveDeviceKey, dpsResource, verifySasToken } from './sas';
import {
  EmulatorError,
  type AllocationPolicy,
  type DpsAnswer,
  type DpsFaultTarget,
  type DpsLookup,
  type DpsMetrics,
  type EnrollmentStatus,
  type LookupCredentials,
  type LocalCloudEvents,
  type RegistrationRecord,
  type RegistrationSubstatus,
} from './types';
import { PeakRate, RingBuffer, ServiceClock, TokenBucket, isJsonObject, parseJsonOr, parsePropertyBag } from './util';
import { checkAttestation, normalizeThumbprint, parsePemChain, peerChainOf, thumbprintOf, type CloudPki, type X509Attestation } from './x509';
import type { X509Certificate } from 'node:crypto';

/**
 * Which requests a `throttle` or `failWith` applies to: the shared targets, or one kind of MQTT
 * request only (`register`: the register request; `poll`: operation status polls).
 */
export type DpsRequestFaultTarget = DpsFaultTarget | 'register' | 'poll';

/**
 * An ID scope added to the same provisioning host (`addIdScope`): in Azure another DPS instance
 * behind the global endpoint, with its own enrollment group and linked hubs.
 */
interface ExtraScope {
  groupKeys: DeviceKeys;
  /** Names of the hubs linked to it (taken out of the primary scope's allocation). */
  hubNames: ReadonlySet<string>;
}

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
  lookupRateLimitPerSec?: number;
  lookupRetryAfterSec: number;
  lookupCredentials: LookupCredentials;
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
  onAssigned: (record: RegistrationRecord, deviceKeys: DeviceKeys) => void;
  events: EventEmitter<LocalCloudEvents>;
  logger: EmulatorLogger;
  /** The X.509 enrollment group's CA and revocation list (X.509 attestation off without it). */
  pki?: CloudPki;
  /** The service's clock (token expiry, the `Date` header). Default: the machine's. */
  clock?: ServiceClock;
}

interface Enrollment {
  key?: string;
  secondaryKey?: string;
  status: EnrollmentStatus;
}

/** A device's primary and (when its enrollment has one) secondary key: DPS accepts either. */
export interface DeviceKeys {
  primary: string;
  secondary?: string;
}

/** Both keys, for a SAS check that accepts either. */
function keyList(keys: DeviceKeys): string[] {
  return keys.secondary === undefined ? [keys.primary] : [keys.primary, keys.secondary];
}

interface Operation {
  operationId: string;
  registrationId: string;
  /** The ID scope the device registered under (the primary or one added with addIdScope). */
  idScope: string;
  keys: DeviceKeys;
  payload: unknown;
  pollsLeft: number;
}

interface DpsSession {
  registrationId: string;
  idScope: string;
  keys: DeviceKeys;
  /** Set when the CONNECT was accepted but every request must be refused (bad token or id). */
  refusal?: { status: 400 | 401; message?: string };
}

interface InjectedThrottle {
  retryAfterSec: number;
  remaining: number;
  target: DpsRequestFaultTarget;
}

interface InjectedFailure {
  status: InjectedDpsStatus;
  remaining: number;
  retryAfterSec?: number;
  target: DpsRequestFaultTarget;
}

const MAX_OPERATIONS = 50_000;
/** Registration ids with a request history kept (oldest forgotten first): bounded memory under id churn. */
const MAX_TRACKED_REGISTRATIONS = 100_000;
/** A lookup body is `{"registrationId": …}`; anything this large is not one. */
export const MAX_LOOKUP_BODY_BYTES = 16 * 1024;
/** `/{idScope}/registrations/{registrationId}`, both segments URL-encoded. */
const LOOKUP_PATH = /^\/([^/]+)\/registrations\/([^/]+)\/?$/;
/** Documented registration id: ≤ 128 chars, alphanumeric plus `- . _ :`, none of those at either end. */
const REGISTRATION_ID = /^[A-Za-z0-9](?:[A-Za-z0-9._:-]{0,126}[A-Za-z0-9])?$/;

// errorCode = status × 1000 + detail: the Embedded C SDK derives the status as errorCode / 1000.
// 401002 is what DPS sends for a refused credential (Node SDK issue 721, Embedded C SDK sample).
const ERROR_TEXT: Record<number, [number, string]> = {
  400: [400001, 'Bad request.'],
  401: [401002, 'Unauthorized'],
  403: [403000, 'Forbidden.'],
  404: [404201, 'Not found.'],
  405: [405000, 'Method not allowed.'],
  413: [413000, 'Request body too large.'],
  415: [415000, 'Unsupported media type: use application/json.'],
  429: [429001, 'Operations are being throttled for this tenant.'],
  500: [500000, 'Internal server error.'],
  503: [503000, 'Service unavailable.'],
};

/** 3 "server unavailable" (an unknown id scope, as Azure answers) or 5 "not authorized". */
function connectRefusal(message: string, returnCode: 3 | 5): AuthenticateError {
  return Object.assign(new Error(message), { returnCode }) as unknown as AuthenticateError;
}

/** Why a registration id breaks DPS's documented rules, or undefined when it is valid. */
export function registrationIdProblem(registrationId: string): string | undefined {
  if (registrationId.length === 0) return 'registration id is empty';
  if (registrationId.length > 128) return 'registration id is longer than 128 characters';
  if (!REGISTRATION_ID.test(registrationId)) {
    return "registration id may hold letters, digits and - . _ : only, with a letter or digit at both ends";
  }
  return undefined;
}

/** Registration ids are case-insensitive: one key per registration whatever the spelling. */
function registrationKey(registrationId: string): string {
  return registrationId.toLowerCase();
}

/** The bounded history of one registration id, created on first use; the oldest id is forgotten beyond the cap. */
function historyOf<T>(logs: Map<string, RingBuffer<T>>, registrationId: string, capacity: number): RingBuffer<T> {
  const key = registrationKey(registrationId);
  let log = logs.get(key);
  if (!log) {
    if (logs.size >= MAX_TRACKED_REGISTRATIONS) logs.delete(logs.keys().next().value!);
    logs.set(key, (log = new RingBuffer<T>(capacity)));
  }
  return log;
}

/** True when a fault applies to this kind of request. */
function targets(fault: { target: DpsRequestFaultTarget }, request: 'register' | 'poll' | 'lookup'): boolean {
  if (fault.target === 'any' || fault.target === request) return true;
  return fault.target === 'registration' && request !== 'lookup';
}

/** The media type of a Content-Type header, without parameters, lower-cased. */
function mediaType(contentType: string | undefined): string {
  return (contentType ?? '').split(';')[0]!.trim().toLowerCase();
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

/** A `DeviceRegistrationResult` as the register poll and the status lookup answer it. */
function registrationResult(record: RegistrationRecord): Record<string, unknown> {
  return {
    registrationId: record.registrationId,
    createdDateTimeUtc: record.createdDateTimeUtc,
    assignedHub: record.assignedHub,
    deviceId: record.deviceId,
    status: record.status,
    substatus: record.substatus,
    lastUpdatedDateTimeUtc: record.lastUpdatedDateTimeUtc,
    etag: record.etag,
  };
}

/** The emulated DPS. Create through `startLocalCloud`. */
export class EmulatedDps {
  /** The group enrollment's keys (see setGroupKeys). */
  private groupKeys: DeviceKeys;

  private readonly enrollments = new Map<string, Enrollment>();
  /** ID scopes hosted besides the primary one (`addIdScope`). */
  private readonly extraScopes = new Map<string, ExtraScope>();
  /** Individual X.509 enrollments: registration id → thumbprints (they take precedence over the group). */
  private readonly x509Enrollments = new Map<string, string[]>();
  /** How each registration id last attested with a certificate, for the hub identity DPS writes. */
  private readonly x509Attested = new Map<string, X509Attestation>();
  private readonly records = new Map<string, RegistrationRecord>();
  private readonly counts = new Map<string, number>();
  private readonly operations = new Map<string, Operation>();
  private readonly sessionsByClient = new WeakMap<AedesClient, DpsSession>();
  private readonly attemptLog = new Map<string, RingBuffer<number>>();
  private readonly answerLog = new Map<string, RingBuffer<DpsAnswer>>();
  private readonly lookupLog = new Map<string, RingBuffer<DpsLookup>>();
  private bucket?: TokenBucket;
  private lookupBucket?: TokenBucket;
  private throttleFault: InjectedThrottle | null = null;
  private failFault: InjectedFailure | null = null;
  private rawFault: { status: number; body: string; remaining: number } | null = null;
  private readonly peak = new PeakRate();
  private readonly peakRegister = new PeakRate();
  private readonly peakLookup = new PeakRate();
  private readonly counters = {
    requestsTotal: 0,
    registerRequests: 0,
    pollRequests: 0,
    registrations: 0,
    throttled: 0,
    failuresInjected: 0,
    registrationsRefused: 0,
    unauthorized: 0,
    invalidRegistrationIds: 0,
    lookupRequests: 0,
    lookupsFound: 0,
    lookupsNotFound: 0,
    lookupsUnauthorized: 0,
    lookupsThrottled: 0,
    lookupsRejected: 0,
    lookupFailuresInjected: 0,
    connects: 0,
    refusedConnects: 0,
    currentConnections: 0,
  };
  private endpoint!: MqttEndpoint;

  private readonly clock: ServiceClock;

  private constructor(private readonly ctx: DpsContext) {
    this.clock = ctx.clock ?? new ServiceClock();
    this.groupKeys = { primary: ctx.groupKey };
    if (ctx.settings.rateLimitPerSec) this.bucket = new TokenBucket(ctx.settings.rateLimitPerSec);
    if (ctx.settings.lookupRateLimitPerSec) this.lookupBucket = new TokenBucket(ctx.settings.lookupRateLimitPerSec);
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
    dps.endpoint = await MqttEndpoint.start({
      name: 'dps',
      tls: ctx.tls,
      hooks,
      http: (req, res) => dps.onLookup(req, res),
      logger: ctx.logger,
    });
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

  /** `retry-after` (seconds) sent with `assigning` answers: 3 as Azure unless configured faster. */
  get pollRetryAfterSec(): number {
    return this.ctx.settings.pollRetryAfterSec;
  }

  /** True while the listener accepts connections. */
  get isUp(): boolean {
    return this.endpoint.isListening;
  }

  // -------------------------------------------------------------------------------------------
  // Enrollments

  /** Adds (or re-keys) an individual symmetric-key enrollment. Returns its key (random when omitted). */
  addIndividualEnrollment(registrationId: string, key: string = randomBytes(32).toString('base64'), secondaryKey?: string): string {
    const e = this.enrollments.get(registrationKey(registrationId));
    if (e) Object.assign(e, { key, secondaryKey });
    else this.enrollments.set(registrationKey(registrationId), { key, secondaryKey, status: 'enabled' });
    return key;
  }

  /**
   * Replaces the group enrollment's keys (an operator regenerating one, as in a key rotation):
   * registrations and lookups from now on are checked against these. Identities already on a
   * hub keep their keys until the device registers again, as with Azure, where DPS writes a
   * device's keys to its hub identity when it assigns it.
   */
  setGroupKeys(keys: DeviceKeys): void {
    for (const key of keyList(keys)) {
      if (Buffer.from(key, 'base64').length === 0) throw new EmulatorError('INVALID_ARGUMENT', 'group keys must be base64');
    }
    this.groupKeys = { ...keys };
  }

  /**
   * @internal Hosts another ID scope on this provisioning host (through `LocalCloud.addIdScope`):
   * its own group enrollment key and the hubs linked to it, which the primary scope no longer
   * allocates to. Individual enrollments and enrollment states apply in every scope.
   */
  addIdScope(idScope: string, groupKeys: DeviceKeys, hubNames: readonly string[]): void {
    this.extraScopes.set(idScope, { groupKeys: { ...groupKeys }, hubNames: new Set(hubNames) });
  }

  /** The ID scopes this DPS answers: the primary first. */
  idScopes(): string[] {
    return [this.ctx.idScope, ...this.extraScopes.keys()];
  }

  /** Whether this DPS hosts `idScope` (the primary or an added one). */
  private hostsScope(idScope: string): boolean {
    return idScope === this.ctx.idScope || this.extraScopes.has(idScope);
  }

  /** The hubs a scope allocates to: an added scope's own, else those no added scope took. */
  private scopeHubs(idScope: string): readonly DpsHubRef[] {
    const extra = this.extraScopes.get(idScope);
    if (extra) return this.ctx.hubs().filter((h) => extra.hubNames.has(h.name));
    const taken = new Set([...this.extraScopes.values()].flatMap((e) => [...e.hubNames]));
    return this.ctx.hubs().filter((h) => !taken.has(h.name));
  }

  /**
   * Adds (or replaces) an individual X.509 enrollment: the device must present a certificate with
   * one of these thumbprints (SHA-1 or SHA-256; a PEM gives its first certificate's) and CN =
   * registration id. Takes precedence over the X.509 enrollment group.
   */
  addIndividualX509Enrollment(registrationId: string, certificates: string | readonly string[]): void {
    const list = typeof certificates === 'string' ? [certificates] : [...certificates];
    const thumbprints = list.map((c) => (c.includes('-----BEGIN CERTIFICATE-----') ? thumbprintOf(parsePemChain(c)[0]!) : normalizeThumbprint(c)));
    if (thumbprints.length === 0 || thumbprints.some((t) => t.length !== 40 && t.length !== 64)) {
      throw new EmulatorError('INVALID_ARGUMENT', 'an X.509 enrollment needs certificates or SHA-1/SHA-256 thumbprints');
    }
    this.x509Enrollments.set(registrationKey(registrationId), thumbprints);
  }

  /** Removes an individual X.509 enrollment (the device falls back to the enrollment group). */
  removeIndividualX509Enrollment(registrationId: string): void {
    this.x509Enrollments.delete(registrationKey(registrationId));
  }

  /** @internal How `registrationId` last attested with a certificate (undefined: with a key). */
  x509AttestationOf(registrationId: string): X509Attestation | undefined {
    return this.x509Attested.get(registrationKey(registrationId));
  }

  /**
   * X.509 attestation of a registration id: its individual enrollment's thumbprints, else the
   * enrollment group's CA with CN = registration id (case-insensitive, as registration ids are).
   */
  private attestX509(chain: readonly X509Certificate[], registrationId: string): { ok: true; attestation: X509Attestation } | { ok: false; reason: string } {
    const pki = this.ctx.pki;
    if (!pki) return { ok: false, reason: 'no X.509 enrollment' };
    const thumbprints = this.x509Enrollments.get(registrationKey(registrationId));
    const attestation: X509Attestation = thumbprints ? { kind: 'thumbprint', thumbprints } : { kind: 'ca' };
    const sameId = (a: string, b: string): boolean => registrationKey(a) === registrationKey(b);
    const check = checkAttestation(pki, chain, attestation, registrationId, sameId);
    if (!check.ok) return { ok: false, reason: `${check.reason}: ${check.detail}` };
    if (thumbprints && !sameId(check.commonName, registrationId)) return { ok: false, reason: `wrong-subject: CN '${check.commonName}'` };
    return { ok: true, attestation };
  }

  /** Removes an individual enrollment (the device falls back to the group enrollment). */
  removeIndividualEnrollment(registrationId: string): void {
    const e = this.enrollments.get(registrationKey(registrationId));
    if (!e) return;
    delete e.key;
    delete e.secondaryKey;
    if (e.status === 'enabled') this.enrollments.delete(registrationKey(registrationId));
  }

  /**
   * Sets the enrollment state of one registration id: `failed` or `disabled` makes its next
   * registrations end with that status (DeviceRegistrationFailedError in the SDK for `failed`).
   */
  setEnrollmentStatus(registrationId: string, status: EnrollmentStatus): void {
    const e = this.enrollments.get(registrationKey(registrationId));
    if (e) e.status = status;
    else if (status !== 'enabled') this.enrollments.set(registrationKey(registrationId), { status });
  }

  /**
   * The key a device must sign with: its individual enrollment key, else the group-derived key
   * (derived from the id as the device spells it: the device derives it the same way).
   */
  deviceKey(registrationId: string): string {
    return this.deviceKeys(registrationId).primary;
  }

  /**
   * The primary and secondary key of a registration id, as {@link deviceKey} derives them; under
   * an added ID scope, derived from that scope's group key.
   */
  deviceKeys(registrationId: string, idScope: string = this.ctx.idScope): DeviceKeys {
    const enrollment = this.enrollments.get(registrationKey(registrationId));
    if (enrollment?.key !== undefined) return { primary: enrollment.key, ...(enrollment.secondaryKey === undefined ? {} : { secondary: enrollment.secondaryKey }) };
    const { primary, secondary } = this.extraScopes.get(idScope)?.groupKeys ?? this.groupKeys;
    return { primary: deriveDeviceKey(primary, registrationId), ...(secondary === undefined ? {} : { secondary: deriveDeviceKey(secondary, registrationId) }) };
  }

  // -------------------------------------------------------------------------------------------
  // Registrations

  /** A registration record (a copy), if the device has registered. Ids match case-insensitively. */
  registration(registrationId: string): RegistrationRecord | undefined {
    const r = this.records.get(registrationKey(registrationId));
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
    const r = this.records.get(registrationKey(registrationId));
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
    return this.attemptLog.get(registrationKey(registrationId))?.toArray() ?? [];
  }

  /**
   * Answers sent to a device (register and poll requests alike), oldest first (bounded like
   * {@link attempts}): how soon a device came back after a 429 or a 5xx can be read from here.
   */
  answers(registrationId: string): DpsAnswer[] {
    return this.answerLog.get(registrationKey(registrationId))?.toArray() ?? [];
  }

  /** Status lookups answered for a registration id (any status), oldest first (bounded like {@link attempts}). */
  lookups(registrationId: string): DpsLookup[] {
    return this.lookupLog.get(registrationKey(registrationId))?.toArray() ?? [];
  }

  /** Starts a new window for the peak rates in {@link metrics} (the counters keep counting). */
  resetPeaks(): void {
    this.peak.reset();
    this.peakRegister.reset();
    this.peakLookup.reset();
  }

  metrics(): DpsMetrics {
    return {
      ...this.counters,
      peakRequestsPerSec: this.peak.peak,
      peakRegisterRequestsPerSec: this.peakRegister.peak,
      peakLookupsPerSec: this.peakLookup.peak,
    };
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

  /**
   * Accept TCP/TLS but never answer an MQTT packet or an HTTP lookup; established connections go
   * silent too.
   */
  blackhole(on: boolean): void {
    this.endpoint.setBlackhole(on);
  }

  /** Refuse new MQTT connections (Azure's 8883 blocked) while MQTT over WebSockets keeps working. */
  blockRawMqtt(on: boolean): void {
    this.endpoint.setRawMqttBlocked(on);
  }

  /**
   * The next `count` requests (default: all until cleared) get 429 with `retry-after`: MQTT
   * register/poll requests and HTTP lookups alike unless `target` narrows it (`registration`,
   * `lookup`, or one kind of MQTT request: `register`, `poll`). A lookup's `Retry-After` header is
   * rounded up to whole seconds (HTTP allows no fraction).
   */
  throttle(opts: { retryAfterSec: number; count?: number; target?: DpsRequestFaultTarget } | null): void {
    this.throttleFault = opts ? { retryAfterSec: opts.retryAfterSec, remaining: opts.count ?? Infinity, target: opts.target ?? 'any' } : null;
  }

  /**
   * The next `count` requests (default: all until cleared) get this status and an error body,
   * with a `retry-after` when given (the SDK re-polls 5xx after retry-after, else 2 s). Applies
   * to MQTT requests and lookups alike unless `target` narrows it (as for {@link throttle}).
   */
  failWith(opts: { status: InjectedDpsStatus; count?: number; retryAfterSec?: number; target?: DpsRequestFaultTarget } | null): void {
    this.failFault = opts
      ? {
          status: opts.status,
          remaining: opts.count ?? Infinity,
          target: opts.target ?? 'any',
          ...(opts.retryAfterSec !== undefined ? { retryAfterSec: opts.retryAfterSec } : {}),
        }
      : null;
  }

  /**
   * The next `count` MQTT requests (default 1) get this status with this raw body, verbatim: junk
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

  /** Changes the status lookup rate limit (null: unlimited) and its `Retry-After` (whole seconds). */
  setLookupRateLimit(perSec: number | null, retryAfterSec?: number): void {
    if (retryAfterSec !== undefined && !(Number.isInteger(retryAfterSec) && retryAfterSec >= 0)) {
      throw new EmulatorError('INVALID_ARGUMENT', 'lookup retryAfterSec must be whole seconds (HTTP Retry-After)');
    }
    this.lookupBucket = perSec ? new TokenBucket(perSec) : undefined;
    if (retryAfterSec !== undefined) this.ctx.settings.lookupRetryAfterSec = retryAfterSec;
  }

  /** Takes one injected failure for this kind of request, if one applies. */
  private takeFailure(request: 'register' | 'poll' | 'lookup'): InjectedFailure | undefined {
    const fault = this.failFault;
    if (!fault || !targets(fault, request)) return undefined;
    if (--fault.remaining <= 0) this.failFault = null;
    return fault;
  }

  /** Takes one injected 429 for this kind of request, if one applies. */
  private takeThrottle(request: 'register' | 'poll' | 'lookup'): InjectedThrottle | undefined {
    const fault = this.throttleFault;
    if (!fault || !targets(fault, request)) return undefined;
    if (--fault.remaining <= 0) this.throttleFault = null;
    return fault;
  }

  // -------------------------------------------------------------------------------------------
  // MQTT

  private authenticate(
    client: AedesClient,
    username: string | undefined,
    password: Buffer | undefined,
    done: (error: AuthenticateError | null, success: boolean | null) => void,
  ): void {
    const refuse = (reason: string, returnCode: 3 | 5): void => {
      this.counters.refusedConnects++;
      this.ctx.logger.debug({ clientId: client.id, reason, returnCode }, 'DPS connect refused');
      done(connectRefusal(reason, returnCode), false);
    };
    const user = parseDpsUsername(username);
    if (!user || user.registrationId !== client.id) return refuse('bad username', 5);
    // An unknown id scope is refused at CONNECT with 3 (azure-iot-sdk-python issue 670, maintainer).
    if (!this.hostsScope(user.idScope)) return refuse('unknown id scope', 3);
    const keys = this.deviceKeys(user.registrationId, user.idScope);
    const session: DpsSession = { registrationId: user.registrationId, idScope: user.idScope, keys };
    // DPS accepts the CONNECT of a bad id or token and refuses each request (see onRequest).
    const idProblem = registrationIdProblem(user.registrationId);
    if (idProblem) {
      session.refusal = { status: 400, message: `${idProblem}.` };
    } else if (!password?.length && this.ctx.pki) {
      // X.509 attestation: no password, the TLS client certificate is the credential. Like a bad
      // token, a refused certificate gets 401 (errorCode 401002) on every request.
      const x509 = this.attestX509(peerChainOf(client.conn), user.registrationId);
      if (x509.ok) this.x509Attested.set(registrationKey(user.registrationId), x509.attestation);
      else {
        this.ctx.logger.debug({ clientId: client.id, reason: x509.reason }, 'DPS certificate refused: requests will get 401');
        session.refusal = { status: 401 };
      }
    } else {
      this.x509Attested.delete(registrationKey(user.registrationId));
      const check = verifySasToken(password?.toString('utf8'), {
        keys: keyList(keys),
        resource: dpsResource(user.idScope, user.registrationId),
        nowSec: this.clock.nowSec(),
      });
      if (!check.ok) {
        this.ctx.logger.debug({ clientId: client.id, reason: check.reason }, 'DPS token refused: requests will get 401');
        session.refusal = { status: 401 };
      }
    }
    this.sessionsByClient.set(client, session);
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
    const history = this.ctx.settings.attemptHistory;
    const answer = (status: number, body: unknown, retryAfterSec?: number, raw = false): void => {
      historyOf(this.answerLog, s.registrationId, history).push({
        at: Date.now(),
        request: isRegister ? 'register' : 'poll',
        status,
        ...(retryAfterSec !== undefined ? { retryAfterSec } : {}),
      });
      this.reply(client, rid, status, body, retryAfterSec, raw);
    };
    this.counters.requestsTotal++;
    this.peak.hit(now);
    if (isRegister) {
      this.counters.registerRequests++;
      this.peakRegister.hit(now);
      historyOf(this.attemptLog, s.registrationId, history).push(now);
    } else {
      this.counters.pollRequests++;
    }

    // The service checks who is asking before anything else: no fault or quota is spent on them.
    if (s.refusal?.status === 401) {
      this.counters.unauthorized++;
      return answer(401, this.errorBody(401));
    }
    if (s.refusal?.status === 400) {
      this.counters.invalidRegistrationIds++;
      return answer(400, this.errorBody(400, s.refusal.message));
    }

    if (this.rawFault) {
      const { status, body } = this.rawFault;
      if (--this.rawFault.remaining <= 0) this.rawFault = null;
      this.counters.failuresInjected++;
      return answer(status, body, undefined, true);
    }
    const failure = this.takeFailure(isRegister ? 'register' : 'poll');
    if (failure) {
      this.counters.failuresInjected++;
      return answer(failure.status, this.errorBody(failure.status), failure.retryAfterSec);
    }
    const throttle = this.takeThrottle(isRegister ? 'register' : 'poll');
    if (throttle) {
      this.counters.throttled++;
      return answer(429, this.errorBody(429), throttle.retryAfterSec);
    }

    if (isRegister) {
      if (this.bucket && !this.bucket.tryTake(now)) {
        this.counters.throttled++;
        return answer(429, this.errorBody(429), this.ctx.settings.retryAfterSec);
      }
      const body = parseJsonOr(payload, undefined);
      if (!isJsonObject(body) || typeof body['registrationId'] !== 'string' || registrationKey(body['registrationId']) !== registrationKey(s.registrationId)) {
        return answer(400, this.errorBody(400, 'registrationId in the body must match the connection.'));
      }
      const operationId = `4.${randomBytes(8).toString('hex')}.${randomUUID()}`;
      if (this.operations.size >= MAX_OPERATIONS) this.operations.delete(this.operations.keys().next().value!);
      this.operations.set(operationId, {
        operationId,
        registrationId: s.registrationId,
        idScope: s.idScope,
        keys: s.keys,
        payload: body['payload'],
        pollsLeft: this.ctx.settings.assigningPolls,
      });
      return answer(202, { operationId, status: 'assigning' }, this.ctx.settings.pollRetryAfterSec);
    }

    const operationId = query['operationId'] ?? '';
    const op = this.operations.get(operationId);
    if (!op || registrationKey(op.registrationId) !== registrationKey(s.registrationId)) {
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

  // -------------------------------------------------------------------------------------------
  // Device Registration Status Lookup (HTTP, same port)

  /**
   * `POST /{idScope}/registrations/{registrationId}?api-version=…` with the registration's SAS
   * token and `{ "registrationId": … }`: answers the current registration, never allocates.
   */
  private onLookup(req: IncomingMessage, res: ServerResponse): void {
    const now = Date.now();
    this.counters.lookupRequests++;
    this.peakLookup.hit(now);
    let registrationId: string | undefined;
    /** `injected`: a failWith answer, counted as such and not as what its status would mean. */
    const send = (status: number, body: unknown, retryAfterSec?: number, injected = false): void => {
      // HTTP's Retry-After is whole seconds (RFC 9110 delay-seconds), as DPS sends it.
      const retryAfter = retryAfterSec === undefined ? undefined : Math.ceil(retryAfterSec);
      if (registrationId !== undefined) {
        historyOf(this.lookupLog, registrationId, this.ctx.settings.attemptHistory).push({
          at: Date.now(),
          status,
          ...(retryAfter !== undefined ? { retryAfterSec: retryAfter } : {}),
        });
      }
      if (injected) this.counters.lookupFailuresInjected++;
      else if (status === 200) this.counters.lookupsFound++;
      else if (status === 404) this.counters.lookupsNotFound++;
      else if (status === 401) this.counters.lookupsUnauthorized++;
      else if (status === 429) this.counters.lookupsThrottled++;
      else if (status === 400 || status === 405 || status === 413 || status === 415) this.counters.lookupsRejected++;
      // Date in the service's time: what a device reads to learn how far off its own clock is.
      const headers: Record<string, string> = { 'Content-Type': 'application/json; charset=utf-8', Date: new Date(this.clock.nowMs()).toUTCString() };
      if (retryAfter !== undefined) headers['Retry-After'] = String(retryAfter);
      if (status === 405) headers['Allow'] = 'POST';
      // An unread oversized body would otherwise keep the connection busy.
      if (status === 413) headers['Connection'] = 'close';
      res.writeHead(status, headers).end(JSON.stringify(body));
    };

    const url = new URL(req.url ?? '/', 'https://dps.invalid');
    const match = LOOKUP_PATH.exec(url.pathname);
    let idScope: string;
    try {
      idScope = decodeURIComponent(match?.[1] ?? '');
      registrationId = match ? decodeURIComponent(match[2]!) : undefined;
    } catch {
      return send(400, this.errorBody(400, 'The request path is not valid URL encoding.'));
    }
    if (registrationId === undefined) return send(404, this.errorBody(404, 'No such resource.'));
    if (req.method !== 'POST') return send(405, this.errorBody(405));
    if (!url.searchParams.get('api-version')) return send(400, this.errorBody(400, 'api-version is required.'));
    if (mediaType(req.headers['content-type']) !== 'application/json') return send(415, this.errorBody(415));
    if (Number(req.headers['content-length'] ?? 0) > MAX_LOOKUP_BODY_BYTES) return send(413, this.errorBody(413));

    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (chunk: Buffer) => {
      if (tooLarge) return;
      size += chunk.length;
      if (size > MAX_LOOKUP_BODY_BYTES) {
        tooLarge = true;
        send(413, this.errorBody(413));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (tooLarge) return;
      this.answerLookup(idScope, registrationId!, req.headers.authorization, Buffer.concat(chunks).toString('utf8'), send, peerChainOf(req.socket));
    });
  }

  private answerLookup(
    idScope: string,
    registrationId: string,
    authorization: string | undefined,
    text: string,
    send: (status: number, body: unknown, retryAfterSec?: number, injected?: boolean) => void,
    /** The TLS client certificate chain: without an Authorization header, the credential (X.509 attestation). */
    peer: readonly X509Certificate[] = [],
  ): void {
    const body = parseJsonOr(text, undefined);
    if (!isJsonObject(body)) return send(400, this.errorBody(400, 'The request body must be a JSON object.'));
    const idProblem = registrationIdProblem(registrationId);
    if (idProblem) return send(400, this.errorBody(400, `${idProblem}.`));
    const bodyId = body['registrationId'];
    if (bodyId !== undefined && (typeof bodyId !== 'string' || registrationKey(bodyId) !== registrationKey(registrationId))) {
      return send(400, this.errorBody(400, 'registrationId in the body must match the path.'));
    }
    // The troubleshooting table: 404 when "the Device Provisioning Service instance ... doesn't exist".
    if (!this.hostsScope(idScope)) return send(404, this.errorBody(404, 'Unknown ID scope.'));
    const check = verifySasToken(authorization, {
      keys: keyList(this.deviceKeys(registrationId, idScope)),
      nowSec: this.clock.nowSec(),
      resource: dpsResource(idScope, registrationId),
    });
    // The other reading of the evidence: only service credentials may look up (see the README).
    if (this.ctx.settings.lookupCredentials === 'service') {
      this.ctx.logger.debug({ registrationId }, 'DPS lookup with a device token refused (lookupCredentials: service)');
      return send(401, this.errorBody(401));
    }
    const x509 = authorization === undefined && peer.length > 0 ? this.attestX509(peer, registrationId) : undefined;
    if (x509 && !x509.ok) {
      this.ctx.logger.debug({ registrationId, reason: x509.reason }, 'DPS lookup certificate refused');
      return send(401, this.errorBody(401));
    }
    if (!x509 && !check.ok) {
      this.ctx.logger.debug({ registrationId, reason: check.reason }, 'DPS lookup token refused');
      return send(401, this.errorBody(401));
    }
    const failure = this.takeFailure('lookup');
    if (failure) return send(failure.status, this.errorBody(failure.status), failure.retryAfterSec, true);
    const throttle = this.takeThrottle('lookup');
    if (throttle) return send(429, this.errorBody(429), throttle.retryAfterSec);
    if (this.lookupBucket && !this.lookupBucket.tryTake()) {
      return send(429, this.errorBody(429), this.ctx.settings.lookupRetryAfterSec);
    }
    const record = this.records.get(registrationKey(registrationId));
    // One record per registration id, the latest scope's: another scope has none to report.
    if (!record || record.idScope !== idScope) return send(404, this.errorBody(404, 'Registration not found.'));
    send(200, registrationResult(record));
  }

  private complete(op: Operation): object {
    const nowIso = new Date().toISOString();
    const enrollment = this.enrollments.get(registrationKey(op.registrationId));
    const refusedState = (status: 'failed' | 'disabled', errorCode: number, errorMessage: string): object => {
      this.counters.registrationsRefused++;
      return {
        operationId: op.operationId,
        status,
        registrationState: {
          registrationId: op.registrationId,
          createdDateTimeUtc: this.records.get(registrationKey(op.registrationId))?.createdDateTimeUtc ?? nowIso,
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

    let record = this.records.get(registrationKey(op.registrationId));
    const modelId = isJsonObject(op.payload) && typeof op.payload['modelId'] === 'string' ? op.payload['modelId'] : undefined;
    const scopeHubs = this.scopeHubs(op.idScope);
    if (record && record.idScope !== op.idScope) {
      // Registered under another scope (a migration): this scope allocates it afresh.
      this.counts.set(record.hubName, Math.max(0, (this.counts.get(record.hubName) ?? 1) - 1));
      this.records.delete(registrationKey(op.registrationId));
      record = undefined;
    }
    const recordHub = record && scopeHubs.find((h) => h.name === record!.hubName);
    if (record && recordHub && recordHub.up === false && scopeHubs.some((h) => h.up !== false)) {
      // The assigned hub is down: re-evaluate the allocation among the hubs that are up. The
      // device's data cannot be migrated from a dead hub, hence deviceDataReset.
      const target = this.allocate(op.registrationId, scopeHubs);
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
        hub = this.allocate(op.registrationId, scopeHubs);
      } catch (err) {
        return refusedState('failed', 400207, `Custom allocation failed: ${(err as Error).message}`);
      }
      record = {
        registrationId: op.registrationId,
        idScope: op.idScope,
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
      this.records.set(registrationKey(op.registrationId), record);
      this.counts.set(hub.name, (this.counts.get(hub.name) ?? 0) + 1);
    }
    if (modelId) record.modelId = modelId;
    if (op.payload !== undefined) record.requestPayload = structuredClone(op.payload);
    this.counters.registrations++;
    this.ctx.onAssigned(structuredClone(record), op.keys);
    this.ctx.events.emit('registered', structuredClone(record));
    const returned = this.ctx.settings.returnData?.(op.registrationId, op.payload);
    return {
      operationId: op.operationId,
      status: 'assigned',
      registrationState: { ...registrationResult(record), ...(returned !== undefined ? { payload: returned } : {}) },
    };
  }

  private resolveHub(nameOrHost: string): DpsHubRef {
    const hub = this.ctx.hubs().find((h) => h.name === nameOrHost || h.host === nameOrHost);
    if (!hub) throw new EmulatorError('UNKNOWN_HUB', `unknown hub '${nameOrHost}'`);
    return hub;
  }

  private allocate(registrationId: string, all: readonly DpsHubRef[]): DpsHubRef {
    const up = all.filter((h) => h.up !== false);
    const hubs = up.length > 0 ? up : all;
    const policy = this.ctx.settings.allocation;
    if (policy === 'static') {
      const pinned = this.ctx.settings.staticHub ? this.resolveHub(this.ctx.settings.staticHub) : undefined;
      // A pinned hub linked to another ID scope is not this scope's to give.
      return pinned && all.some((h) => h.name === pinned.name) ? pinned : hubs[0]!;
    }
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
      faults: {
        throttle: this.throttleFault,
        failWith: this.failFault,
        rateLimitPerSec: this.bucket?.ratePerSec ?? null,
        lookupRateLimitPerSec: this.lookupBucket?.ratePerSec ?? null,
      },
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
