/**
 * `hubstate demo --ui`: a local page (node:http, 127.0.0.1) with the statechart picture
 * generated from the machine (visualizations/device.svg), the active state lit, live counters,
 * and buttons that inject the local cloud's faults. Live updates are Server-Sent Events:
 * `state` (every transition of the device, as its `state` event) and `stats` (twice a second).
 * Works offline: no framework, no CDN, nothing but this page.
 */
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { StateChange } from 'hubstate';
import { localHttpListener } from 'hubstate-cloud';
import { deviceSvgPath } from './paths';

export interface UiStats {
  state: string;
  hub: string;
  sent: number;
  delivered: number;
  queued: number;
  lastErrorClass: string | null;
  /** Remaining wait while BackingOff, ms. */
  nextRetryMs: number | null;
  devices: number;
}

export interface UiFault {
  name: string;
  label: string;
  /** Injects the fault; resolves with a one-line description of what was done. */
  run(): Promise<string>;
}

export interface UiBackend {
  title: string;
  stats(): UiStats;
  onState(listener: (change: StateChange) => void): () => void;
  faults: UiFault[];
}

export interface UiServer {
  url: string;
  close(): Promise<void>;
}

/** The SVG as inline markup: without the XML prolog and doctype. */
export function inlineSvg(svg: string): string {
  return svg.replace(/<\?xml[^>]*\?>/, '').replace(/<!DOCTYPE[^>]*>/i, '').replace(/<!--[^]*?-->/g, '').trim();
}

const escapeHtml = (text: string) =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

