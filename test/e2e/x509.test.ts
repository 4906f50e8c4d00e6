/**
 * X.509 identities end to end (createDevice, the real SDK with azure-iot-security-x509, real TLS
 * with client certificates) against a local cloud whose DPS has an X.509 enrollment group: first
 * boot, cached restart, failover and failback with nothing lost.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LocalCloud } from 'hubstate-cloud';
import type { DeviceOptions } from '../../src/options';
import { deliveryReport, hubNameOf, useLocalCloud, waitFor, waitForState } from './harness';

let cloud: LocalCloud;
const logLines: string[] = [];
const devices = useLocalCloud({ hubs: 2, seed: 'x509-tests' }, (started) => {
  cloud = started;
});

/** Options with the certificate in place of the group key. */
async function x509Options(registrationId: string, overrides: Partial<DeviceOptions> = {}): Promise<Partial<DeviceOptions>> {
  const issued = await cloud.issueDeviceCertificate(registrationId);
  return { groupKey: undefined, x509: { cert: issued.cert, key: issued.key }, ...overrides };
}

function launch(registrationId: string, overrides: Partial<DeviceOptions>, lines = logLines) {
  return devices.launch(registrationId, overrides, lines);
}

test('first boot through the X.509 enrollment group, then a cached restart; the cache holds no key material', async () => {
  const options = await x509Options('x509-e2e-boot');
  const first = launch('x509-e2e-boot', options);
  await waitForState(first, 'Connected');
  expect(first.visited()).toEqual(['Idle', 'Provisioning', 'Connecting', 'Connected']);
  expect(cloud.dps.x509AttestationOf('x509-e2e-boot')).toEqual({ kind: 'ca' });
  const ids = [await first.send({ n: 1 }), await first.send({ n: 2 })];
  await waitFor('delivery', () => deliveryReport(cloud, ids).lost.length === 0);
  await devices.release(first);

  const files = readdirSync(first.dataDir).filter((f) => f.endsWith('.json'));
  expect(files.length).toBeGreaterThan(0);
  const keyBody = options.x509!.key.replace(/-----[A-Z ]+-----|\s/g, '');
  for (const f of files) {
    const text = readFileSync(join(first.dataDir, f), 'utf8');
    expect(text).not.toContain('PRIVATE KEY');
    expect(text).not.toContain(keyBody.slice(0, 40));
  }

  const registrations = cloud.dps.metrics().registerRequests;
  const second = launch('x509-e2e-boot', { ...options, dataDir: first.dataDir });
  await waitForState(second, 'Connected');
  expect(second.visited()).toEqual(['Idle', 'Connecting', 'Connected']);
  expect(second.device.assignment()?.source).toBe('cache');
  expect(cloud.dps.metrics().registerRequests).toBe(registrations);
  const id = await second.send({ n: 3 });
  await waitFor('delivery after restart', () => deliveryReport(cloud, [id]).lost.length === 0);
  // No private key in any log line.
  expect(logLines.join('\n')).not.toContain('PRIVATE KEY');
  expect(logLines.join('\n')).not.toContain(keyBody.slice(0, 40));
});

