/**
 * policy.firstBootJitterMs: a device with no cached assignment waits U[0, firstBootJitterMs]
 * (seeded, on its clock) in Idle before its first DPS request, so a fleet powered on together
 * staggers its registrations (DPS large-scale guidance: a staggered provisioning schedule). With a
 * cached assignment it goes to its hub at once; stop() cancels the wait. Simulated clock; nothing
 * listens at the hosts (only the first step matters).
 */
import pino from 'pino';
import { SimulatedClock } from 'xstate';
import { createDevice, type Device, type StateChange } from '../../src/device';
import { ConfigError } from '../../src/errors';
import { MAX_FIRST_BOOT_JITTER_MS, resolveOptions, type DeviceOptions } from '../../src/options';
import { MemoryProvisioningCache } from '../../src/store/cache';

const JITTER_MS = 60_000;
const base: DeviceOptions = {
  idScope: '0ne00AAA111',
  registrationId: 'jitter-1',
  deviceKey: Buffer.alloc(32, 3).toString('base64'),
  provisioningHost: 'localhost:9',
};

interface Started {
  device: Device;
  clock: SimulatedClock;
  states: StateChange[];
  /** The wait the device announced, from its log line. */
  delayMs(): number | undefined;
}

function start(options: Partial<DeviceOptions> = {}): Started {
  const clock = new SimulatedClock();
  const lines: string[] = [];
  const device = createDevice({
    ...base,
    clock,
    cache: new MemoryProvisioningCache(),
    policy: { firstBootJitterMs: JITTER_MS },
    seed: 42,
    logger: pino({ level: 'info' }, { write: (line: string) => lines.push(line) }),
    ...options,
  });
  const states: StateChange[] = [];
  device.on('state', (change) => states.push(change));
  device.start();
  const delayMs = () => {
    const line = lines.find((l) => l.includes('first registration staggered'));
    return line === undefined ? undefined : (JSON.parse(line) as { delayMs: number }).delayMs;
  };
  return { device, clock, states, delayMs };
}

test('no cached assignment: Idle for exactly the drawn wait, then Provisioning', async () => {
  const { device, clock, states, delayMs } = start();
  const wait = delayMs()!;
  expect(wait).toBeGreaterThan(0);
  expect(wait).toBeLessThanOrEqual(JITTER_MS);
  clock.increment(wait - 1);
  expect(device.state()).toBe('Idle');
  expect(states).toEqual([]);
  clock.increment(1);
  expect(states[0]).toMatchObject({ previous: 'Idle', value: 'Provisioning', event: 'START' });
  await device.stop();
});

test('seeded: the same seed draws the same wait; 200 seeds spread it over [0, firstBootJitterMs]', async () => {
  const waits: number[] = [];
  for (let seed = 1; seed <= 200; seed++) {
    const { device, delayMs } = start({ seed });
    waits.push(delayMs() ?? 0);
    await device.stop();
  }
  const again = start({ seed: 7 });
  expect(again.delayMs() ?? 0).toBe(waits[6]);
  await again.device.stop();
  expect(Math.min(...waits)).toBeGreaterThanOrEqual(0);
  expect(Math.max(...waits)).toBeLessThanOrEqual(JITTER_MS);
  // Uniform: every tenth of the window is hit.
  const deciles = new Set(waits.map((w) => Math.min(9, Math.floor((w / JITTER_MS) * 10))));
  expect(deciles.size).toBe(10);
});

test('a cached assignment goes to its hub at once, without a wait', async () => {
  const cache = new MemoryProvisioningCache({ hubHost: 'localhost:19', deviceId: 'jitter-1', assignedAt: 1 });
  const { device, states, delayMs } = start({ cache });
  expect(delayMs()).toBeUndefined();
  expect(states[0]).toMatchObject({ previous: 'Idle', value: 'Connecting' });
  await device.stop();
});

test('stop() during the wait cancels it: Stopped, and nothing starts when the wait would have ended', async () => {
  const { device, clock, states, delayMs } = start();
  await device.stop();
  expect(device.state()).toBe('Stopped');
  clock.increment(delayMs()! + 1);
  expect(states.map((s) => s.value)).toEqual(['Stopped']);
});

test('validated and bounded (0 to 7 days); the rest of the policy is validated as before', () => {
  const resolve = (policy: unknown) => resolveOptions({ ...base, policy: policy as DeviceOptions['policy'] });
  expect(resolve({ firstBootJitterMs: 0 }).firstBootJitterMs).toBe(0);
  expect(resolve(undefined).firstBootJitterMs).toBe(0);
  expect(resolve({ preset: 'iotCentral', firstBootJitterMs: MAX_FIRST_BOOT_JITTER_MS })).toMatchObject({
    firstBootJitterMs: MAX_FIRST_BOOT_JITTER_MS,
    policy: resolve({ preset: 'iotCentral' }).policy,
  });
  for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY, MAX_FIRST_BOOT_JITTER_MS + 1, '1000']) {
    expect(() => resolve({ firstBootJitterMs: bad })).toThrow(ConfigError);
    expect(() => resolve({ firstBootJitterMs: bad })).toThrow(/policy\.firstBootJitterMs/);
  }
  expect(() => resolve({ firstBootJitterMs: 10, noSuchKnob: 1 })).toThrow(/policy\.noSuchKnob/);
});
