/**
 * `createDevice()`: wires the statechart, the SDK actors, the stores and the logger into the
 * object an application uses. No connection decision is taken here; the machine takes them all.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createActor, type Actor, type InspectionEvent, type SnapshotFrom } from 'xstate';
import { deviceMachine, leafStateName, type Assignment } from '../machines/device.machine';
import { Credentials, deviceKeyOf, isKeyRefusal, type Credential, type KeyPair } from './actors/credentials';
import { hubWork, type SessionFeature } from './actors/hub';
import { lookupWork, probeServiceTime, type LookupSettings } from './actors/lookup';
import { ServiceTime } from './actors/service-time';
import { provisionWork, type ProvisionSettings } from './actors/provision';
import { NetworkPath, type TransportFallback } from './actors/transport';
import { waitUntilWork } from './actors/wait';
import { certificateNotice, x509CacheFingerprint, x509CacheMacKey, type CertificateNotice, type X509Identity } from './actors/x509';
import { systemClock, wallTimeOf, type Clock } from './clock';
import { ConfigError, MessageRejectedError } from './errors';
import { checkedAssignment } from './assignment';
import { defaultLogger, guardDebugOutputOnce, LazyChildLogger, type PartLogger } from './logger';
import { jsonOddity } from './json';
import {
  refuseUnknownKeys,
  reportOptionsProblem,
  resolveDeviceCredential,
  resolveOptions,
  resolveStopOptions,
  type DeviceOptions,
  type ResolvedOptions,
  type StopOptions,
} from './options';
import type { ErrorClass } from './policy/types';
import { nextRandom, seedFrom } from './policy/backoff';
import { cacheMacKey, credentialFingerprint, FileProvisioningCache, MemoryProvisioningCache, type CachedAssignment, type ProvisioningCache } from './store/cache';
import { checkDataDir } from './store/files';
import { FileIdScopeStore, MemoryIdScopeStore, type IdScopeStore } from './store/id-scope';
import { IdScopeMigration, type MigrationEvent } from './migration';
import { MemoryOutbox, type DroppedMessage, type NewOutboxMessage, type Outbox } from './store/outbox';
import { machineFor, type DeviceImplementations } from './shared-machine';
import { createPnp, type Pnp } from './pnp';
import type { DroppedProperties } from './pnp/reported';
import { checkTelemetry, componentProblem, CREATION_TIME_PROPERTY, creationTimeText, propertyNameProblem } from './pnp/telemetry';
import { firstUnknownKey, unknownKeyExpectation } from './validate';
import { StatsCollector, type DeviceStats } from './stats';
import { DeviceMetrics } from './metrics';
import { ResilienceReporter } from './pnp/resilience';
import {
  PropertiesRejectedError,
  type CommandHandler,
  type CommandOptions,
  type ReportOptions,
  type WritablePropertyHandler,
  type WritablePropertyOptions,
} from './pnp/types';

export { MAX_MESSAGE_BYTES } from './pnp/telemetry';

export type DeviceStateName =
  | 'Idle'
  | 'Provisioning'
  | 'Connecting'
  | 'Connected'
  | 'BackingOff'
  | 'CheckingAssignment'
  | 'Reprovisioning'
  | 'Disconnecting'
  | 'Stopped'
  | 'Failed';

/** One transition, as the application and the logs see it. */
export interface StateChange {
  value: DeviceStateName;
  previous: DeviceStateName;
  /** The event type that caused it (e.g. xstate.error.actor.openHub, HUB_LOST, STOP). */
  event: string;
  errorClass?: ErrorClass;
  /** The wait chosen when entering BackingOff. */
  delayMs?: number;
  hubHost?: string;
}

export interface TelemetryOptions {
  /** Plug and Play component (a DTDL name, at most 64 characters): the message carries `$.sub`. */
  component?: string;
  /**
   * Extra application properties: strings, names not starting with `$.` or `iothub-` (system
   * and IoT Hub properties) and not `dt-subject` (the component).
   */
  properties?: Record<string, string>;
}

const TELEMETRY_OPTION_KEYS: ReadonlySet<string> = new Set(['component', 'properties']);
/** What `updateCredentials` takes: one identity, as `createDevice` takes it. */
const CREDENTIAL_KEYS = ['groupKey', 'deviceKey', 'x509'] as const;

