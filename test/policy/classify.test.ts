import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import fc from 'fast-check';
import { errors, NoRetry } from 'azure-iot-common';
import { Client } from 'azure-iot-device';
import { Mqtt } from 'azure-iot-device-mqtt';
import { DpsLookupError, LookupNotAssignedError } from '../../src/actors/lookup';
import { ConfigError, ServiceProtocolError } from '../../src/errors';
import {
  CLASSIFICATION_TABLE,
  classify,
  extractFacts,
  redactSecrets,
  toFailure,
} from '../../src/policy/classify';
import type { Classification, ErrorClass, Phase } from '../../src/policy/types';
import {
  c2dSubscribe,
  connackError,
  dpsAnswer,
  dpsErrorBody,
  dpsRegistrationBody,
  dpsStatus,
  dpsStatusError,
  hubAfterConnect,
  hubConnectionClosed,
  hubErrorBody,
  hubFirstConnect,
  registerTwice,
  sendTooLarge,
  socketError,
  tlsError,
  tokenRenewalWithoutKey,
  twinAnswer,
} from './sdk-fixtures';
import { MqttUnreachableError } from '../../src/actors/transport';
import { DeviceCertificateExpiredError } from '../../src/actors/x509';

/** The error a registration through the real provisioning client ended with. */
const dpsError = async (status: number, body?: Record<string, unknown>): Promise<unknown> => (await dpsAnswer(status, body)).error;

interface Case {
  title: string;
  /** Sync, or async when the SDK's own code path answers through callbacks/timers. */
  error: () => unknown;
  phase: Phase;
  rule: string;
  errorClass: ErrorClass;
  retryAfterMs?: number;
  minDelayMs?: number;
  assignmentInDoubt?: true;
}


