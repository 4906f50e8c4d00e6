/**
 * `hubstate demo`: the local cloud and a device (or a small fleet) living through a scripted
 * disaster — manual failover, failback at the TTL, a hub crash, DPS throttling — with a live
 * line in the terminal, pino logs to a file, and a summary that counts every message by id.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { createDevice, type Device, type DeviceStateName } from '../device';
import { REDACTED_PATHS } from '../logger';
import { startLocalCloud, type LocalCloud } from '../emulator';

export interface DemoOptions {
  durationSeconds: number;
  forever: boolean;
  devices: number;
  logFile: string;
  /** Telemetry interval per device. */
  intervalMs: number;
  out: NodeJS.WriteStream;
}

interface FaultRecord {
  name: string;
  injectedAt: number;
  /** First telemetry acknowledged after the fault (ms after injection). */
  recoveredAfterMs?: number;
}

interface DemoDevice {
  device: Device;
  accepted: Set<string>;
  delivered: number;
}

export interface DemoSummary {
  sent: number;
  delivered: number;
  lost: number;
  duplicated: number;
  faults: FaultRecord[];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function runDemo(options: DemoOptions): Promise<DemoSummary> {
  const logger = pino(
    { level: 'info', redact: { paths: REDACTED_PATHS, censor: '[redacted]' } },
    pino.destination({ dest: options.logFile, sync: true }),
  );
  const out = options.out;
  const dataRoot = mkdtempSync(join(tmpdir(), 'hubstate-demo-'));
  const cloud: LocalCloud = await startLocalCloud({ hubs: 2 });
  out.write(`local cloud: DPS ${cloud.provisioningHost}, hubs ${cloud.hubs.map((h) => `${h.name}=${h.host}`).join(', ')}\n`);
  out.write(`logs: ${options.logFile}\n`);

  const fleet: DemoDevice[] = [];
  for (let i = 0; i < options.devices; i++) {
    const registrationId = `demo-device-${i + 1}`;
    const device = createDevice({
      idScope: cloud.idScope,
      registrationId,
      deviceKey: cloud.deviceKey(registrationId),
      modelId: 'dtmi:Sample:Failover;1',
      provisioningHost: cloud.provisioningHost,
      ca: cloud.ca,
      dataDir: join(dataRoot, registrationId),
      keepaliveSeconds: 5,
      logger,
    });
    const member: DemoDevice = { device, accepted: new Set(), delivered: 0 };
    device.on('delivered', () => member.delivered++);
    fleet.push(member);
  }
  const lead = fleet[0].device;
  const faults: FaultRecord[] = [];
  lead.on('delivered', () => {
    const open = faults.find((f) => f.recoveredAfterMs === undefined);
    if (open && lead.state() === 'Connected') open.recoveredAfterMs = Date.now() - open.injectedAt;
  });
  lead.on('state', (change) => {
    if (!out.isTTY) out.write(`[${elapsed()}] ${change.previous} -> ${change.value}${change.errorClass ? ` (${change.errorClass})` : ''}\n`);
  });

  const startedAt = Date.now();
  const elapsed = () => `${((Date.now() - startedAt) / 1000).toFixed(1).padStart(5)}s`;
  for (const { device } of fleet) device.start();

  let sending = true;
  const producers = fleet.map(async (member, index) => {
    await sleep((index * options.intervalMs) / fleet.length);
    let reading = 0;
    while (sending) {
      const { messageId } = await member.device.sendTelemetry({ temp: 20 + Math.sin(reading / 10) * 5, humidity: 40 + (reading % 20) });
      member.accepted.add(messageId);
      reading++;
      await sleep(options.intervalMs);
    }
  });

  const view = setInterval(() => {
    if (!out.isTTY) return;
    const sent = fleet.reduce((n, m) => n + m.accepted.size, 0);
    const delivered = fleet.reduce((n, m) => n + m.delivered, 0);
    const queued = fleet.reduce((n, m) => n + m.device.outboxStats().count, 0);
    const context = lead.actor.getSnapshot().context;
    const hub = cloud.hubs.find((h) => h.host === context.assignment?.hubHost)?.name ?? '-';
    const retry = lead.state() === 'BackingOff' && context.retryAt ? `${Math.max(0, context.retryAt - Date.now())} ms` : '-';
    out.write(
      `\r[${elapsed()}] ${lead.state().padEnd(14)} hub ${hub.padEnd(6)} sent ${sent} delivered ${delivered} queued ${queued} ` +
        `last error ${context.lastError?.errorClass ?? '-'} next retry ${retry}      `,
    );
  }, 250);

  const waitFor = async (predicate: () => boolean, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    while (!predicate() && Date.now() < deadline) await sleep(50);
    return predicate();
  };
  const inject = (name: string, action: () => Promise<void> | void) => {
    if (out.isTTY) out.write('\n');
    out.write(`[${elapsed()}] fault: ${name}\n`);
    faults.push({ name, injectedAt: Date.now() });
    return action();
  };
  const allConnected = () => fleet.every((m) => m.device.state() === 'Connected');

  const stage = Math.max(options.durationSeconds, 20) * 1000;
  const script = async () => {
    await waitFor(allConnected, 30_000);
    await sleep(stage * 0.1);
    const ttlMs = Math.round(stage * 0.2);
    const failoverAt = Date.now();
    await inject(`manual failover (TTL ${Math.round(ttlMs / 1000)} s)`, () => {
      for (const { device } of fleet) cloud.manualFailover(device.assignment()!.deviceId, { ttlMs });
    });
    await waitFor(() => Date.now() >= failoverAt + ttlMs, ttlMs + 1000);
    faults.push({ name: 'failback at TTL (the failover hub drops the device)', injectedAt: failoverAt + ttlMs });
    await sleep(stage * 0.15);
    await waitFor(allConnected, 30_000);
    const crashed = cloud.hubs.find((h) => h.host === lead.assignment()?.hubHost)!;
    await inject(`hub crash (${crashed.name}), restart after 3 s`, async () => {
      await cloud.hub(crashed.name).kill();
      await sleep(3000);
      await cloud.hub(crashed.name).restart();
    });
    await sleep(stage * 0.15);
    await waitFor(allConnected, 30_000);
    await inject('DPS throttling (429, retry-after 2 s) during a user-initiated reprovision', () => {
      cloud.dps.throttle({ retryAfterSec: 2, count: 2 * fleet.length });
      for (const { device } of fleet) device.reprovision();
    });
    await sleep(stage * 0.15);
  };

  const deadline = options.forever ? Infinity : startedAt + stage;
  do {
    await script();
  } while (options.forever);
  const remaining = deadline - Date.now();
  if (remaining > 0) await sleep(remaining);

  sending = false;
  await Promise.all(producers);
  await waitFor(() => allConnected() && fleet.every((m) => m.device.outboxStats().count === 0), 30_000);
  clearInterval(view);
  if (out.isTTY) out.write('\n');
  await Promise.all(fleet.map((m) => m.device.stop()));

  const arrived = new Map<string, number>();
  for (const record of cloud.telemetry()) arrived.set(record.messageId!, (arrived.get(record.messageId!) ?? 0) + 1);
  let sent = 0;
  let lost = 0;
  let duplicated = 0;
  for (const member of fleet) {
    for (const id of member.accepted) {
      sent++;
      const copies = arrived.get(id) ?? 0;
      if (copies === 0) lost++;
      else duplicated += copies - 1;
    }
  }
  await cloud.stop();
  rmSync(dataRoot, { recursive: true, force: true });
  const summary: DemoSummary = { sent, delivered: sent - lost, lost, duplicated, faults };
  out.write(formatSummary(summary, fleet.map((m) => m.device.state())));
  return summary;
}

function formatSummary(summary: DemoSummary, states: DeviceStateName[]): string {
  const lines = [
    '',
    'summary',
    `  messages sent       ${summary.sent}`,
    `  delivered           ${summary.delivered}`,
    `  lost                ${summary.lost}`,
    `  duplicated          ${summary.duplicated} (same message id, droppable downstream)`,
    `  final states        ${[...new Set(states)].join(', ')}`,
    '  recovery (fault → first telemetry acknowledged):',
    ...summary.faults.map(
      (f) => `    ${f.name.padEnd(70)} ${f.recoveredAfterMs === undefined ? 'n/a' : `${f.recoveredAfterMs} ms`}`,
    ),
    summary.lost === 0 ? 'nothing lost.' : `LOST ${summary.lost} MESSAGES`,
    '',
  ];
  return lines.join('\n');
}
