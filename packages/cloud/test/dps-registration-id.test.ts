/**
 * Registration ids as DPS documents them (REST reference, Device Registration Status Lookup /
 * Register Device): "a case-insensitive string (up to 128 characters long) of alphanumeric
 * characters plus certain special characters : . _ -. No special characters allowed at start or
 * end." A bad id is answered 400 (ArgumentError in the Node SDK); ids differing only in case are
 * one registration.
 */
import { errors } from 'azure-iot-common';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from '../src';
import { registrationIdProblem } from '../src/dps';
import { provision } from './helpers';

let cloud: LocalCloud;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'dps-registration-id', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});

afterAll(async () => {
  await cloud?.stop();
});

describe('the documented rules', () => {
  test.each([
    ['one letter', 'a', true],
    ['letters, digit, hyphen', 'device-1', true],
    ['every allowed special inside', 'Dev.1_x:y-z', true],
    ['128 characters', 'x'.repeat(128), true],
    ['129 characters', 'x'.repeat(129), false],
    ['empty', '', false],
    ['leading hyphen', '-leading', false],
    ['trailing period', 'trailing.', false],
    ['leading colon', ':colon', false],
    ['trailing underscore', 'under_', false],
    ['a space', 'with space', false],
    ['a slash', 'a/b', false],
    ['a non-ASCII letter', '\u00fcmlaut', false],
    ['a plus', 'a+b', false],
  ])('%s: valid %s', (_label, id, valid) => {
    expect(registrationIdProblem(id) === undefined).toBe(valid);
  });
});

test('the real SDK gets 400 → ArgumentError for an id DPS does not allow; nothing is registered', async () => {
  const before = cloud.dps.metrics().invalidRegistrationIds;
  for (const id of ['-starts-with-dash', 'ends-with-dot.', 'has space', 'x'.repeat(129)]) {
    const outcome = await provision(cloud, id);
    expect(outcome.error).toBeInstanceOf(errors.ArgumentError);
    expect((outcome.error!.result as { errorCode: number }).errorCode).toBe(400001);
    expect(cloud.dps.registration(id)).toBeUndefined();
  }
  expect(cloud.dps.metrics().invalidRegistrationIds - before).toBe(4);
});

test('the longest and the most varied allowed ids register', async () => {
  for (const id of ['y'.repeat(128), 'a.b_c:d-e']) {
    const outcome = await provision(cloud, id);
    expect(outcome.error).toBeUndefined();
    expect(outcome.deviceId).toBe(id);
  }
});

test('ids differing only in case are one registration: same record, same hub, counted twice', async () => {
  const first = await provision(cloud, 'Case-Device');
  expect(first.error).toBeUndefined();
  const second = await provision(cloud, 'case-device');
  expect(second.error).toBeUndefined();
  expect(second.assignedHub).toBe(first.assignedHub);
  const record = cloud.dps.registration('CASE-DEVICE')!;
  expect(record).toMatchObject({ registrationId: 'Case-Device', registrations: 2 });
  expect(cloud.dps.registrations().filter((r) => r.registrationId.toLowerCase() === 'case-device')).toHaveLength(1);
  expect(cloud.dps.attempts('case-DEVICE')).toHaveLength(2);
});
