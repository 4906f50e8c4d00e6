import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { InspectionEvent, Observer } from 'xstate';
import { ConfigError } from './errors';
import type { Clock } from './clock';
import { resolvePolicy } from './policy/backoff';
import type { RetryPolicy } from './policy/types';
import type { Outbox } from './store/outbox';
import type { ProvisioningCache } from './store/cache';
import type { CredentialOptions, KeyPair } from './actors/credentials';
import type { SessionFeature } from './actors/hub';
import { DEFAULT_OUTBOX_LIMITS } from './store/outbox';
import type { SqliteOutboxLimits } from './store/sqlite-outbox';
import { firstUnknownKey, unknownKeyExpectation } from './validate';
import { resolveNetworkOptions, type NetworkOptions, type TransportMode } from './actors/transport';
import { commonName, leafCertificate, resolveX509Identity, type X509Identity } from './actors/x509';
import { componentProblem } from './pnp/telemetry';
import { globalHubstateMeter, METER_METHODS, type MetricsMeter } from './metrics';
import { DEFAULT_MIGRATION_COMPONENT } from './pnp/migration';
import { DEFAULT_RESILIENCE_COMPONENT, DEFAULT_RESILIENCE_INTERVAL_MS, type ResilienceSettings } from './pnp/resilience';

export const DEFAULT_PROVISIONING_HOST = 'global.azure-devices-provisioning.net';