/** The user's options checked (MessageRejectedError); the properties copied, so later changes do not leak in. */
function checkTelemetryOptions(options: unknown): { component?: string; properties: Record<string, string> } {
  if (options === undefined) return { properties: {} };
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new MessageRejectedError('invalid-options', 'the options must be an object ({ component?, properties? })');
  }
  const unknown = firstUnknownKey(options, TELEMETRY_OPTION_KEYS);
  if (unknown !== undefined) throw new MessageRejectedError('invalid-options', `'${unknown}': ${unknownKeyExpectation(unknown, [...TELEMETRY_OPTION_KEYS])}`);
  const { component, properties } = options as TelemetryOptions;
  const badComponent = componentProblem(component);
  if (badComponent) throw new MessageRejectedError('invalid-component', badComponent);
  if (properties === undefined) return { component, properties: {} };
  const prototype = typeof properties === 'object' && properties !== null ? Object.getPrototypeOf(properties) : undefined;
  if (prototype !== Object.prototype && prototype !== null) {
    throw new MessageRejectedError('invalid-property', 'properties must be a plain object of strings');
  }
  const copy: Record<string, string> = {};
  for (const [name, value] of Object.entries(properties)) {
    const badName = propertyNameProblem(name);
    if (badName) throw new MessageRejectedError('invalid-property', badName);
    if (typeof value !== 'string') throw new MessageRejectedError('invalid-property', `property '${name}' is not a string`);
    copy[name] = value;
  }
  return { component, properties: copy };
}

/** The JSON text of a telemetry body (MessageRejectedError unless it is a JSON object). */
function telemetryBody(data: unknown): string {
  // These serialise to something else than their content ({} for a Map, a string for a Date ...).
  const notAnObject =
    typeof data !== 'object' || data === null || Array.isArray(data) || data instanceof Map || data instanceof Set || data instanceof Date || ArrayBuffer.isView(data);
  if (notAnObject) throw new MessageRejectedError('invalid-body', 'telemetry must be a JSON object');
  const oddity = jsonOddity(data);
  if (oddity) throw new MessageRejectedError('invalid-body', oddity);
  let body: unknown;
  try {
    body = JSON.stringify(data);
  } catch (error) {
    throw new MessageRejectedError('invalid-body', (error as Error).message);
  }
  if (typeof body !== 'string' || !body.startsWith('{')) throw new MessageRejectedError('invalid-body', 'telemetry must serialise to a JSON object');
  return body;
}

/**
 * The outbox message for `sendTelemetry(data, options)`, stamped with its creation time and a new
 * message id; MessageRejectedError for anything the hub could never take.
 */
function telemetryMessage(data: unknown, options: unknown, clock: Clock): NewOutboxMessage {
  const body = telemetryBody(data);
  // `properties` is checkTelemetryOptions' own copy: stamped in place (no spread: this runs per message).
  const { component, properties } = checkTelemetryOptions(options);
  const createdAt = clock.now();
  properties[CREATION_TIME_PROPERTY] = creationTimeText(createdAt);
  const messageId = randomUUID();
  // What goes on the wire (body, properties, component, system properties), as the pump sends it.
  const checked = checkTelemetry({ messageId, body, component, properties });
  if (typeof checked !== 'number') throw checked;
  return component === undefined
    ? { messageId, body, properties, createdAt, bytes: checked }
    : { messageId, body, component, properties, createdAt, bytes: checked };
}

export interface DeviceEvents {
  state: [StateChange];
  delivered: [string];
  dropped: [DroppedMessage];
  /** Reported properties the hub refused for good (400/413): which, and why. */
  droppedProperties: [DroppedProperties];
  /** transport 'auto' left MQTT for MQTT over WebSockets (once per device: it stays there). */
  transport: [TransportFallback];
  /** The X.509 certificate expires within `certificateExpiryWarningDays`, has expired, or is not yet valid (at start and at each connection). */
  credentials: [CertificateNotice];
  /**
   * The device's figures (see `stats()`): at each hub connection, then every
   * `resilience.intervalMs` (default 60 s) while it lasts; what is reported to the cloud.
   */
  stats: [DeviceStats];
  /** A DeviceMove (option `migration`) started, completed (DPS assigned the device under the new scope) or rolled back. */
  migration: [MigrationEvent];
}

export type DeviceActor = Actor<typeof deviceMachine>;
export type DeviceSnapshot = SnapshotFrom<typeof deviceMachine>;

