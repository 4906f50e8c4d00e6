/**
 * The capture time stamped on each telemetry message (`iothub-creation-time-utc`) is the ISO text
 * of the device clock's reading for that message, also when several share a millisecond and when
 * the clock is stepped back.
 */
import pino from 'pino';
import { createDevice, MemoryOutbox } from '../../src';
import { CREATION_TIME_PROPERTY, creationTimeText } from '../../src/pnp/telemetry';

test('each message carries its own capture time: same millisecond, the next one, a clock stepped back, a new second', async () => {
  let wall = Date.UTC(2026, 11, 4, 23, 59, 59, 998);
  const clock = { now: () => wall, setTimeout: () => 0, clearTimeout: () => undefined };
  const outbox = new MemoryOutbox();
  const device = createDevice({ idScope: '0ne00000001', registrationId: 'stamp-1', groupKey: Buffer.alloc(32, 1).toString('base64'), logger: pino({ level: 'silent' }), clock, outbox });
  const readings = [wall, wall, wall + 1, wall - 5_000, wall + 2, wall + 2];
  for (const reading of readings) {
    wall = reading;
    await device.sendTelemetry({ n: 1 });
  }
  const stamped = outbox.after(0, 10).map((message) => message.properties[CREATION_TIME_PROPERTY]);
  expect(stamped).toEqual(readings.map((reading) => new Date(reading).toISOString()));
  expect(stamped).toContain('2026-12-05T00:00:00.000Z');
  await device.stop();
});

test('a reading no Date can hold throws as toISOString does (the cache holds no stale text for it)', () => {
  expect(creationTimeText(0)).toBe('1970-01-01T00:00:00.000Z');
  expect(() => creationTimeText(Number.NaN)).toThrow(RangeError);
  expect(() => creationTimeText(8.64e15 + 1)).toThrow(RangeError);
  expect(creationTimeText(0)).toBe('1970-01-01T00:00:00.000Z');
});