/** What an application passes to `createDevice`. */
export interface DeviceOptions {
  idScope: string;
  registrationId: string;
  /**
   * Group enrollment key (the device key is derived from it). Give this or `deviceKey`. Either
   * may be `{ primary, secondary }`: a key the service refuses is tried once with the other.
   */
  groupKey?: string | KeyPair;
  /** This device's own key: better, the group key never needs to be on the device. */
  deviceKey?: string | KeyPair;
  /**
   * X.509 identity instead of a key: PEM certificate (leaf first, its chain may follow) and private
   * key. Its CN must be `registrationId` (DPS reads the registration id from it).
   */
  x509?: X509Identity;
  /** Days before the X.509 certificate's notAfter from which each start and connection warns (0: never). Default 30. */
  certificateExpiryWarningDays?: number;
  /** Plug and Play model id (DTMI), announced to DPS and to the hub. */
  modelId?: string;
  /** DPS endpoint, 'host' or 'host:port'. */
  provisioningHost?: string;
  /**
   * Extra trusted CA certificates (PEM) for DPS and the hubs, trusted in addition to Node's
   * default roots (e.g. a TLS-inspecting proxy's CA). TLS verification is never turned off.
   */
  ca?: string;
  /** Trust only the certificates in `ca`, not Node's default roots (a private PKI). Default false. */
  trustOnlyCa?: boolean;
  /**
   * 'mqtt' (8883, the default), 'mqtt-ws' (MQTT over WebSockets, 443, path /$iothub/websocket) or
   * 'auto' (MQTT first; WebSockets for the rest of the device's life once 8883 proves unreachable).
   */
  transport?: TransportMode;
  /**
   * HTTP CONNECT proxy for MQTT over WebSockets and the DPS status lookup, 'http://host:port'
   * (credentials in the URL are never logged). Only with transport 'mqtt-ws' or 'auto'. Default:
   * HTTPS_PROXY / https_proxy (and NO_PROXY / no_proxy) when the transport is not 'mqtt'; `false`:
   * no proxy, whatever the environment says.
   */
  proxy?: string | false;
  /** Where the provisioning cache lives. Without it the cache is in memory only. */
  dataDir?: string;
  /**
   * Retry policy: a preset name and/or overrides (see README, "Policy"), plus
   * `firstBootJitterMs`: with no cached assignment, the first DPS request waits a random time in
   * [0, firstBootJitterMs] so a fleet powered on together staggers its registrations (default 0,
   * at most 7 days).
   */
  policy?: Parameters<typeof resolvePolicy>[0] & { firstBootJitterMs?: number };
  logger?: Logger;
  /** Seed of the backoff jitter. Default: derived from the registration id and the time. */
  seed?: number;
  /** MQTT keepalive: how fast a silently dead hub is noticed. Default 30 s. */
  keepaliveSeconds?: number;
  /**
   * The SDK's PUBACK timeout, whole seconds (at least 2): a telemetry message not acknowledged
   * within it ends the connection (a hub that keeps the link but withholds PUBACKs). Default 30 s,
   * the SDK's. See README, Options, for the exact bound.
   */
  publishTimeoutSeconds?: number;
  connectTimeoutMs?: number;
  provisionTimeoutMs?: number;
  closeTimeoutMs?: number;
  tokenValiditySeconds?: number;
  tokenRenewalMarginSeconds?: number;
  /** Telemetry messages awaiting PUBACK at once. Default 16. */
  sendWindow?: number;
  /**
   * Telemetry queue bounds: count, bytes, age, and what to do when full ('reject-new' refuses
   * with MessageRejectedError, 'drop-oldest' emits `dropped`). Nothing is dropped silently.
   */
  outboxLimits?: Partial<SqliteOutboxLimits>;
  /**
   * An extra XState inspector for the device actor (e.g. `@statelyai/inspect`'s
   * `inspector.inspect`): receives every inspection event of the actor and its children.
   */
  inspect?: Observer<InspectionEvent> | ((event: InspectionEvent) => void);
  /**
   * Plug and Play: a command handler still running after this gets its caller answered 504 (and
   * its `signal` aborted). Default 25 s, below IoT Central's 30 s command timeout.
   */
  commandTimeoutMs?: number;
  /**
   * Plug and Play: a writable-property handler that has not settled after this is acknowledged
   * 500 (its `signal` aborted, a late result ignored). Default 30 s.
   */
  propertyHandlerTimeoutMs?: number;
  /** Plug and Play: deadline of each twin GET/PATCH and subscription; a miss ends the connection. Default 15 s. */
  twinTimeoutMs?: number;
  /**
   * The device's own figures (`device.stats()`, the `stats` event), reported to the cloud as the
   * Plug and Play component `component` (default 'resilience', interface
   * dtmi:hubstate:Resilience;1): at once at a connection to another hub (or the first, or 15 min
   * after the last report), then at most once per `intervalMs` (default 60 s, 1 s to a day) while
   * it lasts, when something happened since the last report (a reconnection, a count, the hub, the
   * outbox's deepest, delivery stalling, a new error: each report is a billed twin update), and
   * once a day. `false`, or `report: false`, keeps them on the device.
   * The `stats` event fires at each connection and every `intervalMs` either way.
   */
  resilience?: false | { report?: boolean; component?: string; intervalMs?: number };
  /**
   * OpenTelemetry metrics of the device's figures (README, "Metrics (OpenTelemetry)"): `{ meter }`
   * from the application's MeterProvider (`provider.getMeter('hubstate')`), or `true` for the
   * global MeterProvider's (`@opentelemetry/api`, an optional peer dependency, loaded only then;
   * register the provider before createDevice). Default false: no metrics, the API not loaded.
   */
  metrics?: boolean | { meter: MetricsMeter };
  /**
   * Opt in to IoT Central's device migration (the `DeviceMove` command of
   * dtmi:azureiot:DeviceMigration;1, sent by Microsoft's migration tool): `true`, or
   * `{ component }` when the device template names the component otherwise than `migration`.
   * The device answers 200, persists the new ID scope (in `dataDir`) and reprovisions against it;
   * a scope where DPS refuses it is rolled back. See README, "Migrating off IoT Central". Default off:
   * the command is then unknown (404).
   */
  migration?: boolean | { component?: string };
  /**
   * Injection points (tests, embedding): clock, stores, per-session features. The clock's `now()`
   * is wall time (token expiry, dates on disk and in reports); its optional `monotonicNow()` is
   * what durations and deadlines are measured on, so NTP stepping the wall clock moves none of
   * them. Without it (XState's SimulatedClock) `now()` serves both. Default: the system clock
   * (Date.now() and performance.now()).
   */
  clock?: Clock;
  outbox?: Outbox;
  cache?: ProvisioningCache;
  features?: SessionFeature[];
}

/** Options after validation, with defaults applied. */
export interface ResolvedOptions {
  idScope: string;
  registrationId: string;
  /** The keys as given, each as a pair (a lone key is the primary). */
  credential: CredentialOptions;
  modelId?: string;
  provisioningHost: string;
  /** The whole TLS trust list (PEM) when `ca` was given: the default roots + ca, or ca alone. */
  ca?: string;
  dataDir?: string;
  policy: RetryPolicy;
  /** Upper bound of the wait before the first DPS request when nothing is cached (0: none). */
  firstBootJitterMs: number;
  seed?: number;
  keepaliveSeconds: number;
  publishTimeoutSeconds: number;
  connectTimeoutMs: number;
  provisionTimeoutMs: number;
  closeTimeoutMs: number;
  tokenValiditySeconds: number;
  tokenRenewalMarginSeconds: number;
  certificateExpiryWarningDays: number;
  sendWindow: number;
  outboxLimits: SqliteOutboxLimits;
  commandTimeoutMs: number;
  propertyHandlerTimeoutMs: number;
  twinTimeoutMs: number;
  /** Transport and proxy (from the options or the environment). */
  network: NetworkOptions;
  resilience: ResilienceSettings;
  /** The Meter the device's metrics go to; null: none. */
  meter: MetricsMeter | null;
  /** The built-in DeviceMove's component, or null when the `migration` option is off. */
  migration: { component: string } | null;
}

