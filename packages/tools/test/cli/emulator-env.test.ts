/**
 * `hubstate emulator` for anyone's SDK code: the printed environment block alone configures an
 * unmodified-style Azure IoT SDK device (provisioning with a symmetric key, then the hub) in a
 * child process whose environment is exactly that block, so NODE_EXTRA_CA_CERTS is what makes
 * TLS trust the local cloud. The message arrives, read back through the control API. Plus the CA
 * file (0600, atomic, never through a symlink), --refusal-code reaching the hubs, and the flag
 * mistakes (one line naming the flag, exit 2).
 */
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, lstatSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { errors, NoRetry } from 'azure-iot-common';
import { Client } from 'azure-iot-device';
import { Mqtt } from 'azure-iot-device-mqtt';
import { ROOT, spawnCli, type CliChild } from './spawn';

jest.setTimeout(120_000);

const SAMPLE_DEVICE = join(__dirname, 'fixtures', 'sdk-sample-device.js');

/** The `export NAME='value'` lines of the output, as an environment. */
function parseExports(output: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [, name, quoted] of output.matchAll(/^export ([A-Z_][A-Z0-9_]*)='((?:[^']|'\\'')*)'$/gm)) {
    env[name!] = quoted!.replace(/'\\''/g, "'");
  }
  return env;
}

interface Emulator {
  cli: CliChild;
  env: Record<string, string>;
  controlUrl: string;
  groupKey: string;
}

async function startEmulator(args: string[]): Promise<Emulator> {
  const cli = spawnCli(['emulator', '--hubs', '1', ...args]);
  await cli.waitForOutput(/^Ctrl-C stops the local cloud/m, 60_000);
  const output = cli.stdout();
  return {
    cli,
    env: parseExports(output),
    controlUrl: output.match(/control API\s+(http:\/\/127\.0\.0\.1:\d+)/)![1]!,
    groupKey: output.match(/group key\s+(\S+)/)![1]!,
  };
}

async function stopEmulator(emulator: Emulator | undefined): Promise<number | null> {
  if (!emulator) return null;
  emulator.cli.child.kill('SIGINT');
  return (await emulator.cli.exited).code;
}

/** Runs the sample device in a child whose environment is exactly `env`; resolves with its one-line report. */
function runSampleDevice(flavour: 'provisioning' | 'pnp', env: Record<string, string>): Promise<{ sent?: string; assignedHub?: string; error?: string; message?: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SAMPLE_DEVICE, flavour], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const deadline = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('exit', () => {
      clearTimeout(deadline);
      const line = stdout.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(line) as { sent?: string; error?: string });
      } catch {
        reject(new Error(`no report from the sample device\nstdout: ${stdout}\nstderr: ${stderr}`));
      }
    });
  });
}

async function storedMessageIds(controlUrl: string, deviceId: string): Promise<string[]> {
  const res = await fetch(`${controlUrl}/telemetry?deviceId=${encodeURIComponent(deviceId)}`);
  expect(res.status).toBe(200);
  return ((await res.json()) as Array<{ messageId?: string }>).map((record) => record.messageId ?? '');
}

describe('hubstate emulator --registration-id dev-1', () => {
  let emulator: Emulator | undefined;
  beforeAll(async () => {
    emulator = await startEmulator(['--registration-id', 'dev-1']);
  });
  afterAll(async () => {
    await stopEmulator(emulator);
  });

  test('prints the sample variables, with the device key derived from the group key and never the group key itself', () => {
    const { env, groupKey } = emulator!;
    const derivedKey = createHmac('sha256', Buffer.from(groupKey, 'base64')).update('dev-1', 'utf8').digest('base64');
    expect(env).toEqual({
      NODE_EXTRA_CA_CERTS: expect.stringMatching(/ca\.pem$/),
      PROVISIONING_HOST: expect.stringMatching(/^localhost:\d+$/),
      PROVISIONING_IDSCOPE: expect.stringMatching(/^0ne/),
      PROVISIONING_REGISTRATION_ID: 'dev-1',
      PROVISIONING_SYMMETRIC_KEY: derivedKey,
      IOTHUB_DEVICE_SECURITY_TYPE: 'DPS',
      IOTHUB_DEVICE_DPS_ENDPOINT: env['PROVISIONING_HOST'],
      IOTHUB_DEVICE_DPS_ID_SCOPE: env['PROVISIONING_IDSCOPE'],
      IOTHUB_DEVICE_DPS_DEVICE_ID: 'dev-1',
      IOTHUB_DEVICE_DPS_DEVICE_KEY: derivedKey,
      HUBSTATE_PROVISIONING_HOST: env['PROVISIONING_HOST'],
      HUBSTATE_ID_SCOPE: env['PROVISIONING_IDSCOPE'],
      HUBSTATE_CA_FILE: env['NODE_EXTRA_CA_CERTS'],
      HUBSTATE_REGISTRATION_ID: 'dev-1',
      HUBSTATE_DEVICE_KEY: derivedKey,
    });
    expect(Object.values(env)).not.toContain(groupKey);
    const caFile = env['NODE_EXTRA_CA_CERTS']!;
    expect(readFileSync(caFile, 'utf8')).toContain('-----BEGIN CERTIFICATE-----');
    expect(lstatSync(caFile).mode & 0o777).toBe(0o600);
    expect(lstatSync(dirname(caFile)).mode & 0o777).toBe(0o700);
  });

  test.each(['provisioning', 'pnp'] as const)('a %s-sample device configured only from the block provisions, connects and its message arrives', async (flavour) => {
    const report = await runSampleDevice(flavour, emulator!.env);
    expect(report).toEqual({ sent: expect.stringMatching(new RegExp(`^dev-1-${flavour}-`)), assignedHub: expect.stringMatching(/^localhost:\d+$/) });
    expect(await storedMessageIds(emulator!.controlUrl, 'dev-1')).toContain(report.sent);
  });

  test('without NODE_EXTRA_CA_CERTS the same device cannot even provision: the block is what makes TLS trust the local cloud', async () => {
    const { NODE_EXTRA_CA_CERTS: _ca, ...withoutCa } = emulator!.env;
    const report = await runSampleDevice('provisioning', withoutCa);
    expect(report).toEqual({ error: expect.any(String), message: expect.stringMatching(/certificate/) });
  });

  test('Ctrl-C stops it with exit 0 and removes the temporary CA directory', async () => {
    const caDir = dirname(emulator!.env['NODE_EXTRA_CA_CERTS']!);
    const code = await stopEmulator(emulator);
    emulator = undefined;
    expect(code).toBe(0);
    expect(existsSync(caDir)).toBe(false);
  });
});

