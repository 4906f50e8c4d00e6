/**
 * The provision actor: one DPS registration through the unmodified Azure SDK.
 *
 * What the SDK does not do and this actor adds (see shared/reference/azure-sdk-facts.md):
 * - the SDK re-polls 429 and 5xx answers forever, in lockstep with retry-after; we watch the
 *   raw responses, abort, and hand the decision (with retry-after) to the machine;
 * - DPS has no overall deadline: we impose one and really cancel (disconnect the transport);
 * - the transport emits 'error' with no listener between polls: we attach one;
 * - the provisioning MQTT transport has no `ca` option: the CA goes in through an MqttBase.
 */
import { MqttBase } from 'azure-iot-mqtt-base';
import { ProvisioningDeviceClient } from 'azure-iot-provisioning-device';
import { Mqtt as ProvisioningMqtt } from 'azure-iot-provisioning-device-mqtt';
import { SymmetricKeySecurityClient } from 'azure-iot-security-symmetric-key';
import type { Logger } from 'pino';
import { fromPromise } from 'xstate';
import type { ProvisionResult } from '../../machines/device.machine';
import type { Clock } from '../clock';
import { ServiceProtocolError } from '../errors';
import { toFailure } from '../policy/classify';
import type { Failure } from '../policy/types';
import { deviceKeyOf, type Credential } from './credentials';
import type { PromiseWork } from './work';
import { sharedTlsMqttProvider } from './tls';

export interface ProvisionSettings {
  provisioningHost: string;
  idScope: string;
  credential: Credential;
  modelId?: string;
  ca?: string;
  /** Overall deadline of one registration (connect, register, polls). */
  deadlineMs: number;
  clock: Clock;
  logger: Logger;
}

/** A DPS answer with a status the SDK would hide by re-polling (429, 5xx). */
class DpsStatusError extends Error {
  constructor(
    readonly statusCode: number,
    readonly retryAfterMs: number | undefined,
  ) {
    super(`DPS answered ${statusCode}`);
    this.name = 'DpsStatusError';
  }
}

const RESPONSE_TOPIC = /^\$dps\/registrations\/res\/(\d{3})\/\?(.*)$/;

/** Why a DPS response would break the SDK, or undefined when it is well-formed. */
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
    if (typeof state?.assignedHub !== 'string' || typeof state?.deviceId !== 'string') return "'assigned' without a hub and device id";
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

type Handle = (event: string, ...args: unknown[]) => void;

/**
 * SDK defect (found by the chaos soak): the provisioning transport answers an MqttBase 'error'
 * with `_fsm.handle('disconnect', err)` and no callback. In its disconnected state, `disconnect`
 * calls that missing callback; while it is connecting or disconnecting the call is deferred and
 * replayed once it is disconnected, which does the same later. Either way a TypeError is thrown
 * from an event handler or a socket callback: an uncaught exception (seed 1: DPS closed the
 * connection with a poll on the wire; seed 808133588: the deferred replay). The transport's
 * handler is replaced by the same call WITH a callback that does what the transport does without
 * one (emit 'error' when there is an error). If the SDK's internals ever change, the original
 * handler is kept but a throw from it is contained and ends the attempt.
 */
export function guardTransportErrors(
  base: MqttBase,
  sdkHandlers: Array<(error: Error) => void>,
  transport: ProvisioningMqtt,
  onError: (error: Error) => void,
  logger: Logger,
): void {
  const fsm = (transport as unknown as { _fsm?: { handle?: Handle } })._fsm;
  for (const handler of sdkHandlers) {
    base.removeListener('error', handler);
    if (fsm && typeof fsm.handle === 'function') {
      const handle = fsm.handle.bind(fsm) as Handle;
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
  const seconds = Number(new URLSearchParams(query).get('retry-after'));
  return Number.isFinite(seconds) && seconds > 0 ? Math.round(seconds * 1000) : undefined;
}

export function registerOnce(settings: ProvisionSettings, registrationId: string, signal?: AbortSignal): Promise<ProvisionResult> {
  const { clock, logger } = settings;
  const base = new GuardedMqttBase(sharedTlsMqttProvider());
  if (settings.ca) base.setOptions({ ca: settings.ca });
  const before = new Set(base.listeners('error'));
  const transport = new ProvisioningMqtt(base);
  const sdkErrorHandlers = base.listeners('error').filter((h) => !before.has(h)) as Array<(error: Error) => void>;
  const security = new SymmetricKeySecurityClient(registrationId, deviceKeyOf(settings.credential, registrationId));
  const client = ProvisioningDeviceClient.create(settings.provisioningHost, settings.idScope, transport, security);
  if (settings.modelId) client.setProvisioningPayload({ modelId: settings.modelId });

  return new Promise<ProvisionResult>((resolve, reject) => {
    let settled = false;
    const finish = (error: unknown, result?: ProvisionResult) => {
      if (settled) return;
      settled = true;
      clock.clearTimeout(deadline);
      if (error) {
        const failure: Failure = toFailure(error, 'dps', clock.now());
        logger.debug({ failure }, 'DPS registration failed');
        reject(failure);
      } else resolve(result!);
      // Settle first, clean up after: the SDK's objects may be in any state by now.
      try {
        base.removeListener('message', watchResponses);
        base.removeListener('protocolError', finish);
        signal?.removeEventListener('abort', onAbort);
        // Stop the SDK's own polling timer, or it re-sends the registration after retry-after in
        // the background (measured: a stray register 1.5 s later while we were backing off).
        // Its public cancel() only reaches the transport, so the state machine is reached directly.
        const polling = (client as unknown as { _pollingStateMachine?: { cancel(cb: () => void): void } })._pollingStateMachine;
        if (polling) polling.cancel(() => undefined);
        transport.disconnect(() => undefined);
      } catch (cleanupError) {
        logger.debug({ err: (cleanupError as Error).message }, 'DPS client cleanup failed');
      }
    };
    const watchResponses = (topic: string) => {
      const match = RESPONSE_TOPIC.exec(topic);
      if (!match) return;
      const status = Number(match[1]);
      if (status === 429 || status >= 500) finish(new DpsStatusError(status, retryAfterFromTopic(match[2])));
    };
    const onAbort = () => finish(new Error('DPS registration cancelled'));
    const deadline = clock.setTimeout(() => {
      const timeout = new Error(`DPS registration did not complete within ${settings.deadlineMs} ms`);
      timeout.name = 'TimeoutError';
      finish(timeout);
    }, settings.deadlineMs);

    base.on('message', watchResponses);
    base.on('protocolError', finish);
    // Between polls a dropped DPS connection surfaces here; without a listener it would crash.
    transport.on('error', (error: Error) => finish(error));
    guardTransportErrors(base, sdkErrorHandlers, transport, (error) => finish(error), logger);
    signal?.addEventListener('abort', onAbort, { once: true });

    client.register((error, result) => {
      if (error) return finish(error);
      if (!result || result.status !== 'assigned' || !result.assignedHub || !result.deviceId) {
        const unexpected = new Error(`DPS registration ended with status '${result?.status ?? 'none'}'`);
        unexpected.name = 'DeviceRegistrationFailedError';
        return finish(unexpected);
      }
      finish(null, { hubHost: result.assignedHub, deviceId: result.deviceId, assignedAt: clock.now() });
    });
  });
}

export function provisionWork(settings: ProvisionSettings): PromiseWork<ProvisionResult, { registrationId: string; attempt: number }> {
  return ({ input, signal }) => registerOnce(settings, input.registrationId, signal);
}

export function createProvisionActor(settings: ProvisionSettings) {
  return fromPromise(provisionWork(settings));
}

