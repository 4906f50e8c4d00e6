/**
 * (3) Thundering herd: N devices Connected to hub A; hub A is killed for good (no restart). The
 * local DPS then re-allocates them to the hub that is up (B). Time from the kill until every
 * device is Connected again (necessarily to B), against the floor N / R; DPS peak rate and 429s.
 *
 * The boot before the kill is not measured: it runs with the DPS limit raised (bootRatePerSec)
 * to save time; the limit is set to R right before the kill.
 */
import { Fleet } from 'hubstate-tools/fleet';
import { launchCloud, type BenchCloud } from './cloud';

export interface HerdOptions {
  devices: number;
  dpsRatePerSec: number;
  naive: boolean;
  cloudMode: 'in-process' | 'child-process';
  bootRatePerSec?: number;
  timeoutMs?: number;
}

export interface HerdResult {
  devices: number;
  dpsRatePerSec: number;
  naive: boolean;
  floorMs: number;
  /** Kill → every device Connected to hub B (ms); null on timeout. */
  recoveredMs: number | null;
  ratio: number | null;
  onHubB: number;
  recoveredAtMs: { p50: number; p95: number; max: number } | null;
  dps: { registerRequests: number; registrations: number; throttled: number; peakRegisterRequestsPerSec: number; peakRequestsPerSec: number; throttledPerDevice: number };
  deviceFailures: { transient: number; throttled: number; reprovision: number; fatal: number };
  cloudMode: string;
  timedOut: boolean;
}

const q = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;

export async function benchHerd(options: HerdOptions): Promise<HerdResult> {
  const floorMs = (options.devices / options.dpsRatePerSec) * 1000;
  const bootRate = options.bootRatePerSec ?? 400;
  const cloud: BenchCloud = await launchCloud({ hubs: 2, allocation: 'static', dpsRatePerSec: bootRate, retryAfterSec: 1 }, options.cloudMode);
  const [hubA, hubB] = cloud.info.hubs;
  const fleet = new Fleet({
    cloud: cloud.info,
    devices: options.devices,
    dpsRatePerSec: options.dpsRatePerSec,
    staggerRatePerSec: bootRate * 0.9,
    naive: options.naive,
    prefix: options.naive ? 'herd-naive-' : 'herd-ours-',
  });
  try {
    fleet.start();
    await fleet.waitFor((c) => c.byState.Connected === c.total, Math.max(60_000, (options.devices / bootRate) * 5000), 'the herd to boot');
    const onA = fleet.devices.filter((d) => d.assignment()?.hubHost === hubA!.host).length;
    if (onA !== options.devices) throw new Error(`herd: ${onA}/${options.devices} on ${hubA!.name} before the kill`);
    const failuresBefore = fleet.counts().failures;
    await cloud.commands.setRateLimit(options.dpsRatePerSec, 1);
    await cloud.commands.resetPeaks(); // the peaks of the (unmeasured) boot are not the herd's
    const before = await cloud.commands.dpsMetrics();
    const { at: killedAt } = await cloud.commands.kill(hubA!.name);
    let timedOut = false;
    try {
      await fleet.waitFor(
        (c) => c.byState.Connected === c.total && fleet.lastConnectedAt.every((t) => t > killedAt),
        options.timeoutMs ?? Math.max(60_000, 6 * floorMs),
        'every device back on hub B',
      );
    } catch {
      timedOut = true;
    }
    const doneAt = Date.now();
    const after = await cloud.commands.dpsMetrics();
    const back = Array.from(fleet.lastConnectedAt)
      .filter((t) => t > killedAt)
      .map((t) => t - killedAt)
      .sort((a, b) => a - b);
    const failuresAfter = fleet.counts().failures;
    const recoveredMs = timedOut ? null : doneAt - killedAt;
    return {
      devices: options.devices,
      dpsRatePerSec: options.dpsRatePerSec,
      naive: options.naive,
      floorMs,
      recoveredMs,
      ratio: recoveredMs === null ? null : recoveredMs / floorMs,
      onHubB: fleet.devices.filter((d) => d.state() === 'Connected' && d.assignment()?.hubHost === hubB!.host).length,
      recoveredAtMs: back.length ? { p50: q(back, 0.5), p95: q(back, 0.95), max: back[back.length - 1]! } : null,
      dps: {
        registerRequests: after.registerRequests - before.registerRequests,
        registrations: after.registrations - before.registrations,
        throttled: after.throttled - before.throttled,
        peakRegisterRequestsPerSec: after.peakRegisterRequestsPerSec,
        peakRequestsPerSec: after.peakRequestsPerSec,
        throttledPerDevice: (after.throttled - before.throttled) / options.devices,
      },
      deviceFailures: {
        transient: failuresAfter.transient - failuresBefore.transient,
        throttled: failuresAfter.throttled - failuresBefore.throttled,
        reprovision: failuresAfter.reprovision - failuresBefore.reprovision,
        fatal: failuresAfter.fatal - failuresBefore.fatal,
      },
      cloudMode: cloud.mode,
      timedOut,
    };
  } finally {
    await fleet.stop();
    await cloud.stop();
  }
}
