/**
 * (4) Telemetry throughput of one device on the local cloud: createDevice with the in-memory
 * outbox and with the durable SQLite outbox, against a raw SDK sendEvent loop with 16 messages
 * in flight (hubstate's default send window). The same ~100-byte JSON body and the same
 * properties (message id, content type/encoding, creation time).
 *
 * The three senders stay connected for the whole run (one process, the cloud in another) and run
 * in turn, round after round, so each ratio compares neighbours in time; a round sends M
 * messages per sender, from the first accepted to the last acknowledged. The application keeps
 * a bounded backlog (tops the outbox up to 256 whenever fewer than 128 are waiting), as a
 * producer that keeps up would; the raw loop's backlog is its 16 in flight. Figures: medians
 * of msg/s, and the median of the per-round ratios.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { Client } from 'azure-iot-device';
import { createDevice, type Device } from '../src/device';
import { launchCloud, type BenchCloud } from './cloud';
import { closeQuietly, rawMessage, rawOpen, rawRegister } from './raw-sdk';
import { median, round } from './stats';

export interface ThroughputOptions {
  messages: number;
  repeats: number;
  cloudMode: 'in-process' | 'child-process';
}

export interface ThroughputResult {
  messagesPerRun: number;
  repeats: number;
  bodyBytes: number;
  inFlight: number;
  backlog: string;
  rawMsgsPerSec: number;
  memoryMsgsPerSec: number;
  durableMsgsPerSec: number;
  /** Median of the per-round ratios (ours / raw in the same round). */
  memoryRatio: number;
  durableRatio: number;
  runs: { raw: number[]; memory: number[]; durable: number[] };
  cloudMode: string;
}

const BODY = { temp: 21.5, humidity: 40.25, battery: 87.5, fanSpeed: 3, status: 'ok', site: 'bench-site-0001' };
const IN_FLIGHT = 16;

async function rawRun(client: Client, messages: number): Promise<number> {
  const start = Date.now();
  let sent = 0;
  await new Promise<void>((resolve, reject) => {
    let acked = 0;
    const next = (): void => {
      if (sent >= messages) return;
      sent++;
      client.sendEvent(rawMessage(JSON.stringify(BODY))).then(() => {
        if (++acked === messages) resolve();
        else next();
      }, reject);
    };
    for (let i = 0; i < IN_FLIGHT; i++) next();
  });
  return messages / ((Date.now() - start) / 1000);
}

async function openRaw(cloud: BenchCloud, registrationId: string): Promise<Client> {
  const { assignedHub, deviceId } = await rawRegister(cloud.info, registrationId);
  return rawOpen(cloud.info, assignedHub, deviceId, registrationId);
}

async function openDevice(cloud: BenchCloud, registrationId: string, dataDir?: string): Promise<Device> {
  const device = createDevice({
    idScope: cloud.info.idScope,
    registrationId,
    groupKey: cloud.info.groupKey,
    provisioningHost: cloud.info.provisioningHost,
    ca: cloud.info.ca,
    logger: pino({ level: 'silent' }),
    sendWindow: IN_FLIGHT,
    ...(dataDir ? { dataDir } : {}),
  });
  device.start();
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${registrationId} did not connect`)), 30_000);
    const check = () => {
      if (device.state() !== 'Connected') return;
      clearTimeout(timer);
      device.off('state', check);
      resolve();
    };
    device.on('state', check);
    check();
  });
  return device;
}

const BACKLOG_HIGH = 256;
const BACKLOG_LOW = 128;

async function deviceRun(device: Device, messages: number): Promise<number> {
  const start = Date.now();
  let produced = 0;
  let delivered = 0;
  await new Promise<void>((resolve, reject) => {
    const topUp = (): void => {
      try {
        while (produced < messages && produced - delivered < BACKLOG_HIGH) {
          produced++;
          void device.sendTelemetry(BODY).catch(reject);
        }
      } catch (error) {
        reject(error as Error);
      }
    };
    const onDelivered = (): void => {
      if (++delivered === messages) {
        device.off('delivered', onDelivered);
        resolve();
      } else if (produced - delivered < BACKLOG_LOW) topUp();
    };
    device.on('delivered', onDelivered);
    topUp();
  });
  return messages / ((Date.now() - start) / 1000);
}

export async function benchThroughput(options: ThroughputOptions): Promise<ThroughputResult> {
  const cloud = await launchCloud({ hubs: 1, maxTelemetry: 10_000 }, options.cloudMode);
  const root = mkdtempSync(join(tmpdir(), 'hubstate-bench-'));
  const runs = { raw: [] as number[], memory: [] as number[], durable: [] as number[] };
  const ratios = { memory: [] as number[], durable: [] as number[] };
  let raw: Client | undefined;
  const devices: Device[] = [];
  try {
    raw = await openRaw(cloud, 'tp-raw');
    const memory = await openDevice(cloud, 'tp-memory');
    devices.push(memory);
    const durable = await openDevice(cloud, 'tp-durable', join(root, 'durable'));
    devices.push(durable);
    // Warm-up round (JIT), not counted.
    const warm = Math.min(2000, options.messages);
    await rawRun(raw, warm);
    await deviceRun(memory, warm);
    await deviceRun(durable, warm);
    for (let r = 0; r < options.repeats; r++) {
      const rawRate = await rawRun(raw, options.messages);
      const memoryRate = await deviceRun(memory, options.messages);
      const durableRate = await deviceRun(durable, options.messages);
      runs.raw.push(rawRate);
      runs.memory.push(memoryRate);
      runs.durable.push(durableRate);
      ratios.memory.push(memoryRate / rawRate);
      ratios.durable.push(durableRate / rawRate);
    }
  } finally {
    if (raw) await closeQuietly(raw);
    await Promise.all(devices.map((d) => d.stop()));
    await cloud.stop();
    rmSync(root, { recursive: true, force: true });
  }
  return {
    messagesPerRun: options.messages,
    repeats: options.repeats,
    bodyBytes: Buffer.byteLength(JSON.stringify(BODY)),
    inFlight: IN_FLIGHT,
    backlog: `the app tops the outbox up to ${BACKLOG_HIGH} when fewer than ${BACKLOG_LOW} wait`,
    rawMsgsPerSec: round(median(runs.raw), 0),
    memoryMsgsPerSec: round(median(runs.memory), 0),
    durableMsgsPerSec: round(median(runs.durable), 0),
    memoryRatio: round(median(ratios.memory), 3),
    durableRatio: round(median(ratios.durable), 3),
    runs: { raw: runs.raw.map((x) => round(x, 0)), memory: runs.memory.map((x) => round(x, 0)), durable: runs.durable.map((x) => round(x, 0)) },
    cloudMode: cloud.mode,
  };
}
