/**
 * Small HTTP/JSON control API for a local cloud (127.0.0.1, ephemeral port), so other processes
 * (a CLI, a demo, a benchmark harness) can inject faults and read state.
 *
 * GET  /state
 * GET  /telemetry?deviceId=&hub=&limit=
 * POST /failover {deviceId, ttlMinutes?, ttlMs? (null: no TTL), toHub?, refusalCode? 3|5}  POST /failback {deviceId}
 * POST /hubs/:hub/kill | restart | refuse {code|null} | blackhole {on} | withhold-pubacks {on, store?}
 * POST /hubs/:hub/devices/:id/disable {refusalCode? 3|5} | enable | delete | disconnect | expire-tokens
 * GET  /hubs/:hub/devices/:id/twin                                POST /hubs/:hub/devices/:id/desired {patch}
 * POST /hubs/:hub/devices/:id/methods/:name {payload?, responseTimeoutInSeconds?, connectTimeoutInSeconds?, timeoutMs?}
 * POST /hubs/:hub/devices/:id/c2d {body, properties?}
 * POST /dps/down | up | clear-faults | blackhole {on} | throttle {retryAfterSec, count?, target?} | fail {status, count?, retryAfterSec?, target?}
 *      (target: any | registration | lookup | register | poll)
 * POST /dps/rate-limit {perSec|null, retryAfterSec?}  POST /dps/lookup-rate-limit {perSec|null, retryAfterSec?}
 * POST /dps/enrollments/:regId {key?}
 * POST /dps/enrollments/:regId/status {status}
 *
 * Every request passes the local-HTTP checks of `../local-http.ts` first: Host must be this
 * server's loopback address and port (421), Origin absent or that same origin (403), and a POST
 * body `application/json` (415), at most {@link MAX_CONTROL_BODY_BYTES} (413), a UTF-8 JSON
 * object (400); an empty body is `{}`.
 *
 * Errors: `{ "error": code, "message": text }` with 400 (bad input), 404 (unknown hub/device/route),
 * 409 (state conflict). A direct method answers like IoT Hub's service API: 200 `{ status, payload }`
 * whenever the device answered, whatever status it chose; the hub's own failure otherwise, with its
 * status and `errorCode` (404 + 404103 device not online, 504 + 504101 no answer in time, 400 +
 * 400004 payload or timeouts refused, ...).
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { LocalCloud } from './cloud';
import type { DpsRequestFaultTarget, InjectedDpsStatus } from './dps';
import { EmulatorError, type ConnackRefusal, type MovedDeviceRefusal, type EnrollmentStatus, type MethodResult } from './types';
import { isJsonObject, type JsonObject } from './util';
import { LocalHttpError, localHttpListener } from './local-http';

/** A running control API. */
export interface ControlApi {
  url: string;
  close(): Promise<void>;
}

/**
 * Largest request body. The biggest payloads the API carries are a direct method's (IoT Hub: up
 * to 128 KB of JSON, embedded as is) and a C2D body (up to 64 KB, sent as a JSON string, which
 * escaping can double): twice the method limit holds either with its envelope.
 */
export const MAX_CONTROL_BODY_BYTES = 256 * 1024;

/** The hub's own answers when a device did not answer a method (IoT Hub error codes). */
const HUB_METHOD_FAILURES: Readonly<Record<number, string>> = {
  400004: 'INVALID_METHOD_REQUEST',
  404001: 'DEVICE_NOT_FOUND',
  404103: 'DEVICE_NOT_ONLINE',
  503001: 'HUB_STOPPED',
  504101: 'DEVICE_TIMEOUT',
};

/**
 * The hub's failure in `result`, when no device answered; undefined when the device answered.
 * `EmulatedHub.invokeMethod` never rejects: it resolves with `{ status, payload: { errorCode,
 * message } }` for a device that is unknown, offline or silent, or with the device's own answer.
 */
function hubMethodFailure(result: MethodResult): LocalHttpError | undefined {
  const payload = result.payload;
  if (!isJsonObject(payload) || typeof payload['errorCode'] !== 'number') return undefined;
  const errorCode = payload['errorCode'];
  const code = HUB_METHOD_FAILURES[errorCode];
  if (code === undefined || Math.floor(errorCode / 1000) !== result.status) return undefined;
  const message = typeof payload['message'] === 'string' ? payload['message'] : code;
  return new LocalHttpError(result.status, code, message, { errorCode });
}

function str(body: JsonObject, key: string): string {
  const v = body[key];
  if (typeof v !== 'string' || !v) throw new LocalHttpError(400, 'INVALID_ARGUMENT', `'${key}' must be a non-empty string`);
  return v;
}

function optNum(body: JsonObject, key: string): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new LocalHttpError(400, 'INVALID_ARGUMENT', `'${key}' must be a number`);
  return v;
}

const DPS_FAULT_TARGETS: readonly DpsRequestFaultTarget[] = ['any', 'registration', 'lookup', 'register', 'poll'];