const ID_SCOPE = /^[A-Za-z0-9]{1,64}$/;
// DPS: up to 128 lower-case alphanumerics and - . _ : (we accept upper case; DPS folds it)
const REGISTRATION_ID = /^[A-Za-z0-9\-._:]{1,128}$/;
/**
 * A user DTMI as the DTDL v3 specification defines it ("Digital Twin Model Identifier",
 * DTDL.Specification.v3.md: path segments of letters, digits and underscores, each starting with
 * a letter and not ending with an underscore; a version 1..999999999 with an optional minor
 * version), with the version required: IoT Plug and Play resolves a model by its versioned id.
 */
const DTMI = /^dtmi:[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?(?::[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?)*;[1-9][0-9]{0,8}(?:\.[1-9][0-9]{0,5})?$/;
/** Longest model id accepted: the DTMI length limit of the DTDL language reference (2,048 characters). */
export const MAX_DTMI_LENGTH = 2048;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** A DNS label (RFC 1035 / RFC 1123): 1-63 letters, digits and hyphens, no hyphen at either end. */
const DNS_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
/** A ca PEM beyond this is not a CA list anyone means (Node's whole root store is ~220 KB). */
export const MAX_CA_BYTES = 1024 * 1024;

/**
 * A `host` or `host:port` as DPS and hub endpoints are written: a DNS name (labels of RFC 1123,
 * at most 253 characters, no empty label) or a dotted IPv4 address, and a port from 1 to 65535
 * without leading zeros. Also used for the hub host a cache or DPS hands us.
 */
export function isHostPort(value: unknown): value is string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 253 + 6) return false;
  const colon = value.lastIndexOf(':');
  const host = colon === -1 ? value : value.slice(0, colon);
  if (colon !== -1) {
    const port = value.slice(colon + 1);
    if (!/^[1-9][0-9]{0,4}$/.test(port) || Number(port) > 65_535) return false;
  }
  if (host.length === 0 || host.length > 253) return false;
  const labels = host.split('.');
  if (!labels.every((label) => DNS_LABEL.test(label))) return false;
  // All-numeric: it must be a dotted IPv4 address (4 octets, each 0-255), not '999' or '1.2'.
  if (labels.every((label) => /^[0-9]+$/.test(label))) {
    return labels.length === 4 && labels.every((label) => Number(label) <= 255 && !/^0[0-9]/.test(label));
  }
  // The top-level label of a name is never all digits (RFC 3696 §2).
  return !/^[0-9]+$/.test(labels[labels.length - 1]!);
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----\r?\n([\s\S]*?)-----END CERTIFICATE-----/g;

/**
 * The certificates of a PEM bundle, each parsed by node:crypto (garbage between the markers is
 * refused here, not as a fatal TLS error later). Text outside the blocks (a bundle's comments)
 * is allowed, as OpenSSL allows it; markers that do not pair up are not.
 */
export function parsePemCertificates(pem: string): X509Certificate[] {
  const blocks = pem.match(PEM_CERTIFICATE) ?? [];
  const begins = pem.split('-----BEGIN').length - 1;
  const ends = pem.split('-----END').length - 1;
  if (blocks.length === 0 || begins !== blocks.length || ends !== blocks.length) {
    throw new Error('not one or more PEM CERTIFICATE blocks');
  }
  return blocks.map((block, index) => {
    try {
      return new X509Certificate(block);
    } catch {
      throw new Error(`certificate #${index + 1} does not parse as X.509`);
    }
  });
}

/** Node's default trusted roots (its bundled Mozilla store, or what `--use-*-ca` selects). */
function defaultRoots(): readonly string[] {
  const tlsWithStore = tls as typeof tls & { getCACertificates?: (kind: string) => string[] };
  return typeof tlsWithStore.getCACertificates === 'function' ? tlsWithStore.getCACertificates('default') : tls.rootCertificates;
}

/**
 * The last `ca` that parsed: the devices of one process (a fleet of 10,000) share one CA, and
 * parsing it as X.509 for each of them cost about 0.5 ms a device. Only a success is remembered,
 * so a bad CA is refused every time, as before.
 */
let lastValidCa: string | undefined;

const trustLists = new Map<string, string>();

/**
 * The one place the TLS trust list is built, for DPS, the status lookup and every hub: Node's
 * default roots plus `ca` (what the README promises: an *extra* trusted CA, e.g. a TLS-inspecting
 * proxy's, without losing Azure's roots), or `ca` alone with `trustOnlyCa`. Memoised, so every
 * device of a process with the same CA holds the same string (and src/actors/tls.ts builds one
 * SecureContext for it).
 */
export function trustedCaPem(ca: string, trustOnlyCa: boolean): string {
  if (trustOnlyCa) return ca;
  let list = trustLists.get(ca);
  if (list === undefined) {
    list = [...defaultRoots(), ca.trim()].join('\n') + '\n';
    trustLists.set(ca, list);
  }
  return list;
}

function isBase64Key(value: unknown): value is string {
  return typeof value === 'string' && value.length >= 16 && value.length <= 1024 && BASE64.test(value);
}

const KEY_PAIR_KEYS = ['primary', 'secondary'] as const;

/** A key option: a base64 key, or `{ primary, secondary? }` of them. */
function resolveKeyPair(value: unknown, field: 'groupKey' | 'deviceKey'): KeyPair {
  if (isBase64Key(value)) return { primary: value };
  const plainObject = typeof value === 'object' && value !== null && [Object.prototype, null].includes(Object.getPrototypeOf(value));
  if (!plainObject) {
    throw new ConfigError(field, 'a base64 symmetric key, or { primary, secondary } of them');
  }
  const unknown = firstUnknownKey(value, KEY_PAIR_KEYS);
  if (unknown !== undefined) throw new ConfigError(`${field}.${unknown}`, unknownKeyExpectation(unknown, KEY_PAIR_KEYS));
  const { primary, secondary } = value as Record<string, unknown>;
  if (!isBase64Key(primary)) throw new ConfigError(`${field}.primary`, 'a base64 symmetric key');
  if (secondary === undefined) return { primary };
  if (!isBase64Key(secondary)) throw new ConfigError(`${field}.secondary`, 'a base64 symmetric key');
  return { primary, secondary };
}

/**
 * The device's identity from `groupKey` or `deviceKey` (exactly one): used by `createDevice` and
 * by `device.updateCredentials`, so a runtime update is held to the same rules.
 */
export function resolveCredential(options: { groupKey?: unknown; deviceKey?: unknown; x509?: unknown }): CredentialOptions {
  if (options.x509 !== undefined) {
    if (options.groupKey !== undefined || options.deviceKey !== undefined) throw new ConfigError('x509', 'exactly one identity: x509, groupKey or deviceKey (not both)');
    return { x509: resolveX509Identity(options.x509) };
  }
  if ((options.groupKey === undefined) === (options.deviceKey === undefined)) {
    throw new ConfigError('groupKey|deviceKey', 'exactly one of groupKey, deviceKey or x509');
  }
  return options.groupKey !== undefined ? { groupKey: resolveKeyPair(options.groupKey, 'groupKey') } : { deviceKey: resolveKeyPair(options.deviceKey, 'deviceKey') };
}

/** A bounded number option: an upper bound for every number, a reason for each bound. */
interface Bound {
  min: number;
  max: number;
  integer?: boolean;
  unit: 'ms' | 's' | 'days' | 'messages' | 'bytes' | '';
  /** Why the upper bound is where it is (shown in the README's options table). */
  why: string;
}

const DAY_MS = 86_400_000;

/**
 * Every numeric option of `createDevice`, with its bounds. Node fires a timer beyond 2^31 − 1 ms
 * (24.8 days) after 1 ms; hubstate's clock chains long timers, but the SDK's own timers (token
 * renewal, keepalive) do not, so the bounds keep every wait the SDK schedules below that limit.
 */
export const OPTION_BOUNDS = {
  keepaliveSeconds: { min: 1, max: 1767, integer: true, unit: 's', why: "IoT Hub's maximum keep-alive (1,767 s); MQTT's own field stops at 65,535" },
  publishTimeoutSeconds: { min: 2, max: 3600, integer: true, unit: 's', why: 'an hour without a PUBACK is a dead link' },
  connectTimeoutMs: { min: 1, max: 600_000, unit: 'ms', why: 'ten minutes: a connect that takes longer is not coming' },
  provisionTimeoutMs: { min: 1, max: 3_600_000, unit: 'ms', why: 'an hour; the registration is also bounded by its hard cap (15 min)' },
  closeTimeoutMs: { min: 1, max: 600_000, unit: 'ms', why: 'ten minutes: stop() must end' },
  tokenValiditySeconds: { min: 2, max: 24 * 86_400, integer: true, unit: 's', why: "24 days: the SDK's renewal timer would overflow Node's 24.8-day limit" },
  tokenRenewalMarginSeconds: { min: 1, max: 24 * 86_400 - 1, integer: true, unit: 's', why: 'below tokenValiditySeconds' },
  certificateExpiryWarningDays: { min: 0, max: 3650, integer: true, unit: 'days', why: 'ten years' },
  sendWindow: { min: 1, max: 1000, integer: true, unit: 'messages', why: 'far above what one MQTT connection keeps in flight usefully' },
  commandTimeoutMs: { min: 1, max: 300_000, unit: 'ms', why: "IoT Hub's longest direct-method timeout (300 s)" },
  propertyHandlerTimeoutMs: { min: 1, max: 3_600_000, unit: 'ms', why: 'an hour' },
  twinTimeoutMs: { min: 1, max: 600_000, unit: 'ms', why: 'ten minutes' },
  'outboxLimits.maxCount': { min: 1, max: 100_000_000, integer: true, unit: 'messages', why: '10^8 messages' },
  'outboxLimits.maxBytes': { min: 1, max: 64 * 1024 ** 3, integer: true, unit: 'bytes', why: '64 GiB' },
  'outboxLimits.maxAgeMs': { min: 1, max: 365 * DAY_MS, unit: 'ms', why: 'a year' },
  // At least a second: the report shares the twin's one-PATCH-at-a-time path with the application's.
  'resilience.intervalMs': { min: 1000, max: DAY_MS, unit: 'ms', why: 'a day: a report older than that tells an operator nothing' },
} satisfies Record<string, Bound>;

function bounded(value: unknown, field: keyof typeof OPTION_BOUNDS, fallback: number, max?: number): number {
  if (value === undefined) return fallback;
  const bound: Bound = OPTION_BOUNDS[field];
  const top = max ?? bound.max;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < bound.min || value > top || (bound.integer && !Number.isInteger(value))) {
    const kind = bound.integer ? 'an integer' : 'a number';
    const unit = bound.unit === '' ? '' : ` (${bound.unit})`;
    throw new ConfigError(field, `${kind} from ${bound.min} to ${top}${unit}`);
  }
  return value;
}

