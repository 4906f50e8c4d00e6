/**
 * The local cloud as the benchmarks use it: in this process (smoke tests) or in a child process
 * of its own (the full run, so the devices' event loop and the cloud's do not share one core;
 * the SDK facts were measured that way). Same interface either way.
 */
import { join } from 'node:path';
import { FAST_DPS_POLL_SEC, startLocalCloud, type DpsMetrics, type HubMetrics, type LocalCloud, type MovedDeviceRefusal, asyncCommands, forkService, type Async } from 'hubstate-cloud';
import type { FleetCloud } from 'hubstate-tools/fleet';

/**
 * DPS `retry-after` while assigning in every benchmark (Azure: 3 s). Kept fast so boot figures
 * measure the device and the rate limit, not DPS polling; recorded with each result (run.ts).
 */
export const BENCH_DPS_POLL_SEC = FAST_DPS_POLL_SEC;

export interface BenchCloudOptions {
  hubs?: number;
  /** DPS registration rate limit (429 + retry-after beyond it). Default: none. */
  dpsRatePerSec?: number;
  retryAfterSec?: number;
  /** 'static': every device on hub-0 while it is up (the herd scenario). Default 'even'. */
  allocation?: 'even' | 'static';
  maxTelemetry?: number;
}

export interface BenchCloudInfo extends FleetCloud {
  ca: string;
  hubs: Array<{ name: string; host: string }>;
}

export interface CloudCommands {
  dpsMetrics(): DpsMetrics;
  /** New window for the DPS peak rates. */
  resetPeaks(): void;
  hubMetrics(hub: string): HubMetrics;
  /**
   * Manual failover (the cloud's default TTL, 5 min); returns when it started (epoch ms, cloud
   * clock). `refusalCode`: the CONNACK the old hub answers the moved device with (default the
   * cloud's: 3, as Azure).
   */
  failover(deviceId: string, refusalCode?: MovedDeviceRefusal): { startedAt: number; fromHub: string; toHub: string; refusalCode: MovedDeviceRefusal };
  /** Kill a hub for good; returns when (epoch ms). */
  kill(hub: string): Promise<{ at: number }>;
  setRateLimit(perSec: number | null, retryAfterSec?: number): void;
  telemetryCount(): number;
  rss(): number;
  /** CPU time (user + system, µs) the cloud's process has used: the bench tells its own load from the machine's. */
  cpuMicros(): number;
}

export interface BenchCloud {
  readonly mode: 'in-process' | 'child-process';
  readonly info: BenchCloudInfo;
  readonly commands: Async<CloudCommands>;
  stop(): Promise<void>;
}

export function commandsOf(cloud: LocalCloud): CloudCommands {
  return {
    dpsMetrics: () => cloud.dps.metrics(),
    resetPeaks: () => cloud.dps.resetPeaks(),
    hubMetrics: (hub) => cloud.hub(hub).metrics(),
    failover: (deviceId, refusalCode) => {
      const info = cloud.manualFailover(deviceId, refusalCode === undefined ? {} : { refusalCode });
      return { startedAt: info.startedAt, fromHub: cloud.hub(info.fromHub).host, toHub: cloud.hub(info.toHub).host, refusalCode: info.refusalCode };
    },
    kill: async (hub) => {
      const at = Date.now();
      await cloud.hub(hub).kill();
      return { at };
    },
    setRateLimit: (perSec, retryAfterSec) => cloud.dps.setRateLimit(perSec, retryAfterSec),
    telemetryCount: () => cloud.hubs.reduce((n, h) => n + h.metrics().messages, 0),
    rss: () => process.memoryUsage().rss,
    cpuMicros: () => {
      const { user, system } = process.cpuUsage();
      return user + system;
    },
  };
}

export async function startCloud(options: BenchCloudOptions): Promise<LocalCloud> {
  return startLocalCloud({
    hubs: options.hubs ?? 2,
    dps: {
      allocation: options.allocation ?? 'even',
      pollRetryAfterSec: BENCH_DPS_POLL_SEC,
      ...(options.dpsRatePerSec ? { rateLimitPerSec: options.dpsRatePerSec } : {}),
      ...(options.retryAfterSec !== undefined ? { retryAfterSec: options.retryAfterSec } : {}),
    },
    hub: { maxTelemetry: options.maxTelemetry ?? 10_000 },
  });
}

export function infoOf(cloud: LocalCloud): BenchCloudInfo {
  return {
    idScope: cloud.idScope,
    groupKey: cloud.groupKey,
    provisioningHost: cloud.provisioningHost,
    ca: cloud.ca,
    hubs: cloud.hubs.map((h) => ({ name: h.name, host: h.host })),
  };
}

async function inProcess(options: BenchCloudOptions): Promise<BenchCloud> {
  const cloud = await startCloud(options);
  return { mode: 'in-process', info: infoOf(cloud), commands: asyncCommands(commandsOf(cloud)), stop: () => cloud.stop() };
}

async function childProcess(options: BenchCloudOptions): Promise<BenchCloud> {
  const client = await forkService<CloudCommands, BenchCloudInfo>(join(__dirname, 'cloud-child.js'), [JSON.stringify(options)]);
  return { mode: 'child-process', info: client.info, commands: client.commands, stop: () => client.stop() };
}

/** The cloud for a benchmark: its own process unless `inProcess` (smoke tests, no build). */
export function launchCloud(options: BenchCloudOptions, mode: 'in-process' | 'child-process'): Promise<BenchCloud> {
  return mode === 'in-process' ? inProcess(options) : childProcess(options);
}