/** One or more fixtures per table row, in table order. */
const CASES: Case[] = [
  // fatal
  { title: 'ConfigError from src/errors', error: () => new ConfigError('hubHost', 'a host name'), phase: 'hub-connect', rule: 'config-error', errorClass: 'fatal' },
  { title: 'MessageTooLargeError (device-mqtt sendEvent refuses a body over 256 KiB)', error: sendTooLarge, phase: 'hub-session', rule: 'message-too-large', errorClass: 'fatal' },
  { title: 'hub self-signed cert before first connect (UnauthorizedError, code lost)', error: () => hubFirstConnect(tlsError('DEPTH_ZERO_SELF_SIGNED_CERT')), phase: 'hub-connect', rule: 'tls-certificate', errorClass: 'fatal' },
  { title: 'hub self-signed cert in chain before first connect', error: () => hubFirstConnect(tlsError('SELF_SIGNED_CERT_IN_CHAIN')), phase: 'hub-connect', rule: 'tls-certificate', errorClass: 'fatal' },
  { title: 'hub unable to verify leaf before first connect', error: () => hubFirstConnect(tlsError('UNABLE_TO_VERIFY_LEAF_SIGNATURE')), phase: 'hub-connect', rule: 'tls-certificate', errorClass: 'fatal' },
  // Expired / not yet valid: most often a device clock not set yet (boot before NTP): parked.
  { title: 'hub expired cert after a first connect (NotConnectedError with code)', error: () => hubAfterConnect(tlsError('CERT_HAS_EXPIRED')), phase: 'hub-connect', rule: 'tls-certificate-time', errorClass: 'parked' },
  { title: "the device's own X.509 certificate expired (checked before connecting)", error: () => new DeviceCertificateExpiredError(new Date(0), new Date(1000), true), phase: 'hub-connect', rule: 'device-certificate-expired', errorClass: 'parked' },
  { title: 'DPS certificate not yet valid (raw, clock not set)', error: () => tlsError('CERT_NOT_YET_VALID'), phase: 'dps', rule: 'tls-certificate-time', errorClass: 'parked' },
  { title: 'hub altname mismatch before first connect', error: () => hubFirstConnect(tlsError('ERR_TLS_CERT_ALTNAME_INVALID')), phase: 'hub-connect', rule: 'tls-certificate', errorClass: 'fatal' },
  { title: 'DPS self-signed cert (raw from mqtt.js)', error: () => tlsError('DEPTH_ZERO_SELF_SIGNED_CERT'), phase: 'dps', rule: 'tls-certificate', errorClass: 'fatal' },
  { title: 'DPS altname mismatch (raw)', error: () => tlsError('ERR_TLS_CERT_ALTNAME_INVALID'), phase: 'dps', rule: 'tls-certificate', errorClass: 'fatal' },
  { title: 'DPS unable to get local issuer (raw)', error: () => tlsError('UNABLE_TO_GET_ISSUER_CERT_LOCALLY'), phase: 'dps', rule: 'tls-certificate', errorClass: 'fatal' },
  { title: "DPS body status 'failed' (polling state machine: DeviceRegistrationFailedError)", error: () => dpsError(200, dpsRegistrationBody('failed')), phase: 'dps', rule: 'registration-failed', errorClass: 'fatal' },
  { title: "DPS body status 'disabled' (polling state machine: SyntaxError 'status is disabled')", error: () => dpsError(200, dpsRegistrationBody('disabled')), phase: 'dps', rule: 'registration-disabled', errorClass: 'parked' },
  { title: "DPS body status 'failed' with errorCode 500000 inside (DPS's own trouble)", error: () => dpsError(200, dpsRegistrationBody('failed', 500000)), phase: 'dps', rule: 'registration-failed-retryable', errorClass: 'parked' },
  { title: "DPS body status 'failed' with errorCode 429001 inside", error: () => dpsError(200, dpsRegistrationBody('failed', 429001)), phase: 'dps', rule: 'registration-failed-retryable', errorClass: 'parked' },
  { title: "C2D subscription for a device id with '#' (mqtt.js 'Invalid topic' → FormatError)", error: () => c2dSubscribe('dev#1'), phase: 'hub-session', rule: 'mqtt-invalid-topic', errorClass: 'fatal' },
  { title: "C2D subscription for a device id with '+'", error: () => c2dSubscribe('dev+1'), phase: 'hub-session', rule: 'mqtt-invalid-topic', errorClass: 'fatal' },
  { title: "a second register() while one is pending (InvalidOperationError 'another operation is in progress')", error: async () => (await registerTwice()).second, phase: 'dps', rule: 'sdk-operation-in-progress', errorClass: 'transient' },
  { title: 'token renewal options with a keyless SAS credential (device-mqtt setOptions: InvalidOperationError)', error: tokenRenewalWithoutKey, phase: 'hub-connect', rule: 'sdk-invalid-operation', errorClass: 'fatal' },
  // CONNACK
  { title: 'hub CONNACK 1 before first connect (NotImplementedError)', error: () => hubFirstConnect(connackError(1)), phase: 'hub-connect', rule: 'connack-1-protocol', errorClass: 'fatal' },
  { title: 'hub CONNACK 1 after a first connect', error: () => hubAfterConnect(connackError(1)), phase: 'hub-connect', rule: 'connack-1-protocol', errorClass: 'fatal' },
  { title: 'DPS CONNACK 1 (raw)', error: () => connackError(1), phase: 'dps', rule: 'connack-1-protocol', errorClass: 'fatal' },
  { title: 'hub CONNACK 3 before first connect (ServiceUnavailableError)', error: () => hubFirstConnect(connackError(3)), phase: 'hub-connect', rule: 'connack-3-hub-unavailable', errorClass: 'transient', minDelayMs: 5000 , assignmentInDoubt: true },
  { title: 'hub CONNACK 3 after a first connect (NotConnectedError, code 3)', error: () => hubAfterConnect(connackError(3)), phase: 'hub-connect', rule: 'connack-3-hub-unavailable', errorClass: 'transient', minDelayMs: 5000 , assignmentInDoubt: true },
  { title: 'DPS CONNACK 3 (raw)', error: () => connackError(3), phase: 'dps', rule: 'connack-3-server-unavailable', errorClass: 'transient', minDelayMs: 5000 },
  { title: 'DPS CONNACK 2 identifier rejected (raw)', error: () => connackError(2), phase: 'dps', rule: 'dps-connack-rejected', errorClass: 'fatal' },
  { title: 'DPS CONNACK 4 bad group/device key (raw)', error: () => connackError(4), phase: 'dps', rule: 'dps-connack-rejected', errorClass: 'fatal' },
  { title: 'DPS CONNACK 5 not authorized (raw)', error: () => connackError(5), phase: 'dps', rule: 'dps-connack-rejected', errorClass: 'fatal' },
  { title: 'hub CONNACK 2 before first connect', error: () => hubFirstConnect(connackError(2)), phase: 'hub-connect', rule: 'connack-2-first-connect', errorClass: 'reprovision' , assignmentInDoubt: true },
  { title: 'hub CONNACK 2 after a first connect', error: () => hubAfterConnect(connackError(2)), phase: 'hub-connect', rule: 'connack-2-after-connect', errorClass: 'reprovision' , assignmentInDoubt: true },
  { title: 'hub CONNACK 4 before first connect', error: () => hubFirstConnect(connackError(4)), phase: 'hub-connect', rule: 'connack-4-first-connect', errorClass: 'reprovision' , assignmentInDoubt: true },
  { title: 'hub CONNACK 4 after a first connect', error: () => hubAfterConnect(connackError(4)), phase: 'hub-connect', rule: 'connack-4-after-connect', errorClass: 'reprovision' , assignmentInDoubt: true },
  { title: 'hub CONNACK 5 before first connect (UnauthorizedError)', error: () => hubFirstConnect(connackError(5)), phase: 'hub-connect', rule: 'connack-5-first-connect', errorClass: 'reprovision' , assignmentInDoubt: true },
  { title: 'hub CONNACK 5 after a first connect (NotConnectedError, code 5)', error: () => hubAfterConnect(connackError(5)), phase: 'hub-connect', rule: 'connack-5-after-connect', errorClass: 'reprovision' , assignmentInDoubt: true },
  { title: 'hub CONNACK 5 on a token-renewal reconnect (disconnect event, raw)', error: () => ({ transportObj: connackError(5) }), phase: 'hub-session', rule: 'connack-5-after-connect', errorClass: 'reprovision' , assignmentInDoubt: true },
  // sockets
  { title: 'hub ENOTFOUND before first connect', error: () => hubFirstConnect(socketError('ENOTFOUND')), phase: 'hub-connect', rule: 'hub-dns-not-found', errorClass: 'reprovision' , assignmentInDoubt: true },
  { title: 'hub ENOTFOUND after a first connect', error: () => hubAfterConnect(socketError('ENOTFOUND')), phase: 'hub-connect', rule: 'hub-dns-not-found', errorClass: 'reprovision' , assignmentInDoubt: true },
  { title: 'DPS ENOTFOUND (raw)', error: () => socketError('ENOTFOUND'), phase: 'dps', rule: 'dps-dns-not-found', errorClass: 'transient' },
  { title: "transport 'auto': MQTT never answered (MqttUnreachableError around the SDK's ECONNREFUSED)", error: () => new MqttUnreachableError('MQTT on hub:8883 could not be reached', hubFirstConnect(socketError('ECONNREFUSED'))), phase: 'hub-connect', rule: 'mqtt-unreachable-websocket-fallback', errorClass: 'transient' },
  { title: 'hub ECONNREFUSED before first connect (UnauthorizedError "Not authorized" wrapper)', error: () => hubFirstConnect(socketError('ECONNREFUSED')), phase: 'hub-connect', rule: 'socket-refused', errorClass: 'transient' },
  { title: 'hub ECONNREFUSED after a first connect (NotConnectedError)', error: () => hubAfterConnect(socketError('ECONNREFUSED')), phase: 'hub-connect', rule: 'socket-refused', errorClass: 'transient' },
  { title: 'DPS down: ECONNREFUSED (raw)', error: () => socketError('ECONNREFUSED'), phase: 'dps', rule: 'socket-refused', errorClass: 'transient' },
  { title: 'hub ECONNRESET while connected (disconnect event)', error: () => ({ transportObj: socketError('ECONNRESET') }), phase: 'hub-session', rule: 'socket-reset', errorClass: 'transient' },
  { title: 'hub EPIPE on publish (translated)', error: () => hubAfterConnect(socketError('EPIPE')), phase: 'hub-session', rule: 'socket-reset', errorClass: 'transient' },
  { title: 'DPS ECONNRESET (raw)', error: () => socketError('ECONNRESET'), phase: 'dps', rule: 'socket-reset', errorClass: 'transient' },
  { title: 'hub ETIMEDOUT before first connect', error: () => hubFirstConnect(socketError('ETIMEDOUT')), phase: 'hub-connect', rule: 'socket-timeout', errorClass: 'transient' },
  { title: 'DPS ETIMEDOUT (raw)', error: () => socketError('ETIMEDOUT'), phase: 'dps', rule: 'socket-timeout', errorClass: 'transient' },
  { title: 'hub EHOSTUNREACH after a first connect', error: () => hubAfterConnect(socketError('EHOSTUNREACH')), phase: 'hub-connect', rule: 'network-unreachable', errorClass: 'transient' },
  { title: 'hub ENETUNREACH before first connect', error: () => hubFirstConnect(socketError('ENETUNREACH')), phase: 'hub-connect', rule: 'network-unreachable', errorClass: 'transient' },
  { title: 'hub EAI_AGAIN (resolver down) is not ENOTFOUND', error: () => hubFirstConnect(socketError('EAI_AGAIN')), phase: 'hub-connect', rule: 'network-unreachable', errorClass: 'transient' },
  { title: 'hub EMFILE before first connect (getaddrinfo EMFILE inside UnauthorizedError)', error: () => hubFirstConnect(socketError('EMFILE')), phase: 'hub-connect', rule: 'os-resources', errorClass: 'transient' },
  // statuses
  // Hub statuses: on MQTT only a twin answer has one, and the SDK keeps only the hub's text.
  { title: 'twin GET answered 429 (429001 ThrottlingException text)', error: () => twinAnswer(429, hubErrorBody(429001, 'IoT Hub throttling limits have been exceeded for the requested operation.')), phase: 'hub-session', rule: 'hub-throttled', errorClass: 'throttled' },
  { title: 'twin GET answered 503 (503008 "Message throttled, please retry operation.")', error: () => twinAnswer(503, hubErrorBody(503008, 'Receive link throttled. Message throttled, please retry operation.')), phase: 'hub-session', rule: 'hub-throttled', errorClass: 'throttled' },
  { title: 'twin GET answered 429 (GenericTooManyRequests)', error: () => twinAnswer(429, hubErrorBody(429000, 'Too Many Requests')), phase: 'hub-session', rule: 'hub-throttled', errorClass: 'throttled' },
  { title: "twin GET answered 403 (403002 'exceeded the allocated quota')", error: () => twinAnswer(403, hubErrorBody(403002, "Total number of messages on IotHub 'hub-1' exceeded the allocated quota.")), phase: 'hub-session', rule: 'hub-quota-exceeded', errorClass: 'throttled' },
  { title: 'twin GET answered 401 (401003 "Authentication failed for this device, renew token or certificate and reconnect")', error: () => twinAnswer(401, hubErrorBody(401003, 'Authentication failed for this device, renew token or certificate and reconnect')), phase: 'hub-session', rule: 'hub-unauthorized', errorClass: 'reprovision', assignmentInDoubt: true },
  { title: "twin GET answered 401 (401003 \"IotHub '…' does not contain the specified device '…'\")", error: () => twinAnswer(401, hubErrorBody(401003, "IotHub 'hub-1' does not contain the specified device 'dev1'")), phase: 'hub-session', rule: 'hub-unauthorized', errorClass: 'reprovision', assignmentInDoubt: true },
  { title: 'twin GET answered 401 (401002 IotHub Unauthorized Access)', error: () => twinAnswer(401, hubErrorBody(401002, 'IotHub Unauthorized Access')), phase: 'hub-session', rule: 'hub-unauthorized', errorClass: 'reprovision', assignmentInDoubt: true },
  { title: 'twin GET answered 500 ("An internal error occurred.")', error: () => twinAnswer(500, hubErrorBody(500001, 'An internal error occurred.')), phase: 'hub-session', rule: 'hub-server-error', errorClass: 'transient', minDelayMs: 5000 },
  { title: 'twin GET answered 500 (500001 ServerError)', error: () => twinAnswer(500, hubErrorBody(500001, 'ServerError')), phase: 'hub-session', rule: 'hub-server-error', errorClass: 'transient', minDelayMs: 5000 },
  { title: 'twin GET answered 503 (Service Unavailable)', error: () => twinAnswer(503, hubErrorBody(503000, 'Service Unavailable')), phase: 'hub-session', rule: 'hub-server-error', errorClass: 'transient', minDelayMs: 5000 },
  { title: 'twin GET answered 503 (503003 PartitionNotFound)', error: () => twinAnswer(503, hubErrorBody(503003, 'PartitionNotFound')), phase: 'hub-session', rule: 'hub-server-error', errorClass: 'transient', minDelayMs: 5000 },
  // DPS 429 / 5xx: the SDK re-polls them forever, so only the provision actor's DpsStatusError carries them.
  { title: 'DPS 429 with retry-after 1.5 s (DpsStatusError from the provision actor)', error: () => dpsStatusError(429, 1500), phase: 'dps', rule: 'throttled-429', errorClass: 'throttled', retryAfterMs: 1500 },
  { title: 'DPS 429 without retry-after (DpsStatusError)', error: () => dpsStatusError(429), phase: 'dps', rule: 'throttled-429', errorClass: 'throttled' },
  // Status lookup, errors as src/actors/lookup.ts builds them.
  { title: 'lookup 404 (no registration)', error: () => new DpsLookupError(404, undefined, 'Not found.'), phase: 'dps-lookup', rule: 'lookup-no-registration', errorClass: 'reprovision' },
  { title: 'lookup 401 (DPS refuses the token)', error: () => new DpsLookupError(401, undefined, undefined), phase: 'dps-lookup', rule: 'lookup-no-registration', errorClass: 'reprovision' },
  { title: "lookup answered, registration not 'assigned'", error: () => new LookupNotAssignedError('disabled'), phase: 'dps-lookup', rule: 'lookup-no-registration', errorClass: 'reprovision' },
  { title: 'lookup 429 with Retry-After 2 s', error: () => new DpsLookupError(429, 2000, undefined), phase: 'dps-lookup', rule: 'throttled-429', errorClass: 'throttled', retryAfterMs: 2000 },
  { title: 'lookup 503', error: () => new DpsLookupError(503, undefined, undefined), phase: 'dps-lookup', rule: 'dps-server-error', errorClass: 'transient', minDelayMs: 5000 },
  { title: 'DPS 500 (DpsStatusError)', error: () => dpsStatusError(500), phase: 'dps', rule: 'dps-server-error', errorClass: 'transient', minDelayMs: 5000 },
  { title: 'DPS 503 with retry-after 3 s (DpsStatusError)', error: () => dpsStatusError(503, 3000), phase: 'dps', rule: 'dps-server-error', errorClass: 'transient', minDelayMs: 5000, retryAfterMs: 3000 },
  // DPS 300–428: the provisioning transport's translateError, status in the response topic.
  { title: 'DPS 400 (ArgumentError)', error: () => dpsError(400), phase: 'dps', rule: 'dps-bad-request', errorClass: 'fatal' },
  { title: 'DPS 401 (UnauthorizedError)', error: () => dpsError(401), phase: 'dps', rule: 'dps-unauthorized', errorClass: 'fatal' },
  { title: 'DPS 403 (plain Error, status from topic)', error: () => dpsError(403), phase: 'dps', rule: 'dps-forbidden', errorClass: 'fatal' },
  { title: 'DPS 404 (DeviceNotFoundError: no enrollment)', error: () => dpsError(404), phase: 'dps', rule: 'dps-not-found', errorClass: 'fatal' },
  { title: 'DPS 409 Conflict (plain Error, status from topic)', error: () => dpsError(409), phase: 'dps', rule: 'dps-conflict', errorClass: 'transient' },
  { title: 'DPS 412 Precondition Failed', error: () => dpsError(412), phase: 'dps', rule: 'dps-conflict', errorClass: 'transient' },
  // Any other lookup 4xx: a registration gives the real verdict (the lookup is only a shortcut).
  { title: 'lookup 409 (DpsLookupError)', error: () => new DpsLookupError(409, undefined, undefined), phase: 'dps-lookup', rule: 'lookup-no-registration', errorClass: 'reprovision' },
  { title: 'lookup 405 (DpsLookupError)', error: () => new DpsLookupError(405, undefined, undefined), phase: 'dps-lookup', rule: 'lookup-no-registration', errorClass: 'reprovision' },
  { title: 'DPS 408 Request Timeout', error: () => dpsError(408), phase: 'dps', rule: 'dps-request-timeout', errorClass: 'transient' },
  { title: 'DPS 405 Method Not Allowed', error: () => dpsError(405), phase: 'dps', rule: 'dps-client-error', errorClass: 'fatal' },
  { title: 'DPS 422 Unprocessable', error: () => dpsError(422, dpsErrorBody(422, 'Custom allocation payload rejected')), phase: 'dps', rule: 'dps-client-error', errorClass: 'fatal' },
  // lost connections, timeouts
  { title: 'PUBACK timeout (TimeoutError "Message not acknowledged")', error: () => new errors.TimeoutError('Message not acknowledged'), phase: 'hub-session', rule: 'timeout', errorClass: 'transient' },
  { title: 'DPS request timeout (TimeoutError from the polling state machine)', error: () => new errors.TimeoutError(), phase: 'dps', rule: 'timeout', errorClass: 'transient' },
  { title: 'DPS junk response (ServiceProtocolError from the guarded transport)', error: () => new ServiceProtocolError('dps', 'status 202 with a body that is not JSON'), phase: 'dps', rule: 'malformed-service-response', errorClass: 'transient' },
  { title: 'hub junk twin response (ServiceProtocolError from the guarded session)', error: () => new ServiceProtocolError('hub', 'twin GET answer without sections'), phase: 'hub-session', rule: 'malformed-service-response', errorClass: 'transient' },
  { title: 'DPS registration cancelled (polling state machine cancel: OperationCancelledError)', error: async () => (await registerTwice()).first, phase: 'dps', rule: 'operation-cancelled', errorClass: 'transient' },
  { title: 'socket closed before CONNACK on first connect (mqtt-base "Unable to establish a connection")', error: () => hubFirstConnect(new errors.NotConnectedError('Unable to establish a connection')), phase: 'hub-connect', rule: 'first-connection-failed', errorClass: 'transient' },
  { title: 'socket closed while connected (disconnect event, Disconnected.transportObj)', error: hubConnectionClosed, phase: 'hub-session', rule: 'connection-lost', errorClass: 'transient' },
  { title: 'un-acked QoS 1 send failed by the close', error: () => new errors.NotConnectedError('Connection to the server has been closed.'), phase: 'hub-session', rule: 'connection-lost', errorClass: 'transient' },
  { title: 'DPS connection dropped between polls (transport "error" event)', error: () => new errors.NotConnectedError('Connection to the server has been closed.'), phase: 'dps', rule: 'connection-lost', errorClass: 'transient' },
  { title: 'premature close after a first connect', error: () => hubAfterConnect(new Error('premature close')), phase: 'hub-connect', rule: 'connection-lost', errorClass: 'transient' },
  // default
  { title: 'an unknown Error', error: () => new Error('something nobody expected'), phase: 'hub-session', rule: 'unknown', errorClass: 'transient' },
  { title: 'a thrown string', error: () => 'boom', phase: 'hub-connect', rule: 'unknown', errorClass: 'transient' },
  { title: 'undefined', error: () => undefined, phase: 'dps', rule: 'unknown', errorClass: 'transient' },
  { title: 'twin GET answered 404 with a text we do not know (plain Error)', error: () => twinAnswer(404, hubErrorBody(404001, 'Something nobody documented')), phase: 'hub-session', rule: 'unknown', errorClass: 'transient' },
  { title: 'twin GET answered 500 with no message at all (Error with an empty message)', error: () => twinAnswer(500, hubErrorBody(500001)), phase: 'hub-session', rule: 'unknown', errorClass: 'transient' },
];

