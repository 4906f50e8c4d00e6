/**
 * SIGINT / SIGTERM in `hubstate run` and `hubstate demo`, on real child processes (the CLI run
 * from its sources): Disconnecting → Stopped within a bounded time, exit code, and the outbox
 * keeping what was not delivered (sent on the next run). Also `--inspect`'s local stream.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { openSqliteOutbox } from 'hubstate/internal';
import { ROOT, spawnCli, TS_REGISTER } from './spawn';

jest.setTimeout(120_000);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
async function until(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}
const logMessages = (text: string) =>
  text
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown> & { msg: string });

describe('hubstate run: SIGTERM', () => {
  let cloud: LocalCloud;
  beforeAll(async () => {
    cloud = await startLocalCloud({ hubs: 1, dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  });
  afterAll(async () => {
    await cloud?.stop();
  });

  test('Disconnecting → Stopped within 10 s, exit 0; undelivered telemetry stays in the outbox and goes out on the next run', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hubstate-cli-run-'));
    const caFile = join(dir, 'ca.pem');
    writeFileSync(caFile, cloud.ca);
    const registrationId = 'cli-run-1';
    const dataDir = join(dir, 'data');
    const env = {
      HUBSTATE_ID_SCOPE: cloud.idScope,
      HUBSTATE_REGISTRATION_ID: registrationId,
      HUBSTATE_DEVICE_KEY: cloud.deviceKey(registrationId),
      HUBSTATE_PROVISIONING_HOST: cloud.provisioningHost,
    };
    const args = ['run', '--ca-file', caFile, '--data-dir', dataDir, '--interval-ms', '100', '--keepalive-seconds', '5'];

    const first = spawnCli(args, { env });
    await first.waitForOutput(/"msg":"Connecting -> Connected"/, 30_000);
    await until(() => cloud.telemetry({ deviceId: registrationId }).length >= 3, 10_000, 'telemetry at the hub');
    // From now on the hub neither stores nor acknowledges: what is captured stays queued.
    cloud.hub('hub-0').withholdPubacks(true, { store: false });
    await sleep(1000);
    const signalledAt = Date.now();
    first.child.kill('SIGTERM');
    const exit = await first.exited;
    const stopMs = exit.at - signalledAt;

    expect({ code: exit.code, stderr: first.stderr() }).toEqual({ code: 0, stderr: expect.stringContaining('SIGTERM: stopping') });
    expect(stopMs).toBeLessThan(10_000);
    const messages = logMessages(first.stdout()).map((m) => m.msg);
    const disconnecting = messages.indexOf('Connected -> Disconnecting');
    expect(disconnecting).toBeGreaterThanOrEqual(0);
    expect(messages.indexOf('Disconnecting -> Stopped')).toBeGreaterThan(disconnecting);
    const stopped = logMessages(first.stdout()).find((m) => String(m.msg).startsWith('hubstate run: stopped'))!;
    expect(stopped.kept).toBeGreaterThan(0);
    // The key never reaches a log line.
    expect(first.stdout() + first.stderr()).not.toContain(env.HUBSTATE_DEVICE_KEY);

    const outbox = openSqliteOutbox(dataDir, registrationId);
    const keptIds = outbox.after(0, 10_000).map((m) => m.messageId);
    outbox.close();
    expect(keptIds.length).toBe(stopped.kept);
    const deliveredBefore = new Set(cloud.deliveredIds(registrationId));
    for (const id of keptIds) expect(deliveredBefore.has(id)).toBe(false);

    // Next run (cached hub, no DPS): the kept messages are delivered.
    cloud.hub('hub-0').withholdPubacks(false);
    const second = spawnCli([...args, '--duration', '4'], { env });
    const secondExit = await second.exited;
    expect({ code: secondExit.code, stderr: second.stderr() }).toEqual({ code: 0, stderr: expect.any(String) });
    const delivered = new Set(cloud.deliveredIds(registrationId));
    expect(keptIds.filter((id) => !delivered.has(id))).toEqual([]);
    process.stdout.write(`run: SIGTERM → exit in ${stopMs} ms; ${keptIds.length} message(s) kept in the outbox and delivered on the next run\n`);
  });
});

describe('hubstate demo: SIGINT, with --inspect', () => {
  test('the device goes Disconnecting → Stopped, the summary is printed, exit 0; the inspector stream carries the actor', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hubstate-cli-demo-'));
    const demo = spawnCli(['demo', '--duration', '120', '--interval', '100', '--inspect', '--log', join(dir, 'demo.log')]);
    const [, url] = await demo.waitForOutput(/inspector: open (http:\/\/127\.0\.0\.1:\d+\/)/, 30_000);

    const page = await fetch(url).then((res) => res.text());
    expect(page).toContain('https://stately.ai/inspect');
    const events: Array<Record<string, unknown>> = [];
    const stream = http.get(`${url}events`, (res) => {
      let buffer = '';
      res.on('data', (chunk: Buffer) => {
        buffer += chunk.toString();
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = frame.split('\n').find((l) => l.startsWith('data: '));
          if (data) events.push(JSON.parse(data.slice(6)) as Record<string, unknown>);
        }
      });
    });
    stream.on('error', () => undefined);

    await demo.waitForOutput(/Connecting -> Connected/, 30_000);
    await sleep(500);
    const signalledAt = Date.now();
    demo.child.kill('SIGINT');
    const exit = await demo.exited;
    stream.destroy();

    const out = demo.stdout();
    expect({ code: exit.code, tail: out.slice(-600) }).toEqual({ code: 0, tail: expect.stringContaining('nothing lost.') });
    expect(exit.at - signalledAt).toBeLessThan(10_000);
    // The transitions as the demo prints them: `[  1.2s] Connected -> Disconnecting`.
    const disconnecting = out.search(/\] \w+ -> Disconnecting\n/);
    expect(disconnecting).toBeGreaterThan(0);
    expect(out.indexOf('] Disconnecting -> Stopped')).toBeGreaterThan(disconnecting);
    expect(out).toMatch(/kept in the outbox\s+\d+/);

    expect(events.some((e) => e.type === '@xstate.actor' && e.name === 'device')).toBe(true);
    const values = events
      .filter((e) => e.type === '@xstate.snapshot')
      .map((e) => (e.snapshot as { value?: unknown } | undefined)?.value)
      // A leaf state's name, top level ('Connected') or nested ({ Active: 'Connected' }).
      .map((v) => (v !== null && typeof v === 'object' ? Object.values(v as Record<string, unknown>)[0] : v));
    expect(values).toContain('Connected');
    process.stdout.write(`demo: SIGINT → exit in ${exit.at - signalledAt} ms; ${events.length} inspection events streamed\n`);
  });
});

describe('the grace period', () => {
  const child = (script: string) =>
    spawn(process.execPath, ['-r', TS_REGISTER, '-e', script], { cwd: ROOT, stdio: 'pipe' });
  const hang = "require('./packages/tools/src/cli/shutdown').installShutdown({ graceMs: 700 }); setInterval(() => {}, 1000); console.log('ready');";
  const run = (script: string, signals: number[]) =>
    new Promise<{ code: number | null; ms: number; stderr: string }>((resolve) => {
      const proc = child(script);
      let stderr = '';
      proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      let startedAt = 0;
      proc.stdout.once('data', () => {
        startedAt = Date.now();
        for (const delay of signals) setTimeout(() => proc.kill('SIGTERM'), delay);
      });
      proc.on('exit', (code) => resolve({ code, ms: Date.now() - startedAt, stderr }));
    });

  test('a command that does not stop in time is exited anyway, with code 1', async () => {
    const result = await run(hang, [0]);
    expect(result.code).toBe(1);
    expect(result.ms).toBeGreaterThanOrEqual(650);
    expect(result.ms).toBeLessThan(5000);
    expect(result.stderr).toContain('exiting anyway');
  });

  test('a second signal exits at once (128 + SIGTERM)', async () => {
    const result = await run(hang, [0, 100]);
    expect(result.code).toBe(143);
    expect(result.ms).toBeLessThan(650);
  });
});
