/**
 * Bad input at the CLI (issue 13 §3, §4, §6, §8): flags, config file contents, environment
 * variables and fleet options. Each case runs the real dispatcher in process (`runCli` with
 * `dryRun`: everything is validated and the paths are prepared, nothing starts) and expects exit
 * code 2, the flag / variable / config field named on stderr, and no stack trace. A few cases
 * run the CLI as a child process: the ones that used to hang a core or eat memory.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../../src/cli/cli';
import { ConfigError } from 'hubstate';
import { Fleet } from '../../src/fleet';
import { spawnCli } from '../cli/spawn';

const key = Buffer.alloc(32, 9).toString('base64');
const dir = mkdtempSync(join(tmpdir(), 'hubstate-cli-inputs-'));
const aFile = join(dir, 'a-file');
writeFileSync(aFile, 'x');
const aDir = join(dir, 'a-dir');
mkdirSync(aDir);
const bigFile = join(dir, 'big.pem');
writeFileSync(bigFile, Buffer.alloc(2 * 1024 * 1024, 0x41));
const fifo = join(dir, 'fifo');
execFileSync('mkfifo', [fifo]);
const dataDir = join(dir, 'data');
const json = (name: string, value: unknown): string => {
  const path = join(dir, name);
  writeFileSync(path, typeof value === 'string' ? value : JSON.stringify(value), { mode: 0o600 });
  return path;
};

/** A valid `run` (the key from the environment), to which each case adds one mistake. */
const RUN = ['run', '--id-scope', '0ne00ABC123', '--registration-id', 'sensor-1', '--data-dir', dataDir];
const RUN_ENV = { HUBSTATE_DEVICE_KEY: key };
const FLEET_ENV = { HUBSTATE_GROUP_KEY: key };
const FLEET_DPS = ['fleet', '--id-scope', '0ne00ABC123', '--provisioning-host', 'dps.example.net'];

async function cli(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stderr: string; stdout: string }> {
  let stderr = '';
  let stdout = '';
  const code = await runCli(argv, {
    stdout: { write: (s: string) => ((stdout += s), true) } as unknown as NodeJS.WriteStream,
    stderr: { write: (s: string) => ((stderr += s), true) } as unknown as NodeJS.WritableStream,
    env,
    cwd: dir,
    dryRun: true,
  });
  return { code, stderr, stdout };
}

type Case = [name: string, argv: string[], env: NodeJS.ProcessEnv, field: string];
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