describe('classify: one fixture per table row, built the way the SDK builds it', () => {
  test.each(CASES.map((c) => [c.title, c] as const))('%s', async (_title, c) => {
    // serverBusy is derived from the floor by classifyFacts (policy v2) and checked with it.
    const { serverBusy: _derived, ...result } = classify(await c.error(), c.phase) as Classification & { serverBusy?: true };
    const expected: Record<string, unknown> = { rule: c.rule, errorClass: c.errorClass };
    if (c.retryAfterMs !== undefined) expected.retryAfterMs = c.retryAfterMs;
    if (c.minDelayMs !== undefined) expected.minDelayMs = c.minDelayMs;
    if (c.assignmentInDoubt) expected.assignmentInDoubt = true;
    expect(result).toEqual(expected);
  });

  test('every row of the table is hit by at least one fixture', async () => {
    const hit = new Set<string>();
    for (const c of CASES) hit.add(classify(await c.error(), c.phase).rule);
    const missing = CLASSIFICATION_TABLE.map((r) => r.rule).filter((rule) => !hit.has(rule));
    expect(missing).toEqual([]);
  });

  test('rule names are unique and the last row is the catch-all', () => {
    const rules = CLASSIFICATION_TABLE.map((r) => r.rule);
    expect(new Set(rules).size).toBe(rules.length);
    expect(CLASSIFICATION_TABLE[CLASSIFICATION_TABLE.length - 1]!.rule).toBe('unknown');
    expect(CLASSIFICATION_TABLE.every((r) => r.why.length > 0)).toBe(true);
  });
});

