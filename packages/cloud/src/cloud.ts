/**
 * The local cloud: one emulated DPS and N emulated IoT Hubs on 127.0.0.1 (ephemeral ports,
 * per-run TLS CA), plus IoT Central style manual failover and an optional HTTP control API.
 */
import { EventEmitter } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { generateCertificates } from './certs';
import { startControlApi, type ControlApi } from './control-api';
import { EmulatedDps, type DpsSettings } from './dps';
import { EmulatedHub, type HubSettings } from './hub';
import { silentLogger, withFields, type EmulatorLogger } from './logger';
import { TelemetryStore, type TelemetryFilter } from './telemetry';
import { ServiceClock } from './util';
import { CloudPki, type IssuedCertificate, type IssueOptions } from './x509';
import {
  DEFAULT_FAILOVER_TTL_MS,
  EmulatorError,
  type DpsOptions,
  type ExpiredCertificateRefusal,
  type FailoverInfo,
  type FailoverOptions,
  type HubOptions,
  type LocalCloudEvents,
  type LookupCredentials,
  type MovedDeviceRefusal,
  type TelemetryRecord,
} from './types';

/** A service clock further off than this (ten years) is a mistake, not a test. */
const MAX_CLOCK_OFFSET_MS = 10 * 365 * 86_400_000;

/** Options of {@link startLocalCloud}. */
export interface LocalCloudOptions {
  /** Number of hubs, named `hub-0`, `hub-1` ... Default 2. */
  hubs?: number;
  /** DPS id scope. Default generated (`0ne` + 8 hex digits). */
  idScope?: string;
  /** Group enrollment key (base64). Default: 32 random bytes, or derived from `seed`. */
  groupKey?: string;
  /** Makes the generated id scope and group key deterministic. */
  seed?: string;
  /**
   * The service's clock minus the machine's, ms (default 0): a cloud 3 hours ahead tests a device
   * whose clock is 3 hours behind. Changeable later with `setClockOffset`.
   */
  clockOffsetMs?: number;
  dps?: DpsOptions;
  hub?: HubOptions;
  /** Start the HTTP control API on 127.0.0.1 (ephemeral port). Default false. */
  controlApi?: boolean;
  /** A pino logger (or anything with debug/info/warn/error). Default: silent. */
  logger?: EmulatorLogger;
}

function positiveInt(name: string, v: number | undefined, dflt: number): number {
  const n = v ?? dflt;
  if (!Number.isInteger(n) || n < 1) throw new EmulatorError('INVALID_ARGUMENT', `${name} must be a positive integer`);
  return n;
}

function lookupCredentialsOf(v: unknown): LookupCredentials {
  const who = v ?? 'device';
  if (who !== 'device' && who !== 'service') throw new EmulatorError('INVALID_ARGUMENT', "dps.lookupCredentials must be 'device' or 'service'");
  return who;
}

function refusalCodeOf(name: string, v: unknown, dflt: MovedDeviceRefusal): MovedDeviceRefusal {
  const code = v ?? dflt;
  if (code !== 3 && code !== 5) throw new EmulatorError('INVALID_ARGUMENT', `${name} must be 3 (server unavailable, as Azure) or 5 (not authorized)`);
  return code;
}

function expiredCertificateRefusalOf(v: unknown): ExpiredCertificateRefusal {
  const r = v ?? 'close';
  if (r !== 'close' && r !== 5) throw new EmulatorError('INVALID_ARGUMENT', "hub.expiredCertificateRefusal must be 'close' or 5");
  return r;
}

function nonNegativeInt(name: string, v: number | undefined, dflt: number): number {
  const n = v ?? dflt;
  if (!Number.isInteger(n) || n < 0) throw new EmulatorError('INVALID_ARGUMENT', `${name} must be a whole number of seconds`);
  return n;
}

function nonNegative(name: string, v: number | undefined, dflt: number): number {
  const n = v ?? dflt;
  if (!(n >= 0) || !Number.isFinite(n)) throw new EmulatorError('INVALID_ARGUMENT', `${name} must be a non-negative number`);
  return n;
}

