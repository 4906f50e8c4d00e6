/** Public types of the local cloud (emulated Azure DPS + IoT Hubs). */
import type { JsonObject } from './util';

export type { JsonObject } from './util';

/** MQTT CONNACK refusal codes a service can answer with (3.1.1). */
export type ConnackRefusal = 1 | 2 | 3 | 4 | 5;

/**
 * The CONNACK code a hub refuses a moved (failed-over) or disabled device with. Azure's is 3
 * "server unavailable" (inferred: the C SDK maps it to DEVICE_DISABLED, the official HA sample
 * reprovisions on it); 5 "not authorized" is selectable because no Microsoft document states it.
 */
export type MovedDeviceRefusal = 3 | 5;

/**
 * Why a hub refused a CONNECT, as the cloud records it: a moved or disabled device is told apart
 * from an overloaded hub even when both answer CONNACK 3.
 */
export type RefusalReason =
  | 'moved'
  | 'disabled'
  | 'overloaded'
  | 'injected'
  | 'unauthorized'
  | 'unknown-device'
  | 'stopped'
  /** An X.509 identity's certificate refused (missing, untrusted, revoked, wrong CN, out of its dates). */
  | 'certificate';

/** One refused CONNECT, kept per device (bounded). */
export interface RefusalRecord {
  /** Epoch ms. */
  at: number;
  code: ConnackRefusal;
  reason: RefusalReason;
  /** The connection was closed without a CONNACK (`hub.expiredCertificateRefusal: 'close'`); `code` is then 5. */
  closed?: true;
}

/**
 * How a hub refuses an X.509 device whose certificate is outside its validity window: `'close'`
 * (no CONNACK; azure-iot-sdk-node PR 776: IoT Hub "will reject the expired Cert", the client sees
 * only a `close`) or CONNACK 5 "not authorized", as for every other refused certificate.
 */
export type ExpiredCertificateRefusal = 'close' | 5;

/** Errors the emulator API throws (bad arguments, unknown devices, full queues). */
export class EmulatorError extends Error {
  constructor(
    readonly code:
      | 'UNKNOWN_HUB'
      | 'UNKNOWN_DEVICE'
      | 'UNKNOWN_REGISTRATION'
      | 'C2D_QUEUE_FULL'
      | 'INVALID_ARGUMENT'
      | 'NOT_FAILED_OVER'
      | 'ALREADY_FAILED_OVER'
      | 'STOPPED',
    message: string,
  ) {
    super(message);
    this.name = 'EmulatorError';
  }
}

// ---------------------------------------------------------------------------------------------
// DPS

/** Where a new registration goes: `hubs` are hub names, `counts` the assigned devices per hub. */
export type AllocationFunction = (
  registrationId: string,
  hubs: readonly string[],
  counts: Readonly<Record<string, number>>,
) => string;

/** `even`: the hub with the fewest devices (ties: first); `static`: always `staticHub`. */
export type AllocationPolicy = 'even' | 'static' | AllocationFunction;

/**
 * `dps.pollRetryAfterSec` for tests, demos and benchmarks that want speed. Azure answers
 * `assigning` with `retry-after=3` (whole seconds), the local cloud's default; this fraction makes
 * a registration take ~0.1 s instead of ~6 s. One named value so every fast caller says so.
 */
export const FAST_DPS_POLL_SEC = 0.05;