const runFlags: Case[] = [
  ['--duration past the longest timer (issue: exits after 2 s)', [...RUN, '--duration', '2500000'], RUN_ENV, '--duration'],
  ['--duration 0', [...RUN, '--duration', '0'], RUN_ENV, '--duration'],
  ['--duration negative', [...RUN, '--duration=-5'], RUN_ENV, '--duration'],
  ['--duration text', [...RUN, '--duration', 'soon'], RUN_ENV, '--duration'],
  ['--duration Infinity', [...RUN, '--duration', 'Infinity'], RUN_ENV, '--duration'],
  ['--interval-ms 5e9 (issue: 1,870 messages in 3 s)', [...RUN, '--interval-ms', '5e9'], RUN_ENV, '--interval-ms'],
  ['--interval-ms below 10', [...RUN, '--interval-ms', '9'], RUN_ENV, '--interval-ms'],
  ['--interval-ms in hex', [...RUN, '--interval-ms', '0x10000'], RUN_ENV, '--interval-ms'],
  ['--interval-ms empty', [...RUN, '--interval-ms', ''], RUN_ENV, '--interval-ms'],
  ['--interval-ms 2^31', [...RUN, '--interval-ms', '2147483648'], RUN_ENV, '--interval-ms'],
  ['--keepalive-seconds 65536 (issue: crashes in mqtt-packet)', [...RUN, '--keepalive-seconds', '65536'], RUN_ENV, '--keepalive-seconds'],
  ['--keepalive-seconds 1768 (over IoT Hub\'s 1767)', [...RUN, '--keepalive-seconds', '1768'], RUN_ENV, '--keepalive-seconds'],
  ['--keepalive-seconds 0', [...RUN, '--keepalive-seconds', '0'], RUN_ENV, '--keepalive-seconds'],
  ['--keepalive-seconds fractional', [...RUN, '--keepalive-seconds', '30.5'], RUN_ENV, '--keepalive-seconds'],
  ['--keepalive-seconds 1e100', [...RUN, '--keepalive-seconds', '1e100'], RUN_ENV, '--keepalive-seconds'],
  ['--max-hub-attempts 1e7', [...RUN, '--max-hub-attempts', '1e7'], RUN_ENV, '--max-hub-attempts'],
  ['--max-hub-attempts fractional', [...RUN, '--max-hub-attempts', '1.5'], RUN_ENV, '--max-hub-attempts'],
  ['--hub-retry-window-ms 1e300', [...RUN, '--hub-retry-window-ms', '1e300'], RUN_ENV, '--hub-retry-window-ms'],
  ['--min-delay-ms 3e9', [...RUN, '--min-delay-ms', '3e9'], RUN_ENV, '--min-delay-ms'],
  ['--max-delay-ms 1e300', [...RUN, '--max-delay-ms', '1e300'], RUN_ENV, '--max-delay-ms'],
  ['--first-retry-max-ms 2^31', [...RUN, '--first-retry-max-ms', '2147483648'], RUN_ENV, '--first-retry-max-ms'],
  ['--publish-timeout-seconds 1e9', [...RUN, '--publish-timeout-seconds', '1e9'], RUN_ENV, '--publish-timeout-seconds'],
  ['--publish-timeout-seconds 1', [...RUN, '--publish-timeout-seconds', '1'], RUN_ENV, '--publish-timeout-seconds'],
  ['--property-handler-timeout-ms 1e12', [...RUN, '--property-handler-timeout-ms', '1e12'], RUN_ENV, '--property-handler-timeout-ms'],
  ['--inspect-port 65536', [...RUN, '--inspect', '--inspect-port', '65536'], RUN_ENV, '--inspect-port'],
  ['--inspect-port 0', [...RUN, '--inspect', '--inspect-port', '0'], RUN_ENV, '--inspect-port'],
  ['--inspect-port fractional', [...RUN, '--inspect', '--inspect-port', '80.5'], RUN_ENV, '--inspect-port'],
  ['--log-level unknown', [...RUN, '--log-level', 'loud'], RUN_ENV, '--log-level'],
  ['--ca-file /dev/zero (issue: read 1.9 GB)', [...RUN, '--ca-file', '/dev/zero'], RUN_ENV, '--ca-file'],
  ['--ca-file /dev/urandom', [...RUN, '--ca-file', '/dev/urandom'], RUN_ENV, '--ca-file'],
  ['--ca-file a directory', [...RUN, '--ca-file', aDir], RUN_ENV, '--ca-file'],
  ['--ca-file over 1 MiB', [...RUN, '--ca-file', bigFile], RUN_ENV, '--ca-file'],
  ['--ca-file a FIFO (would block)', [...RUN, '--ca-file', fifo], RUN_ENV, '--ca-file'],
  ['--ca-file missing', [...RUN, '--ca-file', join(dir, 'nope.pem')], RUN_ENV, '--ca-file'],
  ['--config /dev/zero', ['run', '--config', '/dev/zero'], RUN_ENV, '--config'],
  ['--config over 1 MiB', ['run', '--config', bigFile], RUN_ENV, '--config'],
  ['--config a directory', ['run', '--config', aDir], RUN_ENV, '--config'],
  ['--config a FIFO', ['run', '--config', fifo], RUN_ENV, '--config'],
  ['--log a directory (issue: exit 1, stack trace)', [...RUN, '--log', aDir], RUN_ENV, '--log'],
  ['--log under /proc (issue: spins a core)', [...RUN, '--log', '/proc/x/y'], RUN_ENV, '--log'],
  ['--log under a file', [...RUN, '--log', join(aFile, 'run.log')], RUN_ENV, '--log'],
  ['--log empty', [...RUN, '--log', ''], RUN_ENV, '--log'],
  ['--data-dir a file (issue: exit 1, stack trace)', [...RUN.slice(0, -2), '--data-dir', aFile], RUN_ENV, '--data-dir'],
  ['--data-dir under /proc/1 (issue: spins a core)', [...RUN.slice(0, -2), '--data-dir', '/proc/1/x'], RUN_ENV, '--data-dir'],
  ['--data-dir under a file', [...RUN.slice(0, -2), '--data-dir', join(aFile, 'data')], RUN_ENV, '--data-dir'],
  ['--data-dir /dev/null', [...RUN.slice(0, -2), '--data-dir', '/dev/null'], RUN_ENV, '--data-dir'],
  ['--data-dir empty', [...RUN.slice(0, -2), '--data-dir', ''], RUN_ENV, '--data-dir'],
];

