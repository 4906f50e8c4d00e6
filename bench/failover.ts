/**
 * (1) Failover recovery: the hub drops the device (IoT Central manual failover: the device is
 * disabled and disconnected on its hub, DPS points elsewhere) → the first telemetry message
 * acknowledged (PUBACK) by the new hub.
 *
 * t0 is the failover's own timestamp in the cloud (same machine clock); a message is queued right
 * after the failover call returns; t1 is its `delivered` event. References, same run, same cloud:
 * - floor: one DPS registration + one hub open + the first sendEvent ack, raw SDK, sequential;
 * - the seed sample's strategy as our `seedSample` preset (fixed 90 s, DPS on every reconnect):
 *   its devices are failed over together and measured in parallel (one 90 s wait for all).
 */
import pino from 'pino';
import { createDevice, type Device } from '../src/device';
import { launchCloud, type BenchCloud } from './cloud';
import { closeQuietly, rawMessage, rawOpen, rawRegister } from './raw-sdk';
import { sleep, summarize, type Summary } from './stats';

export interface FailoverOptions {
  runs: number;
  seedSampleDevices: number;
  cloudMode: 'in-process' | 'child-process';
  /** Skip the seed sample (≥ 90 s). */
  skipSeedSample?: boolean;
}

export interface FailoverResult {
  floorMs: Summary;
  oursMs: Summary;
  /** p95 of ours minus the floor's median. */
  oursP95OverFloorMs: number;
  seedSampleMs: Summary | null;
  policyOurs: string;
  seedSampleMode: string;
  cloudMode: string;
  /** Every recovery ended on the hub the failover chose. */
  allOnNewHub: boolean;
}

function deviceFor(cloud: BenchCloud, registrationId: string, preset: 'default' | 'seedSample'): Device {
  return createDevice({
    idScope: cloud.info.idScope,
    registrationId,
    groupKey: cloud.info.groupKey,
    provisioningHost: cloud.info.provisioningHost,
    ca: cloud.info.ca,
    policy: { preset },
    logger: pino({ level: 'silent' }),
  });
}

function waitDelivered(device: Device, messageId: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      device.off('delivered', onDelivered);
      reject(new Error(`${device.registrationId}: message not delivered within ${timeoutMs} ms (state ${device.state()})`));
    }, timeoutMs);
    const onDelivered = (id: string) => {
      if (id !== messageId) return;
      clearTimeout(timer);
      device.off('delivered', onDelivered);
      resolve(Date.now());
    };
    device.on('delivered', onDelivered);
  });
}

function waitConnected(device: Device, timeoutMs: number): Promise<void> {
  if (device.state() === 'Connected') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${device.registrationId}: not Connected within ${timeoutMs} ms`)), timeoutMs);
    const onState = () => {
      if (device.state() !== 'Connected') return;
      clearTimeout(timer);
      device.off('state', onState);
      resolve();
    };
    device.on('state', onState);
  });
}

/** Fail `device` over and time the first acknowledged message on the new hub. */
async function failOverOnce(cloud: BenchCloud, device: Device, timeoutMs: number): Promise<{ ms: number; onNewHub: boolean }> {
  const { startedAt, toHub } = await cloud.commands.failover(device.registrationId);
  const { messageId } = await device.sendTelemetry({ temp: 21.5, humidity: 40 });
  const deliveredAt = await waitDelivered(device, messageId, timeoutMs);
  return { ms: deliveredAt - startedAt, onNewHub: device.assignment()?.hubHost === toHub };
}

export async function benchFailover(options: FailoverOptions): Promise<FailoverResult> {
  const cloud = await launchCloud({ hubs: 2 }, options.cloudMode);
  try {
    // Floor: raw SDK, one device at a time.
    const floor: number[] = [];
    for (let i = 0; i < options.runs; i++) {
      const registrationId = `floor-${i}`;
      const t0 = Date.now();
      const { assignedHub, deviceId } = await rawRegister(cloud.info, registrationId);
      const client = await rawOpen(cloud.info, assignedHub, deviceId, registrationId);
      await client.sendEvent(rawMessage('{"temp":21.5,"humidity":40}'));
      floor.push(Date.now() - t0);
      await closeQuietly(client);
    }

    // Ours: createDevice with its defaults; each device is failed over once, one after the other.
    const ours: number[] = [];
    let allOnNewHub = true;
    const devices = Array.from({ length: options.runs }, (_, i) => deviceFor(cloud, `ours-${i}`, 'default'));
    try {
      for (const d of devices) d.start();
      await Promise.all(devices.map((d) => waitConnected(d, 30_000)));
      for (const d of devices) {
        await sleep(100);
        const { ms, onNewHub } = await failOverOnce(cloud, d, 30_000);
        ours.push(ms);
        allOnNewHub &&= onNewHub;
      }
    } finally {
      await Promise.all(devices.map((d) => d.stop()));
    }

    // The seed sample's strategy: all its devices failed over together, measured in parallel.
    let seedSample: number[] | null = null;
    if (!options.skipSeedSample) {
      const seeds = Array.from({ length: options.seedSampleDevices }, (_, i) => deviceFor(cloud, `seed-${i}`, 'seedSample'));
      try {
        for (const d of seeds) d.start();
        await Promise.all(seeds.map((d) => waitConnected(d, 30_000)));
        const results = await Promise.all(seeds.map((d) => failOverOnce(cloud, d, 150_000)));
        seedSample = results.map((r) => r.ms);
        allOnNewHub &&= results.every((r) => r.onNewHub);
      } finally {
        await Promise.all(seeds.map((d) => d.stop()));
      }
    }

    const floorMs = summarize(floor);
    const oursMs = summarize(ours);
    return {
      floorMs,
      oursMs,
      oursP95OverFloorMs: oursMs.p95 - floorMs.median,
      seedSampleMs: seedSample ? summarize(seedSample) : null,
      policyOurs: "createDevice defaults (preset 'default')",
      seedSampleMode: `${options.seedSampleDevices} devices failed over together, measured in parallel (one 90 s wait)`,
      cloudMode: cloud.mode,
      allOnNewHub,
    };
  } finally {
    await cloud.stop();
  }
}