/** Options of the emulated DPS. */
export interface DpsOptions {
  /** Registration requests accepted per second (token bucket, burst = 1 s). Default: unlimited. */
  rateLimitPerSec?: number;
  /** `retry-after` (seconds) sent with rate-limit 429s. Default 1. */
  retryAfterSec?: number;
  /** Status polls answered `assigning` before `assigned`. Default 1. */
  assigningPolls?: number;
  /**
   * `retry-after` (seconds) sent with 202 `assigning` answers. Default 3, what Azure sends (whole
   * seconds; the Embedded C SDK parses it as an integer). A fraction is allowed for fast tests:
   * the Node SDK accepts it.
   */
  pollRetryAfterSec?: number;
  /** Registration status lookups (HTTP) accepted per second; 429 + `Retry-After` beyond. Default: unlimited. */
  lookupRateLimitPerSec?: number;
  /** `Retry-After` (whole seconds, as HTTP requires) sent with lookup 429s. Default 1. */
  lookupRetryAfterSec?: number;
  /**
   * Who may call the status lookup. `device` (default): the device's own registration SAS, as the
   * REST reference and seed 004 describe it. `service`: device tokens get 401, the other reading
   * of the evidence (azure-iot-sdk-csharp#3372); a device must then fall back to registering.
   */
  lookupCredentials?: LookupCredentials;
  /** Default `even`. */
  allocation?: AllocationPolicy;
  /** Hub name or host for `allocation: 'static'`. Default: the first hub. */
  staticHub?: string;
  /** Optional custom-allocation style data returned as `registrationState.payload`. */
  returnData?: (registrationId: string, requestPayload: unknown) => unknown;
  /** Request timestamps kept per device. Default 32. */
  attemptHistory?: number;
}

/** DPS registration sub-status, as the service reports it. */
export type RegistrationSubstatus =
  | 'initialAssignment'
  | 'deviceDataMigrated'
  | 'deviceDataReset'
  | 'reprovisionedToInitialAssignment';

/** Emulated enrollment state. `failed`/`disabled` make registrations end with that status. */
export type EnrollmentStatus = 'enabled' | 'failed' | 'disabled';

/** A registration record kept by the emulated DPS. */
export interface RegistrationRecord {
  registrationId: string;
  /** The ID scope it registered under (the cloud's, or one added with `addIdScope`). */
  idScope: string;
  deviceId: string;
  /** Host of the assigned hub (`localhost:PORT`). */
  assignedHub: string;
  /** Name of the assigned hub (`hub-0` ...). */
  hubName: string;
  status: 'assigned';
  substatus: RegistrationSubstatus;
  /** Model id announced in the registration payload (`payload.modelId`). */
  modelId?: string;
  /** The last registration request payload. */
  requestPayload?: unknown;
  createdDateTimeUtc: string;
  lastUpdatedDateTimeUtc: string;
  etag: string;
  /** Completed registrations of this device. */
  registrations: number;
}

/** One answer DPS sent to a device: kept per registration id, bounded by `attemptHistory`. */
export interface DpsAnswer {
  /** Epoch ms when the answer was sent. */
  at: number;
  request: 'register' | 'poll';
  status: number;
  /** The `retry-after` sent with it, when there was one. */
  retryAfterSec?: number;
}

/** One Device Registration Status Lookup answered, kept per registration id (bounded like answers). */
export interface DpsLookup {
  /** Epoch ms when the answer was sent. */
  at: number;
  status: number;
  /** The `Retry-After` header sent with it (whole seconds), when there was one. */
  retryAfterSec?: number;
}

/** Which requests an injected DPS fault (`throttle`, `failWith`) applies to. Default `any`. */
export type DpsFaultTarget = 'any' | 'registration' | 'lookup';

/** Who may call the Device Registration Status Lookup (see `DpsOptions.lookupCredentials`). */
export type LookupCredentials = 'device' | 'service';

