/**
 * Error classification: one SDK error + the phase it happened in → one of four error classes.
 *
 * Pure and SDK-free (imported by machines/): errors are recognised by `name`, `constructor.name`,
 * fields and message text, never by `instanceof` on azure-iot-* classes.
 *
 * Why the class alone is not enough (see docs "Errors as the SDK surfaces them"):
 * - azure-iot-mqtt-base `translateError` turns every error with a `code` into NotConnectedError,
 *   so a CONNACK refusal after a first connect is NotConnectedError with `transportError.code`.
 * - Before the transport's first successful connect, azure-iot-device-mqtt wraps EVERY failure as
 *   `Error('Failure on first connection (Not authorized): ' + inner.message)`, which translateError
 *   then turns into UnauthorizedError (or ServiceUnavailableError / NotImplementedError when the
 *   inner text says so). The inner code is lost: only the message tells ECONNREFUSED, EMFILE, a
 *   TLS failure or a real CONNACK 5 apart.
 * - The DPS transport passes mqtt.js and socket errors through raw, and builds HTTP-ish errors
 *   with `translateError(message, status, body, { topic, payload })` for statuses 300–428 only,
 *   which keeps the status only in the response topic (`$dps/registrations/res/403/?$rid=…`) and
 *   the body's `errorCode`. 429 and every 5xx are never errors there: the SDK re-polls them, so
 *   they reach us only as src/actors/provision.ts's DpsStatusError (`statusCode`, `retryAfterMs`).
 * - The hub answers twin requests on `$iothub/twin/res/{status}`; azure-iot-device-mqtt
 *   (mqtt_twin_client.js `_onResponseMessage`) ignores the status and turns an `errorCode` body
 *   into `new Error(body.message)`. Status and errorCode are gone: only the hub's text is left.
 *   (azure-iot-device's twin_errors.translateError, which would keep the status, is never called
 *   on the MQTT path, so no ThrottlingError / IotHubQuotaExceededError / DeviceNotFoundError
 *   reaches a device from the hub.)
 * So facts are extracted once from the whole error chain, and an ordered table decides.
 */
import type { Classification, ErrorClass, Failure, Phase } from './types';

/** Everything the rules look at, extracted once from an error and the links it carries. */
export interface ErrorFacts {
  phase: Phase;
  /** `name` and `constructor.name` of every link of the chain, outermost first. */
  names: string[];
  /** Messages of the chain (and of DPS/hub response bodies), outermost first. */
  messages: string[];
  /** MQTT 3.1.1 CONNACK return code (1..5), from `code` or from the "Connection refused: …" text. */
  connack?: number;
  /** Node socket / OS error code (ECONNREFUSED, ENOTFOUND, EMFILE, …). */
  socketCode?: string;
  /** TLS certificate validation code (DEPTH_ZERO_SELF_SIGNED_CERT, CERT_HAS_EXPIRED, …). */
  tlsCode?: string;
  /** HTTP-ish status (DPS response topic, body errorCode, statusCode, twin error text). */
  status?: number;
  /** Service-given wait in ms (retry-after is in seconds on the wire; fractions allowed). */
  retryAfterMs?: number;
  /** The azure-iot-device-mqtt "Failure on first connection" wrapper is present. */
  firstConnection: boolean;
  /** DPS registration status from a result body, lower case ('failed', 'disabled', …). */
  registrationStatus?: string;
  /** Status behind the `errorCode` DPS put inside a failed `registrationState` (429 → 429001 …). */
  registrationErrorStatus?: number;
  /**
   * Status of a hub twin answer that the SDK reduced to `new Error(body.message)` (see the header):
   * recovered from IoT Hub's documented error texts, only for a bare `Error` seen on the hub.
   */
  twinStatus?: number;
}

/** One row of the classification table. First matching row wins. */
export interface ClassificationRule {
  rule: string;
  errorClass: ErrorClass;
  when: (facts: ErrorFacts) => boolean;
  /** Floor for the next delay (hub/DPS 5xx: at least 5 s, per the DPS at-scale guidance). */
  minDelayMs?: number;
  /** Ask DPS where the device belongs (status lookup) before acting on the class. */
  assignmentInDoubt?: true;
  /**
   * The service is up but busy, with no floor of its own (a hub throttling, a hub over its daily
   * quota): never a reason to leave the hub for DPS. Rows with a floor are busy anyway.
   */
  serverBusy?: true;
  /** One line for docs and logs: why this class. */
  why: string;
}

/**
 * The floor after a busy service (a hub or DPS 5xx, CONNACK 3 on a hub DPS confirmed), whatever
 * the policy (the DPS at-scale guidance: at least 5 s after a 5xx).
 */
export const SERVER_BUSY_MIN_DELAY_MS = 5000;

/** Socket and OS codes the rules know about; also searched for in wrapped message text. */
const SOCKET_CODES = [
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EHOSTDOWN',
  'EMFILE',
  'ENFILE',
  'ENOBUFS',
] as const;

