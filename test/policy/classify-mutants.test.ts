/**
 * Targeted tests from mutation testing (issue 12 §9, `npm run mutation`). The fixtures of
 * classify.test.ts are built the way the SDK builds errors, so each carries several signals at
 * once (a code AND its text, a status AND its error name): a mutant that breaks one extraction
 * path survives through the other. Here each path is fed alone, with minimal error shapes, and
 * the classification (or the extracted fact) is asserted. See bench/results/mutation.md.
 */
import { errors } from 'azure-iot-common';
import { classify, extractFacts, redactSecrets, toFailure } from '../../src/policy/classify';
import { renderClassificationTable } from '../../src/policy/render-table';
import type { Phase } from '../../src/policy/types';

/** A minimal error-like object: no stack, no class, only the fields given. */
const shape = (fields: Record<string, unknown>): Record<string, unknown> => ({ message: 'opaque failure', ...fields });
const rule = (error: unknown, phase: Phase): string => classify(error, phase).rule;

describe('codes, one extraction path at a time', () => {
  test.each([
    ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'tls-certificate'],
    ['UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'tls-certificate'],
    ['UNABLE_TO_GET_ISSUER_CERT', 'tls-certificate'],
    ['CERT_REVOKED', 'tls-certificate'],
    ['CERT_SIGNATURE_FAILURE', 'tls-certificate'],
    ['CERT_HAS_EXPIRED', 'tls-certificate-time'],
  ])('TLS code %s in `code` alone (message says nothing) → %s, and it is the failure code', (code, expected) => {
    expect(rule(shape({ code }), 'dps')).toBe(expected);
    expect(toFailure(shape({ code }), 'dps', 1).code).toBe(code);
  });

  test('TLS code recovered from the text alone is the failure code', () => {
    expect(toFailure(new Error('unable to verify the first certificate'), 'hub-connect', 1).code).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  });

  test('CONNACK code in `code` alone (mqtt.js numeric code, text not recognisable)', () => {
    expect(rule(shape({ code: 5 }), 'hub-session')).toBe('connack-5-after-connect');
    expect(rule(shape({ code: 1 }), 'dps')).toBe('connack-1-protocol');
    expect(toFailure(shape({ code: 5 }), 'hub-session', 1).code).toBe(5);
  });

  test('only 1..5 are CONNACK codes: an outer numeric code out of range does not shadow the inner CONNACK', () => {
    for (const outer of [0, 6, 7, -1, '3']) {
      expect(rule(shape({ code: outer, transportError: shape({ code: 5 }) }), 'hub-connect')).toBe('connack-5-after-connect');
    }
  });

  test('the CONNACK code wins over a different CONNACK text', () => {
    expect(rule(shape({ code: 3, message: 'Connection refused: Not authorized' }), 'hub-connect')).toBe('connack-3-hub-unavailable');
  });

  test('only the five mqtt.js CONNACK texts count', () => {
    expect(extractFacts(new Error('Connection refused: server going away'), 'dps').connack).toBeUndefined();
    expect(rule(new Error('Connection refused: server going away'), 'hub-connect')).toBe('unknown');
  });

  test('socket code in `code` alone, and an unknown outer code does not shadow the inner one', () => {
    expect(rule(shape({ code: 'ECONNREFUSED' }), 'dps')).toBe('socket-refused');
    expect(rule(shape({ code: 'ECONNRESET' }), 'hub-session')).toBe('socket-reset');
    expect(rule(shape({ code: 'ECONNABORTED' }), 'hub-session')).toBe('socket-reset');
    expect(rule(shape({ code: 'ERR_STREAM_DESTROYED', cause: shape({ code: 'ECONNREFUSED' }) }), 'dps')).toBe('socket-refused');
    expect(toFailure(shape({ code: 'ECONNRESET' }), 'dps', 1).code).toBe('ECONNRESET');
  });

  test('the `code` wins over a socket code mentioned in the text', () => {
    expect(rule(shape({ code: 'ECONNRESET', message: 'retrying after ECONNREFUSED' }), 'dps')).toBe('socket-reset');
  });

  test('messages of the chain are separate lines: a code at the start of an inner message is a word', () => {
    const error = Object.assign(new Error('connect failed'), { cause: new Error('ECONNREFUSED 127.0.0.1:8883') });
    expect(rule(error, 'dps')).toBe('socket-refused');
    const topic = Object.assign(new Error('subscribe'), { cause: new Error('Invalid topic devices/dev#1/messages/devicebound/#') });
    expect(rule(topic, 'hub-session')).toBe('mqtt-invalid-topic');
  });
});

