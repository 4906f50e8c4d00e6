/**
 * `--inspect`: streams the device actor to the Stately inspector (@statelyai/inspect).
 *
 * A small bridge on 127.0.0.1 serves a page that embeds the Stately inspector web app
 * (https://stately.ai/inspect, so that page needs a browser with internet access) and forwards
 * to it, with `postMessage`, the inspection events of this process, which it receives over
 * Server-Sent Events. Events are converted by @statelyai/inspect's own `createInspector`, and
 * every serialized event is scrubbed of the device's keys before it leaves the process.
 *
 * The page and its event stream pass the local-HTTP checks (hubstate-cloud's `localHttpListener`: Host, Origin, ...),
 * so no other web page can read the stream; the page posts the events to the inspector's exact
 * origin only, and trusts only that origin's frame to say it is connected.
 *
 * @statelyai/inspect is ESM-only: it is loaded with a dynamic `import()`, which module `nodenext`
 * keeps in this CommonJS file. Jest never imports this file's dependency.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { InspectionEvent, Observer } from 'xstate';
import { LocalHttpError, localHttpListener } from 'hubstate-cloud';


export const STATELY_INSPECTOR_URL = 'https://stately.ai/inspect';
/** The only origin the page talks to with `postMessage` (never `'*'`: the events are the device's). */
export const STATELY_INSPECTOR_ORIGIN = new URL(STATELY_INSPECTOR_URL).origin;

export interface InspectorBridge {
  /** Pass as `createDevice({ inspect })`. */
  inspect: Observer<InspectionEvent>;
  /** The local page to open in a browser (with internet: it embeds the Stately inspector). */
  url: string;
  stop(): Promise<void>;
}

/** Events kept for a browser that connects late (it replays them: actor registration first). */
const REPLAY = 1000;

function bridgePage(inspectorUrl: string, inspectorOrigin: string): string {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>hubstate → Stately inspector</title>
<style>html,body{height:100%;margin:0}iframe{width:100%;height:100%;border:0}</style></head>
<body><iframe id="inspector" src="${inspectorUrl}"></iframe>
<script>
const INSPECTOR_ORIGIN = ${JSON.stringify(inspectorOrigin)};
const frame = document.getElementById('inspector');
const pending = [];
let connected = false;
const forward = (event) => frame.contentWindow.postMessage(event, INSPECTOR_ORIGIN);
window.addEventListener('message', (e) => {
  if (e.origin !== INSPECTOR_ORIGIN || e.source !== frame.contentWindow) return;
  if (e.data && e.data.type === '@statelyai.connected') {
    connected = true;
    for (const event of pending.splice(0)) forward(event);
  }
});
const source = new EventSource('/events');
source.onmessage = (e) => {
  const event = JSON.parse(e.data);
  if (connected) forward(event);
  else pending.push(event);
};
</script></body></html>`;
}

/** Replaces every occurrence of each secret in a JSON text. */
export function scrub(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) if (secret) out = out.split(secret).join('[redacted]');
  return out;
}

/** The bridge's local server: the page and the event stream, without the inspector itself. */
export interface InspectorPage {
  url: string;
  /** Sends one serialized inspection event to every open page (and keeps it for late ones). */
  publish(serializedEvent: string): void;
  stop(): Promise<void>;
}

/** Bodies: no route takes one, so the limit only bounds what the checks read. */
export const MAX_BRIDGE_BODY_BYTES = 1024;

export async function startInspectorPage(options: { port?: number } = {}): Promise<InspectorPage> {
  const history: string[] = [];
  const clients = new Set<http.ServerResponse>();

  const server = http.createServer(
    localHttpListener({ maxBodyBytes: MAX_BRIDGE_BODY_BYTES }, (req, res) => {
      if (req.method === 'GET' && (req.url === '/' || req.url === '/index.html')) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        res.end(bridgePage(STATELY_INSPECTOR_URL, STATELY_INSPECTOR_ORIGIN));
        return;
      }
      if (req.method === 'GET' && req.url === '/events') {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
        res.flushHeaders(); // the stream is open even before the first event
        for (const data of history) res.write(`data: ${data}\n\n`);
        clients.add(res);
        req.on('close', () => clients.delete(res));
        return;
      }
      throw new LocalHttpError(404, 'NOT_FOUND', `no route ${req.method} ${req.url}`);
    }),
  );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}/`,
    publish(data) {
      history.push(data);
      if (history.length > REPLAY) history.shift();
      for (const client of clients) client.write(`data: ${data}\n\n`);
    },
    async stop() {
      for (const client of clients) client.end();
      clients.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export async function startInspectorBridge(options: { port?: number; secrets?: string[] } = {}): Promise<InspectorBridge> {
  const { createInspector } = await import('@statelyai/inspect');
  const secrets = (options.secrets ?? []).filter((s) => s.length > 0);
  const page = await startInspectorPage({ ...(options.port !== undefined ? { port: options.port } : {}) });
  const inspector = createInspector(
    {
      send(event) {
        page.publish(scrub(JSON.stringify(event), secrets));
      },
    },
    { serializationDepthLimit: 12 },
  );

  return {
    inspect: inspector.inspect,
    url: page.url,
    async stop() {
      inspector.stop();
      await page.stop();
    },
  };
}
