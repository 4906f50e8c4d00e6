/**
 * A device whose clock is hours behind (booted before NTP) signs SAS tokens that are expired on
 * arrival. The local cloud's clock is put ahead of the machine's, which is the same thing seen from
 * the device. The device learns the service's time from DPS's Date header, signs with it, says so,
 * and connects; nothing accepted is lost.
 */
import type { LocalCloud } from 'hubstate-cloud';
import { deliveryReport, startDevice, useLocalCloud, waitFor, waitForState } from './harness';

const THREE_HOURS_MS = 3 * 3600_000;
let cloud: LocalCloud;

useLocalCloud({ hubs: 1, seed: 'clock-skew' }, (started) => {
  cloud = started;
});
beforeEach(() => cloud.setClockOffset(0));

function skewWarnings(lines: string[]): Array<{ skewSeconds: number; msg: string }> {
  return lines.map((l) => JSON.parse(l) as { skewSeconds?: number; msg: string }).filter((l): l is { skewSeconds: number; msg: string } => l.skewSeconds !== undefined);
}

test('first boot 3 hours behind: DPS refuses the token, the Date header gives the skew, the device registers and connects with the service time', async () => {
  cloud.setClockOffset(THREE_HOURS_MS);
  const dut = startDevice(cloud, 'skew-first-boot');
  await waitForState(dut, 'Connected');
  const id = await dut.send();
  await waitFor('delivered', () => deliveryReport(cloud, [id]).lost.length === 0);
  const [warning, ...more] = skewWarnings(dut.logLines);
  expect(more).toEqual([]);
  expect(Math.abs(warning!.skewSeconds - THREE_HOURS_MS / 1000)).toBeLessThanOrEqual(2);
  expect(warning!.msg).toMatch(/device clock is \d+ s behind the service's/);
  // Never Failed or parked: the refusal was retried inside the one registration.
  expect(dut.visited()).toEqual(['Idle', 'Provisioning', 'Connecting', 'Connected']);
  expect(cloud.dps.metrics().lookupRequests).toBeGreaterThanOrEqual(1);
  await dut.device.stop();
});

test('a cached device whose clock falls behind: the hub refuses the token, the status lookup the policy makes gives the time, the next connect is accepted', async () => {
  const first = startDevice(cloud, 'skew-cached');
  await waitForState(first, 'Connected');
  await first.device.stop();

  cloud.setClockOffset(THREE_HOURS_MS);
  const registrations = cloud.dps.metrics().registerRequests;
  const second = startDevice(cloud, 'skew-cached', { dataDir: first.dataDir });
  await waitForState(second, 'Connected');
  const id = await second.send();
  await waitFor('delivered', () => deliveryReport(cloud, [id]).lost.length === 0);
  expect(skewWarnings(second.logLines)).toHaveLength(1);
  const hub = cloud.hub('hub-0');
  expect(hub.refusals('skew-cached').map((r) => r.reason)).toEqual(['unauthorized']);
  expect(cloud.dps.metrics().registerRequests).toBe(registrations);
  // Refused (CONNACK 5: the assignment is in doubt) → the lookup (its Date corrects the clock; DPS
  // names the same hub) → the same hub again, now with a token in the service's time.
  const path = second.visited();
  expect(path.slice(0, 3)).toEqual(['Idle', 'Connecting', 'CheckingAssignment']);
  expect(path.at(-1)).toBe('Connected');
  expect(path).not.toContain('Provisioning');
  await second.device.stop();
});

test('a skew within the tolerance (30 s) is left alone: no warning, tokens from the device clock', async () => {
  cloud.setClockOffset(30_000);
  const dut = startDevice(cloud, 'skew-small');
  await waitForState(dut, 'Connected');
  expect(skewWarnings(dut.logLines)).toEqual([]);
  await dut.device.stop();
});

test('a wrong key with a correct clock is still refused: one lookup for the time, then Failed as before', async () => {
  const lookups = cloud.dps.metrics().lookupRequests;
  const dut = startDevice(cloud, 'skew-wrong-key', { groupKey: undefined, deviceKey: Buffer.alloc(32, 9).toString('base64') });
  await waitForState(dut, 'Failed');
  expect(cloud.dps.metrics().lookupRequests - lookups).toBe(1);
  expect(dut.device.actor.getSnapshot().context.lastError).toMatchObject({ rule: 'dps-unauthorized' });
  expect(skewWarnings(dut.logLines)).toEqual([]);
  await dut.device.stop();
});