describe('fixtures match the shapes in the facts document', () => {
  test('before a first connect: CONNACK 5, ECONNREFUSED and TLS are all UnauthorizedError', () => {
    for (const inner of [connackError(5), socketError('ECONNREFUSED'), tlsError('DEPTH_ZERO_SELF_SIGNED_CERT')]) {
      const err = hubFirstConnect(inner);
      expect(err.name).toBe('UnauthorizedError');
      expect(err.message).toContain('Failure on first connection (Not authorized)');
    }
    expect(hubFirstConnect(connackError(3)).name).toBe('ServiceUnavailableError');
    expect(hubFirstConnect(connackError(1)).name).toBe('NotImplementedError');
  });

  test('after a first connect: NotConnectedError with transportError.code', () => {
    const err = hubAfterConnect(connackError(5)) as Error & { transportError?: { code?: unknown } };
    expect(err.name).toBe('NotConnectedError');
    expect(err.transportError?.code).toBe(5);
    expect(hubAfterConnect(connackError(3)).name).toBe('NotConnectedError');
  });

  test('DeviceRegistrationFailedError has a different name than its class', async () => {
    const err = (await dpsAnswer(200, dpsRegistrationBody('failed'))).error;
    expect(err).toBeInstanceOf(errors.DeviceRegistrationFailedError);
    expect(err?.name).toBe('ProvisioningRegistrationFailedError');
  });

  test('the real SDK client against a closed port gives the first-connection shape, classified socket-refused', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const key = Buffer.alloc(32, 7).toString('base64');
    const client = Client.fromConnectionString(`HostName=127.0.0.1:${port};DeviceId=dev1;SharedAccessKey=${key}`, Mqtt);
    client.setRetryPolicy(new NoRetry());
    const error = await client.open().then(
      () => undefined,
      (e: unknown) => e,
    );
    await client.close().catch(() => undefined);
    const fixture = hubFirstConnect(socketError('ECONNREFUSED'));
    expect((error as Error).name).toBe(fixture.name);
    expect((error as Error).message).toMatch(/^mqtt\.js returned Failure on first connection \(Not authorized\): connect ECONNREFUSED /);
    expect(classify(error, 'hub-connect')).toEqual({ rule: 'socket-refused', errorClass: 'transient' });
  });
});

