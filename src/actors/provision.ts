/**
 * The provision actor: one DPS registration through the unmodified Azure SDK.
 *
 * What the SDK does not do and this actor adds (see shared/reference/azure-sdk-facts.md):
 * - the SDK re-polls 429 and 5xx answers forever, in lockstep with retry-after. This actor drives
 *   the register request and the status polls itself, through the provisioning transport's
 *   PollingTransport methods (`registrationRequest`, `queryOperationStatus`: what the SDK's own
 *   polling state machine calls), and watches the raw response status before the SDK hides it:
 *   - a 429/5xx to the REGISTER request goes to the machine (with retry-after), which backs off
 *     and registers again;
 *   - a 429/5xx to a status POLL polls the SAME operation again after retry-after, with jitter
 *     (uniform in [R, 1.5 R], see throttledPollDelay), up to `maxThrottledPolls` in a row or the
 *     deadline: then the failure goes to the machine;
 * - DPS has no overall deadline: `deadlineMs` bounds the time without progress (no answer, or only
 *   429/5xx answers); every `assigning` answer is progress and starts it again, and a hard cap
 *   (hardDeadlineOf) bounds the whole registration. Cancelling really disconnects the transport;
 * - the transport emits 'error' with no listener between polls: we attach one;
 * - the provisioning MQTT transport has no `ca` option: the CA goes in through an MqttBase.
 */
import { errors as sdkErrors } from 'azure-iot-common';
import { MqttBase } from 'azure-iot-mqtt-base';
import { ProvisioningDeviceConstants, type DeviceRegistrationResult, type RegistrationRequest } from 'azure-iot-provisioning-device';
import { Mqtt as ProvisioningMqtt } from 'azure-iot-provisioning-device-mqtt';
import { assertCertificateCurrent } from './x509';
import type { ProvisionResult } from '../../machines/device.machine';
import { checkedAssignment } from '../assignment';
import { monotonicNow, wallTimeOf, type Clock } from '../clock';
import { ServiceProtocolError } from '../errors';
import { DEFAULT_POLICY, nextDelay, retryAfterMsFromSeconds, seedFrom } from '../policy/backoff';
import { classify, toFailure } from '../policy/classify';
import type { Failure } from '../policy/types';
import { Credentials, deviceKeyOf, withEitherKey, type Credential } from './credentials';
import type { PromiseWork } from './work';
import { directMqttPath, type NetworkPath } from './transport';
import { registrationSasToken, ServiceTime, withServiceTime } from './service-time';
import { provisioningFsmHandle } from './sdk-internals';
import type { PartLogger } from '../logger';

export interface ProvisionSettings {
  provisioningHost: string;
  idScope: string;
  /** The device's keys: a refused key is tried once with the other of its pair. */
  credentials: Credentials;
  modelId?: string;
  ca?: string;
  /** MQTT or MQTT over WebSockets (and the proxy): the device's one NetworkPath. Default: plain MQTT. */
  network?: NetworkPath;
  /** The service's time: SAS tokens expire in it. Default: the device clock, never corrected. */
  serviceTime?: ServiceTime;
  /** Asks DPS for its time (a status lookup) when it refuses a token: the clock may be the cause. */
  probeServiceTime?: (signal?: AbortSignal) => Promise<unknown>;
  /**
   * Longest time without progress (`provisionTimeoutMs`): from the start to the first `assigning`
   * answer, then from each poll an `assigning` answer scheduled to the next `assigning` answer.
   * Silence, or only 429/5xx answers, for this long ends the registration; DPS still answering
   * `assigning` does not (`hardDeadlineMs` bounds that).
   */
  deadlineMs: number;
  /** Hard cap on one registration however DPS answers. Default hardDeadlineOf(deadlineMs). */
  hardDeadlineMs?: number;
  /** 429/5xx answers to status polls tolerated in a row before the machine decides. Default 10. */
  maxThrottledPolls?: number;
  /**
   * Seed of the poll jitter (mulberry32 from src/policy/backoff.ts, never Math.random). Default:
   * derived from the registration id, the attempt and the clock's time, so devices throttled
   * together draw apart, and a run on a simulated clock replays.
   */
  pollJitterSeed?: number;
  clock: Clock;
  logger: PartLogger;
}

