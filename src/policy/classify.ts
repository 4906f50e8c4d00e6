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
 *   with `translateError(message, status, body, { topic, payload })`, which keeps the status only
 *   in the response topic (`$dps/registrations/res/403/?$rid=…`) and the body's `errorCode`.
 * So facts are extracted once from the whole error chain, and an ordered table decides.
 */
import type { Classification, ErrorClass, Failure, Phase } from './types';

/** What the caller knows that the error itself may not say. */
export interface ClassifyContext {
  /** True once this transport has connected at least once (informational; shapes say it too). */
  connectedBefore?: boolean;
}

/** Everything the rules look at, extracted once from an error and the links it carries. */
export interface ErrorFacts {
  phase: Phase;
  connectedBefore?: boolean;
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
  /** One line for docs and logs: why this class. */
  why: string;
}

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

/** Seconds (number or numeric string, fractions allowed) → ms; anything else → undefined. */
function secondsToMs(value: unknown): number | undefined {
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
  return typeof n === 'number' && Number.isFinite(n) && n >= 0 ? Math.round(n * 1000) : undefined;
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
export function extractFacts(error: unknown, phase: Phase, ctx: ClassifyContext = {}): ErrorFacts {
  const facts: ErrorFacts = { phase, names: [], messages: [], firstConnection: false };
  if (ctx.connectedBefore !== undefined) facts.connectedBefore = ctx.connectedBefore;
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
      for (const candidate of [status, stateStatus]) {
        if (typeof candidate === 'string' && /^(failed|disabled)$/i.test(candidate)) {
          facts.registrationStatus ??= candidate.toLowerCase();
        }
      }
    }

    const ownRetryAfterMs = read(link, 'retryAfterMs');
    facts.retryAfterMs ??=
      (typeof ownRetryAfterMs === 'number' && Number.isFinite(ownRetryAfterMs) && ownRetryAfterMs >= 0
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
  // azure-iot-device twin_errors default: Error('server returned error 502').
  facts.status ??= asStatus(/server returned error (\d{3})/.exec(text)?.[1]);
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
const isServerError = (facts: ErrorFacts): boolean =>
  (facts.status !== undefined && facts.status >= 500) ||
  has(facts, 'InternalServerError', 'ServiceUnavailableError', 'GatewayTimeoutError');

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
    rule: 'message-too-large',
    errorClass: 'fatal',
    when: (f) => has(f, 'MessageTooLargeError') || f.status === 413,
    why: 'the hub never accepts this message; retrying it only blocks the queue',
  },
  {
    rule: 'tls-certificate',
    errorClass: 'fatal',
    when: (f) => f.tlsCode !== undefined,
    why: 'certificate validation failed (any phase): wrong CA, expired or mismatched cert; retrying cannot help and must never be silently bypassed',
  },
  {
    // IoT Central "block device": best effort (by text), the operator can unblock, so the device
    // waits on the throttled curve instead of stopping for good.
    rule: 'operator-blocked',
    errorClass: 'throttled',
    when: (f) => /\b(device (is )?blocked|blocked by (the )?operator)\b/i.test(text(f)),
    why: 'IoT Central operator blocked the device: wait long, unblocking must not need a restart',
  },
  {
    rule: 'registration-failed',
    errorClass: 'fatal',
    when: (f) => f.registrationStatus === 'failed',
    why: 'DPS registration status failed (DeviceRegistrationFailedError): the enrollment rejects this device',
  },
  {
    rule: 'registration-disabled',
    errorClass: 'fatal',
    when: (f) => f.registrationStatus === 'disabled',
    why: 'DPS enrollment disabled: only an operator can change that',
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
    minDelayMs: 5000,
    assignmentInDoubt: true,
    when: (f) => onHub(f) && f.connack === 3,
    why: 'hub server unavailable: moved/disabled device or an overloaded hub; ask DPS, then back off at least 5 s on the same hub',
  },
  {
    // Same meaning as a 503, so it gets the same 5 s floor.
    rule: 'connack-3-server-unavailable',
    errorClass: 'transient',
    minDelayMs: 5000,
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
  {
    rule: 'throttled-429',
    errorClass: 'throttled',
    // DPS translateError maps 429 to IotHubQuotaExceededError.
    when: (f) => f.status === 429 || has(f, 'ThrottlingError') || (onDps(f) && has(f, 'IotHubQuotaExceededError')),
    why: 'throttled by hub or DPS: honour retry-after, else the throttled curve',
  },
  {
    // Seed 004: a lookup answered 401/403/404 means DPS has no current registration to report.
    rule: 'lookup-no-registration',
    errorClass: 'reprovision',
    when: (f) => onLookup(f) && (f.status === 401 || f.status === 403 || f.status === 404 || has(f, 'LookupNotAssignedError')),
    why: 'the status lookup has no assignment for this device (401/403/404 or not assigned): register with DPS',
  },
  {
    // Hub 403 IotHubQuotaExceeded is the hub's daily quota: DPS would hand back the same hub, so
    // reprovisioning would only add DPS load. Waiting is what helps.
    rule: 'hub-quota-exceeded',
    errorClass: 'throttled',
    when: (f) => onHub(f) && has(f, 'IotHubQuotaExceededError'),
    why: 'hub quota exceeded: wait on the throttled curve, reprovisioning would return the same hub',
  },
  {
    rule: 'hub-server-error',
    errorClass: 'transient',
    minDelayMs: 5000,
    when: (f) => onHub(f) && isServerError(f),
    why: 'hub 5xx: retry the same hub, at least 5 s later (DPS at-scale guidance)',
  },
  {
    rule: 'dps-server-error',
    errorClass: 'transient',
    minDelayMs: 5000,
    when: (f) => onDps(f) && isServerError(f),
    why: 'DPS 5xx: retry, at least 5 s later',
  },
  {
    rule: 'hub-unauthorized',
    errorClass: 'reprovision',
    assignmentInDoubt: true,
    // The first-connection wrapper is also an UnauthorizedError; without a CONNACK code it is not
    // a credential refusal (see first-connection-failed).
    when: (f) =>
      onHub(f) && (f.status === 401 || f.status === 403 || (has(f, 'UnauthorizedError') && !f.firstConnection)),
    why: 'hub 401/403: token or device rejected here (IoT Central failover shows up this way): ask DPS',
  },
  {
    rule: 'hub-device-not-found',
    errorClass: 'reprovision',
    assignmentInDoubt: true,
    when: (f) => onHub(f) && (f.status === 404 || has(f, 'DeviceNotFoundError')),
    why: 'hub 404: the device is not registered on this hub any more (moved): ask DPS',
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
  return classification;
}

/** Classifies one error seen in `phase`. Never throws. */
export function classify(error: unknown, phase: Phase, ctx?: ClassifyContext): Classification {
  return classifyFacts(extractFacts(error, phase, ctx));
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
export function toFailure(error: unknown, phase: Phase, at: number, ctx?: ClassifyContext): Failure {
  const facts = extractFacts(error, phase, ctx);
  const classification = classifyFacts(facts);
  const { name, message } = describe(error, facts);
  const failure: Failure = { ...classification, phase, name, message, at };
  const code = facts.connack ?? facts.tlsCode ?? facts.socketCode ?? facts.status;
  if (code !== undefined) failure.code = code;
  return failure;
}
