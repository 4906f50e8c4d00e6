/**
 * `hubstate fleet`: N device machines in this process against a local cloud started here (DPS
 * limited to R registrations/s, H hubs) or against a real DPS (`target`), with a progress bar and
 * a summary measured against the floor T = N / R. Device logs go to a file (pino), never to the
 * terminal.
 */
import { readFileSync } from 'node:fs';
import pino from 'pino';
import { FAST_DPS_POLL_SEC, startLocalCloud } from 'hubstate-cloud';
import { openLogFile } from '../cli/files';
import { REDACTED_PATHS } from 'hubstate/internal';
import { shardMemberCount, type FleetCloud, type FleetShard } from './fleet';
import { runFleet, type FleetSummary } from './run';

export interface FleetCommandOptions {
  devices: number;
  dpsRatePerSec: number;
  hubs: number;
  naive: boolean;
  /**
   * A DPS of your own (an IoT Central app's group enrollment): no local cloud is started, R is
   * the rate you plan for, and the DPS-side counters are not available.
   */
  target?: FleetCloud;
  /** Registration ids are `${prefix}${index}`. Default 'fleet-'. */
  prefix?: string;
  /** Run one slice of a fleet of `devices` (FleetOptions.shard). */
  shard?: FleetShard;
  /** pino log file of the devices (level warn: failures only), created 0600. */
  logFile: string;
  /** The log file already opened (openLogFile); else runFleetCommand opens `logFile`. */
  logFd?: number;
  out: NodeJS.WriteStream;
}

/** This process's soft limit on open files (Linux: /proc/self/limits), or null where unknown. */
export function openFileLimit(limits = '/proc/self/limits'): number | null {
  try {
    const line = readFileSync(limits, 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const soft = line ? Number(line.slice('Max open files'.length).trim().split(/\s+/)[0]) : NaN;
    return Number.isFinite(soft) ? soft : null;
  } catch {
    return null;
  }
}

/**
 * Each connected device holds one socket; with the local cloud in this process its server side
 * holds another, and DPS connections overlap the hub's while a device moves on. Past the
 * limit, devices fail with EMFILE and back off forever: say so before starting rather than after
 * a timeout (10,000 devices with the local cloud need about 20,200 where 20,000 is a common limit).
 */
export function fileDescriptorsNeeded(members: number, localCloud: boolean): number {
  return Math.ceil(members * (localCloud ? 2.02 : 1.01)) + 200;
}

const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(0)} MB`;

export function formatSummary(summary: FleetSummary): string {
  const lines = [
    `fleet: ${summary.shard ? `shard ${summary.shard.index}/${summary.shard.count}: ${summary.members} of ${summary.devices}` : summary.devices} devices, DPS limited to ${summary.dpsRatePerSec}/s, ${summary.naive ? 'naive (all at once, no jitter)' : 'staggered + fleet-formula jitter'}`,
    summary.allConnectedMs === null
      ? `  NOT all connected: ${summary.connected}/${summary.members} (timed out)`
      : `  all connected in ${(summary.allConnectedMs / 1000).toFixed(1)} s — floor N/R = ${(summary.floorMs / 1000).toFixed(1)} s (${summary.ratio!.toFixed(2)}×)`,
  ];
  if (summary.bootMs) lines.push(`  per device, start → connected: median ${summary.bootMs.p50} ms, p95 ${summary.bootMs.p95} ms`);
  if (summary.dps) {
    lines.push(
      `  DPS: ${summary.dps.registrations} registrations, ${summary.dps.registerRequests} register requests, ${summary.dps.throttled} answered 429 (${(summary.dps.throttledPerDevice * 100).toFixed(2)} % of N), peak ${summary.dps.peakRegisterRequestsPerSec ?? '?'} register requests/s`,
    );
  }
  const f = summary.deviceFailures;
  lines.push(`  failures seen by the devices: transient ${f.transient}, throttled ${f.throttled}, reprovision ${f.reprovision}, fatal ${f.fatal}`);
  lines.push(`  memory (${summary.dps ? 'devices + local cloud' : 'devices'}, one process): RSS ${mb(summary.rssBytes)}, heap ${mb(summary.heapUsedBytes)} → ${((summary.rssBytes / summary.members) / 1024).toFixed(0)} KB per device`);
  return `${lines.join('\n')}\n`;
}

export async function runFleetCommand(options: FleetCommandOptions): Promise<FleetSummary> {
  const logger = pino({ level: 'warn', redact: { paths: REDACTED_PATHS, censor: '[redacted]' } }, pino.destination({ dest: options.logFd ?? openLogFile(options.logFile, '--log'), sync: false }));
  const out = options.out;
  const local = options.target
    ? null
    : await startLocalCloud({
        hubs: options.hubs,
        // Fleet boot is measured against N/R: a fast `assigning` retry-after keeps DPS polling out of it.
        dps: { rateLimitPerSec: options.dpsRatePerSec, retryAfterSec: 1, pollRetryAfterSec: FAST_DPS_POLL_SEC },
        hub: { maxTelemetry: 10_000 },
      });
  const cloud: FleetCloud = options.target ?? local!;
  if (local) {
    out.write(
      `local cloud: DPS ${local.provisioningHost} (${options.dpsRatePerSec} registrations/s, retry-after ${local.dps.pollRetryAfterSec} s while assigning), hubs ${local.hubs.map((h) => h.name).join(', ')}\n`,
    );
  }
  else out.write(`DPS ${cloud.provisioningHost}, ID scope ${cloud.idScope}: planning for ${options.dpsRatePerSec} registrations/s\n`);
  out.write(`device logs (warnings and failures): ${options.logFile}\n`);
  const members = options.shard ? shardMemberCount(options.devices, options.shard) : options.devices;
  const needed = fileDescriptorsNeeded(members, local !== null);
  const limit = openFileLimit();
  if (limit !== null && needed > limit) {
    out.write(
      `warning: ${members} devices${local ? ' and their local cloud' : ''} need about ${needed} open files, the limit is ${limit} (ulimit -n): raise it, or run the fleet in shards (--shard i/N) in several processes${local ? ' against `hubstate emulator`' : ''}\n`,
    );
  }
  try {
    const summary = await runFleet({
      cloud,
      devices: options.devices,
      dpsRatePerSec: options.dpsRatePerSec,
      naive: options.naive,
      logger,
      progress: out,
      ...(options.prefix !== undefined ? { prefix: options.prefix } : {}),
      ...(options.shard ? { shard: options.shard } : {}),
      ...(local ? { dpsMetrics: () => local.dps.metrics() } : {}),
    });
    out.write(formatSummary(summary));
    return summary;
  } finally {
    await local?.stop();
    logger.flush();
  }
}
