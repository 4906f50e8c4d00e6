/**
 * `hubstate test-failover`: the example device passes its paths (the coverage, a PASS line per
 * path, exit 0); a deliberately broken app fails (a FAIL line and the failure report naming the
 * path, exit 1); mistakes in the flags or the module are one line and exit 2.
 */
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { runCli } from 'hubstate-tools/cli/cli';
import { ROOT, spawnCli } from './spawn';

const EXAMPLE = join(ROOT, 'examples', 'failover-device.ts');
const BROKEN = join(__dirname, 'fixtures', 'reprovision-on-loss-device.ts');

test('the example device passes every single-fault path and the long faults, on the simulated clock: the coverage, one PASS line per path, exit 0', async () => {
  const cli = spawnCli(['test-failover', '--app', EXAMPLE, '--depth', '1', '--refusal-codes', '3', '--seed', '5', '--long-faults', '--clock', 'simulated']);
  const { code } = await cli.exited;
  const out = cli.stdout();
  expect(cli.stderr()).toBe('');
  expect(out).toMatch(/^fault model coverage: 11\/11 transitions by \d+ paths; 9 runs here \(depth 1, clock simulated\)$/m);
  const names = ['DROP', 'CRASH', 'FAILOVER \\(CONNACK 3\\)', 'USER_REPROVISION', 'THROTTLED_REPROVISION', 'FLAPPING_HUB', 'DPS_OUTAGE', 'DPS_OUTAGE_REPROVISION', 'DISABLED_DEVICE \\(CONNACK 3\\)'];
  for (const name of names) expect(out).toMatch(new RegExp(`^PASS ${name} — recovered: \\w+ \\d+ ms \\(\\d+\\.\\d s, \\d+ s skipped\\)$`, 'm'));
  expect(out).toMatch(/^9 of 9 paths passed$/m);
  expect(code).toBe(0);
}, 120_000);

test('an app that reprovisions on every lost connection fails the dropped-socket path: FAIL, the report, exit 1', async () => {
  const cli = spawnCli(['test-failover', '--app', BROKEN, '--depth', '1', '--refusal-codes', '3', '--only', 'DROP']);
  const { code } = await cli.exited;
  const out = cli.stdout();
  expect(out).toMatch(/^FAIL DROP /m);
  expect(out).toMatch(/^--- DROP \(registration path-\d+-/m);
  expect(out).toMatch(/failure: DROP, step 1 \(DROP\): states Connected → BackingOff → Reprovisioning → Connecting → Connected, expected/);
  expect(out).toMatch(/last log lines:/);
  expect(out).not.toMatch(/SharedAccessSignature sr=|sig=[A-Za-z0-9%]/);
  expect(out).toMatch(/^0 of 1 paths passed; failed: DROP$/m);
  expect(code).toBe(1);
}, 60_000);

test('an app whose factory never returns: the path fails after --step-timeout, the run ends, exit 1', async () => {
  const hanging = join(__dirname, 'fixtures', 'hanging-factory-device.ts');
  const started = Date.now();
  const cli = spawnCli(['test-failover', '--app', hanging, '--depth', '1', '--refusal-codes', '3', '--only', 'DROP', '--step-timeout', '1']);
  const { code } = await cli.exited;
  const out = cli.stdout();
  expect(out).toMatch(/^FAIL DROP \(\d+\.\d s\)$/m);
  expect(out).toMatch(/failure: DROP: timed out after 1000 ms waiting for the device factory to return a device$/m);
  expect(out).toMatch(/^0 of 1 paths passed; failed: DROP$/m);
  expect(code).toBe(1);
  expect(Date.now() - started).toBeLessThan(30_000);
}, 60_000);

test('flag and module mistakes are one line naming the flag, exit 2', async () => {
  const run = async (args: string[], dryRun = true) => {
    const stderr = new PassThrough();
    let text = '';
    stderr.on('data', (chunk: Buffer) => (text += chunk.toString()));
    const code = await runCli(['test-failover', ...args], { stdout: new PassThrough() as unknown as NodeJS.WriteStream, stderr, env: {}, cwd: ROOT, dryRun });
    return { code, line: text.split('\n')[0] };
  };
  expect(await run([])).toEqual({ code: 2, line: 'hubstate: --app: expected the path of your device module (e.g. ./dist/my-device.js)' });
  expect(await run(['--app', 'no/such/module.js'])).toEqual({ code: 2, line: 'hubstate: --app: no/such/module.js is not a file' });
  expect(await run(['--app', EXAMPLE, '--depth', '5'])).toEqual({ code: 2, line: "hubstate: --depth: expected a whole number from 1 to 4, got '5'" });
  expect(await run(['--app', EXAMPLE, '--refusal-codes', '4'])).toEqual({ code: 2, line: "hubstate: --refusal-codes: expected 3, 5 or 3,5, got '4'" });
  expect(await run(['--app', EXAMPLE, '--clock', 'fast'])).toEqual({ code: 2, line: "hubstate: --clock: expected real or simulated, got 'fast'" });
  expect(await run(['--app', EXAMPLE], true)).toEqual({ code: 0, line: '' });
  // a module without a factory is refused before any cloud starts
  const noFactory = join(__dirname, 'spawn.ts');
  expect(await run(['--app', noFactory], false)).toEqual({ code: 2, line: `hubstate: --app: ${noFactory} exports neither createFailoverDevice(connection) nor a default function` });
  expect(await run(['--app', EXAMPLE, '--only', 'NO_SUCH_FAULT'], false)).toEqual({ code: 2, line: "hubstate: --only: no path's name contains 'NO_SUCH_FAULT'" });
});
