/**
 * One telemetry message as it goes on the wire, and the limits it must fit: the one place that
 * says whether a message can ever be sent. `sendTelemetry` refuses a message that breaks a limit
 * (MessageRejectedError); the telemetry pump drops a stored one that does (a row written by an
 * older version or by hand) instead of failing on it forever.
 *
 * The wire form is the pinned SDK's (azure-iot-device-mqtt `_getEventTopicFromMessage`): topic
 * `devices/{deviceId}/messages/events/` + `querystring.stringify({ $.mid, $.ct, $.ce })`, then
 * `&` + encodeURIComponent(name) + `=` + encodeURIComponent(value) per message property, the
 * component's `dt-subject` first (sent as `$.sub`); the payload is the JSON body.
 */
import { stringify } from 'node:querystring';
import { MAX_DEVICE_ID_LENGTH } from '../assignment';
import { MessageRejectedError } from '../errors';

/** IoT Hub's limit for one device-to-cloud message, counted as `telemetrySize` does. */
export const MAX_MESSAGE_BYTES = 256 * 1024;
/** MQTT's limit for a topic name: a 2-byte length prefix (MQTT 3.1.1 §1.5.3). */
export const MAX_TOPIC_BYTES = 65_535;
export const CONTENT_TYPE = 'application/json';
export const CONTENT_ENCODING = 'utf-8';
/** The SDK sends a message property of this name as the system property `$.sub` (the component). */
export const COMPONENT_PROPERTY = 'dt-subject';
/** DTDL v2/v3 names: a letter, then letters, digits and `_`, not ending with `_`; at most 64. */
const DTDL_NAME = /^[a-zA-Z](?:[a-zA-Z0-9_]*[a-zA-Z0-9])?$/;
const MAX_COMPONENT_LENGTH = 64;
/** Stamped by sendTelemetry: the capture time, an application property IoT Hub reads. */
export const CREATION_TIME_PROPERTY = 'iothub-creation-time-utc';

let stampedMs = Number.NaN;
let stampedText = '';

/**
 * `CREATION_TIME_PROPERTY`'s value for a capture time (epoch ms): the ISO 8601 text, made once per
 * millisecond. `toISOString` costs ~0.5 µs, as much as the rest of the stamping, and a device
 * sending thousands of messages a second stamps many in the same millisecond.
 */
export function creationTimeText(epochMs: number): string {
  if (epochMs !== stampedMs) {
    stampedText = new Date(epochMs).toISOString();
    stampedMs = epochMs;
  }
  return stampedText;
}

/** What the wire form is built from (an outbox message has these fields). */
export interface TelemetryParts {
  messageId: string;
  body: string;
  component?: string;
  properties: Record<string, string>;
}

/** The system properties the SDK puts first in the topic, in its order. */
function systemProperties(messageId: string): Record<string, string> {
  return { '$.mid': messageId, '$.ct': CONTENT_TYPE, '$.ce': CONTENT_ENCODING };
}

/** The message properties in the order they go on the topic (component first, as toSdkMessage adds them). */
export function messageProperties(parts: Pick<TelemetryParts, 'component' | 'properties'>): Array<[string, string]> {
  const entries = Object.entries(parts.properties);
  return parts.component ? [[COMPONENT_PROPERTY, parts.component], ...entries] : entries;
}

/**
 * The MQTT topic the SDK publishes `parts` on. Throws URIError for a string that is not
 * well-formed Unicode (a lone surrogate), as the SDK's encoding would.
 */
export function telemetryTopic(deviceId: string, parts: TelemetryParts): string {
  let topic = `devices/${deviceId}/messages/events/${stringify(systemProperties(parts.messageId))}`;
  for (const [name, value] of messageProperties(parts)) {
    topic += `&${encodeURIComponent(name === COMPONENT_PROPERTY ? '$.sub' : name)}=${encodeURIComponent(value)}`;
  }
  return topic;
}

/**
 * The size IoT Hub counts against its 256 KB: the body, the values of the system properties
 * (`$.mid`, `$.ct`, `$.ce`, `$.sub`), the names and values of the application properties, all in
 * UTF-8 and decoded (the topic's %-escapes do not count) ("Create and read IoT Hub messages",
 * Message size; the local cloud's `d2cMessageSize` counts the same way).
 */