/** The requests a DPS fault applies to (absent: all). */
function optFaultTarget(body: JsonObject): DpsRequestFaultTarget | undefined {
  const v = body['target'];
  if (v === undefined || v === null) return undefined;
  if (!DPS_FAULT_TARGETS.includes(v as DpsRequestFaultTarget)) {
    throw new LocalHttpError(400, 'INVALID_ARGUMENT', `'target' must be one of ${DPS_FAULT_TARGETS.join(', ')}`);
  }
  return v as DpsRequestFaultTarget;
}

/** A refusal code for a moved or disabled device (absent: the hub's own). */
function optRefusalCode(body: JsonObject): MovedDeviceRefusal | undefined {
  const code = optNum(body, 'refusalCode');
  if (code !== undefined && code !== 3 && code !== 5) throw new LocalHttpError(400, 'INVALID_ARGUMENT', "'refusalCode' must be 3 or 5");
  return code;
}

function bool(body: JsonObject, key: string): boolean {
  const v = body[key];
  if (typeof v !== 'boolean') throw new LocalHttpError(400, 'INVALID_ARGUMENT', `'${key}' must be a boolean`);
  return v;
}

function errorStatus(err: EmulatorError): number {
  switch (err.code) {
    case 'UNKNOWN_HUB':
    case 'UNKNOWN_DEVICE':
    case 'UNKNOWN_REGISTRATION':
      return 404;
    case 'INVALID_ARGUMENT':
      return 400;
    default:
      return 409;
  }
}

