/**
 * Errors built exactly the way the SDK builds them, with the SDK's own classes and translate
 * functions. Only the leaves that come from mqtt.js or Node are re-created by hand, with the
 * shapes they have in mqtt.js 4.3.8 (lib/client.js) and Node 20.
 */
import { errors, results } from 'azure-iot-common';
import { translateError as mqttTranslateError } from 'azure-iot-mqtt-base';
import { translateError as dpsTranslateError } from 'azure-iot-provisioning-device';
import { translateError as twinTranslateError } from 'azure-iot-device/dist/twin_errors';

/** mqtt.js 4.3.8 lib/client.js `errors` for MQTT 3.1.1 return codes. */
const CONNACK_TEXT: Record<number, string> = {
  1: 'Unacceptable protocol version',
  2: 'Identifier rejected',
  3: 'Server unavailable',
  4: 'Bad username or password',
  5: 'Not authorized',
};

/** mqtt.js `_handleConnack`: `new Error('Connection refused: ' + errors[rc]); err.code = rc`. */
export function connackError(rc: 1 | 2 | 3 | 4 | 5): Error & { code: number } {
  return Object.assign(new Error('Connection refused: ' + CONNACK_TEXT[rc]), { code: rc });
}

/** Node's socket / dns errors (net.connect, dns.lookup): errno, code, syscall and address. */
export function socketError(code: string): Error & { code: string } {
  const errno: Record<string, number> = {
    ECONNREFUSED: -111,
    ECONNRESET: -104,
    ETIMEDOUT: -110,
    EPIPE: -32,
    EHOSTUNREACH: -113,
    ENETUNREACH: -101,
    EMFILE: -24,
    ENOTFOUND: -3008,
    EAI_AGAIN: -3001,
  };
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EMFILE') {
    return Object.assign(new Error(`getaddrinfo ${code} localhost`), {
      errno: errno[code],
      code,
      syscall: 'getaddrinfo',
      hostname: 'localhost',
    });
  }
  if (code === 'EPIPE' || code === 'ECONNRESET') {
    return Object.assign(new Error(code === 'EPIPE' ? 'write EPIPE' : 'read ECONNRESET'), {
      errno: errno[code],
      code,
      syscall: code === 'EPIPE' ? 'write' : 'read',
    });
  }
  return Object.assign(new Error(`connect ${code} 127.0.0.1:18884`), {
    errno: errno[code],
    code,
    syscall: 'connect',
    address: '127.0.0.1',
    port: 18884,
  });
}

/** Node 20 / OpenSSL 3 TLS verification errors (only `code` is set, plus host/reason/cert for altnames). */
export function tlsError(code: string): Error & { code: string } {
  const text: Record<string, string> = {
    DEPTH_ZERO_SELF_SIGNED_CERT: 'self-signed certificate',
    SELF_SIGNED_CERT_IN_CHAIN: 'self-signed certificate in certificate chain',
    UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'unable to verify the first certificate',
    UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'unable to get local issuer certificate',
    CERT_HAS_EXPIRED: 'certificate has expired',
    ERR_TLS_CERT_ALTNAME_INVALID:
      "Hostname/IP does not match certificate's altnames: Host: otherhost. is not in the cert's altnames: DNS:localhost",
  };
  const err = Object.assign(new Error(text[code]), { code });
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    Object.assign(err, {
      reason: "Host: otherhost. is not in the cert's altnames: DNS:localhost",
      host: 'otherhost',
      cert: { raw: Buffer.alloc(16), subject: { CN: 'localhost' } },
    });
  }
  return err;
}

/**
 * Hub connect failure BEFORE the transport's first successful connect: azure-iot-device-mqtt
 * (mqtt.js:224) wraps `new Error('Failure on first connection (Not authorized): ' + err.message)`
 * and its `disconnected._onEnter` hands that to mqtt-base `translateError`.
 */
export function hubFirstConnect(mqttError: Error): Error {
  return mqttTranslateError(new Error('Failure on first connection (Not authorized): ' + mqttError.message));
}

/** Hub connect failure AFTER a successful connect: the raw error goes through `translateError`. */
export function hubAfterConnect(mqttError: Error): Error {
  return mqttTranslateError(mqttError);
}

/** Socket closed while connected: mqtt-base closeEvent → NotConnectedError, delivered as the
 *  client's `disconnect` event `results.Disconnected(err)` (error in `.transportObj`). */
export function hubConnectionClosed(): results.Disconnected {
  return new results.Disconnected(new errors.NotConnectedError('Connection to the server has been closed.'));
}

/** Hub HTTP-ish status through azure-iot-device's twin_errors.translateError. */
export function hubStatus(status: number, body: unknown = { errorCode: status * 1000 + 1, message: 'hub said ' + status }): Error {
  return twinTranslateError({ statusCode: status, body }, status);
}

/**
 * A DPS response with status >= 300 through the provisioning transport: `translateError('incoming
 * message failure', status, payloadJson, { topic, payload })` (provisioning-device-mqtt mqtt.js:74).
 */
export function dpsStatus(status: number, body: Record<string, unknown> = {}, retryAfterSeconds?: string): Error {
  const payload = {
    errorCode: status * 1000 + 2,
    trackingId: 'a9e5b0a3-0000-4000-8000-000000000000',
    message: `DPS status ${status}`,
    timestampUtc: '2024-01-01T00:00:00.000Z',
    ...body,
  };
  const query = retryAfterSeconds === undefined ? '' : `&retry-after=${retryAfterSeconds}`;
  const topic = `$dps/registrations/res/${status}/?$rid=1${query}`;
  return dpsTranslateError('incoming message failure', status, payload, { topic, payload });
}

/** Body status 'failed' → DeviceRegistrationFailedError (polling_state_machine.js:105). */
export function dpsRegistrationFailed(): Error {
  const result = {
    operationId: '4.0000.0000',
    status: 'failed',
    registrationState: { registrationId: 'dev1', status: 'failed', errorCode: 400209, errorMessage: 'Custom allocation failed' },
  };
  return Object.assign(new errors.DeviceRegistrationFailedError('registration failed'), { result, response: { topic: '$dps/registrations/res/200/?$rid=2' } });
}

/** Body status 'disabled' → SyntaxError('status is disabled') with the body (polling_state_machine.js:114). */
export function dpsRegistrationDisabled(): Error {
  const result = { operationId: '4.0000.0001', status: 'disabled', registrationState: { registrationId: 'dev1', status: 'disabled' } };
  return Object.assign(new SyntaxError('status is ' + result.status), { result, response: { topic: '$dps/registrations/res/200/?$rid=3' } });
}