/**
 * DPS takes an X.509 device's registration id from its certificate's CN, and the hub's device id
 * follows: `registrationId` must be that CN (exactly, as the hub's device ids are case-sensitive)
 * so the cache, logs and lookups name the identity the services see.
 */
export function checkCertificateSubject(identity: X509Identity, registrationId: string): void {
  const cn = commonName(leafCertificate(identity));
  if (cn !== registrationId) throw new ConfigError('registrationId', `the X.509 certificate's CN ('${cn}'), which DPS uses as the registration id`);
}

/** `resolveCredential`, and a certificate must also name this device: what `createDevice` and `updateCredentials` both accept. */
export function resolveDeviceCredential(options: { groupKey?: unknown; deviceKey?: unknown; x509?: unknown }, registrationId: string): CredentialOptions {
  const credential = resolveCredential(options);
  if ('x509' in credential) checkCertificateSubject(credential.x509, registrationId);
  return credential;
}

/** Every key `createDevice` knows: anything else is refused (a typo must not change nothing, silently). */
export const DEVICE_OPTION_KEYS = [
  'idScope',
  'registrationId',
  'groupKey',
  'deviceKey',
  'x509',
  'certificateExpiryWarningDays',
  'modelId',
  'provisioningHost',
  'ca',
  'trustOnlyCa',
  'transport',
  'proxy',
  'dataDir',
  'policy',
  'logger',
  'seed',
  'keepaliveSeconds',
  'publishTimeoutSeconds',
  'connectTimeoutMs',
  'provisionTimeoutMs',
  'closeTimeoutMs',
  'tokenValiditySeconds',
  'tokenRenewalMarginSeconds',
  'sendWindow',
  'outboxLimits',
  'inspect',
  'commandTimeoutMs',
  'propertyHandlerTimeoutMs',
  'twinTimeoutMs',
  'resilience',
  'metrics',
  'migration',
  'clock',
  'outbox',
  'cache',
  'features',
] as const satisfies ReadonlyArray<keyof DeviceOptions>;