async function route(cloud: LocalCloud, method: string, url: URL, parts: string[], body: JsonObject): Promise<unknown> {
  const [p0, p1, p2, p3, p4, p5] = parts;

  if (method === 'GET' && p0 === 'state' && parts.length === 1) return cloud.state();
  if (method === 'GET' && p0 === 'telemetry' && parts.length === 1) {
    const deviceId = url.searchParams.get('deviceId') ?? undefined;
    const hub = url.searchParams.get('hub') ?? undefined;
    const limit = Number(url.searchParams.get('limit') ?? '1000');
    const records = cloud.telemetry({ ...(deviceId ? { deviceId } : {}), ...(hub ? { hub } : {}) });
    return records.slice(-Math.max(0, limit)).map((r) => ({ ...r, body: r.body.toString('utf8') }));
  }
  if (method === 'POST' && p0 === 'failover' && parts.length === 1) {
    const ttlMs = optNum(body, 'ttlMs');
    const ttlMinutes = optNum(body, 'ttlMinutes');
    const toHub = typeof body['toHub'] === 'string' ? body['toHub'] : undefined;
    const refusalCode = optRefusalCode(body);
    return cloud.manualFailover(str(body, 'deviceId'), {
      // An explicit null keeps the device failed over until /failback (no 5-minute TTL).
      ...(body['ttlMs'] === null ? { ttlMs: null } : ttlMs !== undefined ? { ttlMs } : {}),
      ...(ttlMinutes !== undefined ? { ttlMinutes } : {}),
      ...(toHub ? { toHub } : {}),
      ...(refusalCode !== undefined ? { refusalCode } : {}),
    });
  }
  if (method === 'POST' && p0 === 'failback' && parts.length === 1) return cloud.manualFailback(str(body, 'deviceId'));

  if (p0 === 'hubs' && p1) {
    const hub = cloud.hub(p1);
    if (method === 'POST' && parts.length === 3) {
      switch (p2) {
        case 'kill':
          await hub.kill();
          return { ok: true };
        case 'restart':
          await hub.restart();
          return { ok: true, host: hub.host };
        case 'refuse': {
          const code = optNum(body, 'code');
          if (code !== undefined && ![1, 2, 3, 4, 5].includes(code)) throw new LocalHttpError(400, 'INVALID_ARGUMENT', "'code' must be 1-5 or null");
          hub.refuse(code === undefined ? null : (code as ConnackRefusal));
          return { ok: true };
        }
        case 'blackhole':
          hub.blackhole(bool(body, 'on'));
          return { ok: true };
        case 'withhold-pubacks':
          hub.withholdPubacks(bool(body, 'on'), typeof body['store'] === 'boolean' ? { store: body['store'] } : {});
          return { ok: true };
      }
    }
    if (p2 === 'devices' && p3) {
      if (method === 'GET' && parts.length === 5 && p4 === 'twin') return hub.getTwin(p3);
      if (method === 'POST' && parts.length === 5) {
        switch (p4) {
          case 'disable': {
            const refusalCode = optRefusalCode(body);
            hub.disableDevice(p3, 'operator', refusalCode);
            return { ok: true };
          }
          case 'enable':
            hub.enableDevice(p3);
            return { ok: true };
          case 'delete':
            hub.deleteDevice(p3);
            return { ok: true };
          case 'disconnect':
            return { ok: true, wasConnected: hub.disconnect(p3) };
          case 'expire-tokens':
            hub.expireTokens(p3);
            return { ok: true };
          case 'desired': {
            const patch = body['patch'];
            if (!isJsonObject(patch)) throw new LocalHttpError(400, 'INVALID_ARGUMENT', "'patch' must be an object");
            return { version: hub.updateDesired(p3, patch) };
          }
          case 'c2d': {
            const props = isJsonObject(body['properties']) ? body['properties'] : {};
            const clean: Record<string, string> = {};
            for (const [k, v] of Object.entries(props)) if (typeof v === 'string') clean[k] = v;
            const payload = body['body'];
            return hub.sendC2D(p3, typeof payload === 'string' ? payload : JSON.stringify(payload ?? null), clean);
          }
        }
      }
      if (method === 'POST' && parts.length === 6 && p4 === 'methods' && p5) {
        // IoT Hub's names for its timeouts (seconds; the hub answers 400 out of bounds), or timeoutMs.
        const timeoutMs = optNum(body, 'timeoutMs');
        const responseTimeoutSec = optNum(body, 'responseTimeoutInSeconds');
        const connectTimeoutSec = optNum(body, 'connectTimeoutInSeconds');
        const result = await hub.invokeMethod(p3, p5, body['payload'], {
          ...(timeoutMs !== undefined ? { timeoutMs } : {}),
          ...(responseTimeoutSec !== undefined ? { responseTimeoutSec } : {}),
          ...(connectTimeoutSec !== undefined ? { connectTimeoutSec } : {}),
        });
        const failure = hubMethodFailure(result);
        if (failure) throw failure;
        return result;
      }
    }
  }

  if (p0 === 'dps' && method === 'POST') {
    const dps = cloud.dps;
    if (parts.length === 2) {
      switch (p1) {
        case 'down':
          await dps.down();
          return { ok: true };
        case 'up':
          await dps.up();
          return { ok: true };
        case 'blackhole':
          dps.blackhole(bool(body, 'on'));
          return { ok: true };
        case 'clear-faults':
          dps.clearFaults();
          return { ok: true };
        case 'throttle': {
          const retryAfterSec = optNum(body, 'retryAfterSec') ?? 1;
          const count = optNum(body, 'count');
          const target = optFaultTarget(body);
          dps.throttle({ retryAfterSec, ...(count !== undefined ? { count } : {}), ...(target ? { target } : {}) });
          return { ok: true };
        }
        case 'fail': {
          const status = optNum(body, 'status');
          if (status === undefined || ![400, 401, 403, 404, 500, 503].includes(status)) {
            throw new LocalHttpError(400, 'INVALID_ARGUMENT', "'status' must be one of 400, 401, 403, 404, 500, 503");
          }
          const count = optNum(body, 'count');
          const retryAfterSec = optNum(body, 'retryAfterSec');
          const target = optFaultTarget(body);
          dps.failWith({
            status: status as InjectedDpsStatus,
            ...(count !== undefined ? { count } : {}),
            ...(retryAfterSec !== undefined ? { retryAfterSec } : {}),
            ...(target ? { target } : {}),
          });
          return { ok: true };
        }
        case 'rate-limit': {
          const perSec = optNum(body, 'perSec');
          dps.setRateLimit(perSec ?? null, optNum(body, 'retryAfterSec'));
          return { ok: true };
        }
        case 'lookup-rate-limit':
          dps.setLookupRateLimit(optNum(body, 'perSec') ?? null, optNum(body, 'retryAfterSec'));
          return { ok: true };
      }
    }
    if (p1 === 'enrollments' && p2) {
      if (parts.length === 3) {
        const key = typeof body['key'] === 'string' ? body['key'] : undefined;
        return { registrationId: p2, key: dps.addIndividualEnrollment(p2, key) };
      }
      if (parts.length === 4 && p3 === 'status') {
        const status = str(body, 'status');
        if (!['enabled', 'failed', 'disabled'].includes(status)) throw new LocalHttpError(400, 'INVALID_ARGUMENT', "'status' must be enabled, failed or disabled");
        dps.setEnrollmentStatus(p2, status as EnrollmentStatus);
        return { ok: true };
      }
    }
  }
  throw new LocalHttpError(404, 'NOT_FOUND', `no route ${method} ${url.pathname}`);
}

/** Starts the control API for `cloud` on 127.0.0.1 with an ephemeral port. */
export async function startControlApi(cloud: LocalCloud): Promise<ControlApi> {
  const server = http.createServer(
    localHttpListener({ maxBodyBytes: MAX_CONTROL_BODY_BYTES }, async (req, res, body) => {
      let url: URL;
      let parts: string[];
      try {
        url = new URL(req.url ?? '/', 'http://127.0.0.1');
        parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
      } catch {
        throw new LocalHttpError(400, 'BAD_PATH', 'the request path is not a valid URL path');
      }
      let value: unknown;
      try {
        value = await route(cloud, req.method ?? 'GET', url, parts, body);
      } catch (err) {
        if (err instanceof EmulatorError) throw new LocalHttpError(errorStatus(err), err.code, err.message);
        throw err;
      }
      const text = JSON.stringify(value ?? null);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    }),
  );
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