const envVars: Case[] = [
  ['HUBSTATE_DURATION 2500000', RUN, { ...RUN_ENV, HUBSTATE_DURATION: '2500000' }, 'HUBSTATE_DURATION'],
  ['HUBSTATE_INTERVAL_MS 5e9', RUN, { ...RUN_ENV, HUBSTATE_INTERVAL_MS: '5e9' }, 'HUBSTATE_INTERVAL_MS'],
  ['HUBSTATE_KEEPALIVE_SECONDS 65536', RUN, { ...RUN_ENV, HUBSTATE_KEEPALIVE_SECONDS: '65536' }, 'HUBSTATE_KEEPALIVE_SECONDS'],
  ['HUBSTATE_KEEPALIVE_SECONDS 1768', RUN, { ...RUN_ENV, HUBSTATE_KEEPALIVE_SECONDS: '1768' }, 'HUBSTATE_KEEPALIVE_SECONDS'],
  ['HUBSTATE_INSPECT_PORT 70000', RUN, { ...RUN_ENV, HUBSTATE_INSPECT_PORT: '70000' }, 'HUBSTATE_INSPECT_PORT'],
  ['HUBSTATE_MAX_DELAY_MS Infinity', RUN, { ...RUN_ENV, HUBSTATE_MAX_DELAY_MS: 'Infinity' }, 'HUBSTATE_MAX_DELAY_MS'],
  ['HUBSTATE_PUBLISH_TIMEOUT_SECONDS 99999999', RUN, { ...RUN_ENV, HUBSTATE_PUBLISH_TIMEOUT_SECONDS: '99999999' }, 'HUBSTATE_PUBLISH_TIMEOUT_SECONDS'],
  ['HUBSTATE_MAX_HUB_ATTEMPTS with blanks', RUN, { ...RUN_ENV, HUBSTATE_MAX_HUB_ATTEMPTS: ' 3 ' }, 'HUBSTATE_MAX_HUB_ATTEMPTS'],
  ['HUBSTATE_INSPECT maybe', RUN, { ...RUN_ENV, HUBSTATE_INSPECT: 'maybe' }, 'HUBSTATE_INSPECT'],
  ['HUBSTATE_CONFIG /dev/zero', ['run'], { ...RUN_ENV, HUBSTATE_CONFIG: '/dev/zero' }, 'HUBSTATE_CONFIG'],
  ['HUBSTATE_CA_FILE /dev/zero', RUN, { ...RUN_ENV, HUBSTATE_CA_FILE: '/dev/zero' }, 'HUBSTATE_CA_FILE'],
  ['HUBSTATE_LOG a directory', RUN, { ...RUN_ENV, HUBSTATE_LOG: aDir }, 'HUBSTATE_LOG'],
  ['HUBSTATE_LOG under /proc', RUN, { ...RUN_ENV, HUBSTATE_LOG: '/proc/x/y' }, 'HUBSTATE_LOG'],
  ['HUBSTATE_DATA_DIR a file', RUN.slice(0, -2), { ...RUN_ENV, HUBSTATE_DATA_DIR: aFile }, 'HUBSTATE_DATA_DIR'],
  ['HUBSTATE_DATA_DIR under /proc/1', RUN.slice(0, -2), { ...RUN_ENV, HUBSTATE_DATA_DIR: '/proc/1/x' }, 'HUBSTATE_DATA_DIR'],
];

