/**
 * The provisioning guard of provision.ts holds for MQTT over WebSockets too: DPS dropping the
 * connection with a poll on the wire (the provisioning transport's defect, see
 * dps-connection-drop.test.ts) is a transient failure, never an uncaught exception.
 */
import type { LocalCloud } from 'hubstate-cloud';
import { useLocalCloud, waitFor } from './harness';

let cloud: LocalCloud;
const uncaught: string[] = [];
const onUncaught = (error: Error) => uncaught.push(error.stack ?? String(error));

// Registrations never complete: the device keeps polling, so a poll is always about to be on the wire.
const { launch } = useLocalCloud({ hubs: 1, seed: 'websocket-guards', dps: { assigningPolls: 1_000_000 } }, (started) => {
  cloud = started;
  cloud.blockRawMqtt(true); // WebSockets only
  process.on('uncaughtException', onUncaught);
});
afterAll(() => {
  process.off('uncaughtException', onUncaught);
});

test('DPS silenced mid-poll, then reset, over WebSockets: a transient failure, no uncaught exception', async () => {
  const dut = launch('ws-dps-drop', { transport: 'mqtt-ws', provisionTimeoutMs: 30_000 });
  const polls = () => cloud.dps.answers('ws-dps-drop').filter((a) => a.request === 'poll').length;
  await waitFor('the device polling DPS', () => polls() >= 3);
  cloud.dps.blackhole(true);
  const silencedAt = polls();
  // Several poll intervals (50 ms) into the silence, so that a poll is on the wire when it ends;
  // the assertions below hold either way.
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect(polls()).toBe(silencedAt);
  expect(dut.device.state()).toBe('Provisioning');
  cloud.dps.blackhole(false); // resets the silenced connection with the poll on the wire
  await waitFor('the attempt to fail', () => dut.states.some((s) => s.value === 'BackingOff'));
  await new Promise((resolve) => setImmediate(resolve));
  expect(uncaught).toEqual([]);
  expect(dut.states.find((s) => s.value === 'BackingOff')).toMatchObject({ previous: 'Provisioning', errorClass: 'transient' });
});
