/**
 * MQTT over WebSockets (`transport: 'mqtt-ws'`) with the real SDK against the local cloud, whose
 * DPS and hubs serve WSS on their MQTT port. MQTT itself is blocked on the whole cloud
 * (`blockRawMqtt`: what a network that lets only HTTPS through does), so a device that works here
 * really uses WebSockets. Then the same through an HTTP CONNECT proxy with credentials (the proxy
 * counts its tunnels: the traffic really went through it), a failover and a hub crash over it.
 * Every message is checked by id.
 */
import tls from 'node:tls';
import type { LocalCloud } from 'hubstate-cloud';
import type { DeviceOptions } from '../../src/options';
import { startConnectProxy, type ConnectProxy } from '../support/connect-proxy';
import { expectAllDelivered, hubNameOf, keepSending, useLocalCloud, waitFor, waitForState } from './harness';

let cloud: LocalCloud;
let proxy: ConnectProxy;
const PROXY_USER = 'hubstate-test';
const PROXY_PASSWORD = 'pr0xy-s3cret-never-logged';
/** Client TLS contexts built for a trust list holding the cloud's CA (see shared-tls.test.ts). */
let contextsForCloudCa = 0;
let contextSpy: jest.SpyInstance;

beforeAll(async () => {
  const create = tls.createSecureContext.bind(tls);
  contextSpy = jest.spyOn(tls, 'createSecureContext').mockImplementation((options) => {
    // Client contexts only: the emulator's servers bring a key.
    if (typeof options?.ca === 'string' && options.key === undefined && cloud && options.ca.includes(cloud.ca.trim())) contextsForCloudCa++;
    return create(options);
  });
});
const devices = useLocalCloud({ hubs: 2, seed: 'websocket-tests' }, async (started) => {
  cloud = started;
  cloud.blockRawMqtt(true);
  proxy = await startConnectProxy({ credentials: { user: PROXY_USER, password: PROXY_PASSWORD } });
});
afterAll(async () => {
  contextSpy.mockRestore();
  await proxy.close();
});

const proxyUrl = () => `http://${PROXY_USER}:${PROXY_PASSWORD}@127.0.0.1:${proxy.port}`;

function launch(registrationId: string, overrides: Partial<DeviceOptions> = {}) {
  return devices.launch(registrationId, { transport: 'mqtt-ws', ...overrides });
}

/** Tunnels the proxy opened to `host` (`localhost:PORT`). */
const tunnelsTo = (host: string) => proxy.tunnels().get(host) ?? 0;

test('mqtt-ws with MQTT blocked: first boot through DPS, connected, telemetry delivered by id', async () => {
  const dut = launch('ws-boot');
  await waitForState(dut, 'Connected');
  expect(dut.visited().slice(0, 4)).toEqual(['Idle', 'Provisioning', 'Connecting', 'Connected']);
  for (let i = 0; i < 20; i++) await dut.send({ i });
  await expectAllDelivered(cloud, dut);
  expect(cloud.dps.attempts('ws-boot')).toHaveLength(1);
});

test('plain mqtt against the same blocked network fails to register: the block is real', async () => {
  const dut = launch('ws-control', { transport: 'mqtt' });
  await waitFor('a failed DPS attempt', () => dut.states.some((s) => s.value === 'BackingOff'));
  expect(dut.device.state()).not.toBe('Connected');
  expect(cloud.dps.attempts('ws-control')).toHaveLength(0);
});

test('through an HTTP CONNECT proxy: DPS and the hub reached only through its tunnels, credentials never logged', async () => {
  const before = { dps: tunnelsTo(cloud.provisioningHost), total: proxy.tunnelCount() };
  const dut = launch('ws-proxy', { proxy: proxyUrl() });
  await waitForState(dut, 'Connected');
  for (let i = 0; i < 20; i++) await dut.send({ i });
  await expectAllDelivered(cloud, dut);
  expect(tunnelsTo(cloud.provisioningHost)).toBe(before.dps + 1);
  expect(tunnelsTo(dut.device.assignment()!.hubHost)).toBeGreaterThanOrEqual(1);
  expect(proxy.tunnelCount()).toBeGreaterThanOrEqual(before.total + 2);
  const logs = dut.logLines.join('\n');
  expect(logs).toContain('go through an HTTP proxy');
  expect(logs).toContain(`http://[REDACTED]@127.0.0.1:${proxy.port}`);
  expect(logs).not.toContain(PROXY_PASSWORD);
  expect(logs).not.toContain(PROXY_USER);
});

test('a proxy that refuses the credentials: the device never connects, and says nothing of the password', async () => {
  const refused = proxy.refusedCount();
  const dut = launch('ws-proxy-badauth', { proxy: `http://${PROXY_USER}:wrong-${PROXY_PASSWORD}@127.0.0.1:${proxy.port}` });
  await waitFor('the proxy refused a CONNECT', () => proxy.refusedCount() > refused);
  await waitFor('a classified failure', () => dut.states.some((s) => s.value === 'BackingOff'));
  expect(dut.device.state()).not.toBe('Connected');
  expect(dut.logLines.join('\n')).not.toContain(PROXY_PASSWORD);
});