/** Throws ConfigError(`${prefix}${key}`) for the first key of `value` not in `known`. */
export function refuseUnknownKeys(value: object, known: readonly string[], prefix = ''): void {
  const key = firstUnknownKey(value, known);
  if (key !== undefined) throw new ConfigError(`${prefix}${key}`, unknownKeyExpectation(key, known));
}

function hasMethods(value: unknown, names: readonly string[]): boolean {
  return typeof value === 'object' && value !== null && names.every((name) => typeof (value as Record<string, unknown>)[name] === 'function');
}

/** Validate everything up front: a typed error naming the field, before any I/O. */
export function resolveOptions(options: DeviceOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw new ConfigError('options', 'an object');
  refuseUnknownKeys(options, DEVICE_OPTION_KEYS);
  if (typeof options.idScope !== 'string' || !ID_SCOPE.test(options.idScope)) {
    throw new ConfigError('idScope', 'the DPS ID scope, letters and digits (e.g. 0ne00ABC123)');
  }
  if (typeof options.registrationId !== 'string' || !REGISTRATION_ID.test(options.registrationId)) {
    throw new ConfigError('registrationId', 'up to 128 letters, digits and - . _ :');
  }
  const credential = resolveDeviceCredential(options, options.registrationId);
  if (options.modelId !== undefined && (typeof options.modelId !== 'string' || options.modelId.length > MAX_DTMI_LENGTH || !DTMI.test(options.modelId))) {
    throw new ConfigError('modelId', `a DTMI such as dtmi:com:example:Thermostat;1 (DTDL v3 syntax, at most ${MAX_DTMI_LENGTH} characters)`);
  }
  const provisioningHost = options.provisioningHost === undefined ? DEFAULT_PROVISIONING_HOST : options.provisioningHost;
  if (!isHostPort(provisioningHost)) {
    throw new ConfigError('provisioningHost', "a DNS host name or IPv4 address, optionally with ':port' (1-65535)");
  }
  if (options.trustOnlyCa !== undefined && typeof options.trustOnlyCa !== 'boolean') throw new ConfigError('trustOnlyCa', 'a boolean');
  if (options.trustOnlyCa === true && options.ca === undefined) throw new ConfigError('trustOnlyCa', 'only together with ca');
  if (options.ca !== undefined) {
    if (typeof options.ca !== 'string' || Buffer.byteLength(options.ca) > MAX_CA_BYTES) throw new ConfigError('ca', `PEM certificates, at most ${MAX_CA_BYTES} bytes`);
    if (options.ca !== lastValidCa) {
      try {
        parsePemCertificates(options.ca);
      } catch (error) {
        throw new ConfigError('ca', `PEM certificates that parse as X.509 (${(error as Error).message})`);
      }
      lastValidCa = options.ca;
    }
  }
  if (options.dataDir !== undefined && (typeof options.dataDir !== 'string' || options.dataDir.length === 0 || options.dataDir.includes('\0'))) {
    throw new ConfigError('dataDir', 'a directory path');
  }
  if (options.inspect !== undefined && typeof options.inspect !== 'function' && (typeof options.inspect !== 'object' || options.inspect === null)) {
    throw new ConfigError('inspect', 'a function or an observer ({ next })');
  }
  if (options.logger !== undefined && !hasMethods(options.logger, ['child', 'debug', 'info', 'warn', 'error'])) {
    throw new ConfigError('logger', 'a pino logger (child, debug, info, warn, error)');
  }
  if (
    options.clock !== undefined &&
    (!hasMethods(options.clock, ['now', 'setTimeout', 'clearTimeout']) || (options.clock.monotonicNow !== undefined && typeof options.clock.monotonicNow !== 'function'))
  ) {
    throw new ConfigError('clock', 'a clock { now, setTimeout, clearTimeout, monotonicNow? }');
  }
  if (options.outbox !== undefined && (typeof options.outbox !== 'object' || options.outbox === null)) throw new ConfigError('outbox', 'an Outbox');
  if (options.cache !== undefined && (typeof options.cache !== 'object' || options.cache === null)) throw new ConfigError('cache', 'a ProvisioningCache');
  if (options.features !== undefined && (!Array.isArray(options.features) || !options.features.every((f) => typeof f === 'function'))) {
    throw new ConfigError('features', 'an array of session features');
  }
  if (options.seed !== undefined && (typeof options.seed !== 'number' || !Number.isSafeInteger(options.seed))) {
    throw new ConfigError('seed', 'a safe integer');
  }
  const tokenValiditySeconds = bounded(options.tokenValiditySeconds, 'tokenValiditySeconds', 3600);
  const tokenRenewalMarginSeconds = bounded(options.tokenRenewalMarginSeconds, 'tokenRenewalMarginSeconds', 900);
  if (tokenRenewalMarginSeconds >= tokenValiditySeconds) {
    throw new ConfigError('tokenRenewalMarginSeconds', 'less than tokenValiditySeconds');
  }
  return {
    idScope: options.idScope,
    registrationId: options.registrationId,
    credential,
    modelId: options.modelId,
    provisioningHost,
    ca: options.ca === undefined ? undefined : trustedCaPem(options.ca, options.trustOnlyCa === true),
    dataDir: options.dataDir,
    ...resolvePolicyOptions(options.policy),
    seed: options.seed,
    keepaliveSeconds: bounded(options.keepaliveSeconds, 'keepaliveSeconds', 30),
    publishTimeoutSeconds: bounded(options.publishTimeoutSeconds, 'publishTimeoutSeconds', 30),
    connectTimeoutMs: bounded(options.connectTimeoutMs, 'connectTimeoutMs', 30_000),
    provisionTimeoutMs: bounded(options.provisionTimeoutMs, 'provisionTimeoutMs', 60_000),
    closeTimeoutMs: bounded(options.closeTimeoutMs, 'closeTimeoutMs', 5_000),
    tokenValiditySeconds,
    tokenRenewalMarginSeconds,
    certificateExpiryWarningDays: bounded(options.certificateExpiryWarningDays, 'certificateExpiryWarningDays', 30),
    sendWindow: bounded(options.sendWindow, 'sendWindow', 16),
    outboxLimits: resolveOutboxLimits(options.outboxLimits),
    commandTimeoutMs: bounded(options.commandTimeoutMs, 'commandTimeoutMs', 25_000),
    propertyHandlerTimeoutMs: bounded(options.propertyHandlerTimeoutMs, 'propertyHandlerTimeoutMs', 30_000),
    twinTimeoutMs: bounded(options.twinTimeoutMs, 'twinTimeoutMs', 15_000),
    network: resolveNetworkOptions(options.transport, options.proxy, process.env),
    resilience: resolveResilienceOptions(options.resilience),
    migration: resolveMigrationOption(options.migration),
    // Last: loading the OpenTelemetry API is the only side effect, after everything else is valid.
    meter: resolveMetricsOption(options.metrics),
  };
}

