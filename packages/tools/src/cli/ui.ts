/**
 * `hubstate demo --ui`: a local page (node:http, 127.0.0.1) with the statechart picture
 * generated from the machine (visualizations/device.svg), the active state lit, live counters,
 * buttons that inject the local cloud's faults, a timeline (one band per device, faults marked)
 * and a chart of outbox depth and delivery rate. Live updates are Server-Sent Events: `history`
 * (sent once on connect: what the server kept, see the *_HISTORY bounds), `transition` (every
 * device's), `fault`, `sample` and `stats` (twice a second).
 * Works offline: no framework, no CDN, inline SVG drawn by the page's own script.
 */
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { StateChange } from 'hubstate';
import { localHttpListener } from 'hubstate-cloud';
import { deviceSvgPath } from './paths';
import { RingBuffer } from './ring-buffer';

/** Transitions kept (all devices together) and replayed to a page when it connects. */
export const TRANSITION_HISTORY = 200;
/** How often the outbox depth and the delivery rate are sampled (and `stats` sent). */
export const SAMPLE_INTERVAL_MS = 500;
/** Samples kept: the timeline's window at SAMPLE_INTERVAL_MS. */
export const SAMPLE_HISTORY = 240;
/** The span the timeline and the chart show: SAMPLE_HISTORY samples (2 minutes). */
export const TIMELINE_WINDOW_MS = SAMPLE_HISTORY * SAMPLE_INTERVAL_MS;
/** Fault marks kept. */
export const FAULT_HISTORY = 50;

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
  /** The first device's transitions (the lit statechart). */
  onState(listener: (change: StateChange) => void): () => void;
  faults: UiFault[];
  /**
   * The fleet, for the timeline's bands, first device first. Absent: one band, the first
   * device's (fed by onState), named {@link FIRST_DEVICE}.
   */
  fleet?: {
    devices(): Array<{ name: string; state: string }>;
    onState(listener: (device: string, change: StateChange) => void): () => void;
  };
}

/** The first device's name when the backend has no `fleet`. */
export const FIRST_DEVICE = 'device';

/** One transition as the page receives it (server clock, ms since the epoch). */
export interface TransitionRecord {
  at: number;
  device: string;
  previous: string;
  value: string;
  event: string;
  errorClass?: string;
  delayMs?: number;
}

export interface Sample {
  at: number;
  /** Messages waiting in the outboxes (all devices). */
  queued: number;
  /** Acknowledged messages per second since the previous sample (all devices). */
  deliveredPerSec: number;
}

export interface FaultMark {
  at: number;
  name: string;
  label: string;
}