/** Longest retry-after the actor waits out itself; beyond it the machine takes the wait over. */
export const MAX_POLL_RETRY_AFTER_MS = 60_000;
/** retry-after when DPS gives none: the SDK's own default polling interval (2 s). */
export const DEFAULT_POLL_RETRY_AFTER_MS = ProvisioningDeviceConstants.defaultPollingInterval;
export const DEFAULT_MAX_THROTTLED_POLLS = 10;
/** The hard cap: 10 × the deadline, at most 15 min, never below the deadline itself. */
const HARD_CAP_FACTOR = 10;
const HARD_CAP_MAX_MS = 15 * 60_000;
/** No answer to one request within this fails it: the SDK's own request timeout (30 s). */
const REQUEST_TIMEOUT_MS = ProvisioningDeviceConstants.defaultTimeoutInterval;

/** The hard cap on one registration: min(10 × deadline, 15 min), never below the deadline. */
export function hardDeadlineOf(deadlineMs: number): number {
  return Math.max(deadlineMs, Math.min(HARD_CAP_FACTOR * deadlineMs, HARD_CAP_MAX_MS));
}

/** A DPS answer with a status the SDK would hide by re-polling (429, 5xx). */
export class DpsStatusError extends Error {
  constructor(
    readonly statusCode: number,
    readonly retryAfterMs: number | undefined,
  ) {
    super(`DPS answered ${statusCode}`);
    this.name = 'DpsStatusError';
  }
}

const RESPONSE_TOPIC = /^\$dps\/registrations\/res\/(\d{3})\/\?(.*)$/;

/** Why a DPS response would break the SDK or names no usable assignment, or undefined when it is well-formed. */
export function invalidDpsResponse(status: number, payload: Buffer | string): string | undefined {
  let body: unknown;
  try {
    body = JSON.parse(payload.toString());
  } catch {
    return `status ${status} with a body that is not JSON`;
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return `status ${status} with a body that is not an object`;
  if (status >= 300) return undefined; // error bodies are read leniently by the SDK
  const { status: registrationStatus, operationId, registrationState } = body as Record<string, unknown>;
  if (typeof registrationStatus !== 'string') return 'no registration status';
  if (registrationStatus === 'assigning' && typeof operationId !== 'string') return "'assigning' without an operationId";
  if (registrationStatus === 'assigned') {
    const state = registrationState as Record<string, unknown> | undefined;
    const assignment = checkedAssignment(state?.assignedHub, state?.deviceId);
    if (typeof assignment === 'string') return `'assigned' ${assignment}`;
  }
  return undefined;
}

/**
 * The SDK parses DPS responses inside an event handler with no try/catch: a junk body is an
 * uncaught exception that takes the whole process down (measured). This base checks each
 * response before the SDK sees it and turns a bad one into a `protocolError` event.
 */
class GuardedMqttBase extends MqttBase {
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'message') {
      const match = RESPONSE_TOPIC.exec(String(args[0]));
      const problem = match ? invalidDpsResponse(Number(match[1]), args[1] as Buffer) : undefined;
      if (problem) return super.emit('protocolError', new ServiceProtocolError('dps', problem));
    }
    return super.emit(event, ...args);
  }
}

/**
 * SDK defect (found by the chaos soak): the provisioning transport answers an MqttBase 'error'
 * with a `disconnect` input to its state machine (provisioningFsmHandle) and no callback. In its
 * disconnected state, `disconnect` calls that missing callback; while it is connecting or
 * disconnecting the call is deferred and replayed once it is disconnected, which does the same
 * later. Either way a TypeError is thrown from an event handler or a socket callback: an uncaught
 * exception (seed 1: DPS closed the connection with a poll on the wire; seed 808133588: the
 * deferred replay). The transport's handler is replaced by the same call WITH a callback that
 * does what the transport does without one (emit 'error' when there is an error). If the SDK's
 * internals ever change, the original handler is kept but a throw from it is contained and ends
 * the attempt.
 */
export function guardTransportErrors(
  base: MqttBase,
  sdkHandlers: Array<(error: Error) => void>,
  transport: ProvisioningMqtt,
  onError: (error: Error) => void,
  logger: PartLogger,
): void {
  const handle = provisioningFsmHandle(transport);
  for (const handler of sdkHandlers) {
    base.removeListener('error', handler);
    if (handle) {
      base.on('error', (error: Error) =>
        handle('disconnect', error, (err?: Error) => {
          if (err) transport.emit('error', err);
        }),
      );
    } else {
      base.on('error', (error: Error) => {
        try {
          handler.call(base, error);
        } catch (thrown) {
          logger.debug({ err: (thrown as Error).message }, 'DPS transport threw on a connection error (contained)');
          onError(error);
        }
      });
    }
  }
}