export interface Device extends EventEmitter<DeviceEvents> {
  readonly actor: DeviceActor;
  readonly registrationId: string;
  start(): void;
  /**
   * STOP → Disconnecting → Stopped; resolves when Stopped (always). With `drainMs`, waits first
   * (at most that long) for the outbox to empty. Unsent telemetry stays in a durable outbox
   * (dataDir); an in-memory outbox reports each unsent message as `dropped` (reason 'stopped').
   * Rejects with ConfigError, stopping nothing, for an invalid `drainMs`.
   */
  stop(options?: StopOptions): Promise<void>;
  sendTelemetry(data: Record<string, unknown>, options?: TelemetryOptions): Promise<{ messageId: string }>;
  /** User-initiated reprovisioning, accepted at any time. */
  reprovision(): void;
  /** From Failed: try again from DPS. */
  retry(): void;
  /**
   * Replaces the keys at run time (validated as `createDevice` validates them, else ConfigError
   * and nothing changes); the next DPS request or hub connection signs with the new primary. A
   * connection that is up stays up. A device that has Failed (e.g. DPS refused both old keys)
   * tries again at once.
   */
  updateCredentials(credentials: { groupKey: string | KeyPair } | { deviceKey: string | KeyPair } | { x509: X509Identity }): void;
  state(): DeviceStateName;
  assignment(): Assignment | null;
  /** The ID scope DPS requests use: the configured one, or the one a DeviceMove moved the device to (persisted in dataDir). */
  idScope(): string;
  outboxStats(): { count: number; bytes: number };
  /**
   * Plug and Play writable property: `handler` applies a desired value; its outcome becomes the
   * acknowledgement `{ value, ac, av, ad }` (200, 202 then 200, 400 via PropertyRejectedError,
   * 500). Answered on every connection for desired versions newer than the acknowledged one.
   */
  onWritableProperty(name: string, handler: WritablePropertyHandler, options?: WritablePropertyOptions): void;
  /**
   * Queue reported properties: sent now when connected, else on the next connection, the latest
   * value of each property winning. Throws PropertiesRejectedError for a patch the hub can't take.
   */
  reportProperties(patch: Record<string, unknown>, options?: ReportOptions): void;
  /** Plug and Play command (direct method `[component*]name`, and offline command of that name). */
  onCommand(name: string, handler: CommandHandler, options?: CommandOptions): void;
  /** Reported properties not yet acknowledged by the hub. */
  pendingReportedProperties(): number;
  /**
   * How the device has fared since start(): connections, disconnects by cause, failovers, DPS
   * calls, time connected, the outbox, what became of the messages, the last error and what to
   * do about it. Cheap: counters, plus one read of the outbox's oldest message (for a durable
   * outbox with `maxAgeMs`, that read also drops what has expired, as any read does).
   */
  stats(): DeviceStats;
}

/** The leaf state: the working states are nested in `Active`, which is never reported. */
function stateName(snapshot: DeviceSnapshot): DeviceStateName {
  return leafStateName(snapshot.value) as DeviceStateName;
}

/** The change into `value` (the state of `snapshot`), with the failure, wait and hub it records. */
function stateChange(snapshot: DeviceSnapshot, value: DeviceStateName, previous: DeviceStateName, event: string): StateChange {
  const { context } = snapshot;
  const change: StateChange = { value, previous, event };
  const causedByFailure = event.startsWith('xstate.error.actor.') || event === 'HUB_LOST';
  if (causedByFailure && context.lastError) change.errorClass = context.lastError.errorClass;
  if (value === 'BackingOff' && context.delayMs !== null) change.delayMs = context.delayMs;
  if (context.assignment) change.hubHost = context.assignment.hubHost;
  return change;
}

/** What the log says about a certificate notice: what it means and what to do. */
function certificateWarning(notice: CertificateNotice): string {
  if (notice.kind === 'certificate-expiring') {
    return `the X.509 certificate expires in ${notice.daysLeft} day(s) (${notice.notAfter}): renew it and pass it to updateCredentials`;
  }
  if (notice.kind === 'certificate-expired') {
    return `the X.509 certificate expired ${notice.notAfter}: connections are parked until a renewed one (updateCredentials)`;
  }
  return `the X.509 certificate is not valid yet (${notice.notBefore}): is the clock set?`;
}

/**
 * A cached assignment the device may connect with, or null (it registers through DPS): whatever
 * the cache, checked as a DPS answer is. An injected cache (option `cache`) is checked only here;
 * the file cache also checks what it reads, to say in its warning what was wrong with the file.
 */
function usableCachedAssignment(cached: CachedAssignment | null, logger: PartLogger): CachedAssignment | null {
  if (cached === null) return null;
  const checked = checkedAssignment(cached.hubHost, cached.deviceId);
  if (typeof checked !== 'string') return cached;
  logger.warn({ problem: checked }, 'the provisioning cache gave an assignment it cannot be connected with; provisioning through DPS');
  return null;
}

/**
 * The provisioning cache when none is given: a file in dataDir, else memory. The file is bound to
 * the identity the device was created with (a fingerprint and a MAC key, never the key): a device
 * created with other keys registers once instead of trusting it.
 */