/** What a page receives first: everything the bounded buffers hold. */
export interface UiHistory {
  now: number;
  /** When the server started recording: before it, the bands show nothing (not a guessed state). */
  since: number;
  windowMs: number;
  limits: { transitions: number; samples: number; faults: number };
  firstDevice: string;
  devices: Array<{ name: string; state: string }>;
  transitions: TransitionRecord[];
  samples: Sample[];
  faults: FaultMark[];
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

/** Band colours: green when delivering, warm while recovering, red when given up. */
const STATE_COLOURS: Record<string, string> = {
  Idle: '#cfd8dc',
  Provisioning: '#b39ddb',
  Reprovisioning: '#7e57c2',
  CheckingAssignment: '#ffb300',
  Connecting: '#64b5f6',
  Connected: '#43a047',
  BackingOff: '#ef6c00',
  Disconnecting: '#90a4ae',
  Stopped: '#546e7a',
  Failed: '#c62828',
};

function page(title: string, svg: string, faults: UiFault[]): string {
  const buttons = faults
    .map((f) => `<button type="button" id="fault-${escapeHtml(f.name)}" data-fault="${escapeHtml(f.name)}">${escapeHtml(f.label)}</button>`)
    .join('\n      ');
  const legend = Object.entries(STATE_COLOURS)
    .map(([state, colour]) => `<span><i style="background:${colour}"></i>${state}</span>`)
    .join('');
  const limits = { transitions: TRANSITION_HISTORY, samples: SAMPLE_HISTORY, faults: FAULT_HISTORY, windowMs: TIMELINE_WINDOW_MS };
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
  h3 { font-size: 13px; margin: 6px 0; color: #444; }
  h3 small { font-weight: normal; color: #777; }
  /* The statechart takes the full width: it is wide (one rank per step of recovery). */
  #chart { padding: 0 16px; }
  #chart svg { width: 100%; height: auto; max-height: 75vh; }
  #chart g.node.active path, #chart g.node.active polygon, #chart g.node.active ellipse { fill: #ffd54f; stroke: #e65100; stroke-width: 3px; }
  #chart g.node.active text { font-weight: bold; }
  #over-time { display: flex; gap: 16px; padding: 8px 16px; align-items: flex-start; }
  #over-time > div { flex: 1; min-width: 0; }
  #timeline, #throughput { width: 100%; display: block; font: 11px system-ui, sans-serif; }
  #legend { display: flex; gap: 10px; flex-wrap: wrap; font-size: 11px; color: #444; }
  #legend i { display: inline-block; width: 10px; height: 10px; margin-right: 3px; vertical-align: -1px; }
  .fault-mark { stroke: #d50000; stroke-width: 2; }
  aside { width: 360px; }
  #history { list-style: none; padding: 0; margin: 0; font: 12px ui-monospace, monospace; max-height: 40vh; overflow: auto; }
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
  <div id="chart">${svg}</div>
  <section id="over-time">
    <div>
      <h3>timeline <small>(last ${TIMELINE_WINDOW_MS / 1000} s; red lines: faults)</small></h3>
      <svg id="timeline" height="40"></svg>
      <div id="legend">${legend}</div>
      <h3>outbox depth <small>(messages queued, all devices)</small> and delivery rate <small>(acknowledged per second)</small></h3>
      <svg id="throughput" height="150"></svg>
    </div>
    <aside><h3>transitions <small>(first device; the server keeps the last ${TRANSITION_HISTORY} of the fleet and replays them on connect)</small></h3><ol id="history"></ol></aside>
  </section>
<script>
  const LIMITS = ${JSON.stringify(limits)};
  const COLOURS = ${JSON.stringify(STATE_COLOURS)};
  const SVG_NS = 'http://www.w3.org/2000/svg';
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

  // What the server sent, trimmed to the same bounds as its ring buffers (the page may stay open for days).
  const seen = { firstDevice: 'device', since: 0, devices: [], transitions: [], samples: [], faults: [], clockOffset: 0 };
  const keepLast = (list, n) => { if (list.length > n) list.splice(0, list.length - n); };
  const serverNow = () => Date.now() + seen.clockOffset;

  function listTransition(t) {
    const li = document.createElement('li');
    li.textContent = new Date(t.at).toLocaleTimeString() + '  ' + t.previous + ' → ' + t.value +
      (t.errorClass ? ' (' + t.errorClass + ')' : '') + (t.delayMs !== undefined ? ' ' + Math.round(t.delayMs) + ' ms' : '');
    const list = document.getElementById('history');
    list.prepend(li);
    while (list.children.length > LIMITS.transitions) list.lastElementChild.remove();
  }

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const LABEL_WIDTH = 130, BAND_HEIGHT = 18, BAND_GAP = 4, AXIS_HEIGHT = 16;
  function timeScale(svg) {
    const width = Math.max(svg.clientWidth || svg.parentNode.clientWidth || 600, LABEL_WIDTH + 100);
    const end = serverNow(), start = end - LIMITS.windowMs;
    return { width, start, end, x: (at) => LABEL_WIDTH + ((Math.max(at, start) - start) / LIMITS.windowMs) * (width - LABEL_WIDTH - 8) };
  }
  function drawAxis(svg, scale, y) {
    for (let s = 0; s <= LIMITS.windowMs / 1000; s += 30) {
      const x = scale.x(scale.end - s * 1000);
      // 'now' ends at the right edge, where a centred label would be cut off.
      svg.append(el('text', { x, y: y + 12, 'text-anchor': s === 0 ? 'end' : 'middle', fill: '#777' }, s === 0 ? 'now' : '-' + s + ' s'));
    }
  }
  function drawFaults(svg, scale, top, bottom) {
    for (const f of seen.faults) {
      if (f.at < scale.start) continue;
      const x = scale.x(f.at);
      const line = el('line', { class: 'fault-mark', x1: x, x2: x, y1: top, y2: bottom, 'data-fault': f.name });
      line.append(el('title', {}, new Date(f.at).toLocaleTimeString() + ' ' + f.label));
      svg.append(line);
    }
  }

  function drawTimeline() {
    const svg = document.getElementById('timeline');
    const scale = timeScale(svg);
    const height = seen.devices.length * (BAND_HEIGHT + BAND_GAP) + AXIS_HEIGHT;
    svg.replaceChildren();
    svg.setAttribute('height', height);
    seen.devices.forEach((device, i) => {
      const y = i * (BAND_HEIGHT + BAND_GAP);
      const mine = seen.transitions.filter((t) => t.device === device.name);
      // The state at the band's start: the last transition before the window, else the first one's 'previous'.
      const before = mine.filter((t) => t.at <= scale.start).pop();
      const inWindow = mine.filter((t) => t.at > scale.start);
      let state = before ? before.value : inWindow.length ? inWindow[0].previous : device.state;
      let from = Math.max(scale.start, seen.since);
      const band = el('g', { class: 'band', 'data-device': device.name, 'data-state': device.state });
      band.append(el('text', { x: 0, y: y + 13 }, device.name));
      const segment = (state, from, to) => {
        const x = scale.x(from);
        // At least 2 px: a CheckingAssignment of 50 ms must still show.
        const rect = el('rect', { class: 'segment', 'data-state': state, x, y, width: Math.max(2, scale.x(to) - x), height: BAND_HEIGHT, fill: COLOURS[state] || '#999' });
        rect.append(el('title', {}, state + ' ' + new Date(from).toLocaleTimeString() + '–' + new Date(to).toLocaleTimeString()));
        band.append(rect);
      };
      for (const t of inWindow) { segment(state, from, t.at); state = t.value; from = t.at; }
      segment(state, from, scale.end);
      svg.append(band);
    });
    drawFaults(svg, scale, 0, height - AXIS_HEIGHT);
    drawAxis(svg, scale, height - AXIS_HEIGHT);
  }

  function drawThroughput() {
    const svg = document.getElementById('throughput');
    const scale = timeScale(svg);
    const plotHeight = 55, gap = 12;
    svg.replaceChildren();
    const visible = seen.samples.filter((s) => s.at >= scale.start);
    const series = [
      { id: 'queued-line', key: 'queued', label: 'queued', colour: '#ef6c00', top: 0 },
      { id: 'rate-line', key: 'deliveredPerSec', label: 'delivered/s', colour: '#1e88e5', top: plotHeight + gap },
    ];
    for (const s of series) {
      const max = Math.max(1, ...visible.map((v) => v[s.key]));
      const y = (value) => s.top + plotHeight - (value / max) * plotHeight;
      svg.append(el('rect', { x: LABEL_WIDTH, y: s.top, width: scale.width - LABEL_WIDTH - 8, height: plotHeight, fill: '#fafafa', stroke: '#e0e0e0' }));
      svg.append(el('text', { x: 0, y: s.top + 13, fill: s.colour }, s.label));
      svg.append(el('text', { x: 0, y: s.top + 28, fill: '#777' }, 'max ' + (Number.isInteger(max) ? max : max.toFixed(1))));
      const last = visible[visible.length - 1];
      svg.append(el('text', { x: 0, y: s.top + 43, fill: '#777' }, 'now ' + (last ? +last[s.key].toFixed(1) : '-')));
      const points = visible.map((v) => scale.x(v.at).toFixed(1) + ',' + y(v[s.key]).toFixed(1)).join(' ');
      svg.append(el('polyline', { id: s.id, points, fill: 'none', stroke: s.colour, 'stroke-width': 2,
        'data-samples': visible.length, 'data-max': max, 'data-last': last ? last[s.key] : '', 'data-last-at': last ? last.at : '' }));
    }
    drawFaults(svg, scale, 0, 2 * plotHeight + gap);
    drawAxis(svg, scale, 2 * plotHeight + gap);
  }
  const redraw = () => { drawTimeline(); drawThroughput(); };
  window.addEventListener('resize', redraw);

  const source = new EventSource('/events');
  source.addEventListener('open', () => set('link', ''));
  source.addEventListener('error', () => { const el = document.getElementById('link'); el.textContent = 'disconnected from the demo'; el.className = 'disconnected'; });
  // Sent first on every (re)connection: it replaces what the page had, so a reconnect never doubles the list.
  source.addEventListener('history', (e) => {
    const h = JSON.parse(e.data);
    Object.assign(seen, { firstDevice: h.firstDevice, since: h.since, devices: h.devices, transitions: h.transitions, samples: h.samples, faults: h.faults, clockOffset: h.now - Date.now() });
    document.getElementById('history').replaceChildren();
    for (const t of h.transitions) if (t.device === h.firstDevice) listTransition(t);
    const first = h.devices.find((d) => d.name === h.firstDevice);
    if (first) light(first.state);
    redraw();
  });
  source.addEventListener('transition', (e) => {
    const t = JSON.parse(e.data);
    seen.transitions.push(t); keepLast(seen.transitions, LIMITS.transitions);
    const device = seen.devices.find((d) => d.name === t.device);
    if (device) device.state = t.value; else seen.devices.push({ name: t.device, state: t.value });
    if (t.device === seen.firstDevice) { light(t.value); listTransition(t); }
    drawTimeline();
  });
  source.addEventListener('fault', (e) => {
    seen.faults.push(JSON.parse(e.data)); keepLast(seen.faults, LIMITS.faults);
    redraw();
  });
  source.addEventListener('sample', (e) => {
    seen.samples.push(JSON.parse(e.data)); keepLast(seen.samples, LIMITS.samples);
    redraw(); // also slides the timeline's window
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

  // What a page gets on connect; each buffer is bounded (the demo with --ui runs until Ctrl-C).
  const transitions = new RingBuffer<TransitionRecord>(TRANSITION_HISTORY);
  const samples = new RingBuffer<Sample>(SAMPLE_HISTORY);
  const faultMarks = new RingBuffer<FaultMark>(FAULT_HISTORY);
  const firstDevice = backend.fleet?.devices()[0]?.name ?? FIRST_DEVICE;
  const devices = (): Array<{ name: string; state: string }> =>
    backend.fleet?.devices() ?? [{ name: FIRST_DEVICE, state: backend.stats().state }];
  const since = Date.now();
  const history = (): UiHistory => ({
    now: Date.now(),
    since,
    windowMs: TIMELINE_WINDOW_MS,
    limits: { transitions: TRANSITION_HISTORY, samples: SAMPLE_HISTORY, faults: FAULT_HISTORY },
    firstDevice,
    devices: devices(),
    transitions: transitions.toArray(),
    samples: samples.toArray(),
    faults: faultMarks.toArray(),
  });

  const broadcast = (event: string, data: unknown) => {
    const frame = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const client of clients) client.write(frame);
  };

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
      res.write(`event: history\ndata: ${JSON.stringify(history())}\n\n`);
      res.write(`event: stats\ndata: ${JSON.stringify(backend.stats())}\n\n`);
      clients.add(res);
      req.on('close', () => clients.delete(res));
      return;
    }
    const fault = /^\/faults\/([a-z-]+)$/.exec(url.pathname);
    if (req.method === 'POST' && fault) {
      const entry = backend.faults.find((f) => f.name === fault[1]);
      if (!entry) return sendJson(res, 404, { error: 'NOT_FOUND', message: `unknown fault '${fault[1]}'` });
      // Marked when asked for: the devices react from that moment, not when run() resolves.
      const mark: FaultMark = { at: Date.now(), name: entry.name, label: entry.label };
      entry.run().then(
        (done) => {
          faultMarks.push(mark);
          broadcast('fault', mark);
          sendJson(res, 200, { done });
        },
        (error: unknown) => sendJson(res, 500, { error: 'FAULT_FAILED', message: (error as Error).message }),
      );
      return;
    }
    sendJson(res, 404, { error: 'NOT_FOUND', message: `no route ${req.method} ${url.pathname}` });
  };

  // Host, Origin, JSON bodies: the local-HTTP checks (`../local-http.ts`) before any route.
  const server = http.createServer(localHttpListener({ maxBodyBytes: MAX_UI_BODY_BYTES }, route));

  const record = (device: string, change: StateChange) => {
    const entry: TransitionRecord = { at: Date.now(), device, previous: change.previous, value: change.value, event: change.event };
    if (change.errorClass !== undefined) entry.errorClass = change.errorClass;
    if (change.delayMs !== undefined) entry.delayMs = change.delayMs;
    transitions.push(entry);
    broadcast('transition', entry);
  };
  const unsubscribe = backend.fleet
    ? backend.fleet.onState(record)
    : backend.onState((change) => record(FIRST_DEVICE, change));

  // Sampling rides on the stats tick: the counters are computed anyway, the rate is their difference.
  let previous: { at: number; delivered: number } | undefined;
  const ticker = setInterval(() => {
    const stats = backend.stats();
    const at = Date.now();
    const deliveredPerSec = previous && at > previous.at ? (Math.max(0, stats.delivered - previous.delivered) * 1000) / (at - previous.at) : 0;
    previous = { at, delivered: stats.delivered };
    const sample: Sample = { at, queued: stats.queued, deliveredPerSec: Math.round(deliveredPerSec * 10) / 10 };
    samples.push(sample);
    broadcast('sample', sample);
    broadcast('stats', stats);
  }, SAMPLE_INTERVAL_MS);

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
