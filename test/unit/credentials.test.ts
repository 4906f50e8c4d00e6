/**
 * Key pairs: which key is tried, when the other one is, and what is kept.
 */
import { Credentials, isKeyRefusal, withEitherKey, type Credential } from '../../src/actors/credentials';
import { ConfigError } from '../../src/errors';
import { resolveCredential } from '../../src/options';

const A = Buffer.alloc(32, 1).toString('base64');
const B = Buffer.alloc(32, 2).toString('base64');
const C = Buffer.alloc(32, 3).toString('base64');
const refused = { rule: 'dps-unauthorized', errorClass: 'fatal' };
const busy = { rule: 'connack-3-server-unavailable', errorClass: 'transient' };

/** An attempt that refuses every key in `refusedKeys` with `failure`, and records what it was given. */
function attemptRefusing(refusedKeys: string[], failure: object = refused) {
  const tried: string[] = [];
  const attempt = async (credential: Credential): Promise<string> => {
    const key = 'groupKey' in credential ? credential.groupKey : 'deviceKey' in credential ? credential.deviceKey : 'x509';
    tried.push(key);
    if (refusedKeys.includes(key)) throw failure;
    return key;
  };
  return { tried, attempt };
}

test('the primary is used first; a refused primary is retried once with the secondary, which is kept', async () => {
  const credentials = new Credentials({ groupKey: { primary: A, secondary: B } });
  const switches: string[] = [];
  const first = attemptRefusing([A]);
  await expect(withEitherKey(credentials, first.attempt, (from, to) => switches.push(`${from}->${to}`))).resolves.toBe(B);
  expect(first.tried).toEqual([A, B]);
  expect(switches).toEqual(['primary->secondary']);
  expect(credentials.currentSlot).toBe('secondary');
  // Next time the kept key goes first, and a refusal of it goes back to the primary.
  const second = attemptRefusing([B]);
  await expect(withEitherKey(credentials, second.attempt, () => undefined)).resolves.toBe(A);
  expect(second.tried).toEqual([B, A]);
  expect(credentials.currentSlot).toBe('primary');
});

test('both keys refused: the second refusal is the one classified, and the kept key does not change', async () => {
  const credentials = new Credentials({ deviceKey: { primary: A, secondary: B } });
  const secondRefusal = { ...refused, message: 'second' };
  let calls = 0;
  const attempt = async () => {
    calls++;
    throw calls === 1 ? refused : secondRefusal;
  };
  await expect(withEitherKey(credentials, attempt, () => undefined)).rejects.toBe(secondRefusal);
  expect(calls).toBe(2);
  expect(credentials.currentSlot).toBe('primary');
});

test('a single key, or a failure that is not a refusal of the key, is not retried', async () => {
  const single = attemptRefusing([A]);
  await expect(withEitherKey(new Credentials({ groupKey: A }), single.attempt, () => undefined)).rejects.toBe(refused);
  expect(single.tried).toEqual([A]);
  const pairBusy = attemptRefusing([A], busy);
  await expect(withEitherKey(new Credentials({ groupKey: { primary: A, secondary: B } }), pairBusy.attempt, () => undefined)).rejects.toBe(busy);
  expect(pairBusy.tried).toEqual([A]);
});

test('a status lookup answered 401 is a refusal of the key; its 404 is not', () => {
  expect(isKeyRefusal({ rule: 'lookup-no-registration', phase: 'dps-lookup', code: 401 })).toBe(true);
  expect(isKeyRefusal({ rule: 'lookup-no-registration', phase: 'dps-lookup', code: 404 })).toBe(false);
});

test.each([
  ['dps-unauthorized', true],
  ['hub-unauthorized', true],
  ['connack-5-first-connect', true],
  ['connack-4-after-connect', true],
  ['connack-3-hub-unavailable', false],
  ['connack-2-first-connect', false],
  ['dps-forbidden', false],
  ['socket-refused', false],
])('isKeyRefusal(%s) is %s', (rule, expected) => {
  expect(isKeyRefusal({ rule })).toBe(expected);
});

test('keys replaced while an attempt runs: its refusal is of the old keys, so the new primary is tried (not the old pair\'s other key)', async () => {
  const credentials = new Credentials({ groupKey: { primary: A, secondary: B } });
  const tried: string[] = [];
  const attempt = async (credential: Credential): Promise<string> => {
    const key = 'groupKey' in credential ? credential.groupKey : '';
    tried.push(key);
    if (key === A) {
      credentials.replace({ groupKey: { primary: C } }); // updateCredentials during the request
      throw refused;
    }
    return key;
  };
  await expect(withEitherKey(credentials, attempt, () => undefined)).resolves.toBe(C);
  expect(tried).toEqual([A, C]);
  expect(credentials.currentSlot).toBe('primary');
});

test('a success of the old pair\'s secondary after a replace does not pick a slot of the new keys', async () => {
  const credentials = new Credentials({ groupKey: { primary: A, secondary: B } });
  const attempt = async (credential: Credential): Promise<string> => {
    const key = 'groupKey' in credential ? credential.groupKey : '';
    if (key === A) throw refused;
    credentials.replace({ groupKey: { primary: C, secondary: A } });
    return key;
  };
  await expect(withEitherKey(credentials, attempt, () => undefined)).resolves.toBe(B);
  expect(credentials.currentSlot).toBe('primary');
});

test('replace() takes effect on the next attempt and starts from the new primary', async () => {
  const credentials = new Credentials({ groupKey: { primary: A, secondary: B } });
  credentials.use('secondary');
  credentials.replace({ groupKey: { primary: C } });
  const next = attemptRefusing([]);
  await withEitherKey(credentials, next.attempt, () => undefined);
  expect(next.tried).toEqual([C]);
  expect(credentials.alternate()).toBeUndefined();
});

describe('resolveCredential', () => {
  test('a lone key is the primary of a pair', () => {
    expect(resolveCredential({ groupKey: A })).toEqual({ groupKey: { primary: A } });
    expect(resolveCredential({ deviceKey: { primary: A, secondary: B } })).toEqual({ deviceKey: { primary: A, secondary: B } });
  });
  test.each([
    [{}, 'groupKey|deviceKey'],
    [{ groupKey: A, deviceKey: A }, 'groupKey|deviceKey'],
    [{ groupKey: 'short' }, 'groupKey'],
    [{ groupKey: [A] }, 'groupKey'],
    [{ groupKey: { secondary: B } }, 'groupKey.primary'],
    [{ deviceKey: { primary: A, secondary: 'not base64!' } }, 'deviceKey.secondary'],
    [{ deviceKey: { primary: A, secundary: B } }, 'deviceKey.secundary'],
  ])('%j is refused naming %s', (input, field) => {
    let error: unknown;
    try {
      resolveCredential(input);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).field).toBe(field);
  });
});