/**
 * TLS certificate codes with the OpenSSL/Node message that replaces them once the SDK's first
 * connection wrapper has dropped the code. Longer texts first ("…in certificate chain" before
 * "self-signed certificate"). Both "self-signed" (OpenSSL 3) and "self signed" are accepted.
 */
const TLS_CODES: ReadonlyArray<readonly [code: string, text: RegExp]> = [
  ['SELF_SIGNED_CERT_IN_CHAIN', /self[- ]signed certificate in certificate chain/i],
  ['DEPTH_ZERO_SELF_SIGNED_CERT', /self[- ]signed certificate/i],
  ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', /unable to verify the first certificate/i],
  ['UNABLE_TO_GET_ISSUER_CERT_LOCALLY', /unable to get local issuer certificate/i],
  ['UNABLE_TO_GET_ISSUER_CERT', /unable to get issuer certificate/i],
  ['CERT_HAS_EXPIRED', /certificate has expired/i],
  ['CERT_NOT_YET_VALID', /certificate is not yet valid/i],
  ['CERT_REVOKED', /certificate revoked/i],
  ['CERT_SIGNATURE_FAILURE', /certificate signature failure/i],
  ['ERR_TLS_CERT_ALTNAME_INVALID', /does not match certificate's altnames/i],
];

/** mqtt.js 4 CONNACK texts ("Connection refused: " + errors[rc]) for MQTT 3.1.1 codes. */
const CONNACK_TEXTS: ReadonlyArray<readonly [code: number, text: string]> = [
  [1, 'Unacceptable protocol version'],
  [2, 'Identifier rejected'],
  [3, 'Server unavailable'],
  [4, 'Bad username or password'],
  [5, 'Not authorized'],
];

/** Texts of a connection that went away (mqtt-base, mqtt.js, end-of-stream). */
const CONNECTION_LOST_TEXT =
  /connection to the server has been closed|premature close|client disconnecting|no connection to broker|unable to establish a connection|connect(ion)? was lost|connection closed/i;

/**
 * IoT Hub's texts for a refused twin request, by the status they stand for (first match wins).
 * Sources: "Understand and resolve Azure IoT Hub errors" (troubleshoot-error-codes: the 401003
 * messages, the 429xxx names, 503008 "Message throttled"), the REST common error codes
 * ("An internal error occurred", 503 "Service Unavailable"), and the 403002 body text
 * ("Total number of messages on IotHub '…' exceeded the allocated quota").
 */
const TWIN_REFUSAL_TEXTS: ReadonlyArray<readonly [status: number, text: RegExp]> = [
  [429, /throttl|too ?many ?requests/i],
  [403, /exceeded the allocated quota|iot ?hub ?quota ?exceeded/i],
  [
    401,
    /unauthori[sz]ed|authorization header missing|does not contain the specified device|does not allow access|authentication failed for this device|thumbprint does not match|is not authorized for/i,
  ],
  [500, /internal (server )?error|server ?error|service ?unavailable|server ?(is )?busy|partition ?not ?found|gateway ?time-?out/i],
];

const MAX_CHAIN = 8;
const MAX_MESSAGE_CHARS = 500;

// ---------------------------------------------------------------------------------------------
// Fact extraction
// ---------------------------------------------------------------------------------------------

/** Reads a property without ever throwing (getters on foreign objects can). */
function read(target: unknown, key: string): unknown {
  if (target === null || (typeof target !== 'object' && typeof target !== 'function')) return undefined;
  try {
    return (target as Record<string, unknown>)[key];
  } catch {
    return undefined;
  }
}

function isObject(value: unknown): value is object {
  return value !== null && (typeof value === 'object' || typeof value === 'function');
}

function asStatus(value: unknown): number | undefined {
  const n = typeof value === 'string' && /^\d{3}$/.test(value) ? Number(value) : value;
  return typeof n === 'number' && Number.isInteger(n) && n >= 100 && n <= 599 ? n : undefined;
}

/** DPS/hub body errorCode: 6 digits whose first three are the status (401002 → 401). */
function statusFromErrorCode(value: unknown): number | undefined {
  const n = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n)) return undefined;
  if (n >= 100000 && n <= 599999) return Math.floor(n / 1000);
  return asStatus(n);
}

/**
 * Seconds (number or numeric string, fractions allowed) → ms; anything else → undefined. A wait
 * that rounds to 0 ms is no retry-after (Azure SDK for C: `retry_after_seconds > 0`, else the
 * back-off curve): honoured, it would replace the curve with a retry every second, forever.
 */
function secondsToMs(value: unknown): number | undefined {
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
  return typeof n === 'number' && Number.isFinite(n) && Math.round(n * 1000) > 0 ? Math.round(n * 1000) : undefined;
}

function parseJson(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  try {
    return JSON.parse(value);
  } catch {
    return undefined;
  }
}