describe('statuses and retry-after, one source at a time', () => {
  test.each([
    ['statusCode', shape({ statusCode: 429 })],
    ['status', shape({ status: 429 })],
    ['response.statusCode', shape({ response: { statusCode: 429 } })],
    ['response.status', shape({ response: { status: 429 } })],
    ['a 3-digit string', shape({ statusCode: '429' })],
    ['result.errorCode (number)', shape({ result: { errorCode: 429001 } })],
    ['result.errorCode (string)', shape({ result: { errorCode: '429001' } })],
    ['result.errorCode (a bare status)', shape({ result: { errorCode: 429 } })],
    ['responseBody.errorCode', shape({ responseBody: { errorCode: 429001 } })],
    ['body.errorCode', shape({ body: { errorCode: 429001 } })],
    ['a JSON text body', shape({ responseBody: '{"errorCode":429001,"message":"throttled"}' })],
    ['the response topic', shape({ transportObject: { topic: '$dps/registrations/res/429/?$rid=1' } })],
  ])('DPS 429 from %s → throttled-429', (_source, error) => {
    expect(classify(error, 'dps')).toMatchObject({ errorClass: 'throttled', rule: 'throttled-429' });
  });

  test('status boundaries: 100 and 599 are statuses, 99, 600, 429.5 and padded strings are not', () => {
    expect(extractFacts(shape({ statusCode: 100 }), 'dps').status).toBe(100);
    expect(rule(shape({ statusCode: 599 }), 'dps')).toBe('dps-server-error');
    for (const junk of [99, 600, 42, 429.5, ' 429', '429 ', '4290', [429], true]) {
      // The junk comes first; the real status behind it must still be found.
      expect(rule(shape({ statusCode: junk, response: { statusCode: 503 } }), 'dps')).toBe('dps-server-error');
    }
  });

  test('errorCode boundaries: 6 digits 100000..599999 give their first three; others are not statuses', () => {
    expect(extractFacts(shape({ result: { errorCode: 100000 } }), 'dps').status).toBe(100);
    expect(rule(shape({ result: { errorCode: 599999 } }), 'dps')).toBe('dps-server-error');
    for (const junk of [700000, 429001.5, ' 429001', '429001 ', [429001], '4x9001']) {
      expect(extractFacts(shape({ result: { errorCode: junk } }), 'dps').status).toBeUndefined();
    }
  });

  test('a body that is not JSON is ignored, never a crash', () => {
    expect(rule(shape({ responseBody: 'not json {', statusCode: 503 }), 'dps')).toBe('dps-server-error');
  });

  test('a topic without a status is ignored, never a crash', () => {
    expect(rule(shape({ topic: 'devices/dev1/messages/events/' }), 'dps')).toBe('unknown');
    expect(extractFacts(shape({ transportObject: { topic: ['$dps/registrations/res/429/?$rid=1'] } }), 'dps').status).toBeUndefined();
  });

  test('retry-after: each source; zero (or what rounds to 0 ms) is no retry-after; junk falls through to the next source', () => {
    // Azure SDK for C: `if (retry_after_seconds > 0)` the wait is retry-after, else the back-off curve.
    for (const zero of [{ retryAfterMs: 0 }, { retryAfter: 0 }, { retryAfter: '0.0001' }, { topic: '$dps/registrations/res/409/?$rid=1&retry-after=0' }]) {
      expect(extractFacts(shape(zero), 'dps').retryAfterMs).toBeUndefined();
    }
    expect(extractFacts(shape({ retryAfterMs: 0, retryAfter: 2 }), 'dps').retryAfterMs).toBe(2000);
    expect(extractFacts(shape({ retryAfter: 2 }), 'dps').retryAfterMs).toBe(2000);
    expect(extractFacts(shape({ response: { headers: { 'retry-after': '3' } } }), 'dps').retryAfterMs).toBe(3000);
    expect(extractFacts(shape({ topic: '$dps/registrations/res/429/?$rid=1&retry-after=4' }), 'dps').retryAfterMs).toBe(4000);
    for (const junk of [-5, '7', Infinity, NaN]) {
      expect(extractFacts(shape({ retryAfterMs: junk, retryAfter: 2 }), 'dps').retryAfterMs).toBe(2000);
    }
    for (const junk of [null, '', '  ', -1, 'Infinity', true]) {
      expect(extractFacts(shape({ retryAfter: junk }), 'dps').retryAfterMs).toBeUndefined();
    }
  });

  test('a fatal class never carries a retry-after; keys without a value are absent', () => {
    expect(classify(shape({ statusCode: 400, retryAfter: 5 }), 'dps')).toStrictEqual({ errorClass: 'fatal', rule: 'dps-bad-request' });
    expect(classify(new Error('something'), 'dps')).toStrictEqual({ errorClass: 'transient', rule: 'unknown' });
    expect(classify(shape({ statusCode: 409, retryAfter: 1 }), 'dps')).toStrictEqual({ errorClass: 'transient', rule: 'dps-conflict', retryAfterMs: 1000 });
  });

  test('a row with a floor marks the service busy', () => {
    expect(classify(shape({ statusCode: 503 }), 'dps')).toStrictEqual({ errorClass: 'transient', rule: 'dps-server-error', minDelayMs: 5000, serverBusy: true });
    expect(classify(shape({ code: 3 }), 'dps')).toMatchObject({ rule: 'connack-3-server-unavailable', serverBusy: true });
  });
});