function openProvisioningCache(resolved: ResolvedOptions, boot: Credential, idScope: () => string, logger: PartLogger): ProvisioningCache {
  if (!resolved.dataDir) return new MemoryProvisioningCache();
  const { credential, macKey } = storeIdentity(resolved, boot);
  // The ID scope is read when the cache is read or written: a DeviceMove rebinds the cache to
  // the new scope, and a cache written for the old one is not used under the new one.
  const scope = {
    get idScope() {
      return idScope();
    },
    provisioningHost: resolved.provisioningHost,
    registrationId: resolved.registrationId,
    credential,
  };
  return new FileProvisioningCache(resolved.dataDir, resolved.registrationId, logger, scope, macKey);
}

/**
 * The boot credential's fingerprint and the MAC key of the files bound to it (the cache, the
 * persisted ID scope). X.509: the certificate's thumbprint names them; a key derived from the
 * private key (the secret only this device holds; the certificate is public) authenticates them.
 */
function storeIdentity(resolved: ResolvedOptions, boot: Credential): { credential: string; macKey: Buffer } {
  if ('x509' in boot) return { credential: x509CacheFingerprint(boot.x509), macKey: x509CacheMacKey(boot.x509) };
  const deviceKey = deviceKeyOf(boot, resolved.registrationId);
  return { credential: credentialFingerprint(deviceKey), macKey: cacheMacKey(deviceKey) };
}

/** Where a DeviceMove's ID scope is kept: a file in dataDir (bound like the cache), else memory. */
function openIdScopeStore(resolved: ResolvedOptions, boot: Credential, logger: PartLogger): IdScopeStore {
  if (!resolved.dataDir) return new MemoryIdScopeStore();
  const { credential, macKey } = storeIdentity(resolved, boot);
  const binding = { configuredIdScope: resolved.idScope, provisioningHost: resolved.provisioningHost, registrationId: resolved.registrationId, credential };
  return new FileIdScopeStore(resolved.dataDir, binding, macKey, logger);
}

/** The SQLite outbox of a device with a data directory: loaded for such a device only. */
function openDurableOutbox(dataDir: string, resolved: ResolvedOptions, clock: Clock): Outbox {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { openSqliteOutbox } = require('./store/sqlite-outbox') as typeof import('./store/sqlite-outbox');
  return openSqliteOutbox(dataDir, resolved.registrationId, { limits: resolved.outboxLimits, clock });
}

/**
 * With nothing cached, the first DPS request of a fleet powered on together would arrive at
 * once: the device waits U[0, firstBootJitterMs] (seeded) first. The machine stays Idle meanwhile.
 */
function firstBootDelayMs(cached: CachedAssignment | null, jitterMs: number, seed: number): number {
  if (cached !== null || jitterMs === 0) return 0;
  const [u] = nextRandom(seedFrom(`first-boot:${seed}`));
  return Math.round(u * jitterMs);
}

interface MachineWorkSettings {
  resolved: ResolvedOptions;
  /** The ID scope every DPS request reads (a DeviceMove changes it), and the watch on its moves. */
  scope: IdScopeMigration;
  credentials: Credentials;
  clock: Clock;
  logger: PartLogger;
  outbox: Outbox;
  /** See HubSettings.outboxCheckedAtSend. */
  outboxCheckedAtSend: boolean;
  features: SessionFeature[];
  onTransportFallback(fallback: TransportFallback): void;
  onDelivered(messageId: string): void;
  onPublished(seq: number): void;
}

/**
 * What the DPS registration and the lookup read: the ID scope at each request (the one copy of the
 * active scope is the migration's). A class, not an object literal with `get idScope()`: V8 keeps
 * such a literal in dictionary mode (~470 bytes more per object, and each device had two).
 */
class DpsSettings implements ProvisionSettings, LookupSettings {
  readonly provisioningHost: string;
  readonly modelId: string | undefined;
  readonly ca: string | undefined;
  readonly deadlineMs: number;
  probeServiceTime: ProvisionSettings['probeServiceTime'] = undefined;

  constructor(
    private readonly scope: IdScopeMigration,
    resolved: ResolvedOptions,
    readonly credentials: Credentials,
    readonly network: NetworkPath,
    readonly serviceTime: ServiceTime,
    readonly clock: Clock,
    readonly logger: PartLogger,
  ) {
    this.provisioningHost = resolved.provisioningHost;
    this.modelId = resolved.modelId;
    this.ca = resolved.ca;
    this.deadlineMs = resolved.provisionTimeoutMs;
  }

  get idScope(): string {
    return this.scope.idScope;
  }
}