/** The links of an error chain: the error, its transport error, cause, Disconnected.transportObj… */
function chainOf(error: unknown): unknown[] {
  const links: unknown[] = [];
  const seen = new Set<unknown>();
  const queue: unknown[] = [error];
  while (queue.length > 0 && links.length < MAX_CHAIN) {
    const link = queue.shift();
    if (link === undefined || link === null || seen.has(link)) continue;
    seen.add(link);
    links.push(link);
    if (!isObject(link)) continue;
    for (const key of ['transportError', 'transportObj', 'cause', 'error']) {
      const next = read(link, key);
      if (isObject(next)) queue.push(next);
    }
    const inner = read(link, 'errors');
    if (Array.isArray(inner)) queue.push(...inner.filter(isObject));
  }
  return links;
}

/** Extracts the facts once; rules never look at the raw error. Never throws. */
export function extractFacts(error: unknown, phase: Phase): ErrorFacts {
  const facts: ErrorFacts = { phase, names: [], messages: [], firstConnection: false };
  const topics: string[] = [];

  for (const link of chainOf(error)) {
    if (!isObject(link)) {
      if (typeof link === 'string') facts.messages.push(link);
      continue;
    }
    const name = read(link, 'name');
    if (typeof name === 'string' && name !== '') facts.names.push(name);
    const ctorName = read(read(link, 'constructor'), 'name');
    if (typeof ctorName === 'string' && ctorName !== 'Object' && ctorName !== name) facts.names.push(ctorName);
    const message = read(link, 'message');
    if (typeof message === 'string' && message !== '') facts.messages.push(message);

    // mqtt.js sets a numeric `code` = CONNACK return code; Node sets string codes.
    const code = read(link, 'code');
    if (typeof code === 'number' && code >= 1 && code <= 5) facts.connack ??= code;
    if (typeof code === 'string') {
      if (TLS_CODES.some(([tls]) => tls === code)) facts.tlsCode ??= code;
      else if ((SOCKET_CODES as readonly string[]).includes(code)) facts.socketCode ??= code;
    }

    const response = read(link, 'response');
    facts.status ??=
      asStatus(read(link, 'statusCode')) ??
      asStatus(read(link, 'status')) ??
      asStatus(read(response, 'statusCode')) ??
      asStatus(read(response, 'status'));

    // DPS translateError keeps the MQTT response as `transportObject: { topic, payload }`.
    for (const holder of [link, read(link, 'transportObject'), response]) {
      const topic = read(holder, 'topic');
      if (typeof topic === 'string') topics.push(topic);
    }

    // Response bodies: DPS `result`, hub HTTP `responseBody`, twin `response`.
    for (const rawBody of [read(link, 'result'), read(link, 'responseBody'), read(link, 'body')]) {
      const body = parseJson(rawBody);
      if (!isObject(body)) continue;
      facts.status ??= statusFromErrorCode(read(body, 'errorCode'));
      const bodyMessage = read(body, 'message');
      if (typeof bodyMessage === 'string' && bodyMessage !== '') facts.messages.push(bodyMessage);
      const status = read(body, 'status');
      const stateStatus = read(read(body, 'registrationState'), 'status');
      facts.registrationErrorStatus ??= statusFromErrorCode(read(read(body, 'registrationState'), 'errorCode'));
      for (const candidate of [status, stateStatus]) {
        if (typeof candidate === 'string' && /^(failed|disabled)$/i.test(candidate)) {
          facts.registrationStatus ??= candidate.toLowerCase();
        }
      }
    }

    const ownRetryAfterMs = read(link, 'retryAfterMs');
    facts.retryAfterMs ??=
      (typeof ownRetryAfterMs === 'number' && Number.isFinite(ownRetryAfterMs) && ownRetryAfterMs > 0
        ? ownRetryAfterMs
        : undefined) ??
      secondsToMs(read(link, 'retryAfter')) ??
      secondsToMs(read(read(response, 'headers'), 'retry-after'));
  }

  for (const topic of topics) {
    facts.status ??= asStatus(/\/res\/(\d{3})\//.exec(topic)?.[1]);
    facts.retryAfterMs ??= secondsToMs(/[?&]retry-after=([0-9.]+)/i.exec(topic)?.[1]);
  }

  const text = facts.messages.join('\n');
  facts.firstConnection = text.includes('Failure on first connection');
  for (const [code, phrase] of CONNACK_TEXTS) {
    if (facts.connack === undefined && text.includes('Connection refused: ' + phrase)) facts.connack = code;
  }
  if (facts.tlsCode === undefined) facts.tlsCode = TLS_CODES.find(([, re]) => re.test(text))?.[0];
  if (facts.socketCode === undefined) {
    facts.socketCode = SOCKET_CODES.find((code) => new RegExp(`\\b${code}\\b`).test(text));
  }
  // A twin answer with an errorCode body is a bare Error holding only the hub's text (see header).
  const bareError = facts.names.length === 1 && facts.names[0] === 'Error';
  if ((phase === 'hub-connect' || phase === 'hub-session') && bareError && facts.status === undefined) {
    const noOtherSignal = facts.connack === undefined && facts.socketCode === undefined && facts.tlsCode === undefined;
    if (noOtherSignal) facts.twinStatus = TWIN_REFUSAL_TEXTS.find(([, re]) => re.test(text))?.[0];
  }
  // DeviceRegistrationFailedError's name is 'ProvisioningRegistrationFailedError'; check both.
  if (facts.names.some((n) => n === 'DeviceRegistrationFailedError' || n === 'ProvisioningRegistrationFailedError')) {
    facts.registrationStatus ??= 'failed';
  }
  // The SDK's polling state machine turns an unknown body status into SyntaxError('status is x').
  facts.registrationStatus ??= /\bstatus is (failed|disabled)\b/i.exec(text)?.[1]?.toLowerCase();

  // Drop undefined keys so facts stay tidy in logs and snapshot-friendly.
  for (const key of Object.keys(facts) as Array<keyof ErrorFacts>) {
    if (facts[key] === undefined) delete facts[key];
  }
  return facts;
}

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

const has = (facts: ErrorFacts, ...names: string[]): boolean => facts.names.some((n) => names.includes(n));
const onHub = (facts: ErrorFacts): boolean => facts.phase === 'hub-connect' || facts.phase === 'hub-session';
/** Registration and status lookup alike: both are DPS answering about this registration. */
const onDps = (facts: ErrorFacts): boolean => facts.phase === 'dps' || facts.phase === 'dps-lookup';
const onLookup = (facts: ErrorFacts): boolean => facts.phase === 'dps-lookup';
const text = (facts: ErrorFacts): string => facts.messages.join('\n');
/** A status the hub answered: a twin answer's (from its text), or one a wrapper kept as `statusCode`. */
const hubStatus = (facts: ErrorFacts): number | undefined => (onHub(facts) ? (facts.status ?? facts.twinStatus) : undefined);
/** InvalidOperationError text of the provisioning polling state machine (polling_state_machine.js). */
const OPERATION_IN_PROGRESS = /another operation is in progress/i;

/** Hub CONNACK 2/4/5 rows, split by shape so logs say which one the SDK produced. */
function hubConnackRows(code: 2 | 4 | 5, meaning: string): ClassificationRule[] {
  return [
    {
      rule: `connack-${code}-first-connect`,
      errorClass: 'reprovision',
      assignmentInDoubt: true,
      when: (f) => onHub(f) && f.connack === code && f.firstConnection,
      why: `hub refused the credentials (${meaning}) on the transport's first connect (UnauthorizedError wrapper): the assignment is stale, ask DPS`,
    },
    {
      rule: `connack-${code}-after-connect`,
      errorClass: 'reprovision',
      assignmentInDoubt: true,
      when: (f) => onHub(f) && f.connack === code && !f.firstConnection,
      why: `hub refused the credentials (${meaning}) after a working connection (NotConnectedError, transportError.code ${code}): device disabled or moved, ask DPS`,
    },
  ];
}

/**
 * Ordered rules; the first match wins. Fatal and credential rows come before the generic
 * socket/timeout rows because wrapped errors carry several signals at once (an UnauthorizedError
 * whose text holds a TLS failure is a TLS failure, not an auth failure).
 */
export const CLASSIFICATION_TABLE: readonly ClassificationRule[] = [
  // --- never retried automatically -----------------------------------------------------------
  {
    rule: 'config-error',
    errorClass: 'fatal',
    when: (f) => has(f, 'ConfigError'),
    why: 'invalid configuration cannot fix itself',
  },
  {
    // azure-iot-device-mqtt sendEvent refuses a body over 256 KiB before publishing it.
    rule: 'message-too-large',
    errorClass: 'fatal',
    when: (f) => has(f, 'MessageTooLargeError'),
    why: 'the SDK refuses a body over 256 KiB (MessageTooLargeError); the hub would never take it, retrying only blocks the queue',
  },
  {
    // Our own X.509 certificate, checked before connecting: a renewed one may be delivered.
    rule: 'device-certificate-expired',
    errorClass: 'parked',
    when: (f) => has(f, 'DeviceCertificateExpiredError'),
    why: "the device's X.509 certificate is expired or not yet valid (checked before connecting): parked (long wait) until a renewed certificate (updateCredentials) or a set clock, never Failed",
  },
  {
    // A device that boots before NTP sees every certificate as not yet valid (or long expired):
    // the clock, not the certificate, is wrong, and it gets set remotely. Wait, do not die.
    rule: 'tls-certificate-time',
    errorClass: 'parked',
    when: (f) => f.tlsCode === 'CERT_NOT_YET_VALID' || f.tlsCode === 'CERT_HAS_EXPIRED',
    why: 'certificate not yet valid or expired: most often the device clock is not set yet; parked (long wait), verification stays on',
  },
  {
    rule: 'tls-certificate',
    errorClass: 'fatal',
    when: (f) => f.tlsCode !== undefined,
    why: 'certificate validation failed (any phase): wrong CA, expired or mismatched cert; retrying cannot help and must never be silently bypassed',
  },
  {
    // DPS failed the registration for a reason of its own (throttled, internal error): the
    // enrollment is fine, DPS is not, for now.
    rule: 'registration-failed-retryable',
    errorClass: 'parked',
    when: (f) =>
      f.registrationStatus === 'failed' && f.registrationErrorStatus !== undefined && (f.registrationErrorStatus === 429 || f.registrationErrorStatus >= 500),
    why: "DPS registration 'failed' with a 429/5xx errorCode inside: DPS's trouble, not the enrollment's; parked (DPS at most every 15-30 min)",
  },
  {
    rule: 'registration-failed',
    errorClass: 'fatal',
    when: (f) => f.registrationStatus === 'failed',
    why: 'DPS registration status failed (DeviceRegistrationFailedError): the enrollment rejects this device',
  },
  {
    rule: 'registration-disabled',
    errorClass: 'parked',
    when: (f) => f.registrationStatus === 'disabled',
    why: 'DPS enrollment disabled: an operator can enable it remotely; parked (DPS at most every 15-30 min) instead of dead',
  },
  {
    // mqtt.js refuses a topic filter with '+' or '#' inside a segment ("Invalid topic …"), and
    // mqtt-base translateError makes that a FormatError. Our filters are fixed strings plus the
    // device id (devices/{id}/messages/devicebound/#), so the id is the cause: every retry and
    // every hub builds the same filter.
    rule: 'mqtt-invalid-topic',
    errorClass: 'fatal',
    when: (f) => has(f, 'FormatError') || /\binvalid topic\b/i.test(text(f)),
    why: "an MQTT topic we build is invalid (FormatError 'Invalid topic': a '+' or '#' in the device id): it fails the same way every time, an operator must fix the identity",
  },
  {
    // ProvisioningDeviceClient (its polling state machine) refuses a second register() while one
    // is pending. The provision actor now drives the transport itself and builds one per attempt,
    // so this can only be a race on a stale client: a race is retried, never fatal.
    rule: 'sdk-operation-in-progress',
    errorClass: 'transient',
    when: (f) => has(f, 'InvalidOperationError') && OPERATION_IN_PROGRESS.test(text(f)),
    why: "InvalidOperationError 'another operation is in progress' (provisioning polling state machine): a busy SDK object, not a verdict; the next attempt uses a new one",
  },
  {
    // The other InvalidOperationErrors are API misuse decided by configuration, e.g. token renewal
    // options with X.509 or a bare SAS (device-mqtt setOptions): the same call fails every time.
    rule: 'sdk-invalid-operation',
    errorClass: 'fatal',
    when: (f) => has(f, 'InvalidOperationError'),
    why: 'InvalidOperationError (e.g. token renewal options with X.509 or a SAS without key): a build/config error, identical on every retry',
  },
  // --- MQTT CONNACK refusals -------------------------------------------------------------------
  {
    rule: 'connack-1-protocol',
    errorClass: 'fatal',
    when: (f) => f.connack === 1,
    why: 'unacceptable protocol version (NotImplementedError): a build/config problem, any phase',
  },
  {
    // Azure answers 3 to a device that was failed over or disabled too (C SDK: SERVER_UNAVAIL →
    // DEVICE_DISABLED; the official HA sample reprovisions on it), so DPS is asked where the device
    // belongs; if it is still this hub, the hub is busy: the same 5 s floor as a 503.
    rule: 'connack-3-hub-unavailable',
    errorClass: 'transient',
    minDelayMs: SERVER_BUSY_MIN_DELAY_MS,
    assignmentInDoubt: true,
    when: (f) => onHub(f) && f.connack === 3,
    why: 'hub server unavailable: moved/disabled device or an overloaded hub; ask DPS, then back off at least 5 s on the same hub',
  },
  {
    // Same meaning as a 503, so it gets the same 5 s floor.
    rule: 'connack-3-server-unavailable',
    errorClass: 'transient',
    minDelayMs: SERVER_BUSY_MIN_DELAY_MS,
    when: (f) => f.connack === 3,
    why: 'DPS server unavailable: the service is up but overloaded; back off at least 5 s',
  },
  {
    rule: 'dps-connack-rejected',
    errorClass: 'fatal',
    when: (f) => onDps(f) && (f.connack === 2 || f.connack === 4 || f.connack === 5),
    why: 'DPS refused our registration id or key: the group/device key is the only credential we have',
  },
  ...hubConnackRows(2, 'identifier rejected'),
  ...hubConnackRows(4, 'bad username or password'),
  ...hubConnackRows(5, 'not authorized'),
  // --- sockets and the OS ---------------------------------------------------------------------
  {
    rule: 'hub-dns-not-found',
    errorClass: 'reprovision',
    assignmentInDoubt: true,
    when: (f) => onHub(f) && f.socketCode === 'ENOTFOUND',
    why: 'the assigned hub name no longer resolves (NXDOMAIN; a dead resolver gives EAI_AGAIN): ask DPS for the current hub',
  },
  {
    rule: 'dps-dns-not-found',
    errorClass: 'transient',
    when: (f) => onDps(f) && f.socketCode === 'ENOTFOUND',
    why: 'the DPS host is configuration, not an assignment: DNS/network may come back',
  },
  {
    // transport 'auto' (src/actors/transport.ts): MQTT never answered, the next attempt uses
    // WebSockets. Before the socket rows, which would name the cause but hide the switch.
    rule: 'mqtt-unreachable-websocket-fallback',
    errorClass: 'transient',
    when: (f) => has(f, 'MqttUnreachableError'),
    why: "MQTT (8883) unreachable with transport 'auto': the device switched to MQTT over WebSockets (443) and retries",
  },
  {
    // Before a first connect the SDK wraps this as UnauthorizedError("…Failure on first connection
    // (Not authorized): connect ECONNREFUSED…"): not a credential failure.
    rule: 'socket-refused',
    errorClass: 'transient',
    when: (f) => f.socketCode === 'ECONNREFUSED',
    why: 'connection refused (hub or DPS process down): back off and retry the same endpoint',
  },
  {
    rule: 'socket-reset',
    errorClass: 'transient',
    when: (f) => f.socketCode === 'ECONNRESET' || f.socketCode === 'ECONNABORTED' || f.socketCode === 'EPIPE',
    why: 'connection reset / broken pipe: the link dropped',
  },
  {
    rule: 'socket-timeout',
    errorClass: 'transient',
    when: (f) => f.socketCode === 'ETIMEDOUT',
    why: 'connect timed out: network or endpoint unreachable for now',
  },
  {
    rule: 'network-unreachable',
    errorClass: 'transient',
    when: (f) => ['EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'EHOSTDOWN', 'EAI_AGAIN'].includes(f.socketCode ?? ''),
    why: 'no route / no network / resolver unavailable: wait for the network',
  },
  {
    rule: 'os-resources',
    errorClass: 'transient',
    when: (f) => ['EMFILE', 'ENFILE', 'ENOBUFS'].includes(f.socketCode ?? ''),
    why: 'out of file descriptors or buffers on the device (wrapped as UnauthorizedError before a first connect): not a credential problem',
  },
  // --- HTTP-ish statuses --------------------------------------------------------------------------
  // Hub: on MQTT only a twin answer carries a status, and the SDK keeps only its text (see header),
  // so every hub-status row below is a twin answer recognised by IoT Hub's documented texts.
  {
    // The hub accepted the device and answered it: the assignment is right, and DPS would hand
    // back the same hub. A hub-wide throttle must not become a fleet-wide registration storm.
    rule: 'hub-throttled',
    errorClass: 'throttled',
    serverBusy: true,
    when: (f) => hubStatus(f) === 429,
    why: 'hub 429, i.e. a twin answer (throttling / too many requests) that ended the session (one whose status the session reads is retried on the connection): wait on the throttled curve (a twin answer carries no retry-after)',
  },
  {
    // IoT Hub 403002 IotHubQuotaExceeded is the hub's daily quota: DPS would hand back the same
    // hub, so reprovisioning would only add DPS load. Waiting is what helps.
    rule: 'hub-quota-exceeded',
    errorClass: 'throttled',
    serverBusy: true,
    when: (f) => hubStatus(f) === 403,
    why: "hub 403, i.e. a twin answer (403002 'exceeded the allocated quota'): the daily quota; wait on the throttled curve, reprovisioning would return the same hub",
  },
  {
    // Same meaning as a refused hub token: the token or the assignment is in doubt (401003 lists
    // "IotHub '…' does not contain the specified device '…'"), so DPS is asked first.
    rule: 'hub-unauthorized',
    errorClass: 'reprovision',
    assignmentInDoubt: true,
    when: (f) => hubStatus(f) === 401,
    why: 'hub 401, i.e. a twin answer (401003 IoTHubUnauthorized texts): the token or the assignment is in doubt; ask DPS, register again if it moved',
  },
  {
    rule: 'hub-server-error',
    errorClass: 'transient',
    minDelayMs: SERVER_BUSY_MIN_DELAY_MS,
    when: (f) => (hubStatus(f) ?? 0) >= 500,
    why: 'hub 5xx, i.e. a twin answer (internal error / service unavailable / server busy) that ended the session (one whose status the session reads is retried on the connection): retry the same hub, at least 5 s later (DPS at-scale guidance)',
  },
  // DPS: 429 and 5xx come from provision.ts (DpsStatusError) and the lookup (DpsLookupError);
  // 300–428 from the SDK's translateError, status in the response topic.
  {
    rule: 'throttled-429',
    errorClass: 'throttled',
    when: (f) => f.status === 429,
    why: 'DPS or the status lookup answered 429: honour retry-after, else the throttled curve',
  },
  {
    // Seed 004: a lookup answered 401/403/404 means DPS has no current registration to report.
    rule: 'lookup-no-registration',
    errorClass: 'reprovision',
    // Any other 4xx too (400, 405, 415, …): a lookup DPS will not answer is no reason to stop; a
    // registration gives the real verdict.
    when: (f) => onLookup(f) && ((f.status !== undefined && f.status >= 400 && f.status < 500 && f.status !== 429) || has(f, 'LookupNotAssignedError')),
    why: 'the status lookup has no assignment for this device (401/403/404, another 4xx, or not assigned): register with DPS',
  },
  {
    rule: 'dps-server-error',
    errorClass: 'transient',
    minDelayMs: SERVER_BUSY_MIN_DELAY_MS,
    when: (f) => onDps(f) && f.status !== undefined && f.status >= 500,
    why: 'DPS 5xx: retry, at least 5 s later',
  },
  {
    rule: 'dps-bad-request',
    errorClass: 'fatal',
    when: (f) => onDps(f) && (f.status === 400 || has(f, 'ArgumentError')),
    why: 'DPS 400: the registration request is malformed (id scope, registration id, payload)',
  },
  {
    rule: 'dps-unauthorized',
    errorClass: 'fatal',
    when: (f) => onDps(f) && (f.status === 401 || has(f, 'UnauthorizedError')),
    why: 'DPS 401: the group/device key is the only credential we have',
  },
  {
    rule: 'dps-forbidden',
    errorClass: 'fatal',
    when: (f) => onDps(f) && f.status === 403,
    why: 'DPS 403: not allowed (e.g. registration limit reached); an operator must act',
  },
  {
    rule: 'dps-not-found',
    errorClass: 'fatal',
    when: (f) => onDps(f) && (f.status === 404 || has(f, 'DeviceNotFoundError')),
    why: 'DPS 404: no enrollment for this registration id / id scope',
  },
  {
    // 409 Conflict / 412 Precondition Failed: the registration changed under us (a concurrent
    // registration or an etag race), the same request can succeed once it has settled.
    rule: 'dps-conflict',
    errorClass: 'transient',
    when: (f) => onDps(f) && (f.status === 409 || f.status === 412),
    why: 'DPS 409/412: conflict or precondition failed (a concurrent change): retry with backoff',
  },
  {
    // RFC 9110 §15.5.9: the server gave up waiting for the request; the client may repeat it.
    rule: 'dps-request-timeout',
    errorClass: 'transient',
    when: (f) => onDps(f) && f.status === 408,
    why: 'DPS 408: the service timed out waiting for our request (RFC 9110: may be repeated)',
  },
  {
    rule: 'dps-client-error',
    errorClass: 'fatal',
    when: (f) => onDps(f) && f.status !== undefined && f.status >= 400 && f.status < 500,
    why: 'any other DPS 4xx: the request itself is refused and nothing says a retry helps; an operator must look',
  },
  // --- lost connections and timeouts ------------------------------------------------------------
  {
    rule: 'timeout',
    errorClass: 'transient',
    when: (f) => has(f, 'TimeoutError', 'DeviceTimeoutError'),
    why: 'PUBACK / twin / DPS request timeout or keepalive loss: the link is likely dead',
  },
  {
    rule: 'malformed-service-response',
    errorClass: 'transient',
    when: (f) => has(f, 'ServiceProtocolError'),
    why: 'DPS or the hub sent junk (bad JSON, missing fields): a service glitch, retried with backoff, never a crash',
  },
  {
    rule: 'operation-cancelled',
    errorClass: 'transient',
    when: (f) => has(f, 'OperationCancelledError'),
    why: 'our own deadline cancelled the operation: try again later',
  },
  {
    // The wrapper says "Not authorized" about every first-connect failure; with no CONNACK code,
    // socket code or TLS text found above, it is a network problem (e.g. socket closed before
    // CONNACK: 'Unable to establish a connection'), not a credential verdict.
    rule: 'first-connection-failed',
    errorClass: 'transient',
    when: (f) => f.firstConnection,
    why: 'first-connect failure without a CONNACK refusal: the "Not authorized" in the wrapper is not a verdict',
  },
  {
    rule: 'connection-lost',
    errorClass: 'transient',
    when: (f) => has(f, 'NotConnectedError') || CONNECTION_LOST_TEXT.test(text(f)),
    why: "socket closed while connected (NotConnectedError 'Connection to the server has been closed.')",
  },
  // --- safe default ------------------------------------------------------------------------------
  {
    // Transient: retried with backoff; the hub budget eventually sends the device to DPS, so an
    // unknown error can neither loop on one hub forever nor kill the device.
    rule: 'unknown',
    errorClass: 'transient',
    when: () => true,
    why: 'unrecognised error: retry with backoff; the hub budget bounds it',
  },
];

/** Classifies already-extracted facts (the table's only input). */
export function classifyFacts(facts: ErrorFacts): Classification {
  // The last row always matches, so find() never returns undefined in practice.
  const row = CLASSIFICATION_TABLE.find((r) => r.when(facts)) ?? CLASSIFICATION_TABLE[CLASSIFICATION_TABLE.length - 1]!;
  const classification: Classification = { errorClass: row.errorClass, rule: row.rule };
  // A service-given wait is honoured whatever the class (fatal is not retried at all).
  if (facts.retryAfterMs !== undefined && row.errorClass !== 'fatal') classification.retryAfterMs = facts.retryAfterMs;
  if (row.minDelayMs !== undefined) classification.minDelayMs = row.minDelayMs;
  if (row.assignmentInDoubt) classification.assignmentInDoubt = true;
  // The rows with a floor are the service saying it is busy (5xx, CONNACK 3); so are the hub's throttles.
  if (row.minDelayMs !== undefined || row.serverBusy) classification.serverBusy = true;
  return classification;
}

/** Classifies one error seen in `phase`. Never throws. */
export function classify(error: unknown, phase: Phase): Classification {
  return classifyFacts(extractFacts(error, phase));
}

// ---------------------------------------------------------------------------------------------
// Failures and redaction
// ---------------------------------------------------------------------------------------------

const REDACTED = '[REDACTED]';

/** Ordered: the whole SAS token first, then key/value pairs, then bare keys. */
const SECRET_PATTERNS: ReadonlyArray<readonly [RegExp, string]> = [
  // Hub/DPS SAS token (sr=…&sig=…&se=…[&skn=…]), up to whitespace, quote or separator.
  [/SharedAccessSignature\s+[^\s"'`,;]+/gi, `SharedAccessSignature ${REDACTED}`],
  [/\bBearer\s+[^\s"'`,;]+/gi, `Bearer ${REDACTED}`],
  // user:password@ in a URL (a proxy's credentials in an error about the proxy).
  [/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/@"'`]+@/gi, `$1${REDACTED}@`],
  // sig=… in a token or URL (also URL-encoded sig%3D…).
  [/\bsig(=|%3D)[^&\s"'`,;]+/gi, `sig$1${REDACTED}`],
  // key=…, SharedAccessKey=…, "primaryKey": "…", password=…, token: … (connection strings, JSON, logs).
  [
    /\b([A-Za-z_]*key|password|passphrase|secret|token)("?\s*[=:]\s*["']?)([^\s"'`;&,}]+)/gi,
    `$1$2${REDACTED}`,
  ],
  // Bare padded base64 of 28+ bytes (symmetric keys are 32 or 64 bytes: 44/88 chars ending in =).
  [/(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{38,}={1,2}(?![A-Za-z0-9+/=])/g, REDACTED],
];

/** Removes SAS tokens, signatures and keys from text meant for logs or persisted state. */
export function redactSecrets(text: string): string {
  return SECRET_PATTERNS.reduce((out, [pattern, replacement]) => out.replace(pattern, replacement), text);
}

/** The outermost name and a message made of the chain's distinct messages. */
function describe(error: unknown, facts: ErrorFacts): { name: string; message: string } {
  const firstNamed = chainOf(error).find((link) => isObject(link) && typeof read(link, 'message') === 'string');
  let name: string;
  if (firstNamed !== undefined) {
    const own = read(firstNamed, 'name');
    const ctor = read(read(firstNamed, 'constructor'), 'name');
    name = typeof own === 'string' && own !== '' ? own : typeof ctor === 'string' ? ctor : 'Error';
  } else {
    name = error === null ? 'null' : typeof error;
  }
  // Inner messages are usually contained in the outer one (translateError copies them); keep
  // only those that add something (e.g. a DPS body message behind 'incoming message failure').
  const parts: string[] = [];
  for (const message of facts.messages) {
    if (!parts.some((p) => p.includes(message))) parts.push(message);
  }
  let message = parts.join(': ');
  if (message === '' && typeof error !== 'object') message = String(error);
  if (message.length > MAX_MESSAGE_CHARS) message = message.slice(0, MAX_MESSAGE_CHARS - 1) + '…';
  return { name, message: redactSecrets(message) };
}

/** Builds the JSON-safe, secret-free Failure the machine stores. Never throws. */
export function toFailure(error: unknown, phase: Phase, at: number): Failure {
  const facts = extractFacts(error, phase);
  const classification = classifyFacts(facts);
  const { name, message } = describe(error, facts);
  const failure: Failure = { ...classification, phase, name, message, at };
  const code = facts.connack ?? facts.tlsCode ?? facts.socketCode ?? facts.status;
  if (code !== undefined) failure.code = code;
  return failure;
}