/** Options of {@link LocalCloud.addIdScope}. */
export interface IdScopeOptions {
  /** Names of the hubs linked to the new scope (at least one; the cloud's scope keeps at least one). */
  hubs: readonly string[];
  /** Default generated (`0ne` + 8 hex digits), unlike every scope already hosted. */
  idScope?: string;
  /**
   * The new scope's group enrollment key (base64). Default: 32 random bytes, i.e. a scope where
   * none of the cloud's devices is enrolled (DPS answers their registrations 401). IoT Central's
   * migration tool creates the target enrollment group with the source app's keys: pass
   * `cloud.groupKey` for a scope the devices can move to.
   */
  groupKey?: string;
}

/** An ID scope added with {@link LocalCloud.addIdScope}. */
export interface AddedIdScope {
  idScope: string;
  groupKey: string;
  /** The names of its hubs. */
  hubs: string[];
}

/** An ID scope as DPS documents it: letters and digits. */
const ID_SCOPE = /^[A-Za-z0-9]{1,64}$/;

interface ActiveFailover extends FailoverInfo {
  timer?: NodeJS.Timeout;
}

/** A running local cloud. Create with {@link startLocalCloud}; always {@link LocalCloud.stop} it. */
export class LocalCloud {
  /** Emits telemetry, deviceConnected/Disconnected, registered, failover, failback. */
  readonly events: EventEmitter<LocalCloudEvents>;
  /** URL of the HTTP control API (`http://127.0.0.1:PORT`), when enabled. */
  controlUrl?: string;
  private readonly failoverMap = new Map<string, ActiveFailover>();
  private readonly addedScopes: AddedIdScope[] = [];
  private controlApi?: ControlApi;
  /** @internal The X.509 enrollment group's CAs and revocation list (set by startLocalCloud). */
  pki!: CloudPki;
  private stopping?: Promise<void>;

  /** @internal */
  constructor(
    /** DPS id scope. */
    readonly idScope: string,
    /** Group enrollment key (base64). */
    readonly groupKey: string,
    /** CA certificate (PEM) devices must trust. */
    readonly ca: string,
    /** The emulated DPS. */
    readonly dps: EmulatedDps,
    /** The emulated hubs, in name order. */
    readonly hubs: readonly EmulatedHub[],
    private readonly store: TelemetryStore,
    events: EventEmitter<LocalCloudEvents>,
    private readonly logger: EmulatorLogger,
    /** CONNACK code for moved and disabled devices unless a failover chooses its own. */
    readonly refusalCode: MovedDeviceRefusal,
    private readonly clock: ServiceClock,
  ) {
    this.events = events;
  }

  /** `localhost:PORT` of DPS (the SDK's provisioning host). */
  get provisioningHost(): string {
    return this.dps.host;
  }

  /**
   * The symmetric key a device must use: base64(HMAC-SHA256(base64decode(groupKey), registrationId))
   * for the group enrollment, or its individual enrollment key when it has one.
   */
  /**
   * Issues a device certificate for the X.509 enrollment group: CN = `registrationId`, signed by
   * the per-run intermediate CA; `cert` is the leaf followed by the intermediate, `key` its private
   * key (PEM, PKCS#8). `validDays` (default 365) from `notBefore` (default an hour ago).
   */
  issueDeviceCertificate(registrationId: string, opts?: IssueOptions): Promise<IssuedCertificate> {
    return this.pki.issueDeviceCertificate(registrationId, opts);
  }

  /** A self-signed device certificate (for `dps.addIndividualX509Enrollment` or a hub thumbprint identity). */
  issueSelfSignedCertificate(registrationId: string, opts?: IssueOptions): Promise<IssuedCertificate> {
    return this.pki.issueSelfSignedCertificate(registrationId, opts);
  }

  /**
   * Adds a certificate (PEM, or a SHA-1/SHA-256 thumbprint) to the revocation list DPS and the
   * hubs check: its next registration gets 401 (401002), its next hub connection CONNACK 5.
   * Revoking the intermediate refuses every certificate it issued.
   */
  revokeCertificate(certOrThumbprint: string): void {
    this.pki.revokeCertificate(certOrThumbprint);
  }