/** `metrics`: false/undefined (none), true (the global MeterProvider's Meter), or `{ meter }`. */
function resolveMetricsOption(option: DeviceOptions['metrics']): MetricsMeter | null {
  if (option === undefined || option === false) return null;
  if (option === true) return globalHubstateMeter();
  const expected = "true, or { meter } with a Meter of @opentelemetry/api 1.x (provider.getMeter('hubstate'))";
  if (typeof option !== 'object' || option === null || Array.isArray(option)) throw new ConfigError('metrics', expected);
  refuseUnknownKeys(option, ['meter'], 'metrics.');
  if (!hasMethods(option.meter, METER_METHODS)) throw new ConfigError('metrics.meter', `a Meter of @opentelemetry/api 1.x (${METER_METHODS.join(', ')})`);
  return option.meter;
}

/** `migration`: true/false, or `{ component? }` (a DTDL name, default `migration` as Microsoft's samples). */
function resolveMigrationOption(option: DeviceOptions['migration']): { component: string } | null {
  if (option === undefined || option === false) return null;
  if (option === true) return { component: DEFAULT_MIGRATION_COMPONENT };
  if (typeof option !== 'object' || option === null || Array.isArray(option)) throw new ConfigError('migration', 'true, false, or { component? }');
  refuseUnknownKeys(option, ['component'], 'migration.');
  const { component = DEFAULT_MIGRATION_COMPONENT } = option;
  const badComponent = componentProblem(component);
  if (badComponent) throw new ConfigError('migration.component', `a DTDL name (${badComponent})`);
  return { component };
}

