/**
 * `hubstate demo`: the local cloud and a device (or a small fleet) living through a scripted
 * disaster — manual failover, failback at the TTL, a hub crash, DPS throttling — with a live
 * line in the terminal, pino logs to a file, and a summary that counts every message by id.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { Device, DeviceStateName, StateChange } from 'hubstate';
import { monotonicNow, type TransportMode } from 'hubstate';
import { redactProxyUrl, REDACTED_PATHS, systemClock } from 'hubstate/internal';
import { startExampleDevice, type ExampleDevice } from 'hubstate/examples/failover-device';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { openLogFile } from './files';
import { sleepUnless } from './shutdown';
import type { UiBackend, UiFault, UiServer, UiStats } from './ui';

export interface DemoOptions {
  durationSeconds: number;
  forever: boolean;
  devices: number;
  logFile: string;
  /** The log file already opened (openLogFile: 0600, checked); else runDemo opens `logFile`. */
  logFd?: number;
  /** Telemetry interval per device. */
  intervalMs: number;
  out: NodeJS.WritableStream & { isTTY?: boolean };
  /** Stops the demo early (SIGINT / SIGTERM): devices go Disconnecting → Stopped, nothing is dropped. */
  signal?: AbortSignal;
  /** Run the scripted disaster (default true; off with the UI, whose buttons inject the faults). */
  script?: boolean;
  /** Serve the live page (`--ui`) on 127.0.0.1; `port` 0 or absent: ephemeral. */
  ui?: { port?: number; onListening?: (url: string) => void };
  /** Stream the first device's actor to the Stately inspector (`--inspect`). */
  inspect?: { port?: number };
  /** `--transport` and `--proxy` (false: direct, whatever HTTPS_PROXY says). Default MQTT, direct. */
  transport?: TransportMode;
  proxy?: string | false;
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
  delivered: Set<string>;
}

export interface DemoSummary {
  sent: number;
  delivered: number;
  /** Neither arrived at the cloud nor still in a device's outbox. */
  lost: number;
  duplicated: number;
  /** Not delivered when the demo was interrupted, kept in the devices' outboxes. */
  kept: number;
  /** Set when the outboxes holding `kept` messages were left on disk. */
  keptIn?: string;
  interrupted: boolean;
  faults: FaultRecord[];
  /** The first device's `resilience` component as the cloud last received it (hubstate's own report on itself). */
  reportedByDevice?: Record<string, unknown>;
}

/** The first device's resilience component from the twin on the hub it is on, if it reported one. */
function reportedResilience(cloud: LocalCloud, device: DemoDevice['device']): Record<string, unknown> | undefined {
  const assignment = device.assignment();
  const hub = assignment ? cloud.hubs.find((h) => h.host === assignment.hubHost) : undefined;
  const component = assignment && hub ? hub.getTwin(assignment.deviceId).reported['resilience'] : undefined;
  return component !== null && typeof component === 'object' ? (component as Record<string, unknown>) : undefined;
}