/** Counters of the emulated DPS. */
export interface DpsMetrics {
  /** Every MQTT request (register + poll) received; lookups are counted apart. */
  requestsTotal: number;
  registerRequests: number;
  pollRequests: number;
  /** Completed assignments. */
  registrations: number;
  /** 429 answers (rate limit + injected throttling). */
  throttled: number;
  /** Injected failures (failWith). */
  failuresInjected: number;
  /** Registrations answered `failed` or `disabled`. */
  registrationsRefused: number;
  /** MQTT requests answered 401 (wrong key, expired or foreign token: DPS accepts the CONNECT). */
  unauthorized: number;
  /** MQTT requests answered 400 because the registration id breaks the documented rules. */
  invalidRegistrationIds: number;
  /** Device Registration Status Lookups (HTTP) received. */
  lookupRequests: number;
  /** Lookups answered 200 with a registration. */
  lookupsFound: number;
  /** Lookups answered 404 (no registration, unknown id scope or path). */
  lookupsNotFound: number;
  /** Lookups answered 401. */
  lookupsUnauthorized: number;
  /** Lookups answered 429 (lookup rate limit + injected throttling). */
  lookupsThrottled: number;
  /** Lookups refused as malformed: 400, 405, 413, 415. */
  lookupsRejected: number;
  /** Lookups answered with an injected failure (failWith). */
  lookupFailuresInjected: number;
  /** Most lookups seen in one wall-clock second. */
  peakLookupsPerSec: number;
  /** Most requests seen in one wall-clock second. */
  peakRequestsPerSec: number;
  /** Most register requests (not polls) seen in one wall-clock second. */
  peakRegisterRequestsPerSec: number;
  connects: number;
  refusedConnects: number;
  currentConnections: number;
}

// ---------------------------------------------------------------------------------------------
// Hubs

/** Options shared by all hubs. */
export interface HubOptions {
  /** New connections accepted per second per hub (CONNACK 3 beyond). Default: unlimited. */
  connectRateLimitPerSec?: number;
  /** Default direct method timeout. Default 30000 ms. */
  methodTimeoutMs?: number;
  /** Telemetry records kept across all hubs (oldest dropped). Default 1,000,000. */
  maxTelemetry?: number;
  /** Disconnect a device when its SAS token expires, as IoT Hub does. Default true. */
  enforceTokenExpiry?: boolean;
  /** Pending C2D messages per device. Default 50 (the IoT Hub limit). */
  c2dQueueLimit?: number;
  /** CONNACK code for a moved (failed-over) or disabled device. Default 3, as Azure (see README). */
  refusalCode?: MovedDeviceRefusal;
  /** An expired or not-yet-valid device certificate: `'close'` (default, see the README) or CONNACK 5. */
  expiredCertificateRefusal?: ExpiredCertificateRefusal;
}

/** A twin document as the device sees it. */
export interface TwinDocument {
  desired: JsonObject & { $version: number };
  reported: JsonObject & { $version: number };
}

/** Why a device identity is disabled. */
export type DisabledReason = 'operator' | 'failover';

/** Snapshot of a device identity on one hub. */
export interface DeviceInfo {
  deviceId: string;
  hub: string;
  status: 'enabled' | 'disabled';
  disabledReason?: DisabledReason;
  connected: boolean;
  /** Model id from the last MQTT username. */
  modelId?: string;
  connects: number;
  lastConnectedAt?: number;
  /** C2D messages queued or awaiting PUBACK. */
  c2dPending: number;
}

/** A device-to-cloud message stored by a hub. */
export interface TelemetryRecord {
  /** Global arrival order across hubs. */
  seq: number;
  /** Hub name. */
  hub: string;
  deviceId: string;
  messageId?: string;
  correlationId?: string;
  contentType?: string;
  contentEncoding?: string;
  /** Component name (`$.sub`, from the `dt-subject` property). */
  component?: string;
  /** `iothub-creation-time-utc` user property when the device set it. */
  creationTimeUtc?: string;
  body: Buffer;
  /** User properties, URL-decoded (includes `iothub-creation-time-utc`). */
  properties: Record<string, string>;
  /** System properties as sent (`$.mid`, `$.ct`, `$.ce`, `$.sub` ...), URL-decoded. */
  systemProperties: Record<string, string>;
  /** Epoch ms. */
  receivedAt: number;
}

/** Result of a direct method call. 404: device not connected/subscribed; 504: timeout. */
export interface MethodResult {
  status: number;
  payload: unknown;
}