describe('hubstate emulator --ca-out <symlink> --refusal-code 5', () => {
  let emulator: Emulator | undefined;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hubstate-emulator-cli-'));
    writeFileSync(join(dir, 'victim.txt'), 'not a CA');
    symlinkSync(join(dir, 'victim.txt'), join(dir, 'ca.pem'));
    emulator = await startEmulator(['--ca-out', join(dir, 'ca.pem'), '--refusal-code', '5', '--registration-id', 'dev-5']);
  });
  afterAll(async () => {
    await stopEmulator(emulator);
  });

  test('the CA replaces the symlink with a 0600 file; the file it pointed to is untouched', () => {
    const caFile = join(dir, 'ca.pem');
    expect(emulator!.env['NODE_EXTRA_CA_CERTS']).toBe(caFile);
    expect(lstatSync(caFile).isSymbolicLink()).toBe(false);
    expect(lstatSync(caFile).mode & 0o777).toBe(0o600);
    expect(readFileSync(caFile, 'utf8')).toContain('-----BEGIN CERTIFICATE-----');
    expect(readFileSync(join(dir, 'victim.txt'), 'utf8')).toBe('not a CA');
  });

  test('--refusal-code 5 reaches the hubs: a disabled device is refused with CONNACK 5 (UnauthorizedError)', async () => {
    const { env, controlUrl } = emulator!;
    const report = await runSampleDevice('pnp', env);
    expect(report.assignedHub).toBeDefined();
    const disabled = await fetch(`${controlUrl}/hubs/${report.assignedHub}/devices/dev-5/disable`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    expect(disabled.status).toBe(200);
    const client = Client.fromConnectionString(`HostName=${report.assignedHub};DeviceId=dev-5;SharedAccessKey=${env['IOTHUB_DEVICE_DPS_DEVICE_KEY']}`, Mqtt);
    client.setRetryPolicy(new NoRetry());
    client.on('error', () => undefined);
    await client.setOptions({ ca: readFileSync(env['NODE_EXTRA_CA_CERTS']!, 'utf8') });
    const refusal = await client.open().then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refusal).toBeInstanceOf(errors.UnauthorizedError);
  });

  test('on exit the --ca-out file stays', async () => {
    const code = await stopEmulator(emulator);
    emulator = undefined;
    expect(code).toBe(0);
    expect(existsSync(join(dir, 'ca.pem'))).toBe(true);
  });
});

describe('hubstate emulator: flag mistakes are one line naming the flag, exit 2', () => {
  test.each([
    [['--refusal-code', '4'], /^hubstate: --refusal-code: expected 3 or 5, got '4'$/],
    [['--registration-id', 'no spaces allowed'], /^hubstate: --registration-id: registration id may hold letters, digits and - \. _ : only, .*, got 'no spaces allowed'$/],
    [['--registration-id', 'ends-with-dash-'], /^hubstate: --registration-id: registration id may hold/],
    [['--ca-out', tmpdir()], /^hubstate: --ca-out: expected a file path, got the directory/],
    [['--hubs', '0'], /^hubstate: --hubs: expected a whole number from 1 to 100, got '0'$/],
    [['--group-key', 'x'], /^hubstate: Unknown option '--group-key'/],
  ])('%j', async (args, firstLine) => {
    const cli = spawnCli(['emulator', ...args]);
    const { code } = await cli.exited;
    expect({ code, firstLine: cli.stderr().split('\n')[0], stdout: cli.stdout() }).toEqual({ code: 2, firstLine: expect.stringMatching(firstLine), stdout: '' });
  });

  test('hubstate help lists the flags', async () => {
    const cli = spawnCli(['help']);
    expect((await cli.exited).code).toBe(0);
    for (const flag of ['--registration-id', '--ca-out', '--refusal-code 3|5']) expect(cli.stdout()).toContain(flag);
  });
});
