/**
 * The status-lookup actor: asks DPS where this device belongs now, without registering again.
 *
 * Device Registration Status Lookup (`POST https://{dps}/{idScope}/registrations/{registrationId}
 * ?api-version=2021-10-01`, SAS-authenticated like a registration) answers the device's current
 * registration: the new hub after an IoT Central failover, the original one after failback. Seed
 * 004 calls it "a much lighter weight operation for DPS than a full device registration"; it never
 * re-allocates. The SDK has no call for it, so this is a plain HTTPS request; the SAS token is the
 * one the SDK's security client builds for a registration.
 */
import * as https from 'node:https';
import { createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import type { LookupResult } from '../../machines/device.machine';
import { checkedAssignment } from '../assignment';
import { monotonicNow, wallTimeOf, type Clock } from '../clock';
import { ServiceProtocolError } from '../errors';
import { retryAfterMsFromSeconds } from '../policy/backoff';
import { toFailure } from '../policy/classify';
import { Credentials, deviceKeyOf, withEitherKey, type Credential } from './credentials';
import { registrationSasToken, withServiceTime, type ServiceTime } from './service-time';
import { sharedSecureContext } from './tls';
import type { NetworkPath } from './transport';
import { assertCertificateCurrent, type X509Identity } from './x509';
import type { PromiseWork } from './work';
import type { PartLogger } from '../logger';

export interface LookupSettings {
  provisioningHost: string;
  idScope: string;
  /** The device's keys: a refused key is tried once with the other of its pair. */
  credentials: Credentials;
  ca?: string;
  /** The device's NetworkPath: with a proxy (transport 'mqtt-ws' or 'auto'), the lookup is tunnelled through it. */
  network?: NetworkPath;
  /** Deadline of one lookup (connect, request, answer). */
  deadlineMs: number;
  /** Learns the service's time from each answer's `Date`; tokens are signed with it. */
  serviceTime: ServiceTime;
  clock: Clock;
  logger: PartLogger;
}

/** The API version of the lookup in Microsoft's REST reference. */
export const LOOKUP_API_VERSION = '2021-10-01';
/** A registration result is a few hundred bytes; anything much larger is not one. */
const MAX_ANSWER_BYTES = 64 * 1024;

/** An answer that did not come from DPS over verified TLS: the proxy's own, refusing the tunnel. */
export class ProxyAnswerError extends Error {
  // Not `statusCode`: the classifier would read it as DPS's status.
  constructor(readonly proxyStatus: number) {
    super(`the proxy answered ${proxyStatus} instead of opening a tunnel to DPS`);
    this.name = 'ProxyAnswerError';
  }
}

/** DPS answered the lookup with an error status (401/403/404: no answer for this device; 429; 5xx). */
export class DpsLookupError extends Error {
  constructor(
    readonly statusCode: number,
    readonly retryAfterMs: number | undefined,
    /** The service's error message, when its body carried one. */
    detail: string | undefined,
  ) {
    super(`DPS status lookup answered ${statusCode}${detail ? `: ${detail}` : ''}`);
    this.name = 'DpsLookupError';
  }
}

/** The lookup answered, but the registration is not `assigned` (failed, disabled, assigning …). */
export class LookupNotAssignedError extends Error {
  constructor(readonly registrationStatus: string) {
    super(`DPS status lookup: the registration is '${registrationStatus}', not assigned`);
    this.name = 'LookupNotAssignedError';
  }
}

function splitHost(host: string): { hostname: string; port: number } {
  const colon = host.lastIndexOf(':');
  if (colon > 0 && /^\d+$/.test(host.slice(colon + 1))) return { hostname: host.slice(0, colon), port: Number(host.slice(colon + 1)) };
  return { hostname: host, port: 443 };
}

function retryAfterMsOf(header: string | string[] | undefined): number | undefined {
  return retryAfterMsFromSeconds(Array.isArray(header) ? header[0] : header);
}

/** What a 200 answer must hold; anything else is a protocol error, never a crash. */
export function parseLookupAnswer(text: string): { hubHost: string; deviceId: string } {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new ServiceProtocolError('dps', 'status lookup answer is not JSON');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ServiceProtocolError('dps', 'status lookup answer is not an object');
  const { status, assignedHub, deviceId } = body as Record<string, unknown>;
  if (status !== 'assigned') throw new LookupNotAssignedError(typeof status === 'string' ? status.slice(0, 64) : 'none');
  const assignment = checkedAssignment(assignedHub, deviceId);
  if (typeof assignment === 'string') throw new ServiceProtocolError('dps', `status lookup answer 'assigned' ${assignment}`);
  return assignment;
}

function errorDetail(text: string): string | undefined {
  try {
    const message = (JSON.parse(text) as { message?: unknown }).message;
    return typeof message === 'string' ? message.slice(0, 200) : undefined;
  } catch {
    return undefined;
  }
}

/** The lookup's credential: a SAS token, or with X.509 attestation the TLS client certificate. */
function sasToken(settings: LookupSettings, credential: Credential, registrationId: string): string | X509Identity {
  if ('x509' in credential) return credential.x509;
  return registrationSasToken(settings.idScope, registrationId, deviceKeyOf(credential, registrationId), settings.serviceTime);
}

/** One lookup; resolves with the current assignment or rejects with a classified Failure. */
export async function lookupOnce(settings: LookupSettings, registrationId: string, signal?: AbortSignal): Promise<LookupResult> {
  const { clock, logger } = settings;
  const attempt = async (credential: Credential): Promise<LookupResult> => {
    try {
      if ('x509' in credential) assertCertificateCurrent(credential.x509, settings.serviceTime.nowMs());
      const answer = await request(settings, registrationId, sasToken(settings, credential, registrationId), signal);
      return { ...answer, checkedAt: monotonicNow(clock), assignedAt: clock.now() };
    } catch (error) {
      const failure = toFailure(error, 'dps-lookup', monotonicNow(clock));
      logger.debug({ failure: { ...failure, at: wallTimeOf(clock, failure.at) } }, 'DPS status lookup failed'); // logged as a date
      throw failure;
    }
  };
  // A 401 whose Date shows the device clock far off is the clock's: asked again with the service's time.
  return withEitherKey(
    settings.credentials,
    (credential) => withServiceTime(settings.serviceTime, () => attempt(credential)),
    (from, to) => logger.warn({ from, to }, `the DPS status lookup refused the ${from} key; trying the ${to} key`),
  );
}

/**
 * Asks DPS for its time: one status lookup, whatever it answers (its `Date` header is what
 * counts; `settings.serviceTime` learns it). Used when DPS or the hub refuses a token.
 */
export async function probeServiceTime(settings: LookupSettings, registrationId: string, signal?: AbortSignal): Promise<void> {
  await request(settings, registrationId, sasToken(settings, settings.credentials.current(), registrationId), signal).catch(() => undefined);
}

function request(settings: LookupSettings, registrationId: string, token: string | X509Identity, signal?: AbortSignal): Promise<{ hubHost: string; deviceId: string }> {
  const { hostname, port } = splitHost(settings.provisioningHost);
  const body = JSON.stringify({ registrationId });
  const path = `/${encodeURIComponent(settings.idScope)}/registrations/${encodeURIComponent(registrationId)}?api-version=${LOOKUP_API_VERSION}`;
  return new Promise((resolve, reject) => {
    const { clock } = settings;
    let settled = false;
    const finish = (error: unknown, answer?: { hubHost: string; deviceId: string }) => {
      if (settled) return;
      settled = true;
      clock.clearTimeout(deadline);
      signal?.removeEventListener('abort', onAbort);
      req.destroy();
      if (error) reject(error);
      else resolve(answer!);
    };
    // Node's https passes `secureContext` on to tls.connect; its RequestOptions type omits it.
    const options: https.RequestOptions & { secureContext: SecureContext } = {
        hostname,
        port,
        path,
        method: 'POST',
        servername: hostname,
        // A client certificate belongs to this device: its own context (same CA, same checks).
        secureContext: typeof token === 'string' ? sharedSecureContext(settings.ca) : createSecureContext({ ...(settings.ca === undefined ? {} : { ca: settings.ca }), ...token }),
        // Through the proxy's CONNECT tunnel when there is one (TLS still verified end to end:
        // the agent hands secureContext and servername to tls.connect over the tunnel).
        agent: settings.network?.httpsAgent(hostname, port) ?? false,
        headers: {
          ...(typeof token === 'string' ? { Authorization: token } : {}),
          'Content-Type': 'application/json; charset=utf-8',
          Accept: 'application/json',
          'Content-Length': Buffer.byteLength(body),
        },
      };
    const sentAt = clock.now();
    const req = https.request(
      options,
      (res) => {
        // Only DPS over verified TLS speaks for DPS: a proxy that refuses the CONNECT has its plain
        // HTTP answer replayed here by https-proxy-agent; neither its Date nor its status is DPS's.
        if (!(res.socket as TLSSocket | null)?.authorized) {
          res.resume();
          return finish(new ProxyAnswerError(res.statusCode ?? 0));
        }
        settings.serviceTime.observe(res.headers.date, sentAt, clock.now());
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_ANSWER_BYTES) return finish(new ServiceProtocolError('dps', `status lookup answer over ${MAX_ANSWER_BYTES} bytes`));
          chunks.push(chunk);
        });
        res.on('error', (error) => finish(error));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          if (status !== 200) return finish(new DpsLookupError(status, retryAfterMsOf(res.headers['retry-after']), errorDetail(text)));
          try {
            finish(null, parseLookupAnswer(text));
          } catch (error) {
            finish(error);
          }
        });
      },
    );
    const onAbort = () => finish(new Error('DPS status lookup cancelled'));
    const deadline = clock.setTimeout(() => {
      const timeout = new Error(`DPS status lookup did not complete within ${settings.deadlineMs} ms`);
      timeout.name = 'TimeoutError';
      finish(timeout);
    }, settings.deadlineMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', (error) => finish(error));
    req.end(body);
  });
}

export function lookupWork(settings: LookupSettings): PromiseWork<LookupResult, { registrationId: string }> {
  return ({ input, signal }) => lookupOnce(settings, input.registrationId, signal);
}
