/**
 * DPS drops the connection while a request is on the wire (found by the chaos soak, seed 1):
 * the SDK's provisioning transport used to throw "callback is not a function" from an event
 * handler, an uncaught exception that takes the process down. The device must instead fail the
 * attempt (transient), back off, and stay up.
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { startDevice, waitFor, type DeviceUnderTest } from './harness';

let cloud: LocalCloud;
let dut: DeviceUnderTest | undefined;
const uncaught: string[] = [];
const onUncaught = (error: Error) => uncaught.push(error.stack ?? String(error));

beforeAll(async () => {
  // Registrations never complete: the device keeps polling, so a poll is always about to be on the wire.
  cloud = await startLocalCloud({ hubs: 1, seed: 'dps-drop', dps: { assigningPolls: 1_000_000, pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  process.on('uncaughtException', onUncaught);
});
afterAll(async () => {
  await dut?.device.stop();
  await cloud.stop();
  process.off('uncaughtException', onUncaught);
});

test('connection silenced mid-poll, then reset: no uncaught exception, a transient failure, the device backs off', async () => {
  dut = startDevice(cloud, 'dps-drop-1', { provisionTimeoutMs: 30_000 });
  const polls = () => cloud.dps.answers('dps-drop-1').filter((a) => a.request === 'poll').length;
  await waitFor('the device polling DPS', () => polls() >= 3);
  cloud.dps.blackhole(true); // the connection stays open, the next poll gets no PUBACK and no answer
  const silencedAt = polls();
  await new Promise((resolve) => setTimeout(resolve, 300)); // several poll intervals (50 ms) into the silence
  expect(polls()).toBe(silencedAt);
  expect(dut.device.state()).toBe('Provisioning');
  cloud.dps.blackhole(false); // resets the silenced connection with the poll still on the wire
  await waitFor('the attempt to fail', () => dut!.states.some((s) => s.value === 'BackingOff'));
  await new Promise((resolve) => setImmediate(resolve));
  expect(uncaught).toEqual([]);
  expect(dut.states.find((s) => s.value === 'BackingOff')).toMatchObject({ previous: 'Provisioning', errorClass: 'transient' });
});
