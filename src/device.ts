/**
 * `createDevice()`: wires the statechart, the SDK actors, the stores and the logger into the
 * object an application uses. No connection decision is taken here; the machine takes them all.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createActor, type Actor, type InspectionEvent, type SnapshotFrom } from 'xstate';
import { deviceMachine, leafStateName, type Assignment, type DeviceEvent } from '../machines/device.machine';
import { Credentials, deviceKeyOf, isKeyRefusal, type KeyPair } from './actors/credentials';
import { hubWork } from './actors/hub';
import { lookupWork, probeServiceTime, type LookupSettings } from './actors/lookup';
import { ServiceTime } from './actors/service-time';
import { provisionWork } from './actors/provision';
import { NetworkPath, type TransportFallback } from './actors/transport';
import { waitUntilWork } from './actors/wait';
import { certificateNotice, x509CacheFingerprint, x509CacheMacKey, type CertificateNotice, type X509Identity } from './actors/x509';
import { systemClock, type Clock } from './clock';
import { ConfigError, MessageRejectedError } from './errors';
import { createLogger } from './logger';
import { jsonOddity } from './json';
import { refuseUnknownKeys, reportOptionsProblem, resolveDeviceCredential, resolveOptions, resolveStopOptions, type DeviceOptions, type StopOptions } from './options';
import type { ErrorClass } from './policy/types';
import { nextRandom, seedFrom } from './policy/backoff';
import { cacheMacKey, credentialFingerprint, FileProvisioningCache, MemoryProvisioningCache, type ProvisioningCache } from './store/cache';
import { checkDataDir } from './store/files';
import { MemoryOutbox, type DroppedMessage, type Outbox } from './store/outbox';
import { openSqliteOutbox } from './store/sqlite-outbox';
import { machineFor } from './shared-machine';
import { createPnp } from './pnp';
import type { DroppedProperties } from './pnp/reported';
import { componentProblem, CREATION_TIME_PROPERTY, propertyNameProblem, telemetryProblem, telemetrySize } from './pnp/telemetry';
import { firstUnknownKey, unknownKeyExpectation } from './validate';
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
}

/** The leaf state: the working states are nested in `Active`, which is never reported. */
function stateName(snapshot: DeviceSnapshot): DeviceStateName {
  return leafStateName(snapshot.value) as DeviceStateName;
}