export async function runDemo(options: DemoOptions): Promise<DemoSummary> {
  const logger = pino(
    { level: 'info', redact: { paths: REDACTED_PATHS, censor: '[redacted]' } },
    pino.destination({ dest: options.logFd ?? openLogFile(options.logFile, '--log'), sync: true }),
  );
  const out = options.out;
  const signal = options.signal;
  const stopping = () => signal?.aborted === true;
  const sleep = (ms: number) => sleepUnless(ms, signal);
  const dataRoot = mkdtempSync(join(tmpdir(), 'hubstate-demo-'));
  // The demo keeps its pace: DPS answers `assigning` with a 0.05 s retry-after, not Azure's 3 s.
  const cloud: LocalCloud = await startLocalCloud({ hubs: 2, controlApi: options.ui !== undefined, dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  const bridge = options.inspect
    ? await (require('./inspect') as typeof import('./inspect')).startInspectorBridge({
        port: options.inspect.port || undefined,
        secrets: [cloud.groupKey, ...Array.from({ length: options.devices }, (_, i) => cloud.deviceKey(`demo-device-${i + 1}`))],
      })
    : undefined;
  if (bridge) out.write(`inspector: open ${bridge.url} in a browser with internet access (it embeds https://stately.ai/inspect)\n`);
  out.write(
    `local cloud: DPS ${cloud.provisioningHost} (retry-after ${cloud.dps.pollRetryAfterSec} s while assigning; Azure: 3 s), hubs ${cloud.hubs.map((h) => `${h.name}=${h.host}`).join(', ')}\n`,
  );
  out.write(`logs: ${options.logFile}\n`);
  if (options.transport !== undefined && options.transport !== 'mqtt') {
    out.write(`transport: ${options.transport}${typeof options.proxy === 'string' ? ` through the proxy ${redactProxyUrl(new URL(options.proxy))}` : ''}\n`);
  }

  const fleet: DemoDevice[] = [];
  // Each device is the example app (examples/failover-device.ts): telemetry, battery, fanSpeed, commands.
  const apps: ExampleDevice[] = [];
  for (let i = 0; i < options.devices; i++) {
    const registrationId = `demo-device-${i + 1}`;
    const accepted = new Set<string>();
    const app = startExampleDevice({
      device: {
        idScope: cloud.idScope,
        registrationId,
        deviceKey: cloud.deviceKey(registrationId),
        provisioningHost: cloud.provisioningHost,
        ca: cloud.ca,
        transport: options.transport ?? 'mqtt',
        proxy: options.proxy ?? false,
        dataDir: join(dataRoot, registrationId),
        keepaliveSeconds: 5,
        // A one-minute demo: the device's own report (the summary's last line) keeps up with it.
        resilience: { intervalMs: 2000 },
        logger,
        inspect: i === 0 ? bridge?.inspect : undefined,
      },
      telemetryIntervalMs: options.intervalMs,
      firstReadingAfterMs: (i * options.intervalMs) / options.devices,
      onTelemetry: (messageId) => accepted.add(messageId),
      start: false,
    });
    apps.push(app);
    const device = app.device;
    const member: DemoDevice = { device, accepted, delivered: new Set() };
    device.on('delivered', (messageId) => member.delivered.add(messageId));
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


  let devicesStopped = false;
  const stats = (): UiStats => {
    const context = lead.actor.getSnapshot().context;
    return {
      state: lead.state(),
      hub: cloud.hubs.find((h) => h.host === context.assignment?.hubHost)?.name ?? '-',
      sent: fleet.reduce((n, m) => n + m.accepted.size, 0),
      delivered: fleet.reduce((n, m) => n + m.delivered.size, 0),
      queued: devicesStopped ? 0 : fleet.reduce((n, m) => n + m.device.outboxStats().count, 0),
      lastErrorClass: context.lastError?.errorClass ?? null,
      nextRetryMs: lead.state() === 'BackingOff' && context.retryAt ? Math.max(0, context.retryAt - monotonicNow(systemClock)) /* retryAt is machine time */ : null,
      devices: fleet.length,
    };
  };
  const view = setInterval(() => {
    if (!out.isTTY || devicesStopped) return;
    const s = stats();
    out.write(
      `\r[${elapsed()}] ${s.state.padEnd(14)} hub ${s.hub.padEnd(6)} sent ${s.sent} delivered ${s.delivered} queued ${s.queued} ` +
        `last error ${s.lastErrorClass ?? '-'} next retry ${s.nextRetryMs === null ? '-' : `${s.nextRetryMs} ms`}      `,
    );
  }, 250);

  const waitFor = async (predicate: () => boolean, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    while (!predicate() && Date.now() < deadline && !stopping()) await sleep(50);
    return predicate();
  };
  const inject = async (name: string, action: () => Promise<void> | void) => {
    if (stopping()) return;
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
    if (stopping()) return;
    faults.push({ name: 'failback at TTL (the failover hub drops the device)', injectedAt: failoverAt + ttlMs });
    await sleep(stage * 0.15);
    await waitFor(allConnected, 30_000);
    const crashed = cloud.hubs.find((h) => h.host === lead.assignment()?.hubHost);
    if (stopping() || !crashed) return;
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

  let ui: UiServer | undefined;
  if (options.ui) {
    const { startUi } = require('./ui') as typeof import('./ui');
    ui = await startUi(uiBackend(cloud, fleet, stats, faults, signal), { port: options.ui.port });
    out.write(`live view: ${ui.url}\n`);
    options.ui.onListening?.(ui.url);
  }

  const deadline = options.forever ? Infinity : startedAt + stage;
  if (options.script ?? true) {
    do {
      await script();
    } while (options.forever && !stopping());
  }
  const remaining = deadline - Date.now();
  if (remaining > 0) await sleep(remaining);

  await Promise.all(apps.map((app) => app.stopSending()));
  if (!stopping()) await waitFor(() => allConnected() && fleet.every((m) => m.device.outboxStats().count === 0), 30_000);
  clearInterval(view);
  if (out.isTTY) out.write('\n');
  if (stopping()) out.write(`[${elapsed()}] ${String(signal?.reason ?? 'stop')}: stopping the devices\n`);
  // What each device still holds when it stops stays in its outbox (its PUBACK never came).
  const queuedAtStop = fleet.map((m) => m.device.outboxStats().count);
  await Promise.all(fleet.map((m) => m.device.stop()));
  devicesStopped = true;
  await ui?.close();
  await bridge?.stop();

  const arrived = new Map<string, number>();
  for (const record of cloud.telemetry()) arrived.set(record.messageId!, (arrived.get(record.messageId!) ?? 0) + 1);
  let sent = 0;
  let lost = 0;
  let kept = 0;
  let duplicated = 0;
  for (const member of fleet) {
    for (const id of member.accepted) {
      sent++;
      const copies = arrived.get(id) ?? 0;
      // Acknowledged ids left the outbox; an id never acknowledged is still in it.
      if (copies === 0 && !member.delivered.has(id)) kept++;
      else if (copies === 0) lost++;
      else duplicated += copies - 1;
    }
  }
  const reportedByDevice = fleet[0] && reportedResilience(cloud, fleet[0].device);
  await cloud.stop();
  const keptInOutboxes = queuedAtStop.reduce((a, b) => a + b, 0);
  let keptIn: string | undefined;
  if (keptInOutboxes > 0) keptIn = dataRoot;
  else rmSync(dataRoot, { recursive: true, force: true });
  const summary: DemoSummary = { sent, delivered: sent - lost - kept, lost, duplicated, kept, keptIn, interrupted: stopping(), faults, ...(reportedByDevice ? { reportedByDevice } : {}) };
  out.write(formatSummary(summary, fleet.map((m) => m.device.state())));
  return summary;
}

/** The `--ui` page's view of the demo: the first device's state, the fleet's counters, the cloud's faults. */
function uiBackend(
  cloud: LocalCloud,
  fleet: DemoDevice[],
  stats: () => UiStats,
  faults: FaultRecord[],
  signal: AbortSignal | undefined,
): UiBackend {
  const lead = fleet[0].device;
  // The faults go through the local cloud's HTTP control API, as any other tool would.
  const api = async (path: string, body: Record<string, unknown> = {}) => {
    const res = await fetch(`${cloud.controlUrl}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${path}: ${res.status} ${text}`);
  };
  const deviceIds = () => fleet.map((m) => m.device.assignment()?.deviceId).filter((id): id is string => id !== undefined);
  const record = (name: string) => faults.push({ name, injectedAt: Date.now() });
  const list: UiFault[] = [
    {
      name: 'failover',
      label: 'manual failover (TTL 60 s)',
      async run() {
        const ids = deviceIds();
        if (ids.length === 0) throw new Error('no device is assigned to a hub yet');
        for (const deviceId of ids) await api('/failover', { deviceId, ttlMs: 60_000 });
        record('manual failover (TTL 60 s, from the UI)');
        return `failover of ${ids.length} device(s), back at the TTL or with "failback"`;
      },
    },
    {
      name: 'failback',
      label: 'manual failback',
      async run() {
        const ids = deviceIds();
        for (const deviceId of ids) await api('/failback', { deviceId });
        record('manual failback (from the UI)');
        return `failback of ${ids.length} device(s)`;
      },
    },
    {
      name: 'kill-hub',
      label: 'kill the hub (restart after 5 s)',
      async run() {
        const hub = cloud.hubs.find((h) => h.host === lead.assignment()?.hubHost);
        if (!hub) throw new Error('the device is not on a hub');
        await api(`/hubs/${hub.name}/kill`);
        record(`hub crash (${hub.name}, from the UI)`);
        const restart = setTimeout(() => void api(`/hubs/${hub.name}/restart`).catch(() => undefined), 5000);
        signal?.addEventListener('abort', () => clearTimeout(restart), { once: true });
        return `${hub.name} killed, restarting in 5 s`;
      },
    },
    {
      name: 'throttle-dps',
      label: 'throttle DPS (429) + reprovision',
      async run() {
        await api('/dps/throttle', { retryAfterSec: 2, count: 2 * fleet.length });
        for (const { device } of fleet) device.reprovision();
        record('DPS throttling (from the UI)');
        return 'DPS answers 429 (retry-after 2 s) to the next registrations; devices reprovision';
      },
    },
  ];
  return {
    title: `hubstate demo: ${lead.registrationId}${fleet.length > 1 ? ` (+${fleet.length - 1} more)` : ''}`,
    stats,
    onState(listener) {
      lead.on('state', listener);
      return () => lead.off('state', listener);
    },
    faults: list,
    // One timeline band per device: the fleet shares the faults but not always the outcome.
    fleet: {
      devices: () => fleet.map(({ device }) => ({ name: device.registrationId, state: device.state() })),
      onState(listener) {
        const unsubscribes = fleet.map(({ device }) => {
          const forward = (change: StateChange) => listener(device.registrationId, change);
          device.on('state', forward);
          return () => device.off('state', forward);
        });
        return () => unsubscribes.forEach((unsubscribe) => unsubscribe());
      },
    },
  };
}

function resilienceLine(reported: Record<string, unknown>): string {
  const n = (key: string) => (typeof reported[key] === 'number' ? reported[key] : '?');
  // The event counts only: the moving figures (time connected, delivered) are as of the last report, which goes only when something happened.
  return `${n('connects')} connects, ${n('disconnects')} disconnects, ${n('hubChanges')} hub changes, ${n('dpsRegistrations')} DPS registrations, ${n('dpsStatusLookups')} status lookups, ${n('resent')} resent, ${n('dropped')} dropped`;
}

function formatSummary(summary: DemoSummary, states: DeviceStateName[]): string {
  const lines = [
    '',
    'summary',
    `  messages sent       ${summary.sent}`,
    `  delivered           ${summary.delivered}`,
    `  lost                ${summary.lost}`,
    `  duplicated          ${summary.duplicated} (same message id, droppable downstream)`,
    ...(summary.interrupted || summary.kept > 0
      ? [`  kept in the outbox  ${summary.kept} (not acknowledged when stopped${summary.keptIn ? `; outboxes left in ${summary.keptIn}` : ''})`]
      : []),
    `  final states        ${[...new Set(states)].join(', ')}`,
    '  recovery (fault → first telemetry acknowledged):',
    ...summary.faults.map(
      (f) => `    ${f.name.padEnd(70)} ${f.recoveredAfterMs === undefined ? 'n/a' : `${f.recoveredAfterMs} ms`}`,
    ),
    ...(summary.reportedByDevice ? [`  device 1 on itself (its resilience component at the cloud, as last reported):`, `    ${resilienceLine(summary.reportedByDevice)}`] : []),
    summary.lost > 0
      ? `LOST ${summary.lost} MESSAGES`
      : summary.kept > 0 && !summary.interrupted
        ? `nothing lost, but ${summary.kept} not delivered by the end (kept in the outbox)`
        : 'nothing lost.',
    '',
  ];
  return lines.join('\n');
}