describe('DPS statuses decide alone (no error name needed), names decide alone (no status needed)', () => {
  test.each([
    [shape({ statusCode: 400 }), 'dps-bad-request'],
    [shape({ name: 'ArgumentError' }), 'dps-bad-request'],
    [shape({ statusCode: 401 }), 'dps-unauthorized'],
    [shape({ name: 'UnauthorizedError' }), 'dps-unauthorized'],
    [shape({ statusCode: 404 }), 'dps-not-found'],
    [shape({ name: 'DeviceNotFoundError' }), 'dps-not-found'],
    [shape({ statusCode: 302 }), 'unknown'],
  ])('dps: %o → %s', (error, expected) => {
    expect(rule(error, 'dps')).toBe(expected);
  });

  test('lookup statuses: 400 and any 4xx but 429 register; 3xx is no verdict; 500 is DPS trouble', () => {
    expect(rule(shape({ statusCode: 400 }), 'dps-lookup')).toBe('lookup-no-registration');
    expect(rule(shape({ statusCode: 499 }), 'dps-lookup')).toBe('lookup-no-registration');
    expect(rule(shape({ statusCode: 302 }), 'dps-lookup')).toBe('unknown');
    expect(rule(shape({ statusCode: 500 }), 'dps-lookup')).toBe('dps-server-error');
  });

  test('a hub status no hub row knows is not a DPS verdict', () => {
    expect(classify(shape({ statusCode: 404 }), 'hub-session')).toMatchObject({ errorClass: 'transient', rule: 'unknown' });
  });

  test.each([
    [shape({ name: 'FormatError' }), 'hub-session', 'mqtt-invalid-topic'],
    [shape({ name: 'DeviceTimeoutError' }), 'hub-session', 'timeout'],
    [shape({ name: 'NotConnectedError' }), 'hub-session', 'connection-lost'],
    [new Error('connect was lost'), 'hub-session', 'connection-lost'],
    [shape({ name: 'ProvisioningRegistrationFailedError' }), 'dps', 'registration-failed'],
    [shape({ name: 'DeviceRegistrationFailedError' }), 'dps', 'registration-failed'],
    [shape({ name: 'ConfigError' }), 'hub-connect', 'config-error'],
  ] as const)('%o on %s → %s', (error, phase, expected) => {
    expect(rule(error, phase)).toBe(expected);
  });

  test('an error class known only by its constructor name (name left as "Error")', () => {
    class MessageTooLargeError extends Error {}
    expect(new MessageTooLargeError('x').name).toBe('Error');
    expect(rule(new MessageTooLargeError('body too big'), 'hub-session')).toBe('message-too-large');
  });
});

