/**
 * Every local HTTP surface is safe to leave running: the local cloud's control API, the
 * `--inspect` bridge and the demo's `--ui` page share one guard (src/local-http.ts). Each rule is
 * checked on each surface with node's own HTTP client and explicit headers, as a browser under
 * DNS rebinding or a cross-site page would send them: Host (421), Origin (403), content type
 * (415), size (413), encoding (400); and what must still work (curl without Origin, the
 * same-origin page, a body exactly at the limit).
 */
import * as http from 'node:http';
import * as net from 'node:net';
import { MAX_BRIDGE_BODY_BYTES, startInspectorPage, STATELY_INSPECTOR_ORIGIN } from '../../src/cli/inspect';
import { MAX_UI_BODY_BYTES, startUi, type UiBackend } from '../../src/cli/ui';
import { FAST_DPS_POLL_SEC, startLocalCloud, MAX_CONTROL_BODY_BYTES } from 'hubstate-cloud';

interface Surface {
  name: string;
  port: number;
  /** A GET that succeeds (200) once admitted. */
  getPath: string;
  /** Its Server-Sent Events stream, if it has one. */
  eventsPath?: string;
  /** A POST path and the status it answers once admitted (404 where no route takes a body). */
  postPath: string;
  postAdmittedStatus: number;
  maxBodyBytes: number;
  close(): Promise<void>;
}

async function controlApiSurface(): Promise<Surface> {
  const cloud = await startLocalCloud({ hubs: 1, controlApi: true, seed: 'local-http-guard', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  return {
    name: 'control API',
    port: Number(new URL(cloud.controlUrl!).port),
    getPath: '/state',
    postPath: '/dps/clear-faults',
    postAdmittedStatus: 200,
    maxBodyBytes: MAX_CONTROL_BODY_BYTES,
    close: () => cloud.stop(),
  };
}

async function uiSurface(): Promise<Surface> {
  const backend: UiBackend = {
    title: 'guard test',
    stats: () => ({ state: 'Connected', hub: 'hub-0', sent: 0, delivered: 0, queued: 0, lastErrorClass: null, nextRetryMs: null, devices: 1 }),
    onState: () => () => undefined,
    faults: [{ name: 'noop', label: 'no-op', run: async () => 'nothing done' }],
  };
  const ui = await startUi(backend, { svg: '<svg xmlns="http://www.w3.org/2000/svg"></svg>' });
  return {
    name: 'demo --ui page',
    port: Number(new URL(ui.url).port),
    getPath: '/stats',
    eventsPath: '/events',
    postPath: '/faults/noop',
    postAdmittedStatus: 200,
    maxBodyBytes: MAX_UI_BODY_BYTES,
    close: () => ui.close(),
  };
}

async function inspectSurface(): Promise<Surface> {
  const page = await startInspectorPage();
  return {
    name: '--inspect bridge',
    port: Number(new URL(page.url).port),
    getPath: '/',
    eventsPath: '/events',
    postPath: '/',
    postAdmittedStatus: 404,
    maxBodyBytes: MAX_BRIDGE_BODY_BYTES,
    close: () => page.stop(),
  };
}

interface Answer {
  status: number;
  json?: { error?: unknown; message?: unknown };
}

interface GuardRequest {
  method?: string;
  path: string;
  /** `null` leaves a header out. */
  headers?: Record<string, string | number | null>;
  body?: Buffer | string;
  /** Send the body with chunked transfer encoding (no Content-Length). */
  chunked?: boolean;
  /** Send only the headers (with the Content-Length given in `headers`) and wait for the answer. */
  headersOnly?: boolean;
}

/**
 * One request with exactly the given headers. Resolves with the status (and the JSON error body);
 * an event stream is closed as soon as its status is known.
 */
function send(port: number, request: GuardRequest): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { host: `127.0.0.1:${port}` };
    for (const [name, value] of Object.entries(request.headers ?? {})) {
      if (value === null) delete headers[name];
      else headers[name] = value;
    }
    if (request.body !== undefined && !request.chunked && !request.headersOnly) headers['content-length'] = Buffer.byteLength(request.body);
    const req = http.request({
      host: '127.0.0.1',
      port,
      method: request.method ?? 'GET',
      path: request.path,
      headers,
      setHost: false,
      agent: false,
    });
    let answered = false;
    req.on('response', (res) => {
      answered = true;
      if ((res.headers['content-type'] ?? '').startsWith('text/event-stream')) {
        resolve({ status: res.statusCode! });
        req.destroy();
        return;
      }
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: Answer['json'];
        try {
          json = JSON.parse(text) as Answer['json'];
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode!, ...(json !== undefined ? { json } : {}) });
        req.destroy();
      });
    });
    // After an early answer (413) the server closes while we may still hold the request open.
    req.on('error', (error) => {
      if (!answered) reject(error);
    });
    if (request.headersOnly) {
      req.flushHeaders();
      return;
    }
    if (request.body !== undefined) req.write(request.body);
    // A chunked oversized body is left open: the server must answer before the end.
    if (!request.chunked) req.end();
  });
}