const base = { idScope: '0ne00ABC123', registrationId: 'sensor-1', deviceKey: key, dataDir };
const fileCase = (name: string, content: unknown, field: string): Case => {
  const path = json(`${name.replace(/\W+/g, '-')}.json`, typeof content === 'string' ? content : { ...base, ...(content as object) });
  return [`config file: ${name}`, ['run', '--config', path], {}, field === '--config' ? '--config' : `${path}: ${field}`];
};
const configFiles: Case[] = [
  fileCase('duration 2500000', { duration: 2_500_000 }, 'duration'),
  fileCase('intervalMs 5e9', { intervalMs: 5e9 }, 'intervalMs'),
  fileCase('keepaliveSeconds 65536', { keepaliveSeconds: 65536 }, 'keepaliveSeconds'),
  fileCase('keepaliveSeconds 1e308', { keepaliveSeconds: 1e308 }, 'keepaliveSeconds'),
  fileCase('inspectPort 99999', { inspectPort: 99999 }, 'inspectPort'),
  fileCase('maxDelayMs 1e300', { maxDelayMs: 1e300 }, 'maxDelayMs'),
  fileCase('maxHubAttempts -1', { maxHubAttempts: -1 }, 'maxHubAttempts'),
  fileCase('intervalMs as text', { intervalMs: '5000' }, 'intervalMs'),
  fileCase('duration null', { duration: null }, 'duration'),
  fileCase('dataDir a file', { dataDir: aFile }, 'dataDir'),
  fileCase('dataDir under /proc/1', { dataDir: '/proc/1/x' }, 'dataDir'),
  fileCase('dataDir with a NUL', { dataDir: 'a\u0000b' }, 'dataDir'),
  fileCase('log a directory', { log: aDir }, 'log'),
  fileCase('log under /proc', { log: '/proc/x/y' }, 'log'),
  fileCase('caFile /dev/zero', { caFile: '/dev/zero' }, 'caFile'),
  fileCase('caFile over 1 MiB', { caFile: bigFile }, 'caFile'),
  fileCase('inspect as text', { inspect: 'yes' }, 'inspect'),
  fileCase('a number, not an object', '5', '--config'),
  fileCase('not JSON', '{ "idScope": ', '--config'),
];
// An unknown key of 5,000 characters: named, shortened.
const longKey = json('long-key.json', { ...base, ['k'.repeat(5000)]: 1 });
configFiles.push(['config file: a 5,000-character unknown key', ['run', '--config', longKey], {}, `${longKey}: kkkkkkkkkk`]);

const demo: Case[] = [
  ['demo --duration 2500000', ['demo', '--duration', '2500000'], {}, '--duration'],
  ['demo --duration 0', ['demo', '--duration', '0'], {}, '--duration'],
  ['demo --interval 5e9', ['demo', '--interval', '5e9'], {}, '--interval'],
  ['demo --interval 1', ['demo', '--interval', '1'], {}, '--interval'],
  ['demo --devices 1e6', ['demo', '--devices', '1e6'], {}, '--devices'],
  ['demo --devices fractional', ['demo', '--devices', '1.5'], {}, '--devices'],
  ['demo --ui --port 65536', ['demo', '--ui', '--port', '65536'], {}, '--port'],
  ['demo --inspect --inspect-port -1', ['demo', '--inspect', '--inspect-port=-1'], {}, '--inspect-port'],
  ['demo --log a directory', ['demo', '--log', aDir], {}, '--log'],
  ['demo --log under /proc', ['demo', '--log', '/proc/x/y'], {}, '--log'],
  ['demo --log a FIFO', ['demo', '--log', fifo], {}, '--log'],
];

const emulator: Case[] = [
  ['emulator --hubs 101', ['emulator', '--hubs', '101'], {}, '--hubs'],
  ['emulator --hubs 1e9', ['emulator', '--hubs', '1e9'], {}, '--hubs'],
  ['emulator --hubs fractional', ['emulator', '--hubs', '2.5'], {}, '--hubs'],
  ['emulator --ca-out under /proc (would spin in a recursive mkdir)', ['emulator', '--ca-out', '/proc/x/ca.pem'], {}, '--ca-out'],
  ['emulator --ca-out under a file', ['emulator', '--ca-out', join(aFile, 'ca.pem')], {}, '--ca-out'],
];