  /** The X.509 enrollment group's root CA (PEM), as uploaded to DPS and the hubs. */
  get x509RootCertificate(): string {
    return this.pki.rootCertificate;
  }

  deviceKey(registrationId: string): string {
    return this.dps.deviceKey(registrationId);
  }

  /**
   * Hosts another ID scope on the same provisioning host, as another DPS instance behind Azure's
   * global endpoint (an IoT Central app's, or the IoT Hub DPS a fleet migrates to): its own group
   * enrollment and the named hubs, which the cloud's own scope stops allocating to. A device
   * registering under it is assigned one of those hubs; its registration record moves to it (one
   * record per registration id). Individual enrollments and enrollment states apply in every scope.
   */
  addIdScope(opts: IdScopeOptions): AddedIdScope {
    const names = [...new Set(opts.hubs ?? [])];
    if (names.length === 0) throw new EmulatorError('INVALID_ARGUMENT', 'addIdScope needs at least one hub');
    for (const name of names) {
      const hub = this.hub(name);
      if (hub.name !== name) throw new EmulatorError('INVALID_ARGUMENT', `name hubs by name ('${hub.name}'), not host`);
      if (this.addedScopes.some((s) => s.hubs.includes(name))) throw new EmulatorError('INVALID_ARGUMENT', `'${name}' is already linked to another added ID scope`);
    }
    const taken = new Set([...this.addedScopes.flatMap((s) => s.hubs), ...names]);
    if (this.hubs.every((h) => taken.has(h.name))) throw new EmulatorError('INVALID_ARGUMENT', `the cloud's ID scope ${this.idScope} must keep at least one hub`);
    const idScope = opts.idScope ?? `0ne${randomBytes(4).toString('hex').toUpperCase()}`;
    if (!ID_SCOPE.test(idScope)) throw new EmulatorError('INVALID_ARGUMENT', 'idScope must be letters and digits');
    if (this.dps.idScopes().some((s) => s.toLowerCase() === idScope.toLowerCase())) throw new EmulatorError('INVALID_ARGUMENT', `ID scope ${idScope} is already hosted`);
    const groupKey = opts.groupKey ?? randomBytes(32).toString('base64');
    if (Buffer.from(groupKey, 'base64').length === 0) throw new EmulatorError('INVALID_ARGUMENT', 'groupKey must be base64');
    this.dps.addIdScope(idScope, { primary: groupKey }, names);
    const added: AddedIdScope = { idScope, groupKey, hubs: names };
    this.addedScopes.push(added);
    this.logger.info({ idScope, hubs: names }, 'ID scope added');
    return { ...added, hubs: [...names] };
  }

  /** The ID scopes added with {@link addIdScope}. */
  idScopes(): AddedIdScope[] {
    return this.addedScopes.map((s) => ({ ...s, hubs: [...s.hubs] }));
  }

  /**
   * A network where MQTT (8883) is blocked and only HTTPS (443) gets through: DPS and every hub
   * refuse new MQTT connections, MQTT over WebSockets still works. `false` lifts it.
   */
  blockRawMqtt(on: boolean): void {
    this.dps.blockRawMqtt(on);
    for (const hub of this.hubs) hub.blockRawMqtt(on);
  }

  /** A hub by name (`hub-0`) or host (`localhost:PORT`). */
  hub(nameOrHost: string): EmulatedHub {
    const hub = this.hubs.find((h) => h.name === nameOrHost || h.host === nameOrHost);
    if (!hub) throw new EmulatorError('UNKNOWN_HUB', `unknown hub '${nameOrHost}'`);
    return hub;
  }

  // -------------------------------------------------------------------------------------------
  // Failover (mirrors `az iot central device manual-failover` / `manual-failback`)

