import type { Logger } from 'pino';
import type { InspectionEvent, Observer } from 'xstate';
import { ConfigError } from './errors';
import type { Clock } from './clock';
import { resolvePolicy } from './policy/backoff';
import type { RetryPolicy } from './policy/types';
import type { Outbox } from './store/outbox';
import type { ProvisioningCache } from './store/cache';
import type { Credential } from './actors/credentials';
import type { SessionFeature } from './actors/hub';
import { DEFAULT_OUTBOX_LIMITS } from './store/outbox';
import type { SqliteOutboxLimits } from './store/sqlite-outbox';

export const DEFAULT_PROVISIONING_HOST = 'global.azure-devices-provisioning.net';

/** What an application passes to `createDevice`. */
export interface DeviceOptions {
  idScope: string;
  registrationId: string;
  /** Group enrollment key (the device key is derived from it). Give this or `deviceKey`. */
  groupKey?: string;
  /** This device's own key: better, the group key never needs to be on the device. */
  deviceKey?: string;
  /** Plug and Play model id (DTMI), announced to DPS and to the hub. */
  modelId?: string;
  /** DPS endpoint, 'host' or 'host:port'. */
  provisioningHost?: string;
  /** Extra trusted CA (PEM) for DPS and the hubs. TLS verification is never turned off. */
  ca?: string;
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
  /** Injection points (tests, embedding): clock, stores, per-session features. */
  clock?: Clock;
  outbox?: Outbox;
  cache?: ProvisioningCache;
  features?: SessionFeature[];
}

/** Options after validation, with defaults applied. */
export interface ResolvedOptions {
  idScope: string;
  registrationId: string;
  credential: Credential;
  modelId?: string;
  provisioningHost: string;
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
  sendWindow: number;
  outboxLimits: SqliteOutboxLimits;
  commandTimeoutMs: number;
  propertyHandlerTimeoutMs: number;
  twinTimeoutMs: number;
}

const ID_SCOPE = /^[A-Za-z0-9]{1,64}$/;
// DPS: up to 128 lower-case alphanumerics and - . _ : (we accept upper case; DPS folds it)
const REGISTRATION_ID = /^[A-Za-z0-9\-._:]{1,128}$/;
const DTMI = /^dtmi:[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?(?::[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?)*;[1-9][0-9]{0,8}$/;
const HOST = /^[A-Za-z0-9.-]+(?::[0-9]{1,5})?$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function isBase64Key(value: unknown): value is string {
  return typeof value === 'string' && value.length >= 16 && BASE64.test(value);
}

function positive(value: unknown, field: string, fallback: number, integer = false): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    throw new ConfigError(field, integer ? 'a positive integer' : 'a positive number');
  }
  return value;
}

/**
 * The SDK compares whole-second stamps (floor at publish, round at the check), so a publish can
 * time out up to 1.5 s early: below 2 s a healthy hub's PUBACK could be called missing.
 */
function publishTimeout(value: unknown): number {
  if (value === undefined) return 30;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 2) {
    throw new ConfigError('publishTimeoutSeconds', 'a whole number of seconds, at least 2');
  }
  return value;
}