describe('DPS registration bodies', () => {
  test('status in the body or in registrationState, whatever the message says', () => {
    expect(classify(shape({ result: { status: 'disabled' } }), 'dps')).toMatchObject({ errorClass: 'parked', rule: 'registration-disabled' });
    expect(classify(shape({ result: { registrationState: { status: 'failed' } } }), 'dps')).toMatchObject({ errorClass: 'fatal', rule: 'registration-failed' });
    expect(rule(shape({ result: { status: 'DISABLED' } }), 'dps')).toBe('registration-disabled');
  });

  test('only exactly failed/disabled count; the first such status wins', () => {
    expect(rule(shape({ result: { status: 'assigned', registrationState: { status: 'disabled' } } }), 'dps')).toBe('registration-disabled');
    expect(rule(shape({ result: { status: 'xdisabled', registrationState: { status: 'failed' } } }), 'dps')).toBe('registration-failed');
    expect(rule(shape({ result: { status: 'disabledx', registrationState: { status: 'failed' } } }), 'dps')).toBe('registration-failed');
    expect(rule(shape({ result: { status: ['disabled'] } }), 'dps')).toBe('unknown');
  });

  test("a 5xx errorCode inside a registration that did not fail is not 'failed, retryable'", () => {
    expect(rule(shape({ result: { registrationState: { status: 'assigning', errorCode: 500000 } } }), 'dps')).toBe('unknown');
  });

  test("the polling state machine's text 'status is disabled' (any case) parks", () => {
    expect(rule(new SyntaxError('status is Disabled'), 'dps')).toBe('registration-disabled');
  });
});

