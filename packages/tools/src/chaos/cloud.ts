/**
 * The soak's local cloud and everything the soak asks of it, as named commands and events, so the
 * cloud can run in this process (the short soak inside `npm test`) or in a process of its own
 * (`npm run soak`: then the RSS the soak measures is the devices' alone, and the emulator's
 * records and event loop do not share the devices' core).
 */
import { EventEmitter } from 'node:events';
import { extname, join } from 'node:path';
import { FAST_DPS_POLL_SEC, deriveDeviceKey, startLocalCloud, type DpsAnswer, type DpsMetrics, type EmulatedHub, type EmulatorLogger, type HubMetrics, type InjectedDpsStatus, type LocalCloud, asyncCommands, forkService, type Async } from 'hubstate-cloud';

/** A DPS answer of any kind: register and poll (MQTT) or status lookup (HTTPS). */
export type DpsExchange = Omit<DpsAnswer, 'request'> & { request: DpsAnswer['request'] | 'lookup' };

export interface SoakCloudOptions {
  hubs: number;
  /** Seeds the emulator (allocation, keys). */
  seed: string;
}

export interface SoakCloudInfo {
  idScope: string;
  groupKey: string;
  provisioningHost: string;
  ca: string;
  hubs: number;
}

/** A hub connect attempt seen by the cloud: accepted (no code) or refused with a CONNACK code. */
export interface HubAttempt {
  at: number;
  hub: string;
  code?: number;
}

/** Events: `telemetry` (message id, when a hub stores it). */
export interface SoakCloudEvents {
  telemetry: string;
}

export interface SoakCloudCommands {
  hubKill(hub: number): Promise<void>;
  hubRestart(hub: number): Promise<void>;
  hubRefuse(hub: number, code: 3 | null): void;
  hubBlackhole(hub: number, on: boolean): void;
  hubWithholdPubacks(hub: number, on: boolean, store?: boolean): void;
  hubConnectRateLimit(hub: number, perSec: number | null): void;
  dpsDown(): Promise<void>;
  dpsUp(): Promise<void>;
  dpsBlackhole(on: boolean): void;
  dpsThrottle(retryAfterSec: number | null): void;
  dpsFailWith(fault: { status: InjectedDpsStatus; retryAfterSec?: number } | null): void;
  dpsRateLimit(perSec: number | null, retryAfterSec?: number): void;
  /** IoT Central manual failover (failback by TTL when given). */
  failover(deviceId: string, ttlMs?: number): void;
  failback(deviceId: string): void;
  /** Identity faults on the hub DPS last assigned the device to; `disableDevice` returns that hub. */
  expireTokens(deviceId: string): void;
  disableDevice(deviceId: string): string;
  enableDevice(hub: string, deviceId: string): void;
  deleteDevice(deviceId: string): void;
  disconnectDevice(deviceId: string): void;
  /**
   * A flapping hub for these devices: their current session is dropped now, and every session a
   * hub accepts from them is dropped `holdMs` later, until `flap(ids, null)` (or clearAll).
   */
  flap(deviceIds: string[], holdMs: number | null): void;
  /** The device's DPS registration (hub) and its identity on every hub (status, why disabled), for reports. */
  identity(deviceId: string): { dpsHub: string | null; hubs: Array<{ hub: string; up: boolean; status: string | null; disabledReason: string | null; connected: boolean }> ; failedOver: boolean };
  /** Every fault off: DPS up and answering, hubs up and answering, failovers failed back, operator disables lifted. */
  clearAll(): Promise<void>;
  /** Resolves once every event emitted before it has reached the caller (a no-op in process). */
  sync(): null;
  /**
   * What the cloud saw of one device (cloud clock = this machine's clock): DPS answers and
   * registration times, hub connects and refusals in time order. Kept here, not in the soak's
   * process, so the devices' memory does not grow with the history.
   */
  history(deviceId: string): { answers: DpsExchange[]; registers: number[]; hubAttempts: HubAttempt[] };
  metrics(): { dps: DpsMetrics; dpsOpenOperations: number | null; hubs: Array<{ name: string } & HubMetrics>; rss: number };
}

export interface SoakCloud {
  readonly mode: 'in-process' | 'child-process';
  readonly info: SoakCloudInfo;
  readonly commands: Async<SoakCloudCommands>;
  /** See SoakCloudEvents. */
  readonly events: EventEmitter;
  /** The device key the cloud derives for a registration (group enrollment). */
  deviceKey(registrationId: string): string;
  stop(): Promise<void>;
}

