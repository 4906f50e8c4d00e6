/**
 * What a hub assignment may hold: a device id of IoT Hub's documented characters but ';' (the
 * SDK's connection string splits on it), a host[:port] hub. A status lookup or DPS answer outside
 * those bounds is a protocol error, and an assignment a cache gives outside them is not used.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { checkedAssignment, isDeviceId, MAX_DEVICE_ID_LENGTH } from '../../src/assignment';
import { ServiceProtocolError } from '../../src/errors';
import { parseLookupAnswer } from '../../src/actors/lookup';
import { invalidDpsResponse } from '../../src/actors/provision';
import { FileProvisioningCache } from '../../src/store/cache';

// Every special character of the documented set (- : . + % _ # * ? ! ( ) , = @ ; $ ') but ';'.
const EVERY_USABLE_CHARACTER = "aZ09-:.+%_#*?!(),=@$'";

test.each([
  ['letters and digits', true, 'sensor01'],
  ['every documented special character but ;', true, EVERY_USABLE_CHARACTER],
  ["a ';' (it would end DeviceId= in the SDK's connection string)", false, 'dev;GatewayHostName=elsewhere.example'],
  ['128 characters', true, 'd'.repeat(MAX_DEVICE_ID_LENGTH)],
  ['129 characters', false, 'd'.repeat(MAX_DEVICE_ID_LENGTH + 1)],
  ['empty', false, ''],
  ['a slash (it would change the topic)', false, 'a/b'],
  ['a space', false, 'a b'],
  ['a non-ASCII letter', false, 'capteur-é'],
  ['not a string', false, 42],
])('a device id of %s: valid %p', (_name, valid, value) => {
  expect(isDeviceId(value)).toBe(valid);
});

test.each([
  ['no hub', undefined, 'dev', /without a hub and device id/],
  ['an empty device id', 'hub.example', '', /without a hub and device id/],
  ['a hub that is a URL', 'https://hub.example/path', 'dev', /not a host\[:port\]/],
  ['a device id of 70,000 characters', 'hub.example', 'd'.repeat(70_000), /device id that is not 1\.\.128/],
  ['a device id with a slash', 'hub.example:8883', 'a/b', /device id that is not/],
])('an assignment with %s is refused', (_name, hubHost, deviceId, problem) => {
  expect(checkedAssignment(hubHost, deviceId)).toMatch(problem);
});

test('a well-formed assignment is returned as it is', () => {
  expect(checkedAssignment('hub.example:8883', EVERY_USABLE_CHARACTER)).toEqual({ hubHost: 'hub.example:8883', deviceId: EVERY_USABLE_CHARACTER });
});

test('a status lookup answer with a device id past 128 characters is a ServiceProtocolError, not a hub to connect to', () => {
  const answer = JSON.stringify({ status: 'assigned', assignedHub: 'hub.example', deviceId: 'd'.repeat(129) });
  expect(() => parseLookupAnswer(answer)).toThrow(ServiceProtocolError);
  expect(() => parseLookupAnswer(answer)).toThrow(/status lookup answer 'assigned' with a device id that is not/);
  const injected = JSON.stringify({ status: 'assigned', assignedHub: 'hub.example', deviceId: 'dev;GatewayHostName=elsewhere.example' });
  expect(() => parseLookupAnswer(injected)).toThrow(ServiceProtocolError);
  expect(parseLookupAnswer(JSON.stringify({ status: 'assigned', assignedHub: 'hub.example', deviceId: "(line-7)!'@$" }))).toEqual({
    hubHost: 'hub.example',
    deviceId: "(line-7)!'@$",
  });
});

test('a DPS registration answer with a hub that is not a host is refused before the SDK reads it', () => {
  const answer = (assignedHub: string) => JSON.stringify({ status: 'assigned', registrationState: { assignedHub, deviceId: 'dev', status: 'assigned' } });
  expect(invalidDpsResponse(200, answer('hub.example/../x'))).toBe("'assigned' with a hub that is not a host[:port]");
  expect(invalidDpsResponse(200, answer('hub.example'))).toBeUndefined();
});

test("a cached assignment whose device id holds a ';' is not used: the device registers through DPS", () => {
  const dir = mkdtempSync(join(tmpdir(), 'assignment-'));
  try {
    const cache = new FileProvisioningCache(dir, 'line-7', pino({ level: 'silent' }));
    cache.save({ hubHost: 'hub.example:8883', deviceId: 'line-7;x', assignedAt: 1 });
    expect(cache.load()).toBeNull();
    cache.save({ hubHost: 'hub.example:8883', deviceId: "(line-7)!'@$", assignedAt: 1 });
    expect(cache.load()).toEqual({ hubHost: 'hub.example:8883', deviceId: "(line-7)!'@$", assignedAt: 1 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