describe('twin answers: a bare Error on the hub, recognised by its text', () => {
  test.each([
    ['TooManyRequests', 'hub-throttled'],
    ['IotHubQuotaExceeded', 'hub-quota-exceeded'],
    ['ServiceUnavailable', 'hub-server-error'],
    ['ServerBusy', 'hub-server-error'],
    ['GatewayTimeout', 'hub-server-error'],
  ])('%s → %s', (text, expected) => {
    expect(rule(new Error(text), 'hub-session')).toBe(expected);
  });

  test('on hub-connect too', () => {
    expect(rule(new Error('IoT Hub throttling limits exceeded'), 'hub-connect')).toBe('hub-throttled');
  });

  test('an empty or missing name falls back to the constructor name: still a bare Error', () => {
    expect(rule(Object.assign(new Error('Throttling'), { name: '' }), 'hub-session')).toBe('hub-throttled');
    expect(rule(Object.assign(new Error('Throttling'), { name: undefined }), 'hub-session')).toBe('hub-throttled');
    expect(rule({ name: 'Error', message: 'Throttling' }, 'hub-session')).toBe('hub-throttled');
    expect(rule(Object.assign(Object.create(null), { name: 'Error', message: 'Throttling' }), 'hub-session')).toBe('hub-throttled');
  });

  test('a self-referencing cause is one link, not a chain of copies', () => {
    const error = new Error('Throttling') as Error & { cause?: unknown };
    error.cause = error;
    expect(rule(error, 'hub-session')).toBe('hub-throttled');
    expect(extractFacts(error, 'hub-session').messages).toEqual(['Throttling']);
  });

  test('not a bare Error: a named SDK error, or an Error with another error behind it', () => {
    expect(rule(new errors.NotConnectedError('Server is busy'), 'hub-session')).toBe('connection-lost');
    expect(rule(Object.assign(new Error('Server busy'), { cause: new Error('socket') }), 'hub-session')).toBe('unknown');
    // A string cause is not a link: it adds neither a name nor a message.
    expect(rule(Object.assign(new Error('Throttling'), { cause: 'details' }), 'hub-session')).toBe('hub-throttled');
    expect(rule(Object.assign(new Error('boom'), { cause: 'Connection refused: Not authorized' }), 'hub-connect')).toBe('unknown');
  });

  test('a twin status is recovered only on the hub, only without a status or another signal', () => {
    expect(extractFacts(new Error('Throttling'), 'dps').twinStatus).toBeUndefined();
    expect(extractFacts(Object.assign(new Error('Throttling'), { statusCode: 500 }), 'hub-session').twinStatus).toBeUndefined();
    expect(extractFacts(new Error('Connection refused: Not authorized; Throttling'), 'hub-session').twinStatus).toBeUndefined();
    expect(extractFacts(new Error('connect ECONNREFUSED; service unavailable'), 'hub-session').twinStatus).toBeUndefined();
    expect(extractFacts(new Error('certificate has expired; service unavailable'), 'hub-session').twinStatus).toBeUndefined();
    expect(extractFacts(new Error('service unavailable'), 'hub-session').twinStatus).toBe(500);
  });
});

describe('the error chain', () => {
  test('cause, error and errors[] are followed; non-objects in errors[] are skipped', () => {
    expect(rule(shape({ cause: shape({ code: 'ECONNREFUSED' }) }), 'dps')).toBe('socket-refused');
    expect(rule(shape({ error: shape({ code: 'ECONNREFUSED' }) }), 'dps')).toBe('socket-refused');
    expect(rule(new AggregateError([shape({ code: 'ECONNREFUSED' })], 'all attempts failed'), 'dps')).toBe('socket-refused');
    expect(rule(shape({ errors: [null, 'Connection refused: Not authorized', shape({ code: 'ECONNREFUSED' })] }), 'dps')).toBe('socket-refused');
  });

  test('at most 8 links are read', () => {
    const chain = (depth: number) => {
      let error: Record<string, unknown> = shape({ code: 'ECONNREFUSED' });
      for (let i = 1; i < depth; i++) error = shape({ cause: error });
      return error;
    };
    expect(rule(chain(8), 'dps')).toBe('socket-refused');
    expect(rule(chain(9), 'dps')).toBe('unknown');
  });

  test('a thrown string is a message', () => {
    expect(rule('Connection refused: Not authorized', 'dps')).toBe('dps-connack-rejected');
    expect(extractFacts('x', 'dps').names).toEqual([]);
  });

  test('a thrown number is no message', () => {
    expect(extractFacts(42, 'dps').messages).toEqual([]);
  });

  test('a callable error (a function with error fields) is read like an object', () => {
    const callable = Object.assign(function () {}, { code: 'ECONNREFUSED', message: 'callable' });
    expect(rule(callable, 'dps')).toBe('socket-refused');
    expect(toFailure(callable, 'dps', 1).message).toBe('callable');
  });

  test('facts have no keys without a value', () => {
    expect(Object.keys(extractFacts(new Error('x'), 'dps')).sort()).toEqual(['firstConnection', 'messages', 'names', 'phase']);
    expect(extractFacts(shape({ message: 'outer', result: { message: '' } }), 'dps').messages).toEqual(['outer']);
  });
});

