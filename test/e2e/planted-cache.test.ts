/**
 * Issue 13, High 2, end to end (local cloud, real SDK, real TLS): a provisioning cache planted in
 * the data directory that points elsewhere is refused, the device provisions through DPS, never
 * opens a connection to the planted host, delivers its telemetry, and saves an authenticated
 * cache that the next start uses.
 */
import { createServer, type Server } from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { credentialFingerprint } from '../../src/store/cache';
import { deliveryReport, newDataDir, startDevice, waitFor, waitForState } from './harness';

let cloud: LocalCloud;
/** A listener standing in for the attacker's hub: counts every connection made to it. */
let trap: Server;
let trapConnections = 0;
let trapHost = '';

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'planted-cache', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  trap = createServer((socket) => {
    trapConnections++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => trap.listen(0, '127.0.0.1', resolve));
  trapHost = `127.0.0.1:${(trap.address() as { port: number }).port}`;
});
afterAll(async () => {
  await new Promise((resolve) => trap.close(resolve));
  await cloud.stop();
});

/** What a planted cache says: this device's scope and fingerprint (the fingerprint is in the clear). */
function scopeOf(registrationId: string) {
  return {
    idScope: cloud.idScope,
    provisioningHost: cloud.provisioningHost,
    registrationId,
    credential: credentialFingerprint(cloud.deviceKey(registrationId)),
  };
}

test.each([
  ['a version 2 cache (scope and fingerprint right, no MAC)', (id: string) => ({ version: 2, for: scopeOf(id), hubHost: trapHost, deviceId: id, assignedAt: Date.now() })],
  ['a version 3 cache with a forged MAC', (id: string) => ({ version: 3, for: scopeOf(id), hubHost: trapHost, deviceId: id, assignedAt: Date.now(), mac: 'ab'.repeat(32) })],
])('%s pointing elsewhere: refused, the device provisions through DPS', async (_, planted) => {
  const registrationId = `planted-${trapConnections}-${Math.random().toString(36).slice(2, 8)}`;
  const dataDir = newDataDir();
  const cachePath = join(dataDir, `assignment-${registrationId}.json`);
  writeFileSync(cachePath, JSON.stringify(planted(registrationId)), { mode: 0o600 });
  const connectionsBefore = trapConnections;
  const registrationsBefore = cloud.dps.metrics().registerRequests;
  const logLines: string[] = [];

  const dut = startDevice(cloud, registrationId, { dataDir }, logLines);
  await waitForState(dut, 'Connected');
  expect(dut.visited()).toEqual(['Idle', 'Provisioning', 'Connecting', 'Connected']);
  expect(dut.device.assignment()?.source).toBe('dps');
  expect(cloud.hubs.map((hub) => hub.host)).toContain(dut.device.assignment()!.hubHost);
  expect(cloud.dps.metrics().registerRequests).toBeGreaterThan(registrationsBefore);
  expect(logLines.some((line) => line.includes('"level":40') && line.includes('provisioning cache'))).toBe(true);
  const id = await dut.send();
  await waitFor('delivery', () => deliveryReport(cloud, [id]).lost.length === 0);
  await dut.device.stop();
  expect(trapConnections).toBe(connectionsBefore);

  // The cache now holds the DPS assignment, authenticated; the next start uses it without DPS.
  const saved = JSON.parse(readFileSync(cachePath, 'utf8')) as { version: number; hubHost: string; mac: string };
  expect(saved.version).toBe(3);
  expect(saved.hubHost).not.toBe(trapHost);
  expect(saved.mac).toMatch(/^[0-9a-f]{64}$/);
  const registrationsAfter = cloud.dps.metrics().registerRequests;
  const again = startDevice(cloud, registrationId, { dataDir });
  await waitForState(again, 'Connected');
  expect(again.visited()).toEqual(['Idle', 'Connecting', 'Connected']);
  expect(cloud.dps.metrics().registerRequests).toBe(registrationsAfter);
  await again.device.stop();
  expect(trapConnections).toBe(connectionsBefore);
});