const fleet: Case[] = [
  ['fleet --devices 1e9', ['fleet', '--devices', '1e9'], {}, '--devices'],
  ['fleet --devices 0', ['fleet', '--devices', '0'], {}, '--devices'],
  ['fleet --devices fractional', ['fleet', '--devices', '10.5'], {}, '--devices'],
  ['fleet --dps-rate 1e9', ['fleet', '--dps-rate', '1e9'], {}, '--dps-rate'],
  ['fleet --dps-rate 0.01', ['fleet', '--dps-rate', '0.01'], {}, '--dps-rate'],
  ['fleet --hubs 1000', ['fleet', '--hubs', '1000'], {}, '--hubs'],
  ['fleet --log a directory', ['fleet', '--log', aDir], {}, '--log'],
  ['fleet --log under /proc', ['fleet', '--log', '/proc/x/y'], {}, '--log'],
  ['fleet --prefix of 127 characters (issue: uncaught ConfigError in a timer)', [...FLEET_DPS, '--prefix', 'a'.repeat(127)], FLEET_ENV, '--prefix'],
  ['fleet --prefix fine for device 0, too long for device 999', [...FLEET_DPS, '--devices', '1000', '--prefix', 'a'.repeat(126)], FLEET_ENV, '--prefix'],
  ['fleet --prefix with a space', [...FLEET_DPS, '--prefix', 'bad prefix '], FLEET_ENV, '--prefix'],
  ['fleet --ca-file /dev/zero', [...FLEET_DPS, '--ca-file', '/dev/zero'], FLEET_ENV, '--ca-file'],
  ['fleet --ca-file a directory', [...FLEET_DPS, '--ca-file', aDir], FLEET_ENV, '--ca-file'],
  ['fleet --ca-file over 1 MiB', [...FLEET_DPS, '--ca-file', bigFile], FLEET_ENV, '--ca-file'],
  ['fleet --shard 4/4 (counted from 0)', ['fleet', '--devices', '100', '--shard', '4/4'], {}, '--shard'],
  ['fleet --shard 0/0', ['fleet', '--devices', '100', '--shard', '0/0'], {}, '--shard'],
  ['fleet --shard with more shards than devices', ['fleet', '--devices', '3', '--shard', '0/4'], {}, '--shard'],
  ['fleet --shard negative', ['fleet', '--shard=-1/4'], {}, '--shard'],
  ['fleet --shard without a count', ['fleet', '--shard', '2'], {}, '--shard'],
  ['fleet --shard fractional', ['fleet', '--shard', '1.5/4'], {}, '--shard'],
  ['fleet --shard 1e9/1e9', ['fleet', '--shard', '1e9/1e9'], {}, '--shard'],
];

const notAReport = json('not-a-report.json', { seed: 1 });
const soak: Case[] = [
  ['soak --devices 0', ['soak', '--devices', '0'], {}, '--devices'],
  ['soak --devices 1e9', ['soak', '--devices', '1e9'], {}, '--devices'],
  ['soak --hubs 1000', ['soak', '--hubs', '1000'], {}, '--hubs'],
  ['soak --duration 30d (past the longest timer)', ['soak', '--duration', '2500000'], {}, '--duration'],
  ['soak --duration 5h (no such unit)', ['soak', '--duration', '5h'], {}, '--duration'],
  ['soak --fault-rate 5e9', ['soak', '--fault-rate', '5e9'], {}, '--fault-rate'],
  ['soak --interval 0', ['soak', '--interval', '0'], {}, '--interval'],
  ['soak --compare /dev/zero', ['soak', '--compare', '/dev/zero'], {}, 'compare'],
  ['soak --compare a file that is not a report', ['soak', '--compare', notAReport], {}, 'compare'],
];

const ALL = [...runFlags, ...envVars, ...configFiles, ...demo, ...emulator, ...fleet, ...soak];

test('the table holds at least 70 bad inputs', () => {
  expect(ALL.length).toBeGreaterThanOrEqual(70);
});

test.each(ALL)('%s → exit 2 naming it, no stack trace', async (_name, argv, env, field) => {
  const { code, stderr, stdout } = await cli(argv, env);
  expect({ code, firstLine: stderr.split('\n')[0], stdout }).toEqual({
    code: 2,
    firstLine: expect.stringMatching(new RegExp(`^hubstate: (invalid option '${esc(field)}|${esc(field)}[:=' ])`)),
    stdout: '',
  });
  expect(stderr).not.toMatch(/\n\s+at /);
  expect(stderr).not.toContain(key);
});