describe('extractFacts', () => {
  test('recovers the CONNACK code from the first-connection text', () => {
    const facts = extractFacts(hubFirstConnect(connackError(5)), 'hub-connect');
    expect(facts).toMatchObject({ connack: 5, firstConnection: true, names: ['UnauthorizedError', 'Error'] });
  });

  test('reads transportError.code after a first connect', () => {
    expect(extractFacts(hubAfterConnect(connackError(4)), 'hub-connect')).toMatchObject({
      connack: 4,
      firstConnection: false,
    });
  });

  test('recovers socket and TLS codes from wrapped text', () => {
    expect(extractFacts(hubFirstConnect(socketError('EMFILE')), 'hub-connect').socketCode).toBe('EMFILE');
    expect(extractFacts(hubFirstConnect(tlsError('SELF_SIGNED_CERT_IN_CHAIN')), 'hub-connect').tlsCode).toBe('SELF_SIGNED_CERT_IN_CHAIN');
    expect(extractFacts(new Error('self signed certificate'), 'dps').tlsCode).toBe('DEPTH_ZERO_SELF_SIGNED_CERT');
  });

  test('DPS: status from the response topic, retry-after (fractional seconds), body message', () => {
    const facts = extractFacts(dpsStatus(412, {}, '0.25'), 'dps');
    expect(facts).toMatchObject({ status: 412, retryAfterMs: 250 });
    expect(facts.messages).toEqual(['incoming message failure', 'DPS status 412']);
  });

  test('DPS: status from the body errorCode when there is no topic', () => {
    const err = Object.assign(new Error('incoming message failure'), { result: { errorCode: 401002, message: 'bad sig' } });
    expect(extractFacts(err, 'dps').status).toBe(401);
  });

  test('registration status from DeviceRegistrationFailedError and from a result body', async () => {
    expect(extractFacts((await dpsAnswer(200, dpsRegistrationBody('failed'))).error, 'dps').registrationStatus).toBe('failed');
    expect(extractFacts((await dpsAnswer(200, dpsRegistrationBody('disabled'))).error, 'dps').registrationStatus).toBe('disabled');
  });

  test('an explicit retryAfterMs field is taken as is', () => {
    expect(extractFacts(dpsStatusError(429, 1234), 'dps').retryAfterMs).toBe(1234);
  });

  test('survives cycles and throwing getters', () => {
    const cyclic: Record<string, unknown> = { name: 'Error', message: 'loop' };
    cyclic.transportError = cyclic;
    cyclic.cause = { transportObj: cyclic };
    expect(() => extractFacts(cyclic, 'hub-session')).not.toThrow();
    const hostile = Object.defineProperty(new Error('x'), 'code', {
      get() {
        throw new Error('nope');
      },
    });
    expect(classify(hostile, 'hub-session').rule).toBe('unknown');
  });

  test('property: classify never throws and always answers a table row', () => {
    const rules = new Set(CLASSIFICATION_TABLE.map((r) => r.rule));
    const phases = fc.constantFrom<Phase>('dps', 'hub-connect', 'hub-session');
    fc.assert(
      fc.property(fc.anything({ withObjectString: true, withNullPrototype: true }), phases, (value, phase) => {
        const result = classify(value, phase);
        expect(rules.has(result.rule)).toBe(true);
        const failure = toFailure(value, phase, 1);
        expect(JSON.parse(JSON.stringify(failure))).toEqual(failure);
      }),
    );
  });
});