/** Starts the emulator and wires its telemetry and hub-attempt records to `emit`. */
export async function startSoakCloudService(
  options: SoakCloudOptions,
  emit: <E extends keyof SoakCloudEvents>(event: E, payload: SoakCloudEvents[E]) => void,
): Promise<{ info: SoakCloudInfo; commands: SoakCloudCommands; stop(): Promise<void> }> {
  const hubAttempts = new Map<string, HubAttempt[]>();
  const recordHubAttempt = (deviceId: string, attempt: HubAttempt) => {
    let list = hubAttempts.get(deviceId);
    if (!list) hubAttempts.set(deviceId, (list = []));
    list.push(attempt);
  };
  // Refusals are only visible in the emulator's debug log.
  const logger: EmulatorLogger = {
    debug: (o, msg) => {
      if (msg !== 'connect refused') return;
      const r = o as { service?: string; clientId?: string; code?: number };
      if (r.clientId && r.service?.startsWith('hub-')) recordHubAttempt(r.clientId, { at: Date.now(), hub: r.service, ...(r.code !== undefined ? { code: r.code } : {}) });
    },
    info: () => undefined,
    warn: () => undefined,
    error: () => undefined,
  };
  const cloud: LocalCloud = await startLocalCloud({
    hubs: options.hubs,
    seed: options.seed,
    // The soak keeps its pace (Azure answers `assigning` with 3 s; see FAST_DPS_POLL_SEC).
    dps: { attemptHistory: 100_000, pollRetryAfterSec: FAST_DPS_POLL_SEC },
    hub: { maxTelemetry: 1000 },
    logger,
  });
  cloud.events.on('telemetry', (record) => {
    if (record.messageId !== undefined) emit('telemetry', record.messageId);
  });
  // Flapping hub (no emulator fault of its own): the soak drops each accepted session of a
  // flapping device after its hold time, with the hub's own server-side disconnect.
  const flapping = new Map<string, number>();
  const flapTimers = new Set<NodeJS.Timeout>();
  cloud.events.on('deviceConnected', ({ hub, deviceId }) => {
    recordHubAttempt(deviceId, { at: Date.now(), hub });
    const holdMs = flapping.get(deviceId);
    if (holdMs === undefined) return;
    const timer = setTimeout(() => {
      flapTimers.delete(timer);
      if (flapping.has(deviceId)) cloud.hub(hub).disconnect(deviceId);
    }, holdMs);
    flapTimers.add(timer);
  });
  const stopFlapping = (deviceIds?: string[]) => {
    for (const id of deviceIds ?? [...flapping.keys()]) flapping.delete(id);
    if (flapping.size === 0) {
      for (const t of flapTimers) clearTimeout(t);
      flapTimers.clear();
    }
  };

  const hubAt = (i: number): EmulatedHub => {
    const hub = cloud.hubs[i];
    if (!hub) throw new Error(`no hub ${i}`);
    return hub;
  };
  const currentHub = (deviceId: string): EmulatedHub => {
    const reg = cloud.dps.registration(deviceId);
    if (!reg) throw new Error(`${deviceId} has no DPS registration`);
    return cloud.hub(reg.hubName);
  };
  const commands: SoakCloudCommands = {
    hubKill: (i) => hubAt(i).kill(),
    hubRestart: (i) => hubAt(i).restart(),
    hubRefuse: (i, code) => hubAt(i).refuse(code),
    hubBlackhole: (i, on) => hubAt(i).blackhole(on),
    hubWithholdPubacks: (i, on, store) => hubAt(i).withholdPubacks(on, store === undefined ? {} : { store }),
    hubConnectRateLimit: (i, perSec) => hubAt(i).setConnectRateLimit(perSec),
    dpsDown: () => cloud.dps.down(),
    dpsUp: () => cloud.dps.up(),
    dpsBlackhole: (on) => cloud.dps.blackhole(on),
    dpsThrottle: (retryAfterSec) => cloud.dps.throttle(retryAfterSec === null ? null : { retryAfterSec }),
    dpsFailWith: (fault) => cloud.dps.failWith(fault),
    dpsRateLimit: (perSec, retryAfterSec) => cloud.dps.setRateLimit(perSec, retryAfterSec),
    failover: (deviceId, ttlMs) => void cloud.manualFailover(deviceId, ttlMs === undefined ? {} : { ttlMs }),
    failback: (deviceId) => void cloud.manualFailback(deviceId),
    expireTokens: (deviceId) => currentHub(deviceId).expireTokens(deviceId),
    disableDevice: (deviceId) => {
      const hub = currentHub(deviceId);
      hub.disableDevice(deviceId);
      return hub.name;
    },
    enableDevice: (hub, deviceId) => cloud.hub(hub).enableDevice(deviceId),
    deleteDevice: (deviceId) => currentHub(deviceId).deleteDevice(deviceId),
    disconnectDevice: (deviceId) => currentHub(deviceId).disconnect(deviceId),
    flap: (deviceIds, holdMs) => {
      if (holdMs === null) return stopFlapping(deviceIds);
      for (const id of deviceIds) {
        flapping.set(id, holdMs);
        for (const hub of cloud.hubs) if (hub.isUp) hub.disconnect(id);
      }
    },
    identity: (deviceId) => ({
      dpsHub: cloud.dps.registration(deviceId)?.hubName ?? null,
      hubs: cloud.hubs.map((h) => {
        const d = h.device(deviceId) as { status?: string; disabledReason?: string } | undefined;
        return { hub: h.name, up: h.isUp, status: d?.status ?? null, disabledReason: d?.disabledReason ?? null, connected: h.isConnected(deviceId) };
      }),
      failedOver: cloud.failovers().some((f) => f.deviceId === deviceId),
    }),
    clearAll: async () => {
      stopFlapping();
      await cloud.dps.up();
      cloud.dps.blackhole(false);
      cloud.dps.clearFaults();
      cloud.dps.setRateLimit(null);
      for (const hub of cloud.hubs) {
        if (!hub.isUp) await hub.restart();
        hub.refuse(null);
        hub.blackhole(false);
        hub.withholdPubacks(false);
        hub.setConnectRateLimit(null);
        for (const d of hub.devices()) if (d.status === 'disabled' && d.disabledReason === 'operator') hub.enableDevice(d.deviceId);
      }
      for (const f of cloud.failovers()) cloud.manualFailback(f.deviceId);
    },
    sync: () => null,
    history: (deviceId) => ({
      // Status lookups are DPS requests too: their 429/5xx waits are checked like a registration's.
      answers: [
        ...cloud.dps.answers(deviceId),
        ...cloud.dps.lookups(deviceId).map((l) => ({ ...l, request: 'lookup' as const })),
      ].sort((x, y) => x.at - y.at),
      registers: cloud.dps.attempts(deviceId),
      hubAttempts: (hubAttempts.get(deviceId) ?? []).slice().sort((x, y) => x.at - y.at),
    }),
    metrics: () => ({
      dps: cloud.dps.metrics(),
      // Registrations the emulator still holds (aborted by devices after a 429/5xx): cloud-side memory.
      dpsOpenOperations: (cloud.dps as unknown as { operations?: Map<string, unknown> }).operations?.size ?? null,
      hubs: cloud.hubs.map((h) => ({ name: h.name, ...h.metrics() })),
      rss: process.memoryUsage().rss,
    }),
  };
  return {
    info: { idScope: cloud.idScope, groupKey: cloud.groupKey, provisioningHost: cloud.provisioningHost, ca: cloud.ca, hubs: cloud.hubs.length },
    commands,
    stop: () => {
      stopFlapping();
      return cloud.stop();
    },
  };
}