const RESILIENCE_KEYS = ['report', 'component', 'intervalMs'] as const;

/** `resilience`: false, or `{ report?, component?, intervalMs? }`, with the defaults. */
function resolveResilienceOptions(options: DeviceOptions['resilience']): ResilienceSettings {
  const defaults: ResilienceSettings = { report: true, component: DEFAULT_RESILIENCE_COMPONENT, intervalMs: DEFAULT_RESILIENCE_INTERVAL_MS };
  if (options === undefined) return defaults;
  if (options === false) return { ...defaults, report: false };
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new ConfigError('resilience', 'false, or { report?, component?, intervalMs? }');
  }
  refuseUnknownKeys(options, RESILIENCE_KEYS, 'resilience.');
  const { report = true, component = DEFAULT_RESILIENCE_COMPONENT } = options;
  if (typeof report !== 'boolean') throw new ConfigError('resilience.report', 'a boolean');
  const badComponent = componentProblem(component);
  if (badComponent) throw new ConfigError('resilience.component', `a DTDL name (${badComponent})`);
  return { report, component, intervalMs: bounded(options.intervalMs, 'resilience.intervalMs', DEFAULT_RESILIENCE_INTERVAL_MS) };
}

/**
 * A million devices at IoT Central's 200 registrations a minute need about 3.5 days; past a week
 * a wait is a misconfiguration (and a longer timer would overflow Node's 24.8-day limit anyway).
 */
