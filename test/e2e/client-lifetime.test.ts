/**
 * Discarded SDK clients must become garbage. Every connection epoch builds a new azure-iot-device
 * Client; the chaos soak found ~1,000 dead ones alive for 200 devices after 45 minutes, held by
 * the SDK's 45-minute token-renewal timer, which it stops only when its own state machine reaches
 * 'disconnected'. Here a device goes through every way a session ends (hub drop, hub crash, a
 * withheld PUBACK with a close that times out and is forced, a connect that times out, a
 * failover) and, after a full GC,
 * every client but the live one is collected.
 */
import { Client } from 'azure-iot-device';
import { exposeGc } from 'hubstate-tools/chaos/soak';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { startDevice, waitFor, waitForState, type DeviceUnderTest } from './harness';

let cloud: LocalCloud;
const clients: Array<WeakRef<Client>> = [];
const build = Client.fromConnectionString;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'client-lifetime', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  // Not jest.spyOn: a mock keeps every return value (mock.results), which is the leak we look for.
  Client.fromConnectionString = (...args: Parameters<typeof build>) => {
    const client = build.apply(Client, args);
    clients.push(new WeakRef(client));
    return client;
  };
});
afterAll(async () => {
  Client.fromConnectionString = build;
  await cloud.stop();
});

test('after drops, a crash, a forced close and a failover, only the live client survives a full GC', async () => {
  const gc = exposeGc();
  expect(gc).toBeDefined();
  const dut: DeviceUnderTest = startDevice(cloud, 'lifetime', { publishTimeoutSeconds: 2, closeTimeoutMs: 300, keepaliveSeconds: 1, connectTimeoutMs: 1000 });
  const connections = () => dut.states.filter((s) => s.value === 'Connected').length;
  const reconnected = async (what: string, before: number) => {
    await waitFor(what, () => connections() > before && dut.device.state() === 'Connected', 20_000);
  };
  await waitForState(dut, 'Connected');
  const hub = () => cloud.hub(dut.device.assignment()!.hubHost);

  let before = connections();
  hub().disconnect('lifetime');
  await reconnected('back after a drop', before);

  before = connections();
  const crashed = hub();
  await crashed.kill();
  await crashed.restart();
  await reconnected('back after a crash', before);

  // PUBACKs withheld: the session ends by the PUBACK timeout and its close (un-acked publishes)
  // times out, so the mqtt.js client under it is ended by force.
  before = connections();
  const stalled = hub();
  stalled.withholdPubacks(true);
  void dut.device.sendTelemetry({ stalled: true });
  await waitFor('left the stalled session', () => dut.device.state() !== 'Connected', 10_000);
  stalled.withholdPubacks(false);
  await reconnected('back after a forced close', before);
  expect(dut.logLines.some((l) => l.includes('close timed out'))).toBe(true);

  // A hub that accepts TCP and TLS but never answers CONNECT: the open times out mid-connect.
  before = connections();
  const silent = hub();
  silent.blackhole(true);
  await waitFor('left the silent hub', () => dut.device.state() !== 'Connected', 10_000);
  await waitFor('a connect timed out', () => /did not accept the connection/.test(dut.device.actor.getSnapshot().context.lastError?.message ?? ''), 15_000);
  silent.blackhole(false);
  await reconnected('back after a connect timeout', before);

  before = connections();
  cloud.manualFailover('lifetime');
  await reconnected('back after a failover', before);

  // Let the last closes finish, then collect.
  await new Promise((resolve) => setTimeout(resolve, 500));
  for (let i = 0; i < 3; i++) {
    gc!();
    await new Promise((resolve) => setImmediate(resolve));
  }
  const alive = clients.filter((ref) => ref.deref() !== undefined).length;
  expect(clients.length).toBeGreaterThanOrEqual(5);
  expect({ built: clients.length, alive }).toEqual({ built: clients.length, alive: 1 });
  await dut.device.stop();
}, 90_000);
