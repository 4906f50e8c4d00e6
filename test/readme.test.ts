/**
 * The README stays true: its Mermaid diagram is the generated one, its "local cloud in your own
 * tests" example is this file's test (and runs), and its `hubstate run` table names every flag.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createDevice } from '../src';
import { FAST_DPS_POLL_SEC, startLocalCloud, waitFor } from 'hubstate-cloud';
import { flagOf, RUN_FIELDS } from 'hubstate-tools/cli/run-config';

jest.setTimeout(60_000);

const root = join(__dirname, '..');
const readme = readFileSync(join(root, 'README.md'), 'utf8');

function section(title: string): string {
  const start = readme.indexOf(`\n## ${title}\n`);
  expect(start).toBeGreaterThanOrEqual(0);
  const end = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
}

describe('README', () => {
  test('embeds visualizations/device.mmd as a mermaid block (update it after `npm run viz`)', () => {
    const mmd = readFileSync(join(root, 'visualizations', 'device.mmd'), 'utf8');
    const block = /```mermaid\n([^]*?)```/.exec(readme)?.[1];
    expect(block?.trimEnd()).toBe(mmd.trimEnd());
  });

  test('the `hubstate run` table names every flag', () => {
    const run = readme.slice(readme.indexOf('### `hubstate run`'));
    for (const field of RUN_FIELDS) expect({ flag: flagOf(field.key), found: run.includes(`\`${flagOf(field.key)}`) || run.includes(`${flagOf(field.key)}\``) }).toEqual({ flag: flagOf(field.key), found: true });
  });

  test('the local-cloud example is the test below, verbatim', () => {
    const example = /```ts\n([^]*?)```/.exec(section('Using the local cloud in your own tests'))?.[1] ?? '';
    const fromReadme = example.slice(example.indexOf('test('));
    const self = readFileSync(__filename, 'utf8');
    const begin = self.lastIndexOf('// README example: begin\n') + '// README example: begin\n'.length;
    const fromHere = self.slice(begin, self.lastIndexOf('// README example: end')).replace(/^ {2}/gm, '');
    expect(fromReadme.trim()).toBe(fromHere.trim());
  });
});

describe('README example', () => {
  // README example: begin
  test('telemetry survives a manual failover', async () => {
    const cloud = await startLocalCloud({ hubs: 2, dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } }); // Azure: 3 s
    const device = createDevice({
      idScope: cloud.idScope, registrationId: 'dev-1', deviceKey: cloud.deviceKey('dev-1'),
      provisioningHost: cloud.provisioningHost, ca: cloud.ca,
    });
    device.start();
    await waitFor(() => device.state() === 'Connected');
    const before = device.assignment()!.hubHost;
    cloud.manualFailover('dev-1', { ttlMs: 60_000 });          // = az iot central device manual-failover
    const { messageId } = await device.sendTelemetry({ temp: 21.5 }); // accepted in any state
    await waitFor(() => cloud.deliveredIds('dev-1').has(messageId), { timeoutMs: 15_000 });
    await waitFor(() => device.state() === 'Connected' && device.assignment()!.hubHost !== before, { timeoutMs: 15_000 });
    await device.stop();
    await cloud.stop();                                         // no socket, timer or handle left
  });
  // README example: end
});