/**
 * Timeouts of a direct method call. `responseTimeoutSec` and `connectTimeoutSec` are IoT Hub's
 * `responseTimeoutInSeconds` (5–300, default 30) and `connectTimeoutInSeconds` (0–300, default 0:
 * the device must be connected now); values out of bounds get IoT Hub's 400. `timeoutMs` is the
 * local cloud's older response timeout in milliseconds, unchecked (short timeouts in tests).
 */
export interface MethodInvokeOptions {
  timeoutMs?: number;
  responseTimeoutSec?: number;
  connectTimeoutSec?: number;
}

/** Delivery options of a C2D message. */
export interface C2DSendOptions {
  /**
   * Time to live: the message expires (dropped, counted, never delivered) when not delivered and
   * acknowledged by then. At most 48 hours. Written to the device as `$.exp`. Default: the hub's
   * default TTL (1 hour, as IoT Hub), not written.
   */
  ttlMs?: number;
}

/** Properties of a C2D message. Unknown keys become user properties. */
export interface C2DProperties {
  messageId?: string;
  correlationId?: string;
  [userProperty: string]: string | undefined;
}

/** Outcome of `sendC2D`: written to the device now, or queued until it subscribes. */
export interface C2DSendResult {
  messageId: string;
  status: 'sent' | 'queued';
}

/** Counters of one hub. */
export interface HubMetrics {
  connects: number;
  refusedConnects: number;
  refusedByCode: Record<string, number>;
  /** Refused CONNECTs by why: a moved device and an overloaded hub both answer 3 but differ here. */
  refusedByReason: Partial<Record<RefusalReason, number>>;
  currentConnections: number;
  /** Connections held open but silent by a blackhole. */
  mutedConnections: number;
  messages: number;
  twinGets: number;
  reportedPatches: number;
  desiredPushes: number;
  methodCalls: number;
  c2dSent: number;
  c2dCompleted: number;
  /** Device-to-cloud messages over 256 KB (body + properties): the connection was closed, nothing stored. */
  oversizedMessages: number;
  /** QoS 2 publishes: the connection was closed, as IoT Hub does. */
  qos2Publishes: number;
  /** C2D messages dropped because their TTL passed before delivery. */
  c2dExpired: number;
  /** C2D messages dropped after reaching the maximum delivery count. */
  c2dDeadLettered: number;
}

/** Options of `withholdPubacks`. */
export interface WithholdOptions {
  /** Store the messages whose PUBACK is withheld (an ack lost after storing). Default true. */
  store?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Cloud

/**
 * Options of a manual failover. Without a TTL it fails back after 5 minutes, as IoT Central's
 * `az iot central device manual-failover` does; `ttlMs: null` keeps it until `manualFailback`.
 */
export interface FailoverOptions {
  ttlMs?: number | null;
  ttlMinutes?: number;
  /** Target hub name or host. Default: the other hub with the fewest devices. */
  toHub?: string;
  /** CONNACK code the hubs refuse this device with while it is moved. Default: `hub.refusalCode`. */
  refusalCode?: MovedDeviceRefusal;
}

/** IoT Central's manual failover lasts 5 minutes unless given a TTL (seed 003, the failover tool). */
export const DEFAULT_FAILOVER_TTL_MS = 5 * 60_000;

/** An active failover. */
export interface FailoverInfo {
  deviceId: string;
  fromHub: string;
  toHub: string;
  /** CONNACK code the device is refused with on the hub it was moved away from. */
  refusalCode: MovedDeviceRefusal;
  startedAt: number;
  /** Epoch ms of the automatic failback, when a TTL was given. */
  failbackAt?: number;
}

/** Events the cloud emits (for tests that wait on conditions). */
export type LocalCloudEvents = {
  telemetry: [record: TelemetryRecord];
  deviceConnected: [info: { hub: string; deviceId: string; modelId?: string }];
  deviceDisconnected: [info: { hub: string; deviceId: string }];
  registered: [record: RegistrationRecord];
  failover: [info: FailoverInfo];
  failback: [info: FailoverInfo];
};