/** The device's own DPS, lookup, hub and timer work, which the shared machine calls (see shared-machine.ts). */
function machineWork({ resolved, scope, credentials, clock, logger, outbox, outboxCheckedAtSend, features, onTransportFallback, onDelivered, onPublished }: MachineWorkSettings): DeviceImplementations['work'] {
  const network = new NetworkPath(resolved.network, logger, onTransportFallback);
  // Every token (DPS, lookup, hub) expires in the service's time, learned from DPS's Date header.
  const serviceTime = new ServiceTime(clock, logger);
  // One object for the registration and the lookup, a class for its idScope getter (see DpsSettings).
  const dpsSettings: DpsSettings = new DpsSettings(scope, resolved, credentials, network, serviceTime, clock, logger);
  dpsSettings.probeServiceTime = (signal) => probeServiceTime(dpsSettings, resolved.registrationId, signal);
  const hub = hubWork(
    {
      registrationId: resolved.registrationId,
      credentials,
      modelId: resolved.modelId,
      ca: resolved.ca,
      network,
      serviceTime,
      keepaliveSeconds: resolved.keepaliveSeconds,
      publishTimeoutSeconds: resolved.publishTimeoutSeconds,
      connectTimeoutMs: resolved.connectTimeoutMs,
      closeTimeoutMs: resolved.closeTimeoutMs,
      tokenValiditySeconds: resolved.tokenValiditySeconds,
      tokenRenewalMarginSeconds: resolved.tokenRenewalMarginSeconds,
      sendWindow: resolved.sendWindow,
      clock,
      logger,
      outbox,
      outboxCheckedAtSend,
      onDelivered,
      onPublished,
    },
    features,
  );
  return {
    provision: scope.watch(provisionWork(dpsSettings)),
    lookupAssignment: lookupWork(dpsSettings),
    ...hub,
    waitUntil: waitUntilWork(clock),
  };
}

/** The `Device` that `createDevice` returns: one device's actor, stores and Plug and Play parts. */
class HubstateDevice extends EventEmitter<DeviceEvents> implements Device {
  readonly actor: DeviceActor;
  readonly registrationId: string;
  readonly #clock: Clock;
  readonly #logger: PartLogger;
  readonly #credentials: Credentials;
  readonly #certificateExpiryWarningDays: number;
  readonly #cache: ProvisioningCache;
  readonly #scope: IdScopeMigration;
  readonly #outbox: Outbox;
  /** The outbox is ours (none was given), so stop() closes it. */
  readonly #ownsOutbox: boolean;
  /** Ours and in memory (no dataDir): what is still unsent when the device stops is reported as dropped. */
  readonly #memoryOutbox: MemoryOutbox | undefined;
  readonly #pnp: Pnp;
  readonly #inspector: DeviceOptions['inspect'];
  readonly #firstBootDelayMs: number;
  /** Stopped, or (whatever went wrong) no longer running: stop() must resolve either way. */
  readonly #stopped: Promise<void>;
  #previousState: DeviceStateName = 'Idle';
  #started = false;
  /** START has been sent (after the first-boot wait, if any). */
  #begun = false;
  /** The first-boot wait, while it runs (stop() cancels it). */
  #firstBootTimer: unknown = null;
  /** Set while stop() drains the outbox: called after each delivery or drop. */
  #drainCheck: (() => void) | null = null;
  #draining: Promise<void> | null = null;
  readonly #stats: StatsCollector;
  readonly #resilience: ResilienceReporter;
  /** OpenTelemetry metrics (`metrics` option); null without. */
  readonly #metrics: DeviceMetrics | null;

