/**
 * `hubstate fleet` against a DPS of your own (--id-scope, group key in HUBSTATE_GROUP_KEY): here a
 * local cloud this test owns stands in for IoT Central, so what the fleet did is read at the DPS.
 * Plus the mistakes: each is one line naming the flag, exit 2, no device started, no key echoed.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { spawnCli } from './spawn';

let cloud: LocalCloud;
let dir: string;
let caFile: string;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC, rateLimitPerSec: 20, retryAfterSec: 1 } });
  dir = mkdtempSync(join(tmpdir(), 'hubstate-fleet-cli-'));
  caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, cloud.ca);
});
afterAll(() => cloud.stop());

test('an external DPS: every device registers through it with the prefix, the fleet is Connected, the key never printed', async () => {
  const logFile = join(dir, 'fleet.log');
  const cli = spawnCli(
    ['fleet', '--devices', '16', '--dps-rate', '20', '--id-scope', cloud.idScope, '--provisioning-host', cloud.provisioningHost, '--ca-file', caFile, '--prefix', 'cli-fleet-', '--log', logFile],
    { env: { HUBSTATE_GROUP_KEY: cloud.groupKey } },
  );
  const { code } = await cli.exited;
  expect({ code, stderr: cli.stderr() }).toEqual({ code: 0, stderr: '' });
  expect(cli.stdout()).toContain(`DPS ${cloud.provisioningHost}, ID scope ${cloud.idScope}`);
  expect(cli.stdout()).toMatch(/all connected in [\d.]+ s — floor N\/R = 0\.8 s/);
  // The fleet's own devices, registered at this DPS, on its hubs.
  const registered = Array.from({ length: 16 }, (_, i) => cloud.dps.registration(`cli-fleet-${i}`)?.hubName);
  expect(registered.every((hub) => hub !== undefined && cloud.hubs.some((h) => h.name === hub))).toBe(true);
  expect(cloud.dps.registration('fleet-0')).toBeUndefined();
  for (const text of [cli.stdout(), readFileSync(logFile, 'utf8')]) {
    expect(text).not.toContain(cloud.groupKey);
    expect(text).not.toContain(cloud.deviceKey('cli-fleet-0'));
  }
}, 60_000);

test('--shard 1/4 of 8 devices: this process registers devices 1 and 5 only, with their unsharded ids', async () => {
  const logFile = join(dir, 'fleet-shard.log');
  const cli = spawnCli(
    ['fleet', '--devices', '8', '--shard', '1/4', '--dps-rate', '20', '--id-scope', cloud.idScope, '--provisioning-host', cloud.provisioningHost, '--ca-file', caFile, '--prefix', 'shard-', '--log', logFile],
    { env: { HUBSTATE_GROUP_KEY: cloud.groupKey } },
  );
  const { code } = await cli.exited;
  expect({ code, stderr: cli.stderr() }).toEqual({ code: 0, stderr: '' });
  expect(cli.stdout()).toContain('fleet: shard 1/4: 2 of 8 devices');
  // The floor is the whole fleet's: the shard's two devices are spread over it.
  expect(cli.stdout()).toMatch(/floor N\/R = 0\.4 s/);
  const registered = Array.from({ length: 8 }, (_, i) => cloud.dps.registration(`shard-${i}`) !== undefined);
  expect(registered).toEqual([false, true, false, false, false, true, false, false]);
}, 60_000);

test.each([
  [['--id-scope', 'not a scope!'], { HUBSTATE_GROUP_KEY: 'a2V5a2V5a2V5a2V5' }, /invalid option '--id-scope'/],
  [['--id-scope', '0ne00ABC123'], { HUBSTATE_GROUP_KEY: '' }, /invalid option 'HUBSTATE_GROUP_KEY': expected the enrollment group key/],
  [['--id-scope', '0ne00ABC123'], { HUBSTATE_GROUP_KEY: 'not base64 %%' }, /invalid option 'HUBSTATE_GROUP_KEY': expected a base64 symmetric key/],
  [['--id-scope', '0ne00ABC123', '--ca-file', '/nonexistent/ca.pem'], { HUBSTATE_GROUP_KEY: 'a2V5a2V5a2V5a2V5' }, /invalid option '--ca-file': expected a readable PEM file \(ENOENT/],
  [['--id-scope', '0ne00ABC123', '--provisioning-host', 'http://x'], { HUBSTATE_GROUP_KEY: 'a2V5a2V5a2V5a2V5' }, /invalid option '--provisioning-host'/],
  [['--id-scope', '0ne00ABC123', '--hubs', '3'], { HUBSTATE_GROUP_KEY: 'a2V5a2V5a2V5a2V5' }, /--hubs: only for the local cloud/],
  [['--prefix', 'x-'], {}, /--prefix: only with --id-scope/],
])('fleet %j → exit 2 naming the flag', async (args, env, message) => {
  const cli = spawnCli(['fleet', '--devices', '3', ...args], { env });
  const { code } = await cli.exited;
  expect(code).toBe(2);
  expect(cli.stderr()).toMatch(message);
  expect(cli.stderr()).not.toContain('a2V5a2V5a2V5a2V5');
  expect(cli.stdout()).toBe('');
}, 30_000);
