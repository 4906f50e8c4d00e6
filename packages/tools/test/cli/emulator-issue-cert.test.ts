/**
 * `hubstate emulator --issue-cert <id>`: an X.509 device certificate of the run's enrollment group
 * written as <id>.cert.pem / <id>.key.pem (0600, atomic) beside the CA file; a device created
 * from those two files and the printed environment provisions and connects by certificate.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { lstatSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { emulatorFlags, writeDeviceCertificate } from '../../src/cli/emulator';
import { UsageError } from '../../src/cli/args';
import { createDevice } from 'hubstate';
import { startLocalCloud } from 'hubstate-cloud';
import { spawnCli } from './spawn';

jest.setTimeout(120_000);

test('--issue-cert is checked like a registration id (one line naming the flag)', () => {
  expect(emulatorFlags({ 'issue-cert': 'dev-1' })).toMatchObject({ issueCert: 'dev-1' });
  expect(() => emulatorFlags({ 'issue-cert': 'a/b' })).toThrow(UsageError);
  expect(() => emulatorFlags({ 'issue-cert': 'a/b' })).toThrow(/^--issue-cert: /);
});

test('writeDeviceCertificate: two files, 0600, replacing a symlink instead of writing through it', async () => {
  const cloud = await startLocalCloud({ hubs: 1 });
  try {
    const dir = mkdtempSync(join(tmpdir(), 'hubstate-cert-'));
    const victim = join(dir, 'victim.txt');
    writeFileSync(victim, 'untouched');
    symlinkSync(victim, join(dir, 'dev-s.key.pem'));
    const files = await writeDeviceCertificate(cloud, 'dev-s', dir);
    expect(files).toEqual({ cert: join(dir, 'dev-s.cert.pem'), key: join(dir, 'dev-s.key.pem') });
    for (const f of [files.cert, files.key]) {
      const st = lstatSync(f);
      expect(st.isFile()).toBe(true);
      expect(st.mode & 0o777).toBe(0o600);
    }
    expect(readFileSync(victim, 'utf8')).toBe('untouched');
    const leaf = new X509Certificate(readFileSync(files.cert, 'utf8'));
    expect(leaf.subject).toBe('CN=dev-s');
    expect(leaf.checkPrivateKey(createPrivateKey(readFileSync(files.key, 'utf8')))).toBe(true);
  } finally {
    await cloud.stop();
  }
});

test('the CLI writes the files beside --ca-out, and a device made from them connects by certificate', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hubstate-emu-cert-'));
  const cli = spawnCli(['emulator', '--hubs', '1', '--ca-out', join(dir, 'ca.pem'), '--issue-cert', 'cli-x509']);
  try {
    await cli.waitForOutput(/^Ctrl-C stops the local cloud/m, 60_000);
    const out = cli.stdout();
    expect(out).toContain(join(dir, 'cli-x509.cert.pem'));
    expect(out).not.toContain('PRIVATE KEY');
    const host = out.match(/provisioning host\s+(\S+)/)![1]!;
    const idScope = out.match(/id scope\s+(\S+)/)![1]!;
    const device = createDevice({
      idScope,
      registrationId: 'cli-x509',
      provisioningHost: host,
      ca: readFileSync(join(dir, 'ca.pem'), 'utf8'),
      x509: { cert: readFileSync(join(dir, 'cli-x509.cert.pem'), 'utf8'), key: readFileSync(join(dir, 'cli-x509.key.pem'), 'utf8') },
      connectTimeoutMs: 5000,
      provisionTimeoutMs: 10_000,
      logger: silent as never,
    });
    const connected = new Promise<void>((resolve) => device.on('state', (s) => s.value === 'Connected' && resolve()));
    device.start();
    try {
      await connected;
    } finally {
      await device.stop();
    }
  } finally {
    cli.child.kill('SIGINT');
    await cli.exited;
  }
});

const silent = { child: () => silent, debug() {}, info() {}, warn() {}, error() {} };