test('failover over WebSockets through the proxy (refusal code 3): status lookup and the other hub through the proxy, nothing lost', async () => {
  const id = 'ws-failover';
  const dut = launch(id, { proxy: proxyUrl() });
  await waitForState(dut, 'Connected');
  const sender = keepSending(dut, { temp: 20 });
  try {
    const home = hubNameOf(cloud, dut)!;
    await waitFor('telemetry at home', () => cloud.telemetry({ deviceId: id, hub: home }).length >= 3);
    const registrations = cloud.dps.attempts(id).length;
    const dpsTunnels = tunnelsTo(cloud.provisioningHost);
    cloud.manualFailover(id, { ttlMs: 60_000, refusalCode: 3 });
    await waitFor('moved to the failover hub', () => dut.device.state() === 'Connected' && hubNameOf(cloud, dut) !== home, 30_000);
    const away = cloud.hub(hubNameOf(cloud, dut)!);
    await waitFor('telemetry at the failover hub', () => cloud.telemetry({ deviceId: id, hub: away.name }).length >= 3);
    await sender.stop();
    await expectAllDelivered(cloud, dut);
    // The lookup (HTTPS) went through the proxy too; no new registration was needed.
    expect(cloud.dps.lookups(id).length).toBeGreaterThanOrEqual(1);
    expect(tunnelsTo(cloud.provisioningHost)).toBeGreaterThan(dpsTunnels);
    expect(tunnelsTo(away.host)).toBeGreaterThanOrEqual(1);
    expect(cloud.dps.attempts(id)).toHaveLength(registrations);
  } finally {
    await sender.abandon();
  }
}, 60_000);

test('hub crash and restart over WebSockets through the proxy: back on the same hub, nothing lost', async () => {
  const id = 'ws-crash';
  const dut = launch(id, { proxy: proxyUrl() });
  await waitForState(dut, 'Connected');
  const sender = keepSending(dut, { temp: 21 });
  try {
    const home = cloud.hub(hubNameOf(cloud, dut)!);
    await waitFor('telemetry at home', () => cloud.telemetry({ deviceId: id, hub: home.name }).length >= 3);
    const tunnels = tunnelsTo(home.host);
    await home.kill();
    await waitFor('the loss seen', () => dut.device.state() !== 'Connected');
    await home.restart();
    await waitForState(dut, 'Connected', 30_000);
    expect(hubNameOf(cloud, dut)).toBe(home.name);
    await waitFor('telemetry after the restart', () => cloud.telemetry({ deviceId: id, hub: home.name }).length >= 6);
    await sender.stop();
    await expectAllDelivered(cloud, dut);
    expect(tunnelsTo(home.host)).toBeGreaterThan(tunnels);
  } finally {
    await sender.abandon();
  }
}, 60_000);

test('TLS is verified end to end through the tunnel: a device that does not trust the cloud CA never connects', async () => {
  const { rootCertificates } = await import('node:tls');
  const tunnels = tunnelsTo(cloud.provisioningHost);
  const dut = launch('ws-untrusted', { proxy: proxyUrl(), ca: rootCertificates[0], trustOnlyCa: true });
  await waitFor('a classified failure', () => dut.states.some((s) => s.value === 'BackingOff' || s.value === 'Failed'));
  // The tunnel was opened (the proxy is not the one refusing): the device refused the certificate.
  expect(tunnelsTo(cloud.provisioningHost)).toBeGreaterThan(tunnels);
  expect(dut.device.state()).not.toBe('Connected');
  expect(cloud.dps.attempts('ws-untrusted')).toHaveLength(0);
  expect(dut.device.actor.getSnapshot().context.lastError?.rule).toMatch(/^tls-/);
});

test('DPS throttling over WebSockets through the proxy: retry-after honoured between registrations, then connected', async () => {
  cloud.dps.throttle({ retryAfterSec: 1.5, count: 2 });
  try {
    const dut = launch('ws-throttled', { proxy: proxyUrl() });
    await waitForState(dut, 'Connected', 30_000);
    const throttledWaits = dut.states.filter((s) => s.value === 'BackingOff');
    expect(throttledWaits).toHaveLength(2);
    for (const wait of throttledWaits) {
      expect(wait.errorClass).toBe('throttled');
      expect(wait.delayMs).toBeGreaterThanOrEqual(1500);
    }
    await dut.send({ after: 'throttling' });
    await expectAllDelivered(cloud, dut);
  } finally {
    cloud.dps.clearFaults();
  }
}, 30_000);

test('a proxy that refuses CONNECT to the DPS port: no registration, a transient failure (the device keeps trying), no tunnel', async () => {
  const strict = await startConnectProxy({ refusePorts: [cloud.dps.port] });
  try {
    const dut = launch('ws-proxy-refused', { proxy: strict.url });
    await waitFor('the proxy refused a CONNECT', () => strict.refusedCount() >= 1);
    await waitFor('a classified failure', () => dut.states.some((s) => s.value === 'BackingOff'));
    expect(dut.states.find((s) => s.value === 'BackingOff')?.errorClass).toBe('transient');
    expect(strict.tunnelCount()).toBe(0);
    expect(cloud.dps.attempts('ws-proxy-refused')).toHaveLength(0);
  } finally {
    await strict.close();
  }
});

test('every WebSocket connection above (direct and tunnelled, DPS, lookups, hubs) shared one TLS context for the cloud CA', () => {
  expect(cloud.hubs.reduce((n, h) => n + h.metrics().connects, 0)).toBeGreaterThanOrEqual(6);
  expect(contextsForCloudCa).toBe(1);
});