export function telemetrySize(parts: TelemetryParts): number {
  let size = Buffer.byteLength(parts.body) + Buffer.byteLength(parts.messageId) + CONTENT_TYPE.length + CONTENT_ENCODING.length;
  if (parts.component) size += Buffer.byteLength(parts.component);
  for (const [name, value] of Object.entries(parts.properties)) size += Buffer.byteLength(name) + Buffer.byteLength(value);
  return size;
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** True for a string without lone surrogates (encodeURIComponent and UTF-8 need well-formed text). */
function isWellFormed(text: string): boolean {
  const native = (text as { isWellFormed?: () => boolean }).isWellFormed;
  return native ? native.call(text) : !LONE_SURROGATE.test(text);
}

/** More than the topic's fixed text (`devices/`, `/messages/events/`, `%24.mid=`, `$.ct`, `$.ce`, `%24.sub=`). */
const TOPIC_FIXED_TEXT_BOUND = 128;

/** Why `component` is not a valid component name, or undefined. */
export function componentProblem(component: unknown): string | undefined {
  if (component === undefined) return undefined;
  if (typeof component !== 'string') return `component must be a string (got ${typeof component})`;
  if (component.length > MAX_COMPONENT_LENGTH) return `component is ${component.length} characters; DTDL names have at most ${MAX_COMPONENT_LENGTH}`;
  if (!DTDL_NAME.test(component)) return `component '${component}' is not a DTDL name (a letter, then letters, digits or '_', not ending with '_')`;
  return undefined;
}

/**
 * Why an application property name is not ours to use, or undefined. `$.` names are system
 * properties (a user `$.mid` would replace the message id and break de-duplication), `iothub-`
 * names are IoT Hub's (`iothub-creation-time-utc` is stamped here), `dt-subject` is the
 * component (the SDK sends it as `$.sub`).
 */
export function propertyNameProblem(name: string): string | undefined {
  if (name === '') return 'property names must not be empty';
  if (!isWellFormed(name)) return `property name '${name}' is not well-formed Unicode (a lone surrogate)`;
  if (name.startsWith('$.')) return `property '${name}': names starting with '$.' are system properties`;
  if (name.toLowerCase().startsWith('iothub-')) return `property '${name}': names starting with 'iothub-' are reserved by IoT Hub`;
  if (name.toLowerCase() === COMPONENT_PROPERTY) return `property '${name}' is the component: use the component option`;
  return undefined;
}

/**
 * Why `parts` can never be sent, as the error sendTelemetry throws; undefined if it can. With no
 * `deviceId` (not known before the assignment, and it may change) the topic is measured for the
 * longest device id, so a message accepted now fits any hub it may go to.
 */
export function telemetryProblem(parts: TelemetryParts, deviceId?: string): MessageRejectedError | undefined {
  const checked = checkTelemetry(parts, deviceId);
  return typeof checked === 'number' ? undefined : checked;
}

/**
 * `telemetryProblem`, or the message's `telemetrySize` when it can be sent: one pass over the
 * properties for both (this runs for every message sent).
 */
export function checkTelemetry(parts: TelemetryParts, deviceId?: string): MessageRejectedError | number {
  if (typeof parts.body !== 'string') return new MessageRejectedError('invalid-body', 'the body is not JSON text');
  const component = componentProblem(parts.component);
  if (component) return new MessageRejectedError('invalid-component', component);
  if (typeof parts.properties !== 'object' || parts.properties === null || Array.isArray(parts.properties)) {
    return new MessageRejectedError('invalid-property', 'properties must be an object of strings');
  }
  let propertyCount = 0;
  let propertyBytes = 0;
  for (const name of Object.keys(parts.properties)) {
    const value = parts.properties[name];
    if (typeof value !== 'string') return new MessageRejectedError('invalid-property', `property '${name}' is not a string`);
    if (!isWellFormed(name) || !isWellFormed(value)) return new MessageRejectedError('invalid-property', `property '${name}' is not well-formed Unicode (a lone surrogate)`);
    propertyCount++;
    propertyBytes += Buffer.byteLength(name) + Buffer.byteLength(value);
  }
  if (typeof parts.messageId !== 'string' || parts.messageId === '' || !isWellFormed(parts.messageId)) {
    return new MessageRejectedError('invalid-property', 'the message id is not a non-empty, well-formed string');
  }
  // As telemetrySize counts, from the property bytes summed above.
  const messageIdBytes = Buffer.byteLength(parts.messageId);
  const componentBytes = parts.component ? Buffer.byteLength(parts.component) : 0;
  const size = Buffer.byteLength(parts.body) + messageIdBytes + CONTENT_TYPE.length + CONTENT_ENCODING.length + componentBytes + propertyBytes;
  if (size > MAX_MESSAGE_BYTES) {
    return new MessageRejectedError('too-large', `${size} bytes (body, properties and component); IoT Hub accepts at most ${MAX_MESSAGE_BYTES}`);
  }
  // URL-encoding at most triples a UTF-8 byte: the exact topic is built only when this bound does not fit.
  const deviceIdBytes = deviceId === undefined ? MAX_DEVICE_ID_LENGTH : Buffer.byteLength(deviceId);
  const encodedBound = 3 * (messageIdBytes + componentBytes + propertyBytes);
  if (TOPIC_FIXED_TEXT_BOUND + deviceIdBytes + encodedBound + 2 * propertyCount <= MAX_TOPIC_BYTES) return size;
  const topicBytes = Buffer.byteLength(telemetryTopic(deviceId ?? 'd'.repeat(MAX_DEVICE_ID_LENGTH), parts));
  if (topicBytes > MAX_TOPIC_BYTES) {
    return new MessageRejectedError(
      'properties-too-large',
      `the properties and component take a ${topicBytes}-byte MQTT topic once URL-encoded; MQTT allows ${MAX_TOPIC_BYTES}`,
    );
  }
  return size;
}

/**
 * Errors of publishing one message that say nothing about the connection: the encoder refused an
 * argument (Node's `ERR_INVALID_ARG_*` / `ERR_OUT_OF_RANGE` TypeError or RangeError, as mqtt-packet
 * throws on a topic over 65,535 bytes), the topic's encoding failed (URIError), or the SDK refused
 * the message itself. A TypeError without such a code is not one of them: a client torn down under
 * a publish fails with "Cannot read properties of undefined" — the connection's fault, and counting
 * it dropped messages in the soak's flapping hub. By name: errors of Node's core come from another
 * realm than the caller's.
 */
const MESSAGE_ERROR_NAMES = new Set(['URIError', 'MessageTooLargeError', 'ArgumentError']);
const ENCODER_ERROR_NAMES = new Set(['TypeError', 'RangeError']);
const ENCODER_ERROR_CODE = /^ERR_(INVALID_ARG_|OUT_OF_RANGE$|BUFFER_OUT_OF_BOUNDS$)/;

export function isMessagePublishError(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const { name, code } = error as { name?: unknown; code?: unknown };
  if (typeof name !== 'string') return false;
  if (MESSAGE_ERROR_NAMES.has(name)) return true;
  return ENCODER_ERROR_NAMES.has(name) && typeof code === 'string' && ENCODER_ERROR_CODE.test(code);
}