  /**
   * Moves a registered device to another hub: the DPS registration points there (substatus
   * `deviceDataMigrated`), identity and twin are copied there, and the device is disabled and
   * disconnected on its current hub (refused from then on with `refusalCode`, default the cloud's:
   * 3 as Azure). After the TTL (default 5 minutes, as IoT Central's tool) it fails back.
   */
  manualFailover(deviceId: string, opts: FailoverOptions = {}): FailoverInfo {
    if (this.failoverMap.has(deviceId)) throw new EmulatorError('ALREADY_FAILED_OVER', `'${deviceId}' is already failed over`);
    const reg = this.dps.registration(deviceId);
    if (!reg) throw new EmulatorError('UNKNOWN_REGISTRATION', `'${deviceId}' has not registered`);
    const from = this.hub(reg.hubName);
    let to: EmulatedHub;
    if (opts.toHub) {
      to = this.hub(opts.toHub);
    } else {
      const counts = this.dps.hubCounts();
      const others = this.hubs.filter((h) => h !== from);
      if (others.length === 0) throw new EmulatorError('INVALID_ARGUMENT', 'failover needs at least two hubs');
      to = others.reduce((best, h) => ((counts[h.name] ?? 0) < (counts[best.name] ?? 0) ? h : best));
    }
    if (to === from) throw new EmulatorError('INVALID_ARGUMENT', 'failover target is the current hub');
    const ttlMs = opts.ttlMs === null ? undefined : (opts.ttlMs ?? (opts.ttlMinutes !== undefined ? opts.ttlMinutes * 60_000 : DEFAULT_FAILOVER_TTL_MS));
    if (ttlMs !== undefined && !(ttlMs > 0)) throw new EmulatorError('INVALID_ARGUMENT', 'ttl must be > 0');
    const refusalCode = refusalCodeOf('refusalCode', opts.refusalCode, this.refusalCode);

    to.importIdentity(deviceId, from.exportIdentity(deviceId));
    from.disableDevice(deviceId, 'failover', refusalCode);
    this.dps.moveRegistration(deviceId, { name: to.name, host: to.host }, 'deviceDataMigrated');
    const now = Date.now();
    const active: ActiveFailover = { deviceId, fromHub: from.name, toHub: to.name, refusalCode, startedAt: now };
    if (ttlMs !== undefined) {
      active.failbackAt = now + ttlMs;
      active.timer = setTimeout(() => {
        try {
          this.manualFailback(deviceId);
        } catch (err) {
          this.logger.warn({ deviceId, err: (err as Error).message }, 'automatic failback failed');
        }
      }, Math.min(ttlMs, 2 ** 31 - 1));
    }
    this.failoverMap.set(deviceId, active);
    const info = this.publicInfo(active);
    this.logger.info({ ...info }, 'manual failover');
    this.events.emit('failover', info);
    return info;
  }

  /**
   * Reverts a failover now: registration back to the original hub (substatus
   * `reprovisionedToInitialAssignment`), twin copied back, original identity enabled, and the
   * device disabled and disconnected on the failover hub.
   */
  manualFailback(deviceId: string): FailoverInfo {
    const active = this.failoverMap.get(deviceId);
    if (!active) throw new EmulatorError('NOT_FAILED_OVER', `'${deviceId}' is not failed over`);
    if (active.timer) clearTimeout(active.timer);
    this.failoverMap.delete(deviceId);
    const from = this.hub(active.fromHub);
    const to = this.hub(active.toHub);
    if (to.hasDevice(deviceId)) {
      const snap = to.exportIdentity(deviceId);
      const original = from.device(deviceId);
      if (!original || original.disabledReason === 'failover') from.importIdentity(deviceId, snap);
      to.disableDevice(deviceId, 'failover', active.refusalCode);
    }
    if (this.dps.registration(deviceId)) {
      this.dps.moveRegistration(deviceId, { name: from.name, host: from.host }, 'reprovisionedToInitialAssignment');
    }
    const info = this.publicInfo(active);
    this.logger.info({ ...info }, 'manual failback');
    this.events.emit('failback', info);
    return info;
  }

  /** Active failovers. */
  failovers(): FailoverInfo[] {
    return [...this.failoverMap.values()].map((f) => this.publicInfo(f));
  }

  private publicInfo(f: ActiveFailover): FailoverInfo {
    const { timer: _timer, ...info } = f;
    return { ...info };
  }

  // -------------------------------------------------------------------------------------------
  // Telemetry

