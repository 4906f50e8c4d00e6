/**
 * The checks every local HTTP surface of hubstate makes before routing a request: the local
 * cloud's control API, the `--inspect` bridge and the demo's `--ui` page. They listen on
 * 127.0.0.1 only, yet a web page open in the user's browser can still reach them:
 *
 * - DNS rebinding: a name the attacker controls is re-pointed at 127.0.0.1, so the browser
 *   treats our server as that page's own origin. The `Host` header still carries the
 *   attacker's name: anything but this server's loopback address and port is refused (421).
 * - Cross-site requests: a page elsewhere can send a POST (a form, `fetch` in `no-cors` mode)
 *   without reading the answer. Browsers name the page in `Origin`: a foreign one is refused
 *   (403); none at all is fine (curl, scripts). A body must be `application/json` (415), which a
 *   form cannot send and `fetch` cannot send cross-site without a preflight we never answer.
 * - Size and encoding: bodies are bounded (413) and must be a JSON object in UTF-8 (400).
 */
import type * as http from 'node:http';
import { TextDecoder } from 'node:util';
import { isJsonObject, type JsonObject } from './util';

/** An error answer of a local server: `status` with the body `{ error: code, message, ...details }`. */
export class LocalHttpError extends Error {
  override name = 'LocalHttpError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: JsonObject = {},
  ) {
    super(message);
  }
}

export interface LocalRequestLimits {
  /** Largest accepted body, bytes (413 beyond). */
  maxBodyBytes: number;
}

/** The `host:port` forms under which a loopback server on `port` may be addressed. */
function loopbackAuthorities(port: number): string[] {
  return [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`];
}

const METHODS_WITH_BODY = new Set(['POST', 'PUT', 'PATCH']);
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Refuses a request addressed to another host or sent by another origin (see the header). */
function checkAddressing(req: http.IncomingMessage): void {
  // The socket's local port is the port the server listens on.
  const port = req.socket.localPort;
  const authorities = port === undefined ? [] : loopbackAuthorities(port);
  const host = req.headers.host?.toLowerCase();
  if (host === undefined || !authorities.includes(host)) {
    throw new LocalHttpError(421, 'MISDIRECTED_HOST', `Host must be one of ${authorities.join(', ')}`);
  }
  const origin = req.headers.origin;
  if (origin !== undefined && !authorities.some((authority) => origin.toLowerCase() === `http://${authority}`)) {
    throw new LocalHttpError(403, 'FOREIGN_ORIGIN', `requests from origin '${origin}' are not accepted`);
  }
}

function checkContentType(req: http.IncomingMessage): void {
  const mediaType = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (mediaType !== 'application/json') {
    throw new LocalHttpError(415, 'UNSUPPORTED_MEDIA_TYPE', "the body must be sent with 'Content-Type: application/json'");
  }
  const encoding = req.headers['content-encoding'];
  if (encoding !== undefined && encoding.toLowerCase() !== 'identity') {
    throw new LocalHttpError(415, 'UNSUPPORTED_MEDIA_TYPE', `Content-Encoding '${encoding}' is not accepted`);
  }
}

function tooLarge(maxBodyBytes: number): LocalHttpError {
  return new LocalHttpError(413, 'TOO_LARGE', `the body must be at most ${maxBodyBytes} bytes`);
}

/** The raw body, refused (413) as soon as it passes `maxBodyBytes`; the rest is read and dropped. */
function readBoundedBody(req: http.IncomingMessage, maxBodyBytes: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBodyBytes) return Promise.reject(tooLarge(maxBodyBytes));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= maxBodyBytes) {
        chunks.push(chunk);
        return;
      }
      req.off('data', onData);
      req.off('end', onEnd);
      req.resume(); // keep reading, discarding, so that the refusal can be answered
      reject(tooLarge(maxBodyBytes));
    };
    const onEnd = () => resolve(Buffer.concat(chunks));
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', reject);
  });
}

function parseJsonObject(bytes: Buffer): JsonObject {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw new LocalHttpError(400, 'BAD_JSON', 'the body is not valid UTF-8');
  }
  // An empty body stands for "no input", for routes that need none (`curl -X POST`).
  if (text.trim() === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new LocalHttpError(400, 'BAD_JSON', 'the body is not JSON');
  }
  if (!isJsonObject(value)) throw new LocalHttpError(400, 'BAD_JSON', 'the body must be a JSON object');
  return value;
}

/**
 * Admits a request to a loopback server, or throws a {@link LocalHttpError}: Host (421),
 * Origin (403), then for POST/PUT/PATCH the content type (415), size (413) and encoding (400).
 * Resolves with the body as a JSON object (`{}` when there is none, and for GET).
 */
export async function admitLocalRequest(req: http.IncomingMessage, limits: LocalRequestLimits): Promise<JsonObject> {
  checkAddressing(req);
  if (!METHODS_WITH_BODY.has(req.method ?? '')) return {};
  checkContentType(req);
  return parseJsonObject(await readBoundedBody(req, limits.maxBodyBytes));
}

/** Answers `{ error, message, ...details }` and closes the connection: a refused body may be unread. */
function sendLocalHttpError(res: http.ServerResponse, error: LocalHttpError): void {
  const text = JSON.stringify({ error: error.code, message: error.message, ...error.details });
  res.writeHead(error.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    connection: 'close',
  });
  res.end(text);
}

/**
 * A request listener for a loopback server: admits each request ({@link admitLocalRequest}), then
 * hands it to `handle` with its body. A {@link LocalHttpError} thrown by either is answered as
 * such; anything else as 500.
 */
export function localHttpListener(
  limits: LocalRequestLimits,
  handle: (req: http.IncomingMessage, res: http.ServerResponse, body: JsonObject) => void | Promise<void>,
): http.RequestListener {
  return (req, res) => {
    admitLocalRequest(req, limits)
      .then((body) => handle(req, res, body))
      .catch((error: unknown) => {
        if (res.headersSent) {
          res.destroy();
          return;
        }
        const answer = error instanceof LocalHttpError ? error : new LocalHttpError(500, 'INTERNAL', (error as Error)?.message ?? String(error));
        sendLocalHttpError(res, answer);
      });
  };
}