function retryAfterFromTopic(query: string): number | undefined {
  return retryAfterMsFromSeconds(new URLSearchParams(query).get('retry-after'));
}

export interface PollRetry {
  /** R: what the poll must wait at least. */
  baseMs: number;
  /** The wait chosen, in [R, 1.5 R]. */
  delayMs: number;
  rngState: number;
}

/**
 * When to poll the same operation again after DPS answered a status poll `statusCode` (429, 5xx):
 * R = max(retry-after, else 2 s; the classification table's floor for that status, 5 s for a 5xx),
 * and the wait is uniform in [R, 1.5 R], drawn by the policy's own retry-after decision
 * (`nextDelay`: never earlier than R, one step of the seeded RNG) with a jitter of R/2. Undefined
 * when R is beyond MAX_POLL_RETRY_AFTER_MS: polling earlier than asked is not an option, so the
 * wait goes to the machine (which honours retry-after) instead of holding the actor.
 */
export function throttledPollDelay(statusCode: number, retryAfterMs: number | undefined, throttledPolls: number, rngState: number): PollRetry | undefined {
  const { errorClass, minDelayMs } = classify(new DpsStatusError(statusCode, retryAfterMs), 'dps');
  const baseMs = Math.max(retryAfterMs ?? DEFAULT_POLL_RETRY_AFTER_MS, minDelayMs ?? 0);
  if (!(baseMs <= MAX_POLL_RETRY_AFTER_MS)) return undefined;
  const { fleet: _fleet, fixedDelayMs: _fixed, ...curve } = DEFAULT_POLICY;
  const decision = nextDelay(
    { ...curve, retryAfterJitterMs: baseMs / 2 },
    { errorClass, attempt: Math.max(1, throttledPolls), afterLoss: false, retryAfterMs: baseMs },
    rngState,
  );
  return { baseMs, delayMs: decision.delayMs, rngState: decision.rngState };
}

function timeoutError(message: string): Error {
  const error = new Error(message);
  error.name = 'TimeoutError';
  return error;
}

/** One registration; a refused key is retried at once with the other key of the pair. */
export function registerOnce(settings: ProvisionSettings, registrationId: string, signal?: AbortSignal, attempt = 1): Promise<ProvisionResult> {
  const serviceTime = settings.serviceTime;
  return withEitherKey(
    settings.credentials,
    (credential) =>
      serviceTime
        ? withServiceTime(
            serviceTime,
            () => registerWith(credential, settings, registrationId, signal, attempt),
            // Cancelled with the registration: a stopping device does not wait on it.
            settings.probeServiceTime && (() => settings.probeServiceTime!(signal)),
          )
        : registerWith(credential, settings, registrationId, signal, attempt),
    (from, to) => settings.logger.warn({ from, to }, `DPS refused the ${from} key; trying the ${to} key`),
  );
}