describe('toFailure names and messages', () => {
  test("the error's own name, else its constructor's, else 'Error'", () => {
    class DeviceRegistrationFailedError extends Error {}
    const renamed = Object.assign(new DeviceRegistrationFailedError('x'), { name: 'ProvisioningRegistrationFailedError' });
    expect(toFailure(renamed, 'dps', 1).name).toBe('ProvisioningRegistrationFailedError');
    class GatewayError extends Error {}
    expect(toFailure(Object.assign(new GatewayError('x'), { name: '' }), 'dps', 1).name).toBe('GatewayError');
    expect(toFailure(Object.assign(new Error('x'), { name: undefined }), 'dps', 1).name).toBe('Error');
    expect(toFailure(Object.assign(Object.create(null), { message: 'x' }), 'dps', 1).name).toBe('Error');
    expect(toFailure(null, 'dps', 1)).toMatchObject({ name: 'null', rule: 'unknown' });
  });

  test('an empty outer message adds nothing; a body without a message adds nothing', () => {
    expect(toFailure(shape({ message: '', cause: new Error('inner') }), 'dps', 1).message).toBe('inner');
    expect(toFailure(shape({ message: 'outer', result: { errorCode: 409001 } }), 'dps', 1).message).toBe('outer');
  });

  test('a thrown non-object without a message is its text', () => {
    expect(toFailure(42, 'dps', 1).message).toBe('42');
  });

  test('500 characters are kept whole; longer is cut to 500 with an ellipsis', () => {
    expect(toFailure(new Error('x'.repeat(500)), 'dps', 1).message).toBe('x'.repeat(500));
    const long = toFailure(new Error('y'.repeat(600)), 'dps', 1).message;
    expect(long).toHaveLength(500);
    expect(long.endsWith('y…')).toBe(true);
  });

  test('no code key when there is no code', () => {
    expect('code' in toFailure(new Error('x'), 'dps', 1)).toBe(false);
  });
});

describe('redactSecrets, exact output', () => {
  test('a SAS token is redacted whole', () => {
    expect(redactSecrets('SharedAccessSignature sr=h%2Fdevices%2Fd&sig=abc&se=1 refused')).toBe('SharedAccessSignature [REDACTED] refused');
    expect(redactSecrets('SharedAccessSignature  sr=h&se=1')).toBe('SharedAccessSignature [REDACTED]');
  });

  test('a bearer token is redacted whole', () => {
    expect(redactSecrets('Authorization: Bearer eyJhbGciOi.eyJzdWIi.c2ln refused')).toBe('Authorization: Bearer [REDACTED] refused');
    expect(redactSecrets('Bearer  abc')).toBe('Bearer [REDACTED]');
  });

  test('sig= is redacted up to the next separator', () => {
    expect(redactSecrets('GET https://h/x?sig=abcdef&se=1')).toBe('GET https://h/x?sig=[REDACTED]&se=1');
  });

  test('a bare base64 key is redacted whole, with one or two padding characters', () => {
    const key44 = Buffer.alloc(32, 7).toString('base64');
    const key40 = Buffer.alloc(28, 9).toString('base64');
    expect(key40.endsWith('==')).toBe(true);
    expect(redactSecrets(`derived ${key44} from`)).toBe('derived [REDACTED] from');
    expect(redactSecrets(`${key44} first`)).toBe('[REDACTED] first');
    expect(redactSecrets(`seed ${key40} end`)).toBe('seed [REDACTED] end');
  });
});

describe('render-table', () => {
  test('a backslash and a pipe in a cell are escaped', () => {
    const table = renderClassificationTable([{ rule: 'r', errorClass: 'transient', when: () => true, why: 'a\\b|c' }]);
    expect(table.split('\n')[2]).toBe('| 1 | `r` | transient |  |  | a\\\\b\\|c |');
  });
});
