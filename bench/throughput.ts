/**
 * (4) Telemetry throughput of one device on the local cloud: createDevice with the in-memory
 * outbox and with the durable SQLite outbox, against a raw SDK sendEvent loop with 16 messages
 * in flight (hubstate's default send window). The same ~100-byte JSON body and the same
 * properties (message id, content type/encoding, creation time).
 *
 * The three senders stay connected for the whole run (one process, the cloud in another) and run
 * in turn, round after round (who goes first rotates), so each ratio compares neighbours in time; a round sends M
 * messages per sender, from the first accepted to the last acknowledged. The application keeps
 * a bounded backlog (tops the outbox up to 256 whenever fewer than 128 are waiting), as a
 * producer that keeps up would; the raw loop's backlog is its 16 in flight. Figures: medians
 * of msg/s, and the median of the per-round ratios.
 *
 * The machine is shared, so each run also records how busy it was (stats.ts `startLoadWindow`:
 * the 1-minute load average, the cores other processes than the bench's two kept busy, and how
 * fast the host ran a fixed workload). A round is quiet when each of its three runs was
 * (stats.ts `isQuiet`); the headline ratios are the quiet rounds' medians, next to the
 * all-rounds medians, and a figure with no quiet round behind it is marked `busy`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { Client } from 'azure-iot-device';
// The device library as it ships (dist/hubstate.js; `npm run bench` builds it first).
import { createDevice, type Device } from 'hubstate';
import { launchCloud, type BenchCloud } from './cloud';
import { closeQuietly, rawMessage, rawOpen, rawRegister } from './raw-sdk';
import { isQuiet, median, medianInterval, quietCriterion, round, startLoadWindow, type LoadWindow, type MedianInterval } from './stats';

export interface ThroughputOptions {
  messages: number;
  repeats: number;
  cloudMode: 'in-process' | 'child-process';
}

/** One round: the three senders in turn, each with the machine's load during its run. */
export interface ThroughputRound {
  raw: number;
  memory: number;
  durable: number;
  memoryRatio: number;
  durableRatio: number;
  load: { raw: LoadWindow; memory: LoadWindow; durable: LoadWindow };
  /** Highest 1-minute load average seen in the round. */
  load1: number;
  /** Highest foreign-cores figure of the round's three runs. */
  foreignCores: number;
  quiet: boolean;
}

/** Ratios and rates over a set of rounds (medians). */
export interface ThroughputFigures {
  rounds: number;
  rawMsgsPerSec: number;
  memoryMsgsPerSec: number;
  durableMsgsPerSec: number;
  memoryRatio: number;
  durableRatio: number;
  /** 95 % confidence intervals of the two median ratios (stats.ts medianInterval); null under 6 rounds. */
  memoryRatioInterval: MedianInterval | null;
  durableRatioInterval: MedianInterval | null;
  /** Highest 1-minute load average over these rounds. */
  maxLoad1: number;
  maxForeignCores: number;
  /** The run's fastest hostSpeedMs (ms): compare runs with it (a host slow for a whole run passes the quiet test). */
  fastestHostSpeedMs: number;
  /** The slowest run's hostSpeedMs over the bench's fastest. */
  maxHostSlowdown: number;
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
  /**
   * Median of the per-round ratios (ours / raw in the same round): over the quiet rounds when
   * there are any, else over all rounds (and `busy` is true).
   */
  memoryRatio: number;
  durableRatio: number;
  /** No quiet round: the headline figures were taken on a busy machine. */
  busy: boolean;
  quietCriterion: string;
  quiet: ThroughputFigures | null;
  all: ThroughputFigures;
  perRound: ThroughputRound[];
  runs: { raw: number[]; memory: number[]; durable: number[] };
  cloudMode: string;
}

const windowsOf = (r: ThroughputRound): LoadWindow[] => [r.load.raw, r.load.memory, r.load.durable];