  /** Stored telemetry across hubs in arrival order (optionally filtered). */
  telemetry(filter: TelemetryFilter = {}): TelemetryRecord[] {
    return this.store.list(filter);
  }

  /** Distinct message ids stored (optionally for one device). */
  deliveredIds(deviceId?: string): Set<string> {
    const ids = new Set<string>();
    for (const r of this.store.list(deviceId ? { deviceId } : {})) if (r.messageId !== undefined) ids.add(r.messageId);
    return ids;
  }

  /** Forgets stored telemetry. */
  clearTelemetry(filter: TelemetryFilter = {}): void {
    this.store.clear(filter);
  }

  /** Telemetry records dropped because the store reached `hub.maxTelemetry`. */
  get telemetryDropped(): number {
    return this.store.dropped;
  }

  /** JSON-friendly snapshot: DPS, hubs, devices, registrations, failovers, metrics. */
  state(): object {
    return {
      idScope: this.idScope,
      addedIdScopes: this.addedScopes.map(({ idScope, hubs }) => ({ idScope, hubs: [...hubs] })),
      provisioningHost: this.provisioningHost,
      dps: this.dps.state(),
      hubs: this.hubs.map((h) => h.state()),
      registrations: this.dps.registrations(),
      failovers: this.failovers(),
      telemetry: { stored: this.store.list().length, dropped: this.store.dropped },
    };
  }

  /** @internal */
  async attachControlApi(): Promise<void> {
    this.controlApi = await startControlApi(this);
    this.controlUrl = this.controlApi.url;
  }

  /** Closes every listener, socket and timer. Idempotent. */
  /**
   * Sets how far the service's clock is from the machine's (ms; positive: the service is ahead,
   * i.e. the device's clock is behind). SAS expiry and DPS's `Date` header follow it at once.
   */
  setClockOffset(offsetMs: number): void {
    if (!Number.isFinite(offsetMs) || Math.abs(offsetMs) > MAX_CLOCK_OFFSET_MS) {
      throw new EmulatorError('INVALID_ARGUMENT', `clock offset must be a number of ms within ±${MAX_CLOCK_OFFSET_MS}`);
    }
    this.clock.offsetMs = offsetMs;
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const f of this.failoverMap.values()) if (f.timer) clearTimeout(f.timer);
      this.failoverMap.clear();
      await Promise.all([this.controlApi?.close(), this.dps.stop(), ...this.hubs.map((h) => h.stop())]);
      this.events.removeAllListeners();
      // Listener handles finish closing one turn after their 'close' callbacks.
      await new Promise<void>((resolve) => setImmediate(resolve));
    })();
    return this.stopping;
  }
}

