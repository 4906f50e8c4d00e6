/**
 * Which publish errors count against the message (tried MAX_MESSAGE_PUBLISH_TRIES times, then
 * dropped as unsendable) and which are the connection's (the message waits, however often): each
 * error is produced the way the stack really produces it.
 */
import { PassThrough } from 'node:stream';
import { errors } from 'azure-iot-common';
import { isMessagePublishError } from '../../src/pnp/telemetry';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const mqttPacket = require('mqtt/node_modules/mqtt-packet') as { writeToStream: (packet: object, stream: NodeJS.WritableStream) => boolean };

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (error) {
    return error;
  }
  throw new Error('did not throw');
}

test("mqtt-packet's encoder refusing a topic over 65,535 bytes is the message's fault", () => {
  const error = thrown(() =>
    mqttPacket.writeToStream({ cmd: 'publish', topic: `devices/d/messages/events/p=${'v'.repeat(70 * 1024)}`, payload: '{}', qos: 1, messageId: 1 }, new PassThrough()),
  );
  expect(error).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  expect(isMessagePublishError(error)).toBe(true);
});

test('an encoding failure of the topic and the SDK refusing the message are the message’s fault', () => {
  expect(isMessagePublishError(thrown(() => encodeURIComponent('\ud800')))).toBe(true);
  expect(isMessagePublishError(new errors.MessageTooLargeError('too large'))).toBe(true);
  expect(isMessagePublishError(new errors.ArgumentError('bad message'))).toBe(true);
});

test('a client torn down under a publish (a TypeError without an encoder code) is the connection’s fault', () => {
  const tornDown = { client: undefined as undefined | { publish(): void } };
  const error = thrown(() => tornDown.client!.publish());
  expect(error).toBeInstanceOf(TypeError);
  expect(isMessagePublishError(error)).toBe(false);
  expect(isMessagePublishError(Object.assign(new RangeError('Invalid array length'), {}))).toBe(false);
});

test('connection errors and non-errors are never the message’s fault', () => {
  expect(isMessagePublishError(new errors.NotConnectedError('not connected'))).toBe(false);
  expect(isMessagePublishError(Object.assign(new Error('write after end'), { code: 'ERR_STREAM_WRITE_AFTER_END' }))).toBe(false);
  expect(isMessagePublishError(new Error('client disconnecting'))).toBe(false);
  expect(isMessagePublishError('TypeError')).toBe(false);
  expect(isMessagePublishError(null)).toBe(false);
  expect(isMessagePublishError({ name: 'TypeError', code: 42 })).toBe(false);
});