/** The status line of the answer to a request written byte for byte (for what node's client cannot send). */
function rawStatusLine(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(request));
    let received = '';
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      const end = received.indexOf('\r\n');
      if (end >= 0) {
        resolve(received.slice(0, end));
        socket.destroy();
      }
    });
    socket.on('error', reject);
    socket.on('end', () => reject(new Error(`connection closed without a status line: ${JSON.stringify(received)}`)));
  });
}

const JSON_TYPE = { 'content-type': 'application/json' };

/** A JSON object of exactly `bytes` bytes, accepted by every POST route used here. */
function jsonOfSize(bytes: number): string {
  const shell = '{"pad":""}';
  return `{"pad":"${'x'.repeat(bytes - shell.length)}"}`;
}

describe.each([
  ['control API', controlApiSurface],
  ['demo --ui page', uiSurface],
  ['--inspect bridge', inspectSurface],
])('%s', (_name, start) => {
  let surface: Surface;
  beforeAll(async () => {
    surface = await start();
  });
  afterAll(async () => {
    await surface?.close();
  });

  const get = (path: string, headers: GuardRequest["headers"] = {}) => send(surface.port, { path, headers });
  const post = (headers: GuardRequest["headers"], body: Buffer | string, extra: Partial<GuardRequest> = {}) =>
    send(surface.port, { method: 'POST', path: surface.postPath, headers, body, ...extra });
  const refused = (status: number, error: string) => ({ status, json: { error, message: expect.any(String) } });

  describe('Host: only this server’s loopback address and port (DNS rebinding)', () => {
    test.each([
      ['127.0.0.1:PORT', (port: number) => `127.0.0.1:${port}`],
      ['localhost:PORT', (port: number) => `localhost:${port}`],
      ['[::1]:PORT', (port: number) => `[::1]:${port}`],
      ['LocalHost:PORT (names are case-insensitive)', (port: number) => `LocalHost:${port}`],
    ])('%s is admitted', async (_label, host) => {
      expect((await get(surface.getPath, { host: host(surface.port) })).status).toBe(200);
    });

    test.each([
      ['a rebound name', (port: number) => `attacker.example:${port}`],
      ['a loopback name on another port', (port: number) => `127.0.0.1:${port + 1}`],
      ['no port', () => 'localhost'],
      ['a trailing dot', (port: number) => `localhost.:${port}`],
      ['0.0.0.0', (port: number) => `0.0.0.0:${port}`],
    ])('%s is refused with 421', async (_label, host) => {
      expect(await get(surface.getPath, { host: host(surface.port) })).toEqual(refused(421, 'MISDIRECTED_HOST'));
    });

    test('a request without Host is refused: 421 from the guard (HTTP/1.0), 400 from node (HTTP/1.1)', async () => {
      expect(await rawStatusLine(surface.port, `GET ${surface.getPath} HTTP/1.0\r\n\r\n`)).toBe('HTTP/1.1 421 Misdirected Request');
      expect(await rawStatusLine(surface.port, `GET ${surface.getPath} HTTP/1.1\r\nConnection: close\r\n\r\n`)).toBe('HTTP/1.1 400 Bad Request');
    });

    test('the event stream too', async () => {
      const path = surface.eventsPath ?? surface.getPath;
      expect(await get(path, { host: `attacker.example:${surface.port}` })).toEqual(refused(421, 'MISDIRECTED_HOST'));
      expect((await get(path)).status).toBe(200);
    });

    test('a POST too, before its body is looked at', async () => {
      expect(await post({ ...JSON_TYPE, host: `attacker.example:${surface.port}` }, '{}')).toEqual(refused(421, 'MISDIRECTED_HOST'));
    });
  });

  describe('Origin: absent (curl) or this same loopback origin (CSRF)', () => {
    test('no Origin and the same origin are admitted', async () => {
      expect((await get(surface.getPath)).status).toBe(200);
      expect((await get(surface.getPath, { origin: `http://127.0.0.1:${surface.port}` })).status).toBe(200);
      expect((await get(surface.getPath, { origin: `http://localhost:${surface.port}` })).status).toBe(200);
      expect((await post({ ...JSON_TYPE, origin: `http://127.0.0.1:${surface.port}` }, '{}')).status).toBe(surface.postAdmittedStatus);
    });

    test.each([
      ['another site', () => 'https://attacker.example'],
      ['another local port', (port: number) => `http://127.0.0.1:${port + 1}`],
      ['https on our port', (port: number) => `https://127.0.0.1:${port}`],
      ['an opaque origin (sandboxed frame, file://)', () => 'null'],
    ])('%s is refused with 403, on GET, on POST and on the event stream', async (_label, origin) => {
      const headers = { origin: origin(surface.port) };
      expect(await get(surface.getPath, headers)).toEqual(refused(403, 'FOREIGN_ORIGIN'));
      expect(await post({ ...JSON_TYPE, ...headers }, '{}')).toEqual(refused(403, 'FOREIGN_ORIGIN'));
      if (surface.eventsPath) expect(await get(surface.eventsPath, headers)).toEqual(refused(403, 'FOREIGN_ORIGIN'));
    });
  });

  describe('Content-Type: a body is application/json (what a form cannot send)', () => {
    test.each([
      ['application/json', 'application/json'],
      ['with a charset parameter', 'application/json; charset=utf-8'],
      ['in capitals', 'Application/JSON'],
    ])('%s is admitted', async (_label, type) => {
      expect((await post({ 'content-type': type }, '{}')).status).toBe(surface.postAdmittedStatus);
    });

    test.each([
      ['none', null],
      ['text/plain (a cross-site form or no-cors fetch)', 'text/plain'],
      ['a url-encoded form', 'application/x-www-form-urlencoded'],
      ['multipart', 'multipart/form-data; boundary=x'],
      ['a look-alike', 'application/jsonx'],
    ])('%s is refused with 415', async (_label, type) => {
      expect(await post({ 'content-type': type }, '{}')).toEqual(refused(415, 'UNSUPPORTED_MEDIA_TYPE'));
    });

    test('a compressed body is refused with 415', async () => {
      expect(await post({ ...JSON_TYPE, 'content-encoding': 'gzip' }, '{}')).toEqual(refused(415, 'UNSUPPORTED_MEDIA_TYPE'));
    });
  });

  describe('size: bodies are bounded', () => {
    test('a body exactly at the limit is admitted', async () => {
      expect((await post(JSON_TYPE, jsonOfSize(surface.maxBodyBytes))).status).toBe(surface.postAdmittedStatus);
    });

    test('a declared Content-Length over the limit is refused with 413 before the body is sent', async () => {
      const answer = await post({ ...JSON_TYPE, 'content-length': surface.maxBodyBytes + 1 }, '', { headersOnly: true });
      expect(answer).toEqual(refused(413, 'TOO_LARGE'));
    });

    test('a chunked body is refused with 413 as soon as it passes the limit', async () => {
      const answer = await post(JSON_TYPE, jsonOfSize(surface.maxBodyBytes + 1), { chunked: true });
      expect(answer).toEqual(refused(413, 'TOO_LARGE'));
    });
  });

  describe('encoding: a UTF-8 JSON object', () => {
    test.each([
      ['invalid UTF-8', Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d])],
      ['not JSON', '{not json'],
      ['an array', '[1, 2]'],
      ['a string', '"text"'],
      ['a number', '42'],
      ['null', 'null'],
    ])('%s is refused with 400', async (_label, body) => {
      expect(await post(JSON_TYPE, body)).toEqual(refused(400, 'BAD_JSON'));
    });

    test('an empty body stands for no input', async () => {
      expect((await post(JSON_TYPE, '')).status).toBe(surface.postAdmittedStatus);
    });
  });
});

describe('--inspect bridge page', () => {
  test('posts the events to the Stately inspector’s exact origin, and only trusts that origin', async () => {
    const page = await startInspectorPage();
    try {
      const html = await fetch(page.url).then((res) => res.text());
      expect(STATELY_INSPECTOR_ORIGIN).toBe('https://stately.ai');
      expect(html).toContain(`const INSPECTOR_ORIGIN = "https://stately.ai";`);
      expect(html).toContain('postMessage(event, INSPECTOR_ORIGIN)');
      expect(html).toContain('e.origin !== INSPECTOR_ORIGIN');
      expect(html).not.toMatch(/postMessage\([^)]*['"]\*['"]\)/);
    } finally {
      await page.stop();
    }
  });
});