function registerWith(credential: Credential, settings: ProvisionSettings, registrationId: string, signal: AbortSignal | undefined, attempt: number): Promise<ProvisionResult> {
  const { clock, logger, deadlineMs } = settings;
  // X.509 attestation: the TLS client certificate is the credential, no SAS token is sent.
  // Loaded for an X.509 device only (a device with keys never needs it), before anything is built.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const security = 'x509' in credential ? new (require('azure-iot-security-x509') as typeof import('azure-iot-security-x509')).X509Security(registrationId, { ...credential.x509 }) : undefined;
  const network = settings.network ?? directMqttPath(logger);
  const base = new GuardedMqttBase(network.mqttProvider());
  if (settings.ca) base.setOptions({ ca: settings.ca });
  const before = new Set(base.listeners('error'));
  const transport = network.provisioningTransport(base);
  const sdkErrorHandlers = base.listeners('error').filter((h) => !before.has(h)) as Array<(error: Error) => void>;
  // The request SymmetricKeyRegistration.register builds (setProvisioningPayload → payload).
  const request: RegistrationRequest = {
    registrationId,
    provisioningHost: settings.provisioningHost,
    idScope: settings.idScope,
    ...(settings.modelId ? { payload: { modelId: settings.modelId } } : {}),
  };
  const startedAt = monotonicNow(clock);
  const hardDeadlineAt = startedAt + (settings.hardDeadlineMs ?? hardDeadlineOf(deadlineMs));
  const maxThrottledPolls = settings.maxThrottledPolls ?? DEFAULT_MAX_THROTTLED_POLLS;
  let rngState = (settings.pollJitterSeed ?? seedFrom(`${registrationId}|${attempt}|${startedAt}`)) >>> 0;

  return new Promise<ProvisionResult>((resolve, reject) => {
    let settled = false;
    /** Status and retry-after of the answer the SDK is handing over (read before it parses it). */
    let answer: { status: number; retryAfterMs: number | undefined } | undefined;
    let throttledPolls = 0;
    let progressDeadlineAt = startedAt + deadlineMs;
    let progressTimer: unknown;
    let hardTimer: unknown;
    let requestTimer: unknown;
    let pollTimer: unknown;
    const clear = (timer: unknown) => {
      if (timer !== undefined) clock.clearTimeout(timer);
    };

    const finish = (error: unknown, result?: ProvisionResult) => {
      if (settled) return;
      settled = true;
      for (const timer of [progressTimer, hardTimer, requestTimer, pollTimer]) clear(timer);
      if (error) {
        // An unreachable MQTT port switches `auto` to WebSockets (a cancelled attempt proves nothing).
        const failure: Failure = toFailure(signal?.aborted ? error : network.explainConnectFailure(error, 'dps'), 'dps', monotonicNow(clock));
        logger.debug({ failure: { ...failure, at: wallTimeOf(clock, failure.at) } }, 'DPS registration failed'); // logged as a date
        reject(failure);
      } else resolve(result!);
      // Settle first, clean up after: the SDK's objects may be in any state by now.
      try {
        base.removeListener('message', watchResponses);
        base.removeListener('protocolError', finish);
        signal?.removeEventListener('abort', onAbort);
        // Cancels the request on the wire, if any, and closes the connection. No polling timer of
        // the SDK's exists: this actor schedules every poll itself.
        transport.disconnect(() => undefined);
      } catch (cleanupError) {
        logger.debug({ err: (cleanupError as Error).message }, 'DPS client cleanup failed');
      }
    };
    const watchResponses = (topic: string) => {
      const match = RESPONSE_TOPIC.exec(String(topic));
      if (match) answer = { status: Number(match[1]), retryAfterMs: retryAfterFromTopic(match[2]!) };
    };
    const onAbort = () => finish(new Error('DPS registration cancelled'));

    /** No progress by `at` (the clock's monotonicNow) ends the registration. */
    const armProgressDeadline = (at: number) => {
      clear(progressTimer);
      progressDeadlineAt = at;
      progressTimer = clock.setTimeout(
        () => finish(timeoutError(`DPS registration made no progress within ${deadlineMs} ms`)),
        Math.max(0, at - monotonicNow(clock)),
      );
    };

    const send = (operationId?: string) => {
      if (settled) return;
      answer = undefined;
      clear(requestTimer);
      requestTimer = clock.setTimeout(
        () => finish(timeoutError(`DPS did not answer the ${operationId === undefined ? 'register request' : 'status poll'} within ${REQUEST_TIMEOUT_MS} ms`)),
        REQUEST_TIMEOUT_MS,
      );
      try {
        if (operationId === undefined) transport.registrationRequest(request, (err, result) => onAnswer(undefined, err, result));
        else transport.queryOperationStatus(request, operationId, (err, result) => onAnswer(operationId, err, result));
      } catch (error) {
        finish(error);
      }
    };
    const pollAfter = (operationId: string, delayMs: number) => {
      clear(pollTimer);
      pollTimer = clock.setTimeout(() => {
        pollTimer = undefined;
        send(operationId);
      }, delayMs);
    };

    /** A 429/5xx to a status poll: the same operation again after retry-after, within the bounds. */
    const onRefusedPoll = (operationId: string, refusal: DpsStatusError) => {
      throttledPolls++;
      const retry = throttledPolls <= maxThrottledPolls ? throttledPollDelay(refusal.statusCode, refusal.retryAfterMs, throttledPolls, rngState) : undefined;
      const log = { status: refusal.statusCode, retryAfterMs: refusal.retryAfterMs ?? null, throttledPolls };
      // Past the deadline the poll could not be answered in time: the machine gets the wait now,
      // with its retry-after, instead of a timeout later.
      if (!retry || monotonicNow(clock) + retry.delayMs > Math.min(progressDeadlineAt, hardDeadlineAt)) {
        logger.debug(log, 'DPS keeps refusing status polls: the machine takes the wait over');
        return finish(refusal);
      }
      rngState = retry.rngState;
      logger.debug({ ...log, delayMs: Math.round(retry.delayMs) }, 'DPS refused a status poll: polling the same operation again');
      pollAfter(operationId, retry.delayMs);
    };

    /** The SDK transport's callback; `polled` is the operation id of a poll, undefined for the register request. */
    const onAnswer = (polled: string | undefined, err: Error | undefined, result: DeviceRegistrationResult | undefined) => {
      if (settled) return;
      clear(requestTimer);
      requestTimer = undefined;
      const raw = answer;
      answer = undefined;
      if (err) return finish(err);
      if (raw && (raw.status === 429 || raw.status >= 500)) {
        const refusal = new DpsStatusError(raw.status, raw.retryAfterMs);
        // To the register request: the machine backs off and registers again.
        if (polled === undefined) return finish(refusal);
        return onRefusedPoll(polled, refusal);
      }
      const status = typeof result?.status === 'string' ? result.status.toLowerCase() : String(result?.status);
      if (status === 'assigning') {
        const operationId = typeof result?.operationId === 'string' && result.operationId !== '' ? result.operationId : polled;
        if (operationId === undefined) return finish(new ServiceProtocolError('dps', "'assigning' without an operationId"));
        throttledPolls = 0;
        const waitMs = Math.min(raw?.retryAfterMs ?? DEFAULT_POLL_RETRY_AFTER_MS, MAX_POLL_RETRY_AFTER_MS);
        // Progress: the next poll gets a whole deadline to be answered, even past the first one.
        armProgressDeadline(monotonicNow(clock) + waitMs + deadlineMs);
        return pollAfter(operationId, waitMs);
      }
      if (status === 'assigned') {
        const state = result?.registrationState;
        if (!state || state.status !== 'assigned' || !state.assignedHub || !state.deviceId) {
          const unexpected = new Error(`DPS registration ended with status '${state?.status ?? 'none'}'`);
          unexpected.name = 'DeviceRegistrationFailedError';
          return finish(unexpected);
        }
        return finish(null, { hubHost: state.assignedHub, deviceId: state.deviceId, assignedAt: clock.now(), registeredAt: monotonicNow(clock) });
      }
      // The errors the SDK's polling state machine builds for these, so they classify the same.
      const ended = status === 'failed' ? new sdkErrors.DeviceRegistrationFailedError('registration failed') : new SyntaxError(`status is ${result?.status}`);
      (ended as Error & { result?: unknown }).result = result;
      finish(ended);
    };

    // Before the SDK's own handler: the raw status is known when the SDK calls back.
    base.prependListener('message', watchResponses);
    base.on('protocolError', finish);
    // Between polls a dropped DPS connection surfaces here; without a listener it would crash.
    transport.on('error', (error: Error) => finish(error));
    guardTransportErrors(base, sdkErrorHandlers, transport, (error) => finish(error), logger);
    signal?.addEventListener('abort', onAbort, { once: true });
    hardTimer = clock.setTimeout(
      () => finish(timeoutError(`DPS registration not assigned within the hard cap of ${hardDeadlineAt - startedAt} ms`)),
      hardDeadlineAt - startedAt,
    );
    armProgressDeadline(progressDeadlineAt);
    if (signal?.aborted) return onAbort();

    try {
      if (security) {
        if ('x509' in credential) assertCertificateCurrent(credential.x509, settings.serviceTime?.nowMs() ?? clock.now());
        security.getCertificate((error, cert) => {
          if (settled) return;
          if (error || !cert) return finish(error ?? new Error('no X.509 certificate'));
          transport.setAuthentication(cert);
          send();
        });
        return;
      }
      // The token SymmetricKeySecurityClient would sign, expiring in the service's time.
      const key = deviceKeyOf(credential as Exclude<Credential, { x509: unknown }>, registrationId);
      transport.setSharedAccessSignature(registrationSasToken(settings.idScope, registrationId, key, settings.serviceTime ?? new ServiceTime(clock, logger)));
      send();
    } catch (error) {
      finish(error);
    }
  });
}

export function provisionWork(settings: ProvisionSettings): PromiseWork<ProvisionResult, { registrationId: string; attempt: number }> {
  return ({ input, signal }) => registerOnce(settings, input.registrationId, signal, input.attempt);
}