test('the same commands with good values pass the dry run (the table is not refusing everything)', async () => {
  for (const [argv, env] of [
    [[...RUN, '--duration', '2147483', '--interval-ms', '2147483647', '--keepalive-seconds', '1767', '--log', join(dir, 'logs', 'run.log')], RUN_ENV],
    [['demo', '--duration', '5', '--devices', '2', '--log', join(dir, 'demo.log')], {}],
    [['emulator', '--hubs', '100'], {}],
    [[...FLEET_DPS, '--devices', '100', '--prefix', 'a'.repeat(126), '--log', join(dir, 'fleet.log')], FLEET_ENV],
    [['fleet', '--devices', '100000', '--shard', '39/40', '--log', join(dir, 'fleet.log')], {}],
    [['fleet', '--devices', '4', '--shard', '0/4', '--log', join(dir, 'fleet.log')], {}],
    [['soak', '--devices', '100000', '--hubs', '100', '--duration', '90s', '--quiet', '5m', '--fault-rate', '2147483647'], {}],
  ] as Array<[string[], NodeJS.ProcessEnv]>) {
    const result = await cli(argv, env);
    expect({ argv, ...result }).toEqual({ argv, code: 0, stderr: '', stdout: '' });
  }
});

describe('log files are created 0600 whatever the umask (issue 13 §8)', () => {
  let umask: number;
  beforeAll(() => {
    umask = process.umask(0);
  });
  afterAll(() => {
    process.umask(umask);
  });
  test.each([
    ['run --log', (log: string) => [...RUN, '--log', log], RUN_ENV],
    ['demo --log', (log: string) => ['demo', '--log', log], {}],
    ['fleet --log', (log: string) => ['fleet', '--log', log], {}],
  ] as Array<[string, (log: string) => string[], NodeJS.ProcessEnv]>)('%s', async (name, argv, env) => {
    const log = join(dir, 'modes', name.replace(/\W+/g, '-'), 'x.log');
    expect(await cli(argv(log), env)).toMatchObject({ code: 0 });
    expect((statSync(log).mode & 0o777).toString(8)).toBe('600');
    // The directories it created are private as well.
    expect((statSync(join(log, '..')).mode & 0o777).toString(8)).toBe('700');
  });

  test('run: the data directory it creates is 0700', async () => {
    const data = join(dir, 'modes', 'data-dir', 'deep');
    expect(await cli([...RUN.slice(0, -2), '--data-dir', data], RUN_ENV)).toMatchObject({ code: 0 });
    expect((statSync(data).mode & 0o777).toString(8)).toBe('700');
  });
});

test('Fleet (the library): a prefix giving an over-long id is a ConfigError at construction, not in a timer', () => {
  const cloud = { idScope: '0ne00ABC123', groupKey: key, provisioningHost: 'dps.example.net' };
  expect(() => new Fleet({ cloud, devices: 11, dpsRatePerSec: 10, prefix: 'a'.repeat(127) })).toThrow(ConfigError);
  expect(() => new Fleet({ cloud, devices: 1000, dpsRatePerSec: 10, prefix: 'a'.repeat(126) })).toThrow(/invalid option 'prefix'.*device 999/);
  expect(() => new Fleet({ cloud, devices: 10, dpsRatePerSec: 10, prefix: 'a'.repeat(127) })).not.toThrow();
});

describe('as a child process: what used to hang, spin or eat memory ends at once with exit 2', () => {
  jest.setTimeout(60_000);
  test.each([
    ['--ca-file /dev/zero', [...RUN, '--ca-file', '/dev/zero'], RUN_ENV, '--ca-file'],
    ['--log /proc/x/y', [...RUN, '--log', '/proc/x/y'], RUN_ENV, '--log'],
    ['--data-dir /proc/1/x', [...RUN.slice(0, -2), '--data-dir', '/proc/1/x'], RUN_ENV, '--data-dir'],
    ['fleet --prefix <127 chars>', [...FLEET_DPS, '--devices', '11', '--prefix', 'a'.repeat(127)], FLEET_ENV, '--prefix'],
  ] as Case[])('%s', async (_name, argv, env, field) => {
    const child = spawnCli(argv, { env: { ...env, HUBSTATE_ID_SCOPE: '', HUBSTATE_CONFIG: '' }, cwd: dir });
    const killer = setTimeout(() => child.child.kill('SIGKILL'), 20_000);
    const exit = await child.exited;
    clearTimeout(killer);
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 2, signal: null });
    expect(child.stderr()).toContain(`invalid option '${field}`);
    expect(child.stderr()).not.toMatch(/\n\s+at /);
  });
});