test('manual failover and failback by TTL (CONNACK 3) with X.509: the status lookup authenticates by certificate, nothing lost', async () => {
  const id = 'x509-e2e-fo';
  const dut = launch(id, await x509Options(id));
  await waitForState(dut, 'Connected');
  let on = true;
  const loop = (async () => {
    let n = 0;
    while (on) {
      await dut.send({ n: n++ });
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  const home = hubNameOf(cloud, dut)!;
  await waitFor('telemetry at home', () => cloud.telemetry({ deviceId: id, hub: home }).length >= 3);
  const registrations = cloud.dps.attempts(id).length;

  cloud.manualFailover(id, { ttlMs: 3000, refusalCode: 3 });
  await waitFor('moved to the failover hub', () => dut.device.state() === 'Connected' && hubNameOf(cloud, dut) !== home);
  const away = hubNameOf(cloud, dut)!;
  await waitFor('telemetry at the failover hub', () => cloud.telemetry({ deviceId: id, hub: away }).length >= 3);
  await waitFor('failback by TTL', () => dut.device.state() === 'Connected' && hubNameOf(cloud, dut) === home, 20_000);
  await waitFor('telemetry at home again', () => cloud.deliveredIds(id).has(dut.accepted[dut.accepted.length - 1]!));
  on = false;
  await loop;
  await waitFor('everything delivered', () => deliveryReport(cloud, dut.accepted).lost.length === 0, 30_000);
  // Moved by the lookup (certificate-authenticated), never registered again.
  expect(cloud.dps.attempts(id)).toHaveLength(registrations);
  expect(cloud.dps.lookups(id).some((l) => l.status === 200)).toBe(true);
  // The failover hub took the certificate: the identity moved as X.509.
  expect(cloud.hub(away).refusals(id).some((r) => r.reason === 'certificate')).toBe(false);
});

test('X.509 over MQTT over WebSockets with raw MQTT blocked: DPS and the hub read the client certificate through the WebSocket, failover by lookup, nothing lost', async () => {
  const id = 'x509-e2e-ws';
  cloud.blockRawMqtt(true);
  try {
    const dut = launch(id, await x509Options(id, { transport: 'mqtt-ws', proxy: false }));
    await waitForState(dut, 'Connected');
    expect(cloud.dps.x509AttestationOf(id)).toEqual({ kind: 'ca' });
    const home = hubNameOf(cloud, dut)!;
    const before = await dut.send({ n: 1 });
    cloud.manualFailover(id, { ttlMs: null, refusalCode: 3 });
    await waitFor('moved to the failover hub', () => dut.device.state() === 'Connected' && hubNameOf(cloud, dut) !== home);
    const after = await dut.send({ n: 2 });
    await waitFor('delivered', () => deliveryReport(cloud, [before, after]).lost.length === 0);
    expect(cloud.dps.lookups(id).some((l) => l.status === 200)).toBe(true);
  } finally {
    cloud.blockRawMqtt(false);
  }
});

test('an expired certificate: the device parks (no crash, never Failed); a renewed certificate through updateCredentials connects it at once, not after the parked wait', async () => {
  const id = 'x509-e2e-expired';
  const old = await cloud.issueDeviceCertificate(id, { notBefore: new Date(Date.now() - 10 * 86_400_000), validDays: 1 });
  // The default parked wait (15-30 min): the renewal must not wait it out.
  const dut = launch(id, { groupKey: undefined, x509: { cert: old.cert, key: old.key } });
  await waitFor('parked', () => dut.device.actor.getSnapshot().context.lastError?.rule === 'device-certificate-expired');
  expect(dut.device.actor.getSnapshot().context.lastError).toMatchObject({ errorClass: 'parked', phase: 'dps' });
  // The start's warning (its event fired before this listener: start() runs in launch).
  expect(logLines.some((l) => l.includes('certificate-expired') && l.includes(old.thumbprint) && l.includes('"level":40'))).toBe(true);
  // Parked attempts never reach DPS: the certificate is checked before connecting.
  expect(cloud.dps.attempts(id)).toHaveLength(0);
  expect(dut.visited()).not.toContain('Failed');

  const renewed = await cloud.issueDeviceCertificate(id);
  expect(dut.device.state()).toBe('BackingOff');
  dut.device.updateCredentials({ x509: { cert: renewed.cert, key: renewed.key } });
  await waitForState(dut, 'Connected', 10_000);
  const sent = await dut.send({ renewed: true });
  await waitFor('delivery with the renewed certificate', () => deliveryReport(cloud, [sent]).lost.length === 0);
});

test('a certificate within certificateExpiryWarningDays: a credentials event and a warning at start and at each connection', async () => {
  const id = 'x509-e2e-expiring';
  const soon = await cloud.issueDeviceCertificate(id, { validDays: 10 });
  const notices: Array<{ kind: string; daysLeft: number }> = [];
  const dut = launch(id, { groupKey: undefined, x509: { cert: soon.cert, key: soon.key }, certificateExpiryWarningDays: 30 });
  dut.device.on('credentials', (n) => notices.push(n));
  await waitForState(dut, 'Connected');
  // The start's notice came before this listener was attached (start() runs in launch): the connection's is here.
  await waitFor('a notice at the connection', () => notices.length >= 1);
  expect(notices[0]).toMatchObject({ kind: 'certificate-expiring', daysLeft: 9 });
  const warnings = logLines.filter((l) => l.includes('x509-e2e-expiring') && l.includes('certificate-expiring'));
  expect(warnings.length).toBeGreaterThanOrEqual(2); // start + connection
  // Nothing said with the default 30 days for a certificate valid a year.
  const lines: string[] = [];
  const year = await cloud.issueDeviceCertificate('x509-e2e-year');
  const quiet = launch('x509-e2e-year', { groupKey: undefined, x509: { cert: year.cert, key: year.key } }, lines);
  await waitForState(quiet, 'Connected');
  expect(lines.some((l) => l.includes('certificate-expiring'))).toBe(false);
});