function figuresOf(rounds: ThroughputRound[], fastestHostSpeedMs: number): ThroughputFigures {
  return {
    rounds: rounds.length,
    rawMsgsPerSec: round(median(rounds.map((r) => r.raw)), 0),
    memoryMsgsPerSec: round(median(rounds.map((r) => r.memory)), 0),
    durableMsgsPerSec: round(median(rounds.map((r) => r.durable)), 0),
    memoryRatio: round(median(rounds.map((r) => r.memoryRatio)), 3),
    durableRatio: round(median(rounds.map((r) => r.durableRatio)), 3),
    memoryRatioInterval: medianInterval(rounds.map((r) => r.memoryRatio)),
    durableRatioInterval: medianInterval(rounds.map((r) => r.durableRatio)),
    maxLoad1: Math.max(...rounds.map((r) => r.load1)),
    maxForeignCores: Math.max(...rounds.map((r) => r.foreignCores)),
    fastestHostSpeedMs,
    maxHostSlowdown: round(Math.max(...rounds.flatMap(windowsOf).map((w) => w.hostSpeedMs)) / fastestHostSpeedMs, 2),
  };
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

/** The order of the three senders in round r is SENDER_ORDERS[r % 3]: each goes first, second and third in turn. */
const SENDER_ORDERS = [
  ['raw', 'memory', 'durable'],
  ['memory', 'durable', 'raw'],
  ['durable', 'raw', 'memory'],
] as const;

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
  const perRound: ThroughputRound[] = [];
  const cores = cpus().length;
  let raw: Client | undefined;
  const devices: Device[] = [];
  try {
    raw = await openRaw(cloud, 'tp-raw');
    const memory = await openDevice(cloud, 'tp-memory');
    devices.push(memory);
    const durable = await openDevice(cloud, 'tp-durable', join(root, 'durable'));
    devices.push(durable);
    // The cloud's CPU time, to tell the bench's own load from the machine's (none when in this process).
    const cloudCpu = async (): Promise<number | undefined> => (cloud.mode === 'child-process' ? cloud.commands.cpuMicros() : undefined);
    const measured = async (run: () => Promise<number>): Promise<[number, LoadWindow]> => {
      const cloudBefore = await cloudCpu();
      const probe = startLoadWindow();
      const rate = await run();
      const cloudAfter = await cloudCpu();
      return [rate, probe.end(cloudBefore === undefined || cloudAfter === undefined ? 0 : cloudAfter - cloudBefore)];
    };
    // Warm-up round (JIT), not counted.
    const warm = Math.min(2000, options.messages);
    await rawRun(raw, warm);
    await deviceRun(memory, warm);
    await deviceRun(durable, warm);
    for (let r = 0; r < options.repeats; r++) {
      // Who goes first rotates each round, so no sender always follows the same one (its GC, the cloud's backlog).
      const runs = { raw: () => rawRun(raw!, options.messages), memory: () => deviceRun(memory, options.messages), durable: () => deviceRun(durable, options.messages) };
      const measuredRuns = {} as Record<keyof typeof runs, [number, LoadWindow]>;
      for (const sender of SENDER_ORDERS[r % SENDER_ORDERS.length]!) measuredRuns[sender] = await measured(runs[sender]);
      const { raw: [rawRate, rawLoad], memory: [memoryRate, memoryLoad], durable: [durableRate, durableLoad] } = measuredRuns;
      const loads = [rawLoad, memoryLoad, durableLoad];
      const foreignCores = Math.max(...loads.map((l) => l.foreignCores));
      perRound.push({
        raw: round(rawRate, 0),
        memory: round(memoryRate, 0),
        durable: round(durableRate, 0),
        memoryRatio: round(memoryRate / rawRate, 3),
        durableRatio: round(durableRate / rawRate, 3),
        load: { raw: rawLoad, memory: memoryLoad, durable: durableLoad },
        load1: Math.max(...loads.map((l) => l.load1)),
        foreignCores,
        quiet: false, // known once every round's host speed is (below)
      });
    }
  } finally {
    if (raw) await closeQuietly(raw);
    await Promise.all(devices.map((d) => d.stop()));
    await cloud.stop();
    rmSync(root, { recursive: true, force: true });
  }
  const fastest = Math.min(...perRound.flatMap(windowsOf).map((w) => w.hostSpeedMs));
  for (const r of perRound) r.quiet = isQuiet(windowsOf(r), cores, fastest);
  const all = figuresOf(perRound, fastest);
  const quietRounds = perRound.filter((r) => r.quiet);
  const quiet = quietRounds.length > 0 ? figuresOf(quietRounds, fastest) : null;
  const headline = quiet ?? all;
  return {
    messagesPerRun: options.messages,
    repeats: options.repeats,
    bodyBytes: Buffer.byteLength(JSON.stringify(BODY)),
    inFlight: IN_FLIGHT,
    backlog: `the app tops the outbox up to ${BACKLOG_HIGH} when fewer than ${BACKLOG_LOW} wait`,
    rawMsgsPerSec: headline.rawMsgsPerSec,
    memoryMsgsPerSec: headline.memoryMsgsPerSec,
    durableMsgsPerSec: headline.durableMsgsPerSec,
    memoryRatio: headline.memoryRatio,
    durableRatio: headline.durableRatio,
    busy: quiet === null,
    quietCriterion: quietCriterion(cores, "in each of the round's three runs (the bench's processes: this one and its cloud; load1 counts their ~2 busy processes)"),
    quiet,
    all,
    perRound,
    runs: { raw: perRound.map((r) => r.raw), memory: perRound.map((r) => r.memory), durable: perRound.map((r) => r.durable) },
    cloudMode: cloud.mode,
  };
}