function page(title: string, svg: string, faults: UiFault[]): string {
  const buttons = faults
    .map((f) => `<button type="button" id="fault-${escapeHtml(f.name)}" data-fault="${escapeHtml(f.name)}">${escapeHtml(f.label)}</button>`)
    .join('\n      ');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 0; color: #222; }
  header { padding: 10px 16px; background: #1f2933; color: #fff; display: flex; gap: 24px; align-items: baseline; flex-wrap: wrap; }
  header h1 { font-size: 16px; margin: 0; }
  #state { font-weight: bold; color: #ffd54f; }
  #counters { display: flex; gap: 18px; padding: 8px 16px; background: #f3f4f6; flex-wrap: wrap; }
  #counters b { font-variant-numeric: tabular-nums; }
  #faults { padding: 8px 16px; display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
  #faults button { padding: 6px 12px; cursor: pointer; }
  #fault-result { color: #555; }
  main { display: flex; gap: 16px; padding: 8px 16px; align-items: flex-start; }
  #chart { flex: 1; min-width: 0; }
  #chart svg { width: 100%; height: auto; }
  #chart g.node.active path, #chart g.node.active polygon, #chart g.node.active ellipse { fill: #ffd54f; stroke: #e65100; stroke-width: 3px; }
  #chart g.node.active text { font-weight: bold; }
  aside { width: 300px; }
  #history { list-style: none; padding: 0; margin: 0; font: 12px ui-monospace, monospace; max-height: 70vh; overflow: auto; }
  #history li { padding: 2px 0; border-bottom: 1px solid #eee; }
  .disconnected { color: #b00020; }
</style></head>
<body>
  <header><h1>${escapeHtml(title)}</h1><span>state <span id="state">…</span></span><span>hub <b id="hub">-</b></span><span id="link"></span></header>
  <section id="counters">
    <span>sent <b id="sent">0</b></span><span>delivered <b id="delivered">0</b></span><span>queued <b id="queued">0</b></span>
    <span>last error <b id="last-error">-</b></span><span>next retry <b id="next-retry">-</b></span><span>devices <b id="devices">-</b></span>
  </section>
  <section id="faults">faults (local cloud):
      ${buttons}
      <span id="fault-result"></span>
  </section>
  <main>
    <div id="chart">${svg}</div>
    <aside><h3>transitions (first device)</h3><ol id="history"></ol></aside>
  </main>
<script>
  const nodes = new Map();
  for (const g of document.querySelectorAll('#chart g.node')) {
    const title = g.querySelector('title');
    if (title) nodes.set(title.textContent.trim(), g);
  }
  function light(name) {
    for (const [state, g] of nodes) g.classList.toggle('active', state === name);
    document.getElementById('state').textContent = name;
    document.body.dataset.state = name;
  }
  const set = (id, value) => { document.getElementById(id).textContent = value; };
  const source = new EventSource('/events');
  source.addEventListener('open', () => set('link', ''));
  source.addEventListener('error', () => { const el = document.getElementById('link'); el.textContent = 'disconnected from the demo'; el.className = 'disconnected'; });
  source.addEventListener('state', (e) => {
    const change = JSON.parse(e.data);
    light(change.value);
    if (change.event === 'sync') return; // the current state, sent when the page connects
    const li = document.createElement('li');
    li.textContent = new Date().toLocaleTimeString() + '  ' + change.previous + ' → ' + change.value +
      (change.errorClass ? ' (' + change.errorClass + ')' : '') + (change.delayMs !== undefined ? ' ' + Math.round(change.delayMs) + ' ms' : '');
    document.getElementById('history').prepend(li);
  });
  source.addEventListener('stats', (e) => {
    const s = JSON.parse(e.data);
    if (document.body.dataset.state !== s.state) light(s.state);
    set('hub', s.hub); set('sent', s.sent); set('delivered', s.delivered); set('queued', s.queued);
    set('last-error', s.lastErrorClass || '-'); set('devices', s.devices);
    set('next-retry', s.nextRetryMs === null ? '-' : (s.nextRetryMs / 1000).toFixed(1) + ' s');
  });
  for (const button of document.querySelectorAll('button[data-fault]')) {
    button.addEventListener('click', async () => {
      set('fault-result', button.dataset.fault + '…');
      try {
        const res = await fetch('/faults/' + button.dataset.fault, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
        const body = await res.json();
        set('fault-result', res.ok ? body.done : 'failed: ' + (body.message || body.error));
      } catch (err) { set('fault-result', 'failed: ' + err); }
    });
  }
</script>
</body></html>`;
}

/** The page posts `{}` to a fault button's route: nothing larger is needed. */
export const MAX_UI_BODY_BYTES = 1024;

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

export async function startUi(backend: UiBackend, options: { port?: number; svg?: string } = {}): Promise<UiServer> {
  const svg = inlineSvg(options.svg ?? readFileSync(deviceSvgPath(), 'utf8'));
  const html = page(backend.title, svg, backend.faults);
  const clients = new Set<http.ServerResponse>();

  const route = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (req.method === 'GET' && url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(html);
      return;
    }
    if (req.method === 'GET' && url.pathname === '/stats') return sendJson(res, 200, backend.stats());
    if (req.method === 'GET' && url.pathname === '/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
      const stats = backend.stats();
      res.write(`event: state\ndata: ${JSON.stringify({ value: stats.state, previous: stats.state, event: 'sync' })}\n\n`);
      res.write(`event: stats\ndata: ${JSON.stringify(stats)}\n\n`);
      clients.add(res);
      req.on('close', () => clients.delete(res));
      return;
    }
    const fault = /^\/faults\/([a-z-]+)$/.exec(url.pathname);
    if (req.method === 'POST' && fault) {
      const entry = backend.faults.find((f) => f.name === fault[1]);
      if (!entry) return sendJson(res, 404, { error: 'NOT_FOUND', message: `unknown fault '${fault[1]}'` });
      entry.run().then(
        (done) => sendJson(res, 200, { done }),
        (error: unknown) => sendJson(res, 500, { error: 'FAULT_FAILED', message: (error as Error).message }),
      );
      return;
    }
    sendJson(res, 404, { error: 'NOT_FOUND', message: `no route ${req.method} ${url.pathname}` });
  };

  // Host, Origin, JSON bodies: the local-HTTP checks (`../local-http.ts`) before any route.
  const server = http.createServer(localHttpListener({ maxBodyBytes: MAX_UI_BODY_BYTES }, route));

  const broadcast = (event: string, data: unknown) => {
    const frame = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const client of clients) client.write(frame);
  };
  const unsubscribe = backend.onState((change) => broadcast('state', change));
  const ticker = setInterval(() => broadcast('stats', backend.stats()), 500);

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}/`,
    async close() {
      clearInterval(ticker);
      unsubscribe();
      for (const client of clients) client.end();
      clients.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