describe('redactSecrets', () => {
  const key = 'q1Vb3Wf0nB0m7yI8XkB0hT2r3cNqv9o3FVIb2pGz5mE=';

  test.each([
    ['hub SAS password', 'password SharedAccessSignature sr=localhost%3A18884%2Fdevices%2Fdev1&sig=AbC%2Bd%2Fe%3D&se=1700000000 rejected'],
    ['DPS SAS password', 'SharedAccessSignature sr=0ne00000000/registrations/dev1&sig=AbC%2Bd%3D&skn=registration&se=1700000000'],
    ['sig in a URL', 'GET https://h/devices/dev1?api-version=1&sig=AbCdEf%3D&se=1'],
    ['connection string', `HostName=h.azure-devices.net;DeviceId=dev1;SharedAccessKey=${key}`],
    ['JSON with a key', `{"registrationId":"dev1","symmetricKey":"${key}"}`],
    ['key=value', `using key=${key} for dev1`],
    ['password: value', 'password: hunter2'],
    ['bare base64 key', `derived ${key} from the group key`],
  ])('%s', (_title, text) => {
    const redacted = redactSecrets(text);
    expect(redacted).toContain('[REDACTED]');
    expect(redacted).not.toContain(key);
    expect(redacted).not.toMatch(/sig=(?!\[REDACTED\])/);
    expect(redacted).not.toContain('hunter2');
    expect(redacted).not.toContain('AbC');
  });

  test('keeps what is not a secret', () => {
    for (const text of [
      'connect ECONNREFUSED 127.0.0.1:18884',
      'mqtt.js returned Failure on first connection (Not authorized): Connection refused: Not authorized error',
      'HostName=h.azure-devices.net;DeviceId=dev1;SharedAccessKeyName=registration',
      'devices/dev1/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8',
      "Hostname/IP does not match certificate's altnames: Host: otherhost. is not in the cert's altnames: DNS:localhost",
    ]) {
      expect(redactSecrets(text)).toBe(text);
    }
  });

  test('keeps the non-secret parts around a secret', () => {
    expect(redactSecrets(`HostName=h;DeviceId=dev1;SharedAccessKey=${key}`)).toBe('HostName=h;DeviceId=dev1;SharedAccessKey=[REDACTED]');
  });
});

