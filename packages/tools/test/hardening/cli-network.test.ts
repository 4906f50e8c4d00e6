/**
 * `--transport` and `--proxy` at the CLI (issue 14): `demo` and `run` accept them, and a mistake is
 * exit code 2 naming the flag (or variable), without the proxy's password. The real dispatcher
 * runs in process with `dryRun` (validated, nothing started).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../../src/cli/cli';
import { resolveRunConfig } from '../../src/cli/run-config';

const key = Buffer.alloc(32, 9).toString('base64');
const dir = mkdtempSync(join(tmpdir(), 'hubstate-cli-network-'));
const RUN = ['run', '--id-scope', '0ne00ABC123', '--registration-id', 'sensor-1', '--data-dir', join(dir, 'data')];
const RUN_ENV = { HUBSTATE_DEVICE_KEY: key };
const SECRET = 'cli-pr0xy-secret';

async function cli(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stderr: string }> {
  let stderr = '';
  const code = await runCli([...argv, ...(argv[0] === 'demo' ? ['--log', join(dir, 'demo.log')] : [])], {
    stdout: { write: () => true } as unknown as NodeJS.WriteStream,
    stderr: { write: (s: string) => ((stderr += s), true) } as unknown as NodeJS.WritableStream,
    env,
    cwd: dir,
    dryRun: true,
  });
  return { code, stderr };
}

describe('demo', () => {
  test.each([
    [['--transport', 'mqtt-ws']],
    [['--transport', 'mqtt-ws', '--proxy', 'http://127.0.0.1:3128']],
    [['--transport', 'auto', '--proxy', `http://u:${SECRET}@127.0.0.1:3128`]],
    [['--transport', 'mqtt']],
  ])('accepts %j', async (flags) => {
    expect(await cli(['demo', ...flags])).toEqual({ code: 0, stderr: '' });
  });

  test.each([
    ['an unknown transport', ['--transport', 'ws'], '--transport'],
    ['a proxy without a WebSocket transport', ['--proxy', 'http://127.0.0.1:3128'], '--proxy'],
    ['a proxy that is not a URL', ['--transport', 'mqtt-ws', '--proxy', `u:${SECRET}@proxy:3128`], '--proxy'],
  ])('refuses %s, naming the flag', async (_what, flags, flag) => {
    const { code, stderr } = await cli(['demo', ...flags]);
    expect(code).toBe(2);
    expect(stderr).toContain(`hubstate: ${flag}: expected`);
    expect(stderr).not.toContain(SECRET);
    expect(stderr).not.toMatch(/\n\s+at /);
  });
});

describe('run', () => {
  test('flags and HUBSTATE_ variables reach the device options', () => {
    const fromFlags = resolveRunConfig({ 'id-scope': '0ne00ABC123', 'registration-id': 's-1', 'data-dir': join(dir, 'd'), transport: 'mqtt-ws', proxy: 'http://p:1' }, RUN_ENV, dir);
    expect(fromFlags.device).toMatchObject({ transport: 'mqtt-ws', proxy: 'http://p:1' });
    const fromEnv = resolveRunConfig({ 'id-scope': '0ne00ABC123', 'registration-id': 's-1', 'data-dir': join(dir, 'd') }, { ...RUN_ENV, HUBSTATE_TRANSPORT: 'auto' }, dir);
    expect(fromEnv.device.transport).toBe('auto');
  });

  test('credentials in --proxy on the command line get the same warning as a key there', () => {
    const config = resolveRunConfig({ 'id-scope': '0ne00ABC123', 'registration-id': 's-1', 'data-dir': join(dir, 'd'), transport: 'mqtt-ws', proxy: `http://u:${SECRET}@p:1` }, RUN_ENV, dir);
    expect(config.warnings.join('\n')).toContain('--proxy on the command line is visible to other users');
    expect(config.warnings.join('\n')).not.toContain(SECRET);
  });

  test.each([
    ['an unknown transport', ['--transport', 'amqp'], {}, '--transport'],
    ['a proxy with mqtt', ['--proxy', 'http://127.0.0.1:3128'], {}, '--proxy'],
    ['a bad proxy from the environment', [], { HUBSTATE_TRANSPORT: 'mqtt-ws', HUBSTATE_PROXY: `socks5://u:${SECRET}@p:1` }, 'HUBSTATE_PROXY'],
  ])('refuses %s, naming it', async (_what, flags, env, name) => {
    const { code, stderr } = await cli([...RUN, ...flags], { ...RUN_ENV, ...env });
    expect(code).toBe(2);
    expect(stderr).toContain(name);
    expect(stderr).not.toContain(SECRET);
  });
});
