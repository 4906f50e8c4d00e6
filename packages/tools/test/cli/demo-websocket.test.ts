/**
 * `hubstate demo --transport mqtt-ws --proxy …` (issue 14, "done when"): the scripted disaster
 * (manual failover, failback, hub crash, DPS throttling) over MQTT over WebSockets through an HTTP
 * CONNECT proxy, with nothing lost; the proxy counted the tunnels, so the traffic went through it.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { runDemo } from '../../src/cli/demo';
import { startConnectProxy } from '../../../../test/support/connect-proxy';

jest.setTimeout(90_000);

test('the 20 s scripted disaster over WebSockets through a proxy: nothing lost, every connection tunnelled', async () => {
  const proxy = await startConnectProxy();
  const out = Object.assign(new PassThrough(), { isTTY: false });
  const output: string[] = [];
  out.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  try {
    const summary = await runDemo({
      durationSeconds: 20,
      forever: false,
      devices: 1,
      intervalMs: 100,
      logFile: join(mkdtempSync(join(tmpdir(), 'hubstate-demo-ws-')), 'demo.log'),
      out,
      transport: 'mqtt-ws',
      proxy: proxy.url,
    });
    expect(summary.sent).toBeGreaterThan(50);
    expect(summary.lost).toBe(0);
    expect(summary.kept).toBe(0);
    // The device reported on itself to the cloud: the scripted failover is among its hub changes.
    expect(summary.reportedByDevice).toMatchObject({ connects: expect.any(Number), hubChanges: expect.any(Number) });
    expect(summary.reportedByDevice!['hubChanges']).toBeGreaterThanOrEqual(1);
    expect(output.join('')).toContain(`transport: mqtt-ws through the proxy ${proxy.url}`);
    // DPS, both hubs (failover and failback) and the status lookups: several tunnels, to three endpoints at least.
    expect(proxy.tunnels().size).toBeGreaterThanOrEqual(3);
    expect(proxy.tunnelCount()).toBeGreaterThanOrEqual(4);
  } finally {
    await proxy.close();
  }
});