  constructor(options: DeviceOptions) {
    super();
    const resolved = resolveOptions(options);
    // Owned by us, not group/other-writable (else ConfigError('dataDir')): before anything in it is read.
    if (resolved.dataDir !== undefined) checkDataDir(resolved.dataDir);
    guardDebugOutputOnce();
    this.registrationId = resolved.registrationId;
    this.#certificateExpiryWarningDays = resolved.certificateExpiryWarningDays;
    const clock = (this.#clock = options.clock ?? systemClock);
    const logger = (this.#logger = new LazyChildLogger(options.logger ?? defaultLogger(), { registrationId: resolved.registrationId }));
    this.#credentials = new Credentials(resolved.credential);
    // Before the cache: a persisted DeviceMove decides which scope the cache is bound to.
    const scope = (this.#scope = new IdScopeMigration({
      configuredIdScope: resolved.idScope,
      store: openIdScopeStore(resolved, this.#credentials.current(), logger),
      logger,
      emit: (event) => this.#onMigration(event),
    }));
    this.#cache = options.cache ?? openProvisioningCache(resolved, this.#credentials.current(), () => scope.idScope, logger);
    // With a data directory telemetry is durable (SQLite); without one it lives in memory.
    this.#ownsOutbox = options.outbox === undefined;
    this.#memoryOutbox = this.#ownsOutbox && !resolved.dataDir ? new MemoryOutbox(resolved.outboxLimits) : undefined;
    this.#outbox = options.outbox ?? this.#memoryOutbox ?? openDurableOutbox(resolved.dataDir!, resolved, clock);
    this.#stats = new StatsCollector(clock, this.#outbox);
    this.#pnp = createPnp({
      clock,
      logger,
      commandTimeoutMs: resolved.commandTimeoutMs,
      propertyHandlerTimeoutMs: resolved.propertyHandlerTimeoutMs,
      twinTimeoutMs: resolved.twinTimeoutMs,
      dataDir: resolved.dataDir,
      registrationId: resolved.registrationId,
      reprovision: () => this.reprovision(),
      ...(resolved.resilience.report ? { resilienceComponent: resolved.resilience.component } : {}),
      ...(resolved.migration ? { deviceMove: { component: resolved.migration.component, move: (payload: unknown) => scope.move(payload, () => this.reprovision()) } } : {}),
    });
    // One shared machine for every device of the process (see shared-machine.ts).
    const { machine, bind } = machineFor({
      work: machineWork({
        resolved,
        scope,
        credentials: this.#credentials,
        clock,
        logger,
        outbox: this.#outbox,
        outboxCheckedAtSend: this.#memoryOutbox !== undefined,
        features: [this.#pnp.feature, ...(options.features ?? [])],
        onTransportFallback: (fallback) => this.#notify('transport', fallback),
        onDelivered: (messageId) => this.#onDelivered(messageId),
        onPublished: (seq) => this.#stats.published(seq),
      }),
      saveAssignment: (assignment) => this.#saveAssignment(assignment),
    });
    this.#inspector = options.inspect;
    // A move not yet confirmed by DPS is confirmed by registering: never by the old scope's hub
    // (the file cache is bound to the scope; an injected one is not).
    const cached = scope.pending ? null : usableCachedAssignment(this.#cache.load(), logger);
    const seed = resolved.seed ?? seedFrom(`${resolved.registrationId}:${clock.now()}`);
    this.#firstBootDelayMs = firstBootDelayMs(cached, resolved.firstBootJitterMs, seed);
    this.actor = createActor(machine, {
      clock,
      inspect: (inspection) => this.#inspect(inspection),
      input: {
        registrationId: resolved.registrationId,
        policy: resolved.policy,
        cachedAssignment: cached,
        // Nowhere to keep an assignment across restarts: ask DPS where it is before registering.
        lookupAtBoot: options.cache === undefined && !resolved.dataDir,
        seed,
      },
    });
    bind(this.actor);
    // One observer (each costs the actor a subscription): the actor's end settles `#stopped`; an error is logged too.
    this.#stopped = new Promise<void>((resolve) =>
      this.actor.subscribe({
        complete: resolve,
        error: (error) => {
          logger.error({ err: (error as Error).message }, 'device actor error');
          resolve();
        },
      }),
    );
    this.#outbox.onDropped((dropped) => this.#onDropped(dropped));
    this.#outbox.onAdded(() => this.#stats.added());
    this.#resilience = new ResilienceReporter({
      clock,
      logger,
      settings: resolved.resilience,
      read: () => this.#stats.snapshot(),
      emit: (stats) => this.#notify('stats', stats),
      queue: (patch, component) => this.#pnp.reported.set(patch, component),
    });
    this.#pnp.reported.onDropped((dropped) => this.#notify('droppedProperties', dropped));
    this.#metrics = resolved.meter === null ? null : new DeviceMetrics(resolved.meter, resolved.registrationId, { stats: () => this.stats(), state: () => this.state() }, logger);
    this.#stats.onCount(this.#metrics);
  }

  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#stats.started();
    this.#checkCertificate();
    this.actor.start();
    const delayMs = this.#firstBootDelayMs;
    if (delayMs > 0) {
      this.#logger.info({ delayMs, startsAt: new Date(this.#clock.now() + delayMs).toISOString() }, 'first registration staggered (policy.firstBootJitterMs)');
      this.#firstBootTimer = this.#clock.setTimeout(() => this.#begin(), delayMs);
    } else {
      this.#begin();
    }
    // Offline commands a crash interrupted: run again now (their handlers are registered).
    this.#pnp.offline.replay();
  }

  async stop(stopOptions?: StopOptions): Promise<void> {
    const { drainMs } = resolveStopOptions(stopOptions);
    if (!this.#started) {
      this.#started = true;
      this.actor.start();
    }
    if (this.#firstBootTimer !== null) {
      this.#clock.clearTimeout(this.#firstBootTimer);
      this.#firstBootTimer = null;
    }
    if (this.actor.getSnapshot().status === 'active') {
      if (this.#begun && drainMs > 0) await this.#drained(drainMs);
      this.actor.send({ type: 'STOP' });
      await this.#stopped;
    }
    this.#releaseStores();
  }

  async sendTelemetry(data: Record<string, unknown>, options?: TelemetryOptions): Promise<{ messageId: string }> {
    if (this.#isStopped()) throw new MessageRejectedError('stopped', 'the device is stopped');
    const message = telemetryMessage(data, options, this.#clock);
    // A durable outbox commits the sends of one event-loop turn together; the promise still
    // resolves only once this message is committed.
    if (this.#outbox.addBatched) await this.#outbox.addBatched(message);
    else this.#outbox.add(message);
    return { messageId: message.messageId };
  }

  reprovision(): void {
    this.actor.send({ type: 'REPROVISION' });
  }

  retry(): void {
    this.actor.send({ type: 'RETRY' });
  }

  updateCredentials(update: Parameters<Device['updateCredentials']>[0]): void {
    if (typeof update !== 'object' || update === null) throw new ConfigError('credentials', 'an object with groupKey or deviceKey');
    refuseUnknownKeys(update, CREDENTIAL_KEYS);
    this.#credentials.replace(resolveDeviceCredential(update, this.registrationId));
    this.#logger.info('credentials updated; the next connection uses the new primary key');
    this.#tryNewCredentialsNow();
  }

  state(): DeviceStateName {
    return stateName(this.actor.getSnapshot());
  }

  assignment(): Assignment | null {
    return this.actor.getSnapshot().context.assignment;
  }

  idScope(): string {
    return this.#scope.idScope;
  }

  outboxStats(): { count: number; bytes: number } {
    return this.#outbox.stats();
  }

  onWritableProperty(name: string, handler: WritablePropertyHandler, options?: WritablePropertyOptions): void {
    this.#pnp.properties.register(name, handler, options);
  }

  reportProperties(patch: Record<string, unknown>, options: ReportOptions = {}): void {
    if (this.#isStopped()) throw new PropertiesRejectedError('stopped', 'the device is stopped');
    const problem = reportOptionsProblem(options);
    if (problem) throw new PropertiesRejectedError('invalid', problem);
    this.#pnp.reported.set(patch, options.component);
  }

  onCommand(name: string, handler: CommandHandler, options?: CommandOptions): void {
    this.#pnp.commands.register(name, handler, options);
  }

  pendingReportedProperties(): number {
    return this.#pnp.reported.size;
  }

  stats(): DeviceStats {
    return this.#stats.snapshot();
  }

  #isStopped(): boolean {
    return this.actor.getSnapshot().status === 'done';
  }

  #begin(): void {
    this.#firstBootTimer = null;
    this.#begun = true;
    this.actor.send({ type: 'START' });
  }

  /**
   * A device stopped or parked by what new credentials may cure tries them now, not after its
   * wait (a parked wait is 15-30 min): Failed retries, a credential wait goes to DPS.
   */
  #tryNewCredentialsNow(): void {
    const snapshot = this.actor.getSnapshot();
    const { lastError } = snapshot.context;
    const state = stateName(snapshot);
    if (state === 'Failed') this.retry();
    else if (state === 'BackingOff' && lastError && (isKeyRefusal(lastError) || lastError.rule === 'device-certificate-expired')) this.reprovision();
  }

  /** Application listeners are observers: one that throws is logged and never breaks the device. */
  #notify<E extends keyof DeviceEvents>(event: E, ...args: DeviceEvents[E]): void {
    try {
      (this.emit as (event: E, ...args: DeviceEvents[E]) => boolean)(event, ...args);
    } catch (error) {
      this.#logger.error({ event, err: (error as Error).message }, 'a device event listener threw');
    }
  }

  /** A move DPS confirmed lands on a hub with a new twin: what was reported is reported again there. */
  #onMigration(event: MigrationEvent): void {
    if (event.phase === 'completed') {
      const count = this.#pnp.reported.requeueDelivered();
      if (count > 0) this.#logger.info({ count }, 'reported properties queued again for the hub of the new ID scope');
    }
    this.#notify('migration', event);
  }

  #onDelivered(messageId: string): void {
    this.#stats.delivered();
    this.#notify('delivered', messageId);
    this.#drainCheck?.();
  }

  #onDropped(dropped: DroppedMessage): void {
    this.#stats.dropped(dropped);
    if (dropped.reason !== 'stopped') this.#logger.warn(dropped, 'telemetry dropped'); // stop() logs those once
    this.#notify('dropped', dropped);
    this.#drainCheck?.();
  }

  #saveAssignment({ hubHost, deviceId, assignedAt }: Assignment): void {
    try {
      this.#cache.save({ hubHost, deviceId, assignedAt });
    } catch (error) {
      // A device that cannot write its cache still works; it just asks DPS on next boot.
      this.#logger.warn({ err: (error as Error).message }, 'could not save the provisioning cache');
    }
  }

  /** Warns (log + `credentials` event) when the X.509 certificate nears its end or is out of its dates. */
  #checkCertificate(): void {
    const current = this.#credentials.current();
    if (!('x509' in current)) return;
    const notice = certificateNotice(current.x509, this.#clock.now(), this.#certificateExpiryWarningDays);
    if (!notice) return;
    const { kind, notAfter, daysLeft, thumbprint } = notice;
    this.#logger.warn({ kind, notAfter, daysLeft, thumbprint }, certificateWarning(notice));
    this.#notify('credentials', notice);
  }

  /** Every inspection event: to the application's inspector, and the device's own transitions to `#onTransition`. */
  #inspect(inspection: InspectionEvent): void {
    this.#forwardToInspector(inspection);
    if (inspection.type !== '@xstate.snapshot' || inspection.actorRef !== this.actor) return;
    this.#onTransition(inspection.snapshot as DeviceSnapshot, inspection.event.type);
  }

  #forwardToInspector(inspection: InspectionEvent): void {
    const inspector = this.#inspector;
    if (!inspector) return;
    try {
      if (typeof inspector === 'function') inspector(inspection);
      else inspector.next?.(inspection);
    } catch (error) {
      // An inspector is an observer: it must never break the device.
      this.#logger.warn({ err: (error as Error).message }, 'inspector failed');
    }
  }

  /** A new leaf state: logged, and the `state` event (and the certificate check on each connection). */
  #onTransition(snapshot: DeviceSnapshot, event: string): void {
    const value = stateName(snapshot);
    if (value === this.#previousState) return;
    const change = stateChange(snapshot, value, this.#previousState, event);
    this.#previousState = value;
    if (value === 'Connected') this.#checkCertificate();
    const { context } = snapshot;
    this.#stats.transition({ value, previous: change.previous, event, hubHost: context.assignment?.hubHost ?? null, lastError: context.lastError });
    this.#logger.info(
      {
        from: change.previous,
        to: change.value,
        event: change.event,
        errorClass: change.errorClass,
        rule: change.errorClass ? context.lastError?.rule : undefined,
        delayMs: change.delayMs,
        hub: change.hubHost,
        epoch: context.epoch,
      },
      `${change.previous} -> ${change.value}`,
    );
    if (value === 'Failed' && context.lastError) {
      this.#logger.error({ failure: { ...context.lastError, at: wallTimeOf(this.#clock, context.lastError.at) } }, 'device failed; it will not retry until retry() or reprovision()');
    }
    this.#notify('state', change);
    // After the application's `state` listeners: a `stats` event names the connection they saw.
    if (value === 'Connected') this.#resilience.connected();
    else if (change.previous === 'Connected') this.#resilience.disconnected();
  }

  /** Resolves when the outbox is empty, or after `ms` on the device's clock (one drain at a time). */
  #drained(ms: number): Promise<void> {
    if (this.#outbox.stats().count === 0) return Promise.resolve();
    this.#draining ??= new Promise<void>((resolve) => {
      const finish = () => {
        this.#clock.clearTimeout(timer);
        this.#drainCheck = null;
        this.#draining = null;
        resolve();
      };
      const timer = this.#clock.setTimeout(finish, ms);
      this.#drainCheck = () => {
        if (this.#outbox.stats().count === 0) finish();
      };
    });
    return this.#draining;
  }

  /** After STOP: an in-memory outbox reports what it still holds as dropped; the stores are closed. */
  #releaseStores(): void {
    this.#resilience.stop();
    if (this.#memoryOutbox) {
      // Not one message of an in-memory outbox goes silently: each is reported as dropped.
      const count = this.#memoryOutbox.dropAll('stopped');
      if (count > 0) this.#logger.warn({ count }, 'telemetry not delivered before stop() dropped (in-memory outbox: no dataDir)');
    }
    if (this.#ownsOutbox) this.#closeQuietly('outbox', () => this.#outbox.close());
    this.#closeQuietly('command inbox', () => this.#pnp.offline.close());
    // After the last drops are counted; the device's callback leaves the application's Meter.
    if (this.#metrics) this.#closeQuietly('metrics', () => this.#metrics!.close());
  }

  /** Closing the stores is best effort: a close that fails is logged, never a rejected stop(). */
  #closeQuietly(what: string, close: () => void): void {
    try {
      close();
    } catch (error) {
      this.#logger.warn({ err: (error as Error).message }, `could not close the ${what}`);
    }
  }
}

export function createDevice(options: DeviceOptions): Device {
  return new HubstateDevice(options);
}
