/**
 * (4) Telemetry throughput of one device on the local cloud: createDevice with the in-memory
 * outbox and with the durable SQLite outbox, against a raw SDK sendEvent loop with 16 messages
 * in flight (hubstate's default send window). The same ~100-byte JSON body and the same
 * properties (message id, content type/encoding, creation time). Each figure: M messages from
 * the first accepted to the last acknowledged; variants interleaved, `repeats` rounds, medians.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
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
  rawMsgsPerSec: number;
  memoryMsgsPerSec: number;
  durableMsgsPerSec: number;
  memoryRatio: number;
  durableRatio: number;
  runs: { raw: number[]; memory: number[]; durable: number[] };
  cloudMode: string;
}

const BODY = { temp: 21.5, humidity: 40.25, battery: 87.5, fanSpeed: 3, status: 'ok', site: 'bench-site-0001' };
const IN_FLIGHT = 16;

async function rawRun(cloud: BenchCloud, registrationId: string, messages: number): Promise<number> {
  const { assignedHub, deviceId } = await rawRegister(cloud.info, registrationId);
  const client = await rawOpen(cloud.info, assignedHub, deviceId, registrationId);
  try {
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
  } finally {
    await closeQuietly(client);
  }
}

function connected(device: Device): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${device.registrationId} did not connect`)), 30_000);
    const check = () => {
      if (device.state() !== 'Connected') return;
      clearTimeout(timer);
      device.off('state', check);
      resolve();
    };
    device.on('state', check);
    check();
  });
}

async function deviceRun(cloud: BenchCloud, registrationId: string, messages: number, dataDir?: string): Promise<number> {
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
  try {
    await connected(device);
    let delivered = 0;
    const done = new Promise<void>((resolve) => {
      device.on('delivered', () => {
        if (++delivered === messages) resolve();
      });
    });
    const start = Date.now();
    for (let i = 0; i < messages; i++) await device.sendTelemetry(BODY);
    await done;
    return messages / ((Date.now() - start) / 1000);
  } finally {
    await device.stop();
  }
}

export async function benchThroughput(options: ThroughputOptions): Promise<ThroughputResult> {
  const cloud = await launchCloud({ hubs: 1, maxTelemetry: 10_000 }, options.cloudMode);
  const root = mkdtempSync(join(tmpdir(), 'hubstate-bench-'));
  const runs = { raw: [] as number[], memory: [] as number[], durable: [] as number[] };
  try {
    // Warm-up (JIT, TLS contexts): one short run of each, not counted.
    const warm = Math.min(2000, options.messages);
    await rawRun(cloud, 'warm-raw', warm);
    await deviceRun(cloud, 'warm-mem', warm);
    await deviceRun(cloud, 'warm-sql', warm, join(root, 'warm'));
    for (let r = 0; r < options.repeats; r++) {
      runs.raw.push(await rawRun(cloud, `raw-${r}`, options.messages));
      runs.memory.push(await deviceRun(cloud, `mem-${r}`, options.messages));
      runs.durable.push(await deviceRun(cloud, `sql-${r}`, options.messages, join(root, `sql-${r}`)));
    }
  } finally {
    await cloud.stop();
    rmSync(root, { recursive: true, force: true });
  }
  const raw = median(runs.raw);
  const memory = median(runs.memory);
  const durable = median(runs.durable);
  return {
    messagesPerRun: options.messages,
    repeats: options.repeats,
    bodyBytes: Buffer.byteLength(JSON.stringify(BODY)),
    inFlight: IN_FLIGHT,
    rawMsgsPerSec: round(raw, 0),
    memoryMsgsPerSec: round(memory, 0),
    durableMsgsPerSec: round(durable, 0),
    memoryRatio: round(memory / raw, 3),
    durableRatio: round(durable / raw, 3),
    runs: { raw: runs.raw.map((x) => round(x, 0)), memory: runs.memory.map((x) => round(x, 0)), durable: runs.durable.map((x) => round(x, 0)) },
    cloudMode: cloud.mode,
  };
}