describe('toFailure', () => {
  test('builds a classified, JSON-safe failure with the SDK name and a code', () => {
    const failure = toFailure(hubAfterConnect(connackError(5)), 'hub-connect', 1700000000000);
    expect(failure).toEqual({
      errorClass: 'reprovision',
      rule: 'connack-5-after-connect',
      phase: 'hub-connect',
      name: 'NotConnectedError',
      message: 'Connection refused: Not authorized',
      code: 5,
      assignmentInDoubt: true,
      at: 1700000000000,
    });
    expect(JSON.parse(JSON.stringify(failure))).toEqual(failure);
  });

  test('redacts secrets from the message', () => {
    const err = new errors.UnauthorizedError(
      'rejected password SharedAccessSignature sr=h%2Fdevices%2Fdev1&sig=c2VjcmV0c2lnbmF0dXJl%3D&se=1700000000',
    );
    const failure = toFailure(err, 'hub-connect', 1);
    expect(failure.message).not.toContain('c2VjcmV0');
    expect(failure.message).toContain('[REDACTED]');
  });

  test('a disconnect event: the name of the transport error, socket code, no raw objects', () => {
    const failure = toFailure(hubConnectionClosed(), 'hub-session', 5);
    expect(failure).toMatchObject({ name: 'NotConnectedError', rule: 'connection-lost', message: 'Connection to the server has been closed.' });
    const tls = toFailure(tlsError('ERR_TLS_CERT_ALTNAME_INVALID'), 'dps', 5);
    expect(tls.code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    expect(JSON.stringify(tls)).not.toContain('raw');
  });

  test('DPS: body message appended, status as the code, retry-after carried', () => {
    const failure = toFailure(dpsStatus(409, {}, '2'), 'dps', 9);
    expect(failure).toMatchObject({
      errorClass: 'transient',
      rule: 'dps-conflict',
      name: 'Error',
      message: 'incoming message failure: DPS status 409',
      code: 409,
      retryAfterMs: 2000,
    });
  });

  test('non-errors and long messages', () => {
    expect(toFailure('boom', 'dps', 1)).toMatchObject({ name: 'string', message: 'boom', rule: 'unknown' });
    expect(toFailure(new Error('x'.repeat(5000)), 'dps', 1).message.length).toBeLessThanOrEqual(500);
  });
});

describe('purity', () => {
  test('src/policy imports nothing from the SDK (machines/ must stay SDK-free)', () => {
    const dir = path.join(__dirname, '../../src/policy');
    for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.ts'))) {
      const source = fs.readFileSync(path.join(dir, file), 'utf8');
      expect({ file, sdkImport: /(from\s+|require\()\s*['"]azure-iot/.test(source) }).toEqual({ file, sdkImport: false });
    }
  });
});