export interface StartSoakCloudOptions extends SoakCloudOptions {
  mode: 'in-process' | 'child-process';
  /** Node flags for the child (tests pass a TypeScript require hook). */
  execArgv?: string[];
}

export async function startSoakCloud(options: StartSoakCloudOptions): Promise<SoakCloud> {
  const serviceOptions: SoakCloudOptions = { hubs: options.hubs, seed: options.seed };
  if (options.mode === 'in-process') {
    const events = new EventEmitter();
    const service = await startSoakCloudService(serviceOptions, (event, payload) => events.emit(event, payload));
    return { mode: 'in-process', info: service.info, commands: asyncCommands(service.commands), events, deviceKey: (id) => deriveDeviceKey(service.info.groupKey, id), stop: () => service.stop() };
  }
  // The child module next to this one, in whatever form this one runs (.js built, .ts in tests).
  const childModule = join(__dirname, `cloud-child${extname(__filename)}`);
  const client = await forkService<SoakCloudCommands, SoakCloudInfo>(childModule, [JSON.stringify(serviceOptions)], options.execArgv ?? []);
  return { mode: 'child-process', info: client.info, commands: client.commands, events: client.events, deviceKey: (id) => deriveDeviceKey(client.info.groupKey, id), stop: () => client.stop() };
}
