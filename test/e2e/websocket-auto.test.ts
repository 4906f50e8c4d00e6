/**
 * `transport: 'auto'` with the real SDK against the local cloud: MQTT first; on a network where
 * MQTT is blocked (`cloud.blockRawMqtt`: no MQTT connection gets a CONNACK) the device switches to
 * MQTT over WebSockets, visibly (a `transport` event, a warning, and a BackingOff classified
 * 'mqtt-unreachable-websocket-fallback'), through the proxy, and stays there for its lifetime.
 */
import type { LocalCloud } from 'hubstate-cloud';
import type { TransportFallback } from '../../src/actors/transport';
import { startConnectProxy, type ConnectProxy } from '../support/connect-proxy';
import { expectAllDelivered, keepSending, useLocalCloud, waitFor, waitForState } from './harness';

let cloud: LocalCloud;
let proxy: ConnectProxy;

afterEach(() => cloud.blockRawMqtt(false)); // before the devices stop: their close reaches the hub
const { launch } = useLocalCloud({ hubs: 1, seed: 'websocket-auto-tests' }, async (started) => {
  cloud = started;
  proxy = await startConnectProxy();
});
afterAll(async () => {
  await proxy.close();
});

/** An `auto` device through the proxy, with its fallbacks and the rule of every BackingOff it entered. */
function launchAuto(registrationId: string) {
  const dut = launch(registrationId, { transport: 'auto', proxy: proxy.url });
  const fallbacks: TransportFallback[] = [];
  const backoffRules: string[] = [];
  dut.device.on('transport', (fallback) => fallbacks.push(fallback));
  dut.device.on('state', (change) => {
    if (change.value === 'BackingOff') backoffRules.push(dut.device.actor.getSnapshot().context.lastError?.rule ?? 'none');
  });
  return { dut, fallbacks, backoffRules };
}

test('MQTT reachable: auto stays on MQTT, no fallback, the proxy is not used', async () => {
  const tunnels = proxy.tunnelCount();
  const { dut, fallbacks } = launchAuto('auto-open');
  await waitForState(dut, 'Connected');
  for (let i = 0; i < 10; i++) await dut.send({ i });
  await expectAllDelivered(cloud, dut);
  expect(fallbacks).toEqual([]);
  expect(dut.visited().slice(0, 4)).toEqual(['Idle', 'Provisioning', 'Connecting', 'Connected']);
  expect(proxy.tunnelCount()).toBe(tunnels);
});

test('MQTT blocked: one classified, visible fallback to WebSockets through the proxy, remembered across a hub crash; nothing lost', async () => {
  cloud.blockRawMqtt(true);
  const id = 'auto-blocked';
  const { dut, fallbacks, backoffRules } = launchAuto(id);
  await waitForState(dut, 'Connected', 30_000);

  // Visible: one event, one warning, one BackingOff that says why; then DPS over WebSockets.
  expect(fallbacks).toEqual([{ from: 'mqtt', to: 'mqtt-ws', endpoint: cloud.provisioningHost, reason: expect.any(String) }]);
  expect(dut.logLines.filter((line) => line.includes('MQTT could not be reached'))).toHaveLength(1);
  expect(backoffRules).toEqual(['mqtt-unreachable-websocket-fallback']);
  expect(dut.visited().slice(0, 6)).toEqual(['Idle', 'Provisioning', 'BackingOff', 'Provisioning', 'Connecting', 'Connected']);
  const hub = cloud.hub(dut.device.assignment()!.hubHost);
  expect(proxy.tunnels().get(cloud.provisioningHost)).toBeGreaterThanOrEqual(1);
  expect(proxy.tunnels().get(hub.host)).toBeGreaterThanOrEqual(1);

  const sender = keepSending(dut, { temp: 22 });
  try {
    await waitFor('telemetry over WebSockets', () => cloud.telemetry({ deviceId: id }).length >= 3);
    // Remembered: after a crash the device comes back over WebSockets, with no second fallback.
    const hubTunnels = proxy.tunnels().get(hub.host) ?? 0;
    await hub.kill();
    await waitFor('the loss seen', () => dut.device.state() !== 'Connected');
    await hub.restart();
    await waitForState(dut, 'Connected', 30_000);
    await waitFor('telemetry after the restart', () => cloud.telemetry({ deviceId: id }).length >= 6);
    await sender.stop();
    await expectAllDelivered(cloud, dut);
    expect(proxy.tunnels().get(hub.host)).toBeGreaterThan(hubTunnels);
    expect(fallbacks).toHaveLength(1);
    expect(backoffRules.filter((rule) => rule === 'mqtt-unreachable-websocket-fallback')).toHaveLength(1);
  } finally {
    await sender.abandon();
  }
}, 60_000);

test('DPS reachable over MQTT, only the hub blocked: the fallback happens at the hub connection', async () => {
  const hub = cloud.hubs[0]!;
  hub.blockRawMqtt(true);
  const hubTunnels = proxy.tunnels().get(hub.host) ?? 0;
  const dpsTunnels = proxy.tunnels().get(cloud.provisioningHost) ?? 0;
  const id = 'auto-hub-blocked';
  const { dut, fallbacks, backoffRules } = launchAuto(id);
  await waitForState(dut, 'Connected', 30_000);
  expect(fallbacks).toEqual([{ from: 'mqtt', to: 'mqtt-ws', endpoint: hub.host, reason: expect.any(String) }]);
  expect(backoffRules).toEqual(['mqtt-unreachable-websocket-fallback']);
  expect(dut.visited().slice(0, 6)).toEqual(['Idle', 'Provisioning', 'Connecting', 'BackingOff', 'Connecting', 'Connected']);
  for (let i = 0; i < 10; i++) await dut.send({ i });
  await expectAllDelivered(cloud, dut);
  expect(proxy.tunnels().get(hub.host)).toBeGreaterThan(hubTunnels);
  // DPS answered over MQTT (direct, not through the proxy).
  expect(proxy.tunnels().get(cloud.provisioningHost) ?? 0).toBe(dpsTunnels);
});