/** Validate everything up front: a typed error naming the field, before any I/O. */
export function resolveOptions(options: DeviceOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null) throw new ConfigError('options', 'an object');
  if (typeof options.idScope !== 'string' || !ID_SCOPE.test(options.idScope)) {
    throw new ConfigError('idScope', 'the DPS ID scope, letters and digits (e.g. 0ne00ABC123)');
  }
  if (typeof options.registrationId !== 'string' || !REGISTRATION_ID.test(options.registrationId)) {
    throw new ConfigError('registrationId', 'up to 128 letters, digits and - . _ :');
  }
  if ((options.groupKey === undefined) === (options.deviceKey === undefined)) {
    throw new ConfigError('groupKey|deviceKey', 'exactly one of groupKey or deviceKey');
  }
  let credential: Credential;
  if (options.groupKey !== undefined) {
    if (!isBase64Key(options.groupKey)) throw new ConfigError('groupKey', 'a base64 symmetric key');
    credential = { groupKey: options.groupKey };
  } else {
    if (!isBase64Key(options.deviceKey)) throw new ConfigError('deviceKey', 'a base64 symmetric key');
    credential = { deviceKey: options.deviceKey };
  }
  if (options.modelId !== undefined && (typeof options.modelId !== 'string' || !DTMI.test(options.modelId))) {
    throw new ConfigError('modelId', 'a DTMI such as dtmi:com:example:Thermostat;1');
  }
  const provisioningHost = options.provisioningHost ?? DEFAULT_PROVISIONING_HOST;
  if (typeof provisioningHost !== 'string' || !HOST.test(provisioningHost)) {
    throw new ConfigError('provisioningHost', "a host name, optionally with ':port'");
  }
  if (options.ca !== undefined && (typeof options.ca !== 'string' || !options.ca.includes('BEGIN CERTIFICATE'))) {
    throw new ConfigError('ca', 'a PEM certificate');
  }
  if (options.dataDir !== undefined && (typeof options.dataDir !== 'string' || options.dataDir.length === 0)) {
    throw new ConfigError('dataDir', 'a directory path');
  }
  if (options.inspect !== undefined && typeof options.inspect !== 'function' && (typeof options.inspect !== 'object' || options.inspect === null)) {
    throw new ConfigError('inspect', 'a function or an observer ({ next })');
  }
  if (options.seed !== undefined && (typeof options.seed !== 'number' || !Number.isInteger(options.seed))) {
    throw new ConfigError('seed', 'an integer');
  }
  const tokenValiditySeconds = positive(options.tokenValiditySeconds, 'tokenValiditySeconds', 3600, true);
  const tokenRenewalMarginSeconds = positive(options.tokenRenewalMarginSeconds, 'tokenRenewalMarginSeconds', 900, true);
  if (tokenRenewalMarginSeconds >= tokenValiditySeconds) {
    throw new ConfigError('tokenRenewalMarginSeconds', 'less than tokenValiditySeconds');
  }
  return {
    idScope: options.idScope,
    registrationId: options.registrationId,
    credential,
    modelId: options.modelId,
    provisioningHost,
    ca: options.ca,
    dataDir: options.dataDir,
    ...resolvePolicyOptions(options.policy),
    seed: options.seed,
    keepaliveSeconds: positive(options.keepaliveSeconds, 'keepaliveSeconds', 30, true),
    publishTimeoutSeconds: publishTimeout(options.publishTimeoutSeconds),
    connectTimeoutMs: positive(options.connectTimeoutMs, 'connectTimeoutMs', 30_000),
    provisionTimeoutMs: positive(options.provisionTimeoutMs, 'provisionTimeoutMs', 60_000),
    closeTimeoutMs: positive(options.closeTimeoutMs, 'closeTimeoutMs', 5_000),
    tokenValiditySeconds,
    tokenRenewalMarginSeconds,
    sendWindow: positive(options.sendWindow, 'sendWindow', 16, true),
    outboxLimits: resolveOutboxLimits(options.outboxLimits),
    commandTimeoutMs: positive(options.commandTimeoutMs, 'commandTimeoutMs', 25_000),
    propertyHandlerTimeoutMs: positive(options.propertyHandlerTimeoutMs, 'propertyHandlerTimeoutMs', 30_000),
    twinTimeoutMs: positive(options.twinTimeoutMs, 'twinTimeoutMs', 15_000),
  };
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
  const { drainMs = 0 } = options;
  if (typeof drainMs !== 'number' || !Number.isFinite(drainMs) || drainMs < 0 || drainMs > MAX_DRAIN_MS) {
    throw new ConfigError('drainMs', `a number of milliseconds from 0 to ${MAX_DRAIN_MS}`);
  }
  return { drainMs };
}

function resolveOutboxLimits(limits: Partial<SqliteOutboxLimits> = {}): SqliteOutboxLimits {
  if (typeof limits !== 'object' || limits === null) throw new ConfigError('outboxLimits', 'an object');
  const known = ['maxCount', 'maxBytes', 'maxAgeMs', 'whenFull'];
  for (const key of Object.keys(limits)) {
    if (!known.includes(key)) throw new ConfigError(`outboxLimits.${key}`, `one of ${known.join(', ')}`);
  }
  const whenFull = limits.whenFull ?? DEFAULT_OUTBOX_LIMITS.whenFull;
  if (whenFull !== 'reject-new' && whenFull !== 'drop-oldest') {
    throw new ConfigError('outboxLimits.whenFull', "'reject-new' or 'drop-oldest'");
  }
  return {
    maxCount: positive(limits.maxCount, 'outboxLimits.maxCount', DEFAULT_OUTBOX_LIMITS.maxCount, true),
    maxBytes: positive(limits.maxBytes, 'outboxLimits.maxBytes', DEFAULT_OUTBOX_LIMITS.maxBytes, true),
    ...(limits.maxAgeMs !== undefined ? { maxAgeMs: positive(limits.maxAgeMs, 'outboxLimits.maxAgeMs', 0) } : {}),
    whenFull,
  };
}