export function createDevice(options: DeviceOptions): Device {
  const resolved = resolveOptions(options);
  // Owned by us, not group/other-writable (else ConfigError('dataDir')): before anything in it is read.
  if (resolved.dataDir !== undefined) checkDataDir(resolved.dataDir);
  const clock: Clock = options.clock ?? systemClock;
  const logger = (options.logger ?? createLogger()).child({ registrationId: resolved.registrationId });
  const credentials = new Credentials(resolved.credential);
  // The cache is bound to the key the device was created with (a fingerprint and a MAC key, never
  // the key): a device created with other keys registers once instead of trusting it.
  const boot = credentials.current();
  // X.509: the certificate's thumbprint names the cache; a key derived from the private key (the
  // secret only this device holds; the certificate is public) authenticates it.
  const bootKey = 'x509' in boot ? undefined : deviceKeyOf(boot, resolved.registrationId);
  const cache: ProvisioningCache =
    options.cache ??
    (resolved.dataDir
      ? new FileProvisioningCache(
          resolved.dataDir,
          resolved.registrationId,
          logger,
          {
            idScope: resolved.idScope,
            provisioningHost: resolved.provisioningHost,
            registrationId: resolved.registrationId,
            credential: 'x509' in boot ? x509CacheFingerprint(boot.x509) : credentialFingerprint(bootKey!),
          },
          'x509' in boot ? x509CacheMacKey(boot.x509) : cacheMacKey(bootKey!),
        )
      : new MemoryProvisioningCache());
  // With a data directory telemetry is durable (SQLite); without one it lives in memory, and what
  // is still unsent when the device stops is reported as dropped (reason 'stopped').
  const ownsOutbox = options.outbox === undefined;
  const memoryOutbox = ownsOutbox && !resolved.dataDir ? new MemoryOutbox(resolved.outboxLimits) : undefined;
  const outbox: Outbox =
    options.outbox ?? memoryOutbox ?? openSqliteOutbox(resolved.dataDir!, resolved.registrationId, { limits: resolved.outboxLimits, clock });
  /** Set while stop() drains the outbox: called after each delivery or drop. */
  let drainCheck: (() => void) | null = null;
  const emitter = new EventEmitter<DeviceEvents>();
  /** Application listeners are observers: one that throws is logged and never breaks the device. */
  const notify = <E extends keyof DeviceEvents>(event: E, ...args: DeviceEvents[E]): void => {
    try {
      (emitter.emit as (event: E, ...args: DeviceEvents[E]) => boolean)(event, ...args);
    } catch (error) {
      logger.error({ event, err: (error as Error).message }, 'a device event listener threw');
    }
  };
  /** Warns (log + `credentials` event) when the X.509 certificate nears its end or is out of its dates. */
  const checkCertificate = (): void => {
    const current = credentials.current();
    if (!('x509' in current)) return;
    const notice = certificateNotice(current.x509, clock.now(), resolved.certificateExpiryWarningDays);
    if (!notice) return;
    const { kind, notAfter, daysLeft, thumbprint } = notice;
    const text =
      kind === 'certificate-expiring'
        ? `the X.509 certificate expires in ${daysLeft} day(s) (${notAfter}): renew it and pass it to updateCredentials`
        : kind === 'certificate-expired'
          ? `the X.509 certificate expired ${notAfter}: connections are parked until a renewed one (updateCredentials)`
          : `the X.509 certificate is not valid yet (${notice.notBefore}): is the clock set?`;
    logger.warn({ kind, notAfter, daysLeft, thumbprint }, text);
    notify('credentials', notice);
  };
  const pnp = createPnp({
    clock,
    logger,
    commandTimeoutMs: resolved.commandTimeoutMs,
    propertyHandlerTimeoutMs: resolved.propertyHandlerTimeoutMs,
    twinTimeoutMs: resolved.twinTimeoutMs,
    dataDir: resolved.dataDir,
    registrationId: resolved.registrationId,
    reprovision: () => actor.send({ type: 'REPROVISION' }),
  });

  const network = new NetworkPath(resolved.network, logger, (fallback) => notify('transport', fallback));
  // Every token (DPS, lookup, hub) expires in the service's time, learned from DPS's Date header.
  const serviceTime = new ServiceTime(clock, logger);
  const lookupSettings: LookupSettings = {
    provisioningHost: resolved.provisioningHost,
    idScope: resolved.idScope,
    credentials,
    ca: resolved.ca,
    network,
    deadlineMs: resolved.provisionTimeoutMs,
    serviceTime,
    clock,
    logger,
  };
  const probeTime = (signal?: AbortSignal) => probeServiceTime(lookupSettings, resolved.registrationId, signal);
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
      onDelivered: (messageId) => {
        notify('delivered', messageId);
        drainCheck?.();
      },
    },
    [pnp.feature, ...(options.features ?? [])],
  );

  // One shared machine for every device of the process (see shared-machine.ts).
  const { machine, bind } = machineFor({
    work: {
      provision: provisionWork({
        provisioningHost: resolved.provisioningHost,
        idScope: resolved.idScope,
        credentials,
        modelId: resolved.modelId,
        ca: resolved.ca,
        network,
        deadlineMs: resolved.provisionTimeoutMs,
        serviceTime,
        probeServiceTime: probeTime,
        clock,
        logger,
      }),
      lookupAssignment: lookupWork(lookupSettings),
      ...hub,
      waitUntil: waitUntilWork(clock),
    },
    saveAssignment: (assignment) => {
      const { hubHost, deviceId, assignedAt } = assignment;
      try {
        cache.save({ hubHost, deviceId, assignedAt });
      } catch (error) {
        // A device that cannot write its cache still works; it just asks DPS on next boot.
        logger.warn({ err: (error as Error).message }, 'could not save the provisioning cache');
      }
    },
  });

  let previous: DeviceStateName = 'Idle';
  const extraInspector = options.inspect;
  const forward = (inspection: InspectionEvent) => {
    if (!extraInspector) return;
    try {
      if (typeof extraInspector === 'function') extraInspector(inspection);
      else extraInspector.next?.(inspection);
    } catch (error) {
      // An inspector is an observer: it must never break the device.
      logger.warn({ err: (error as Error).message }, 'inspector failed');
    }
  };
  const onTransition = (inspection: InspectionEvent) => {
    forward(inspection);
    if (inspection.type !== '@xstate.snapshot' || inspection.actorRef !== actor) return;
    const snapshot = inspection.snapshot as DeviceSnapshot;
    const value = stateName(snapshot);
    if (value === previous) return;
    const { context } = snapshot;
    const change: StateChange = { value, previous, event: inspection.event.type };
    const causedByFailure = change.event.startsWith('xstate.error.actor.') || change.event === 'HUB_LOST';
    if (causedByFailure && context.lastError) change.errorClass = context.lastError.errorClass;
    if (value === 'BackingOff' && context.delayMs !== null) change.delayMs = context.delayMs;
    if (context.assignment) change.hubHost = context.assignment.hubHost;
    previous = value;
    if (value === 'Connected') checkCertificate();
    logger.info(
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
      logger.error({ failure: context.lastError }, 'device failed; it will not retry until retry() or reprovision()');
    }
    notify('state', change);
  };

  const cached = cache.load();
  const seed = resolved.seed ?? seedFrom(`${resolved.registrationId}:${clock.now()}`);
  const actor: DeviceActor = createActor(machine, {
    clock,
    inspect: onTransition,
    input: {
      registrationId: resolved.registrationId,
      policy: resolved.policy,
      cachedAssignment: cached,
      // Nowhere to keep an assignment across restarts: ask DPS where it is before registering.
      lookupAtBoot: options.cache === undefined && !resolved.dataDir,
      seed,
    },
  });
  bind(actor);
  actor.subscribe({ error: (error) => logger.error({ err: (error as Error).message }, 'device actor error') });
  outbox.onDropped((dropped) => {
    if (dropped.reason !== 'stopped') logger.warn(dropped, 'telemetry dropped'); // stop() logs those once
    notify('dropped', dropped);
    drainCheck?.();
  });
  pnp.reported.onDropped((dropped) => notify('droppedProperties', dropped));

  const send = (event: DeviceEvent) => actor.send(event);
  /** Resolves when the outbox is empty, or after `ms` on the device's clock (one drain at a time). */
  let draining: Promise<void> | null = null;
  const drained = (ms: number): Promise<void> => {
    if (outbox.stats().count === 0) return Promise.resolve();
    draining ??= new Promise<void>((resolve) => {
      const finish = () => {
        clock.clearTimeout(timer);
        drainCheck = null;
        draining = null;
        resolve();
      };
      const timer = clock.setTimeout(finish, ms);
      drainCheck = () => {
        if (outbox.stats().count === 0) finish();
      };
    });
    return draining;
  };
  // Stopped, or (whatever went wrong) no longer running: stop() must resolve either way.
  const stopped = new Promise<void>((resolve) => actor.subscribe({ complete: () => resolve(), error: () => resolve() }));
  /** Closing the stores is best effort: a close that fails is logged, never a rejected stop(). */
  const closeQuietly = (what: string, close: () => void) => {
    try {
      close();
    } catch (error) {
      logger.warn({ err: (error as Error).message }, `could not close the ${what}`);
    }
  };
  let started = false;
  /** START has been sent (after the first-boot wait, if any). */
  let begun = false;
  /** The first-boot wait, while it runs (stop() cancels it). */
  let firstBootTimer: unknown = null;
  const begin = () => {
    firstBootTimer = null;
    begun = true;
    send({ type: 'START' });
  };
  /**
   * With nothing cached, the first DPS request of a fleet powered on together would arrive at
   * once: wait U[0, firstBootJitterMs] (seeded, on the device's clock) first. The machine stays
   * Idle meanwhile.
   */
  const firstBootDelayMs = (): number => {
    if (cached !== null || resolved.firstBootJitterMs === 0) return 0;
    const [u] = nextRandom(seedFrom(`first-boot:${seed}`));
    return Math.round(u * resolved.firstBootJitterMs);
  };

  const device = Object.assign(emitter, {
    actor,
    registrationId: resolved.registrationId,
    start(): void {
      if (started) return;
      started = true;
      checkCertificate();
      actor.start();
      const delayMs = firstBootDelayMs();
      if (delayMs > 0) {
        logger.info({ delayMs, startsAt: new Date(clock.now() + delayMs).toISOString() }, 'first registration staggered (policy.firstBootJitterMs)');
        firstBootTimer = clock.setTimeout(begin, delayMs);
      } else {
        begin();
      }
      // Offline commands a crash interrupted: run again now (their handlers are registered).
      pnp.offline.replay();
    },
    async stop(stopOptions?: StopOptions): Promise<void> {
      const { drainMs } = resolveStopOptions(stopOptions);
      if (!started) {
        started = true;
        actor.start();
      }
      if (firstBootTimer !== null) {
        clock.clearTimeout(firstBootTimer);
        firstBootTimer = null;
      }
      if (actor.getSnapshot().status === 'active') {
        if (begun && drainMs > 0) await drained(drainMs);
        send({ type: 'STOP' });
        await stopped;
      }
      if (memoryOutbox) {
        // Not one message of an in-memory outbox goes silently: each is reported as dropped.
        const count = memoryOutbox.dropAll('stopped');
        if (count > 0) logger.warn({ count }, 'telemetry not delivered before stop() dropped (in-memory outbox: no dataDir)');
      }
      if (ownsOutbox) closeQuietly('outbox', () => outbox.close());
      closeQuietly('command inbox', () => pnp.offline.close());
    },
    async sendTelemetry(data: Record<string, unknown>, telemetryOptions?: TelemetryOptions) {
      if (actor.getSnapshot().status === 'done') throw new MessageRejectedError('stopped', 'the device is stopped');
      const body = telemetryBody(data);
      const { component, properties: userProperties } = checkTelemetryOptions(telemetryOptions);
      const createdAt = clock.now();
      const properties: Record<string, string> = { ...userProperties, [CREATION_TIME_PROPERTY]: new Date(createdAt).toISOString() };
      const messageId = randomUUID();
      const parts = { messageId, body, component, properties };
      // What goes on the wire (body, properties, component, system properties), as the pump sends it.
      const problem = telemetryProblem(parts);
      if (problem) throw problem;
      const message = { ...parts, createdAt, bytes: telemetrySize(parts) };
      // A durable outbox commits the sends of one event-loop turn together; the promise still
      // resolves only once this message is committed.
      if (outbox.addBatched) await outbox.addBatched(message);
      else outbox.add(message);
      return { messageId };
    },
    reprovision(): void {
      send({ type: 'REPROVISION' });
    },
    retry(): void {
      send({ type: 'RETRY' });
    },
    updateCredentials(update: Parameters<Device['updateCredentials']>[0]): void {
      if (typeof update !== 'object' || update === null) throw new ConfigError('credentials', 'an object with groupKey or deviceKey');
      refuseUnknownKeys(update, CREDENTIAL_KEYS);
      credentials.replace(resolveDeviceCredential(update, resolved.registrationId));
      logger.info('credentials updated; the next connection uses the new primary key');
      // A device stopped or parked by what the new credentials may cure tries them now, not after
      // its wait (a parked wait is 15-30 min): Failed retries, a credential wait goes to DPS.
      const { lastError } = actor.getSnapshot().context;
      const state = stateName(actor.getSnapshot());
      if (state === 'Failed') send({ type: 'RETRY' });
      else if (state === 'BackingOff' && lastError && (isKeyRefusal(lastError) || lastError.rule === 'device-certificate-expired')) send({ type: 'REPROVISION' });
    },
    state(): DeviceStateName {
      return stateName(actor.getSnapshot());
    },
    assignment(): Assignment | null {
      return actor.getSnapshot().context.assignment;
    },
    outboxStats() {
      return outbox.stats();
    },
    onWritableProperty(name: string, handler: WritablePropertyHandler, propertyOptions?: WritablePropertyOptions): void {
      pnp.properties.register(name, handler, propertyOptions);
    },
    reportProperties(patch: Record<string, unknown>, reportOptions: ReportOptions = {}): void {
      if (actor.getSnapshot().status === 'done') throw new PropertiesRejectedError('stopped', 'the device is stopped');
      const reportProblem = reportOptionsProblem(reportOptions);
      if (reportProblem) throw new PropertiesRejectedError('invalid', reportProblem);
      pnp.reported.set(patch, reportOptions.component);
    },
    onCommand(name: string, handler: CommandHandler, commandOptions?: CommandOptions): void {
      pnp.commands.register(name, handler, commandOptions);
    },
    pendingReportedProperties(): number {
      return pnp.reported.size;
    },
  });
  return device as Device;
}
