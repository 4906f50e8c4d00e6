/**
 * Boot paths against the local cloud, with the real SDK over real TLS: first boot, restart from
 * the cache, DPS down / throttling / wrong key, STOP mid-flight, and no secret in any log line.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { generateCertificates, type LocalCloud } from 'hubstate-cloud';
import { deliveryReport, startDevice, useLocalCloud, waitFor, waitForState } from './harness';

function listSources(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? listSources(path) : path.endsWith('.ts') ? [path] : [];
  });
}

let cloud: LocalCloud;
const allLogLines: string[] = [];

useLocalCloud({ hubs: 2, seed: 'boot-tests' }, (started) => {
  cloud = started;
});

test('first boot: DPS → hub, model id announced to DPS and hub, telemetry stamped and delivered by id', async () => {
  const dut = startDevice(cloud, 'boot-first', {}, allLogLines);
  await waitForState(dut, 'Connected');
  const ids = [await dut.send({ temp: 21.5 }), await dut.send({ temp: 22 })];
  await waitFor('delivery', () => deliveryReport(cloud, ids).lost.length === 0);
  expect(dut.visited()).toEqual(['Idle', 'Provisioning', 'Connecting', 'Connected']);
  expect(cloud.dps.registration('boot-first')?.modelId).toBe('dtmi:Sample:Failover;1');
  const hub = cloud.hub(dut.device.assignment()!.hubHost);
  expect(hub.device('boot-first')?.modelId).toBe('dtmi:Sample:Failover;1');
  const record = cloud.telemetry({ deviceId: 'boot-first' }).find((r) => r.messageId === ids[0])!;
  expect(record.contentType).toBe('application/json');
  expect(record.contentEncoding).toBe('utf-8');
  expect(JSON.parse(record.body.toString())).toEqual({ temp: 21.5 });
  expect(Date.parse(record.creationTimeUtc!)).toBeLessThanOrEqual(record.receivedAt);
  await dut.device.stop();
});

test('restart with a cached hub: straight to Connecting, no DPS call', async () => {
  const first = startDevice(cloud, 'boot-cached', {}, allLogLines);
  await waitForState(first, 'Connected');
  await first.device.stop();
  const registrationsBefore = cloud.dps.metrics().registerRequests;

  const second = startDevice(cloud, 'boot-cached', { dataDir: first.dataDir }, allLogLines);
  await waitForState(second, 'Connected');
  expect(second.visited()).toEqual(['Idle', 'Connecting', 'Connected']);
  expect(second.device.assignment()?.source).toBe('cache');
  expect(cloud.dps.metrics().registerRequests).toBe(registrationsBefore);
  const id = await second.send();
  await waitFor('delivery', () => deliveryReport(cloud, [id]).lost.length === 0);
  await second.device.stop();
});

test('DPS down at boot: backs off, registers when DPS comes back', async () => {
  await cloud.dps.down();
  const dut = startDevice(cloud, 'boot-dps-down', {}, allLogLines);
  await waitFor('two failed DPS attempts', () => dut.states.filter((s) => s.value === 'BackingOff').length >= 2);
  expect(dut.states.find((s) => s.value === 'BackingOff')?.errorClass).toBe('transient');
  const id = await dut.send({ early: true }); // accepted while offline, delivered later
  await cloud.dps.up();
  await waitForState(dut, 'Connected', 30_000);
  await waitFor('delivery', () => deliveryReport(cloud, [id]).lost.length === 0);
  await dut.device.stop();
});

test('DPS throttling: the device waits at least retry-after between registrations', async () => {
  cloud.dps.throttle({ retryAfterSec: 1.5, count: 2 });
  const dut = startDevice(cloud, 'boot-throttled', {}, allLogLines);
  await waitForState(dut, 'Connected', 30_000);
  const throttledWaits = dut.states.filter((s) => s.value === 'BackingOff');
  expect(throttledWaits).toHaveLength(2);
  for (const wait of throttledWaits) {
    expect(wait.errorClass).toBe('throttled');
    expect(wait.delayMs).toBeGreaterThanOrEqual(1500);
  }
  const attempts = cloud.dps.attempts('boot-throttled').filter((_, i, all) => i === 0 || all[i] - all[i - 1] > 200);
  expect(attempts.length).toBeGreaterThanOrEqual(3);
  for (let i = 1; i < attempts.length; i++) expect(attempts[i] - attempts[i - 1]).toBeGreaterThanOrEqual(1500);
  await dut.device.stop();
});

test('a wrong key ends in Failed with a clear error, after exactly one attempt (no retry storm)', async () => {
  const dut = startDevice(cloud, 'boot-wrong-key', { groupKey: undefined, deviceKey: Buffer.alloc(32, 1).toString('base64') }, allLogLines);
  await waitForState(dut, 'Failed');
  const failure = dut.device.actor.getSnapshot().context.lastError!;
  expect(failure.errorClass).toBe('fatal');
  expect(failure.phase).toBe('dps');
  await new Promise((resolve) => setTimeout(resolve, 1500));
  expect(dut.device.state()).toBe('Failed');
  // DPS accepts the CONNECT and answers the register request 401 (as Azure does).
  expect(cloud.dps.metrics().unauthorized).toBeGreaterThanOrEqual(1);
  expect(dut.states.filter((s) => s.value === 'Provisioning')).toHaveLength(1);
  await dut.device.stop();
});

test('a wrong CA fails with a clear, fatal TLS error: Failed at once, no retry loop', async () => {
  const stranger = await generateCertificates();
  const dut = startDevice(cloud, 'boot-wrong-ca', { ca: stranger.ca }, allLogLines);
  await waitForState(dut, 'Failed');
  const failure = dut.device.actor.getSnapshot().context.lastError!;
  expect(failure).toMatchObject({ errorClass: 'fatal', rule: 'tls-certificate', phase: 'dps' });
  expect(failure.message).toMatch(/certificate/i);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  expect(dut.states.filter((s) => s.value === 'Provisioning')).toHaveLength(1);
  await dut.device.stop();
});

test('TLS verification is never turned off anywhere on the device side', () => {
  const deviceSide = ['src/actors', 'src/pnp', 'src/store', 'machines'].flatMap((dir) => listSources(join(__dirname, '../..', dir)));
  expect(deviceSide.length).toBeGreaterThan(5);
  for (const file of deviceSide) expect(readFileSync(file, 'utf8')).not.toMatch(/rejectUnauthorized\s*:\s*false|NODE_TLS_REJECT_UNAUTHORIZED/);
});

test('STOP during Provisioning and during BackingOff ends in Stopped, and nothing retries afterwards', async () => {
  await cloud.dps.down();
  const backingOff = startDevice(cloud, 'boot-stop-backoff', {}, allLogLines);
  await waitForState(backingOff, 'BackingOff');
  await backingOff.device.stop();
  expect(backingOff.visited().slice(-2)).toEqual(['Disconnecting', 'Stopped']);
  await cloud.dps.up();

  cloud.dps.throttle({ retryAfterSec: 30, count: 1 }); // keeps the registration pending long enough
  const provisioning = startDevice(cloud, 'boot-stop-provisioning', {}, allLogLines);
  await waitForState(provisioning, 'Provisioning');
  await provisioning.device.stop();
  expect(provisioning.visited()).toEqual(['Idle', 'Provisioning', 'Disconnecting', 'Stopped']);
  cloud.dps.clearFaults();
  const attemptsAfterStop = cloud.dps.attempts('boot-stop-backoff').length;
  await new Promise((resolve) => setTimeout(resolve, 1500));
  expect(cloud.dps.attempts('boot-stop-backoff')).toHaveLength(attemptsAfterStop);
});

test('no key, SAS token or connection string appears in any log line of this file', () => {
  expect(allLogLines.length).toBeGreaterThan(20);
  const text = allLogLines.join('\n');
  const secrets = [cloud.groupKey, Buffer.alloc(32, 1).toString('base64'), ...['boot-first', 'boot-cached', 'boot-dps-down', 'boot-throttled'].map((id) => cloud.deviceKey(id))];
  for (const secret of secrets) expect(text).not.toContain(secret);
  expect(text).not.toMatch(/SharedAccessSignature|SharedAccessKey=|sig=/);
});