export const MAX_FIRST_BOOT_JITTER_MS = 7 * 24 * 3_600_000;

/** The retry policy, and the first-boot jitter that travels in the same option object. */
function resolvePolicyOptions(policy: DeviceOptions['policy']): { policy: RetryPolicy; firstBootJitterMs: number } {
  if (typeof policy !== 'object' || policy === null || !('firstBootJitterMs' in policy)) {
    return { policy: resolvePolicy(policy), firstBootJitterMs: 0 };
  }
  const { firstBootJitterMs = 0, ...retryPolicy } = policy;
  if (typeof firstBootJitterMs !== 'number' || !Number.isFinite(firstBootJitterMs) || firstBootJitterMs < 0 || firstBootJitterMs > MAX_FIRST_BOOT_JITTER_MS) {
    throw new ConfigError('policy.firstBootJitterMs', `a number of milliseconds from 0 to ${MAX_FIRST_BOOT_JITTER_MS} (7 days)`);
  }
  return { policy: resolvePolicy(retryPolicy), firstBootJitterMs };
}

/** Options of `device.stop()`. */
export interface StopOptions {
  /**
   * Before disconnecting, wait up to this long for the outbox to empty (what is connected keeps
   * sending; what is not may reconnect meanwhile). Default 0: stop at once.
   */
  drainMs?: number;
}

/** Longer than any shutdown grace period a supervisor gives (systemd 90 s, Kubernetes 30 s). */
export const MAX_DRAIN_MS = 600_000;

export function resolveStopOptions(options: StopOptions = {}): { drainMs: number } {
  if (typeof options !== 'object' || options === null) throw new ConfigError('stop options', 'an object');
  refuseUnknownKeys(options, ['drainMs'], 'stop options.');
  const { drainMs = 0 } = options;
  if (typeof drainMs !== 'number' || !Number.isFinite(drainMs) || drainMs < 0 || drainMs > MAX_DRAIN_MS) {
    throw new ConfigError('drainMs', `a number of milliseconds from 0 to ${MAX_DRAIN_MS}`);
  }
  return { drainMs };
}

function resolveOutboxLimits(limits: Partial<SqliteOutboxLimits> = {}): SqliteOutboxLimits {
  if (typeof limits !== 'object' || limits === null || Array.isArray(limits)) throw new ConfigError('outboxLimits', 'an object');
  refuseUnknownKeys(limits, ['maxCount', 'maxBytes', 'maxAgeMs', 'whenFull'], 'outboxLimits.');
  const whenFull = limits.whenFull ?? DEFAULT_OUTBOX_LIMITS.whenFull;
  if (whenFull !== 'reject-new' && whenFull !== 'drop-oldest') {
    throw new ConfigError('outboxLimits.whenFull', "'reject-new' or 'drop-oldest'");
  }
  return {
    maxCount: bounded(limits.maxCount, 'outboxLimits.maxCount', DEFAULT_OUTBOX_LIMITS.maxCount),
    maxBytes: bounded(limits.maxBytes, 'outboxLimits.maxBytes', DEFAULT_OUTBOX_LIMITS.maxBytes),
    ...(limits.maxAgeMs !== undefined ? { maxAgeMs: bounded(limits.maxAgeMs, 'outboxLimits.maxAgeMs', 0) } : {}),
    whenFull,
  };
}

/** Why `reportProperties`' options are not `{ component? }`, or undefined (the component's name is checked by the queue). */
export function reportOptionsProblem(options: unknown): string | undefined {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) return 'the options must be an object ({ component? })';
  const key = firstUnknownKey(options, ['component']);
  return key === undefined ? undefined : `option '${key}': ${unknownKeyExpectation(key, ['component'])}`;
}