/** Starts a local cloud. See {@link LocalCloudOptions}. */
export async function startLocalCloud(opts: LocalCloudOptions = {}): Promise<LocalCloud> {
  const hubCount = positiveInt('hubs', opts.hubs, 2);
  const seedHash = (label: string): Buffer => createHash('sha256').update(`${label}:${opts.seed}`).digest();
  const groupKey = opts.groupKey ?? (opts.seed !== undefined ? seedHash('groupKey') : randomBytes(32)).toString('base64');
  if (Buffer.from(groupKey, 'base64').length === 0) throw new EmulatorError('INVALID_ARGUMENT', 'groupKey must be base64');
  const idScope =
    opts.idScope ?? `0ne${(opts.seed !== undefined ? seedHash('idScope') : randomBytes(4)).toString('hex').slice(0, 8).toUpperCase()}`;
  const logger = opts.logger ?? silentLogger;
  const d = opts.dps ?? {};
  const h = opts.hub ?? {};
  const dpsSettings: DpsSettings = {
    retryAfterSec: nonNegative('dps.retryAfterSec', d.retryAfterSec, 1),
    assigningPolls: nonNegative('dps.assigningPolls', d.assigningPolls, 1),
    // 3 s is what DPS sends with `assigning`; tests that want speed pass a fraction explicitly.
    pollRetryAfterSec: nonNegative('dps.pollRetryAfterSec', d.pollRetryAfterSec, 3),
    allocation: d.allocation ?? 'even',
    attemptHistory: positiveInt('dps.attemptHistory', d.attemptHistory, 32),
    ...(d.rateLimitPerSec ? { rateLimitPerSec: d.rateLimitPerSec } : {}),
    // HTTP's Retry-After has no fractions: whole seconds only.
    lookupRetryAfterSec: nonNegativeInt('dps.lookupRetryAfterSec', d.lookupRetryAfterSec, 1),
    lookupCredentials: lookupCredentialsOf(d.lookupCredentials),
    ...(d.lookupRateLimitPerSec ? { lookupRateLimitPerSec: d.lookupRateLimitPerSec } : {}),
    ...(d.staticHub ? { staticHub: d.staticHub } : {}),
    ...(d.returnData ? { returnData: d.returnData } : {}),
  };
  const hubSettings: HubSettings = {
    methodTimeoutMs: positiveInt('hub.methodTimeoutMs', h.methodTimeoutMs, 30_000),
    enforceTokenExpiry: h.enforceTokenExpiry ?? true,
    c2dQueueLimit: positiveInt('hub.c2dQueueLimit', h.c2dQueueLimit, 50),
    refusalCode: refusalCodeOf('hub.refusalCode', h.refusalCode, 3),
    expiredCertificateRefusal: expiredCertificateRefusalOf(h.expiredCertificateRefusal),
    ...(h.connectRateLimitPerSec ? { connectRateLimitPerSec: h.connectRateLimitPerSec } : {}),
  };

  const [certs, pki] = await Promise.all([generateCertificates(), CloudPki.create()]);
  const tls = { key: certs.key, cert: certs.cert };
  const events = new EventEmitter<LocalCloudEvents>();
  events.setMaxListeners(1000);
  const store = new TelemetryStore(positiveInt('hub.maxTelemetry', h.maxTelemetry, 1_000_000));

  const hubs: EmulatedHub[] = [];
  let dps: EmulatedDps | undefined;
  const serviceClock = new ServiceClock();
  try {
    const started = await Promise.allSettled(
      Array.from({ length: hubCount }, (_, i) =>
        EmulatedHub.start({
          name: `hub-${i}`,
          tls,
          settings: hubSettings,
          telemetry: store,
          events,
          logger: withFields(logger, { service: `hub-${i}` }),
          pki,
          clock: serviceClock,
        }),
      ),
    );
    for (const r of started) if (r.status === 'fulfilled') hubs.push(r.value);
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const byName = (name: string): EmulatedHub => hubs.find((x) => x.name === name)!;
    dps = await EmulatedDps.start({
      tls,
      idScope,
      groupKey,
      settings: dpsSettings,
      hubs: () => hubs.map((x) => ({ name: x.name, host: x.host, up: x.isUp })),
      onAssigned: (record, keys) => {
        const hub = byName(record.hubName);
        hub.addDevice(record.deviceId, keys.primary, keys.secondary);
        // DPS assigns the device here, so it must be usable here: an identity left disabled by a
        // failover (the migration marker) is enabled again, as when DPS re-allocates a device away
        // from a hub that is down. An operator's disable stays.
        if (hub.device(record.deviceId)?.disabledReason === 'failover') hub.enableDevice(record.deviceId);
        // A device that attested with a certificate gets an X.509 identity (CA-signed for the
        // group, by thumbprint for an individual enrollment), as DPS creates them in IoT Hub.
        hub.setX509(record.deviceId, dps!.x509AttestationOf(record.registrationId));
      },
      events,
      logger: withFields(logger, { service: 'dps' }),
      clock: serviceClock,
      pki,
    });
    const cloud = new LocalCloud(idScope, groupKey, certs.ca, dps, hubs, store, events, logger, hubSettings.refusalCode, serviceClock);
    if (opts.clockOffsetMs !== undefined) cloud.setClockOffset(opts.clockOffsetMs);
    cloud.pki = pki;
    if (opts.controlApi) await cloud.attachControlApi();
    logger.info({ provisioningHost: dps.host, hubs: hubs.map((x) => x.host), idScope }, 'local cloud started');
    return cloud;
  } catch (err) {
    await Promise.allSettled([dps?.stop(), ...hubs.map((x) => x.stop())]);
    throw err;
  }
}
