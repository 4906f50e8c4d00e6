/**
 * Issue 13, the library side of findings 3, 4, 7, 9, 10 and 11: a table of bad inputs to
 * `createDevice`, `sendTelemetry`, `reportProperties` and `stop`, each answered by a typed error
 * naming the field (ConfigError for options, MessageRejectedError / PropertiesRejectedError for a
 * message), never a raw TypeError and never silently accepted; the trust list `ca` builds; and
 * timers far beyond Node's 2^31 − 1 ms limit that must not fire early.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import pino from 'pino';
import { SimulatedClock } from 'xstate';
import { waitUntilWork } from '../../src/actors/wait';
import { sharedSecureContext } from '../../src/actors/tls';
import { MAX_TIMER_MS, monotonicNow, systemClock, withDeadline } from '../../src/clock';
import { createDevice, type Device } from '../../src/device';
import { generateCertificates, type CloudCertificates } from 'hubstate-cloud';
import { ConfigError, MessageRejectedError } from '../../src/errors';
import { jsonOddity } from '../../src/json';
import {
  DEVICE_OPTION_KEYS,
  isHostPort,
  MAX_CA_BYTES,
  MAX_DTMI_LENGTH,
  OPTION_BOUNDS,
  resolveOptions,
  trustedCaPem,
  type DeviceOptions,
} from '../../src/options';
import { MAX_RETRY_AFTER_MS, nextDelay, resolvePolicy } from '../../src/policy/backoff';
import { PropertiesRejectedError } from '../../src/pnp/types';
import { MemoryProvisioningCache } from '../../src/store/cache';

const deviceKey = Buffer.alloc(32, 9).toString('base64');
const valid: DeviceOptions = { idScope: '0ne00ABC123', registrationId: 'hardening-1', deviceKey };
/** A real CA certificate (Node's first bundled root): valid PEM for the `ca` option. */
const ROOT_PEM = tls.rootCertificates[0]!;

function configErrorOf(options: unknown): ConfigError {
  let thrown: unknown;
  try {
    resolveOptions(options as DeviceOptions);
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(ConfigError);
  expect((thrown as Error).message).not.toContain(deviceKey);
  return thrown as ConfigError;
}

// -------------------------------------------------------------------------------------------
// Numbers: every numeric option × NaN, ±Infinity, negative, 0, a fraction where whole units
// are meant, just past its bound, absurdly large, a string, a boolean, null.
// -------------------------------------------------------------------------------------------

type NumericField = keyof typeof OPTION_BOUNDS;
const TOP_LEVEL_NUMBERS = (Object.keys(OPTION_BOUNDS) as NumericField[]).filter((f) => !f.includes('.'));
const OUTBOX_NUMBERS = (Object.keys(OPTION_BOUNDS) as NumericField[]).filter((f) => f.startsWith('outboxLimits.'));

function badNumbers(field: NumericField): Array<[string, unknown]> {
  const bound = OPTION_BOUNDS[field] as { min: number; max: number; integer?: boolean };
  const out: Array<[string, unknown]> = [
    ['NaN', NaN],
    ['Infinity', Infinity],
    ['-Infinity', -Infinity],
    ['negative', -1],
    ['below the minimum', bound.min - 1],
    ['just past the bound', bound.max + 1],
    ['1e15 (overflows a timer)', 1e15],
    ['a numeric string', String(bound.min + 1)],
    ['a boolean', true],
    ['null', null],
  ];
  if (bound.integer) out.push(['a fraction', bound.min + 0.5]);
  return out;
}

/** The option object that puts `value` at `field` ('outboxLimits.maxCount' nests). */
function withField(field: string, value: unknown): Record<string, unknown> {
  const [head, tail] = field.split('.') as [string, string | undefined];
  return tail === undefined ? { ...valid, [head]: value } : { ...valid, [head]: { [tail]: value } };
}

const numberCases: Array<[string, string, unknown]> = [];
for (const field of [...TOP_LEVEL_NUMBERS, ...OUTBOX_NUMBERS]) {
  for (const [what, value] of badNumbers(field)) numberCases.push([field, what, value]);
}

describe('numeric options: a ConfigError naming the field for every bad number (finding 3)', () => {
  test.each(numberCases)('%s = %s', (field, _what, value) => {
    // tokenRenewalMarginSeconds must stay below the validity: give the largest validity.
    const options = withField(field, value);
    if (field === 'tokenRenewalMarginSeconds') options['tokenValiditySeconds'] = OPTION_BOUNDS.tokenValiditySeconds.max;
    expect(configErrorOf(options).field).toBe(field);
  });

  test.each([...TOP_LEVEL_NUMBERS, ...OUTBOX_NUMBERS])('%s: its bounds are accepted and documented in the error', (field) => {
    const bound = OPTION_BOUNDS[field] as { min: number; max: number };
    if (field !== 'tokenRenewalMarginSeconds') {
      expect(() => resolveOptions(withField(field, bound.max) as unknown as DeviceOptions)).not.toThrow();
    }
    expect(configErrorOf(withField(field, bound.max * 2)).message).toContain(String(bound.max));
  });

  test('finding 4: keepaliveSeconds is bounded by IoT Hub (1,767 s), far below the 65,536 that crashed mqtt-packet', () => {
    expect(resolveOptions({ ...valid, keepaliveSeconds: 1767 }).keepaliveSeconds).toBe(1767);
    for (const value of [1768, 65_535, 65_536, 1e6]) expect(configErrorOf({ ...valid, keepaliveSeconds: value }).field).toBe('keepaliveSeconds');
  });

  test("the token's renewal timer fits Node's timers: validity - margin < 2^31 - 1 ms", () => {
    expect((OPTION_BOUNDS.tokenValiditySeconds.max - 1) * 1000).toBeLessThan(MAX_TIMER_MS);
    expect(configErrorOf({ ...valid, tokenValiditySeconds: 1e15 }).field).toBe('tokenValiditySeconds');
    expect(configErrorOf({ ...valid, tokenValiditySeconds: 600 }).field).toBe('tokenRenewalMarginSeconds');
  });

  test.each([
    ['policy.maxDelayMs 1e300', { maxDelayMs: 1e300 }, 'policy.maxDelayMs'],
    ['policy.hubRetryWindowMs Infinity', { hubRetryWindowMs: Infinity }, 'policy.hubRetryWindowMs'],
    ['policy.parkedMaxDelayMs 30 days', { parkedMaxDelayMs: 30 * 86_400_000 }, 'policy.parkedMaxDelayMs'],
    ['policy.slowRetryMinMs NaN', { slowRetryMinMs: NaN }, 'policy.slowRetryMinMs'],
    ['policy.stableConnectionMs 1e12', { stableConnectionMs: 1e12 }, 'policy.stableConnectionMs'],
    ['policy.lookupAfterUnreachableMs -1', { lookupAfterUnreachableMs: -1 }, 'policy.lookupAfterUnreachableMs'],
    ['policy.quickRetries 1e6', { quickRetries: 1e6 }, 'policy.quickRetries'],
    ['policy.maxHubAttempts 1e12', { maxHubAttempts: 1e12 }, 'policy.maxHubAttempts'],
    ['policy.firstBootJitterMs 1e12', { firstBootJitterMs: 1e12 }, 'policy.firstBootJitterMs'],
    ['policy.fleet.devices 1e12', { fleet: { devices: 1e12, ratePerSec: 1, load: 1 } }, 'policy.fleet.devices'],
    ['policy.fleet window of years', { fleet: { devices: 1e8, ratePerSec: 0.001, load: 1 } }, 'policy.fleet'],
  ])('%s', (_what, policy, field) => {
    expect(configErrorOf({ ...valid, policy }).field).toBe(field);
  });

  test('seed: integers only, and safe ones', () => {
    for (const seed of [1.5, NaN, Infinity, 2 ** 60, '7']) expect(configErrorOf({ ...valid, seed }).field).toBe('seed');
  });
});

// -------------------------------------------------------------------------------------------
// Unknown keys (finding 9)
// -------------------------------------------------------------------------------------------

describe('unknown option keys are refused, naming the nearest known one (finding 9)', () => {
  test.each([
    ['keepAliveSeconds', 'keepaliveSeconds'],
    ['websockets', undefined],
    ['connectTimeout', 'connectTimeoutMs'],
    ['provisioningHostname', 'provisioningHost'],
    ['groupkey', 'groupKey'],
    ['dataDirectory', 'dataDir'],
    ['modelID', 'modelId'],
    ['trustOnlyCA', 'trustOnlyCa'],
    ['sendWindows', 'sendWindow'],
    ['outboxLimit', 'outboxLimits'],
  ])('createDevice({ %s })', (key, nearest) => {
    const error = configErrorOf({ ...valid, [key]: 1 });
    expect(error.field).toBe(key);
    if (nearest) expect(error.message).toContain(`did you mean '${nearest}'`);
    else expect(error.message).toContain('unknown key');
  });

  test.each([
    ['outboxLimits.maxMessages', { outboxLimits: { maxMessages: 5 } }],
    ['outboxLimits.whenfull', { outboxLimits: { whenfull: 'drop-oldest' } }],
    ['policy.maxDelay', { policy: { maxDelay: 5 } }],
    ['policy.preset_', { policy: { preset_: 'default' } }],
    ['policy.fleet.rate', { policy: { fleet: { devices: 1, ratePerSec: 1, load: 1, rate: 1 } } }],
  ])('%s', (field, options) => {
    expect(configErrorOf({ ...valid, ...options }).field).toBe(field);
  });

  test('createDevice itself refuses them before any I/O', () => {
    expect(() => createDevice({ ...valid, keepAliveSeconds: 60 } as DeviceOptions)).toThrow(/keepAliveSeconds.*did you mean 'keepaliveSeconds'/);
  });

  test('every documented option is known', () => {
    expect(new Set(DEVICE_OPTION_KEYS).size).toBe(DEVICE_OPTION_KEYS.length);
    expect(DEVICE_OPTION_KEYS).toEqual(expect.arrayContaining(['keepaliveSeconds', 'trustOnlyCa', 'outboxLimits', 'policy', 'clock']));
  });
});

// -------------------------------------------------------------------------------------------
// Wrong types for the non-numeric options (finding 7)
// -------------------------------------------------------------------------------------------

describe('wrong types: a ConfigError, never a TypeError (finding 7)', () => {
  test.each([
    ['options null', null, 'options'],
    ['options a string', 'x', 'options'],
    ['options an array', [], 'options'],
    ['logger a string', { ...valid, logger: 'x' }, 'logger'],
    ['logger an object without methods', { ...valid, logger: {} }, 'logger'],
    ['clock a number', { ...valid, clock: 5 }, 'clock'],
    ['clock without setTimeout', { ...valid, clock: { now: (): number => 0 } as unknown }, 'clock'],
    ['clock with a monotonicNow that is not a function', { ...valid, clock: { now: (): number => 0, setTimeout: () => 0, clearTimeout: () => undefined, monotonicNow: 5 } as unknown }, 'clock'],
    ['features not an array', { ...valid, features: {} }, 'features'],
    ['features with a null', { ...valid, features: [null] }, 'features'],
    ['outbox a string', { ...valid, outbox: 'memory' }, 'outbox'],
    ['cache null', { ...valid, cache: null }, 'cache'],
    ['inspect a number', { ...valid, inspect: 42 }, 'inspect'],
    ['dataDir empty', { ...valid, dataDir: '' }, 'dataDir'],
    ['dataDir with a NUL', { ...valid, dataDir: '/tmp/a\0b' }, 'dataDir'],
    ['dataDir a number', { ...valid, dataDir: 5 }, 'dataDir'],
    ['policy a string', { ...valid, policy: 'fast' }, 'policy'],
    ['policy.preset unknown', { ...valid, policy: { preset: 'turbo' } }, 'policy.preset'],
    ['outboxLimits a string', { ...valid, outboxLimits: 'big' }, 'outboxLimits'],
    ['outboxLimits.whenFull misspelled', { ...valid, outboxLimits: { whenFull: 'drop' } }, 'outboxLimits.whenFull'],
    ['trustOnlyCa a string', { ...valid, ca: ROOT_PEM, trustOnlyCa: 'yes' }, 'trustOnlyCa'],
    ['trustOnlyCa without ca', { ...valid, trustOnlyCa: true }, 'trustOnlyCa'],
    ['idScope a number', { ...valid, idScope: 42 }, 'idScope'],
    ['registrationId an object', { ...valid, registrationId: {} }, 'registrationId'],
    ['registrationId of 129 characters', { ...valid, registrationId: 'a'.repeat(129) }, 'registrationId'],
    ['deviceKey a Buffer', { ...valid, deviceKey: Buffer.alloc(32) }, 'deviceKey'],
    ['deviceKey of 10 KB', { ...valid, deviceKey: 'A'.repeat(10_240) }, 'deviceKey'],
  ])('%s', (_what, options, field) => {
    expect(configErrorOf(options).field).toBe(field);
  });

  test('createDevice(null) and createDevice({ logger: "x" }) throw ConfigError, not TypeError', () => {
    expect(() => createDevice(null as unknown as DeviceOptions)).toThrow(ConfigError);
    expect(() => createDevice({ ...valid, logger: 'x' as never })).toThrow(ConfigError);
  });
});

// -------------------------------------------------------------------------------------------
// Hosts, PEM, DTMI (finding 10)
// -------------------------------------------------------------------------------------------

describe('provisioningHost: host[:port] by DNS rules, port 1..65535 (finding 10)', () => {
  test.each([
    'dps.example.net:0',
    'dps.example.net:99999',
    'dps.example.net:65536',
    'dps.example.net:08883',
    'dps.example.net:',
    'dps.example.net:-1',
    'dps.example.net:8883:1',
    '...',
    '-',
    '.example.net',
    'example..net',
    'example.net.',
    '-dps.example.net',
    'dps-.example.net',
    `${'a'.repeat(64)}.example.net`,
    `${'a.'.repeat(130)}net`,
    'host/path',
    'user@host',
    'ho st',
    'hôst.example',
    '999',
    '1.2.3',
    '256.1.1.1',
    '1.2.3.4.5',
    '',
    ':8883',
  ])('%j', (host) => {
    expect(configErrorOf({ ...valid, provisioningHost: host }).field).toBe('provisioningHost');
  });

  test.each(['global.azure-devices-provisioning.net', 'localhost', 'localhost:8883', '127.0.0.1:443', 'DPS-1.Example.NET:65535', 'a.b'])('accepts %j', (host) => {
    expect(isHostPort(host)).toBe(true);
    expect(resolveOptions({ ...valid, provisioningHost: host }).provisioningHost).toBe(host);
  });

  test('a non-string host', () => {
    for (const host of [8883, null, ['a'], { host: 'a' }]) expect(configErrorOf({ ...valid, provisioningHost: host }).field).toBe('provisioningHost');
  });
});

describe('ca: every certificate parses as X.509 (finding 10)', () => {
  const body = ROOT_PEM.split('\n').slice(1, -2).join('\n');
  test.each([
    ['no PEM at all', 'hello'],
    ['garbage between the markers', '-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n'],
    ['base64 that is not DER', `-----BEGIN CERTIFICATE-----\n${Buffer.from('x'.repeat(300)).toString('base64')}\n-----END CERTIFICATE-----\n`],
    ['a truncated certificate', `-----BEGIN CERTIFICATE-----\n${body.slice(0, 200)}\n-----END CERTIFICATE-----\n`],
    ['a good certificate then garbage', `${ROOT_PEM}\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`],
    ['an unterminated block', `${ROOT_PEM}\n-----BEGIN CERTIFICATE-----\n${body}\n`],
    ['a private key', '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n'],
    ['markers only', '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n'],
    ['a Buffer', Buffer.from(ROOT_PEM)],
    ['over 1 MB', `${ROOT_PEM}\n${'#'.repeat(MAX_CA_BYTES)}`],
  ])('%s', (_what, ca) => {
    expect(configErrorOf({ ...valid, ca }).field).toBe('ca');
  });

  test('a bundle with comments between certificates is accepted', () => {
    const bundle = `# first\n${tls.rootCertificates[0]}\n# second\n${tls.rootCertificates[1]}\n`;
    expect(() => resolveOptions({ ...valid, ca: bundle })).not.toThrow();
  });
});

describe('modelId: DTDL v3 DTMI syntax, at most 2,048 characters (finding 10)', () => {
  test.each([
    ['5 KB', `dtmi:${'a'.repeat(5 * 1024)};1`],
    ['2,049 characters', `dtmi:${'a'.repeat(MAX_DTMI_LENGTH - 6)};1`],
    ['no version', 'dtmi:com:example:Thermostat'],
    ['version 0', 'dtmi:com:example:Thermostat;0'],
    ['version with a leading zero', 'dtmi:com:example:Thermostat;01'],
    ['version of 10 digits', 'dtmi:com:example:Thermostat;1234567890'],
    ['a segment starting with a digit', 'dtmi:com:1example:Thermostat;1'],
    ['a segment ending with _', 'dtmi:com:example_:Thermostat;1'],
    ['an empty segment', 'dtmi:com::Thermostat;1'],
    ['upper-case scheme', 'DTMI:com:example:Thermostat;1'],
    ['a dash', 'dtmi:com:ex-ample:Thermostat;1'],
    ['a space', 'dtmi:com:example:Thermo stat;1'],
    ['not a string', 42],
  ])('%s', (_what, modelId) => {
    expect(configErrorOf({ ...valid, modelId }).field).toBe('modelId');
  });

  test.each(['dtmi:com:example:Thermostat;1', 'dtmi:Sample:Failover;1', 'dtmi:a;999999999', 'dtmi:com:example:Thermostat;2.1', `dtmi:${'a'.repeat(MAX_DTMI_LENGTH - 7)};1`])('accepts %s', (modelId) => {
    expect(modelId.length).toBeLessThanOrEqual(MAX_DTMI_LENGTH);
    expect(resolveOptions({ ...valid, modelId }).modelId).toBe(modelId);
  });
});

// -------------------------------------------------------------------------------------------
// ca adds to the default roots; trustOnlyCa trusts only it (finding 11)
// -------------------------------------------------------------------------------------------

describe('ca is an extra trusted CA: the default roots stay trusted (finding 11)', () => {
  let certs: CloudCertificates;
  let server: tls.Server;
  let port: number;

  beforeAll(async () => {
    certs = await generateCertificates();
    server = tls.createServer({ key: certs.key, cert: certs.cert }, (socket) => socket.end());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  function handshake(ca: string): Promise<'ok' | string> {
    return new Promise((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', secureContext: sharedSecureContext(ca) }, () => {
        socket.end();
        resolve('ok');
      });
      socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
    });
  }

  test('the trust list is Node default roots + ca; trustOnlyCa is ca alone', () => {
    const added = resolveOptions({ ...valid, ca: certs.ca }).ca!;
    for (const root of tls.rootCertificates) expect(added).toContain(root);
    expect(added).toContain(certs.ca.trim());
    expect(resolveOptions({ ...valid, ca: certs.ca, trustOnlyCa: true }).ca).toBe(certs.ca);
    // One string per CA for the whole process (one SecureContext for a fleet).
    expect(trustedCaPem(certs.ca, false)).toBe(added);
  });

  test('a connection verifies against the added CA, and an Azure root is still trusted next to it', async () => {
    const resolved = resolveOptions({ ...valid, ca: certs.ca }).ca!;
    expect(await handshake(resolved)).toBe('ok');
    const trusted = new Set(parseSubjects(resolved));
    // DigiCert Global Root G2 and Baltimore/Microsoft roots: what Azure IoT chains to.
    expect([...trusted].some((s) => /DigiCert Global Root G2|Microsoft RSA Root Certificate Authority 2017/.test(s))).toBe(true);
  });

  test('trustOnlyCa with another CA refuses the connection (verification never off)', async () => {
    const other = await generateCertificates();
    expect(await handshake(resolveOptions({ ...valid, ca: other.ca, trustOnlyCa: true }).ca!)).not.toBe('ok');
    expect(await handshake(resolveOptions({ ...valid, ca: other.ca }).ca!)).not.toBe('ok');
  });
});

function parseSubjects(pemList: string): string[] {
  return (pemList.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []).map((pem) => new X509Certificate(pem).subject);
}

// -------------------------------------------------------------------------------------------
// sendTelemetry / reportProperties / stop: typed errors for every bad argument (finding 7)
// -------------------------------------------------------------------------------------------

describe('send and report calls: typed errors, never a TypeError, nothing odd serialised silently (finding 7)', () => {
  let device: Device;
  beforeAll(() => {
    device = createDevice({
      ...valid,
      provisioningHost: 'localhost:9',
      clock: new SimulatedClock(),
      cache: new MemoryProvisioningCache(),
      logger: pino({ level: 'silent' }),
    });
  });
  afterAll(() => device.stop());

  async function rejection(send: () => Promise<unknown>): Promise<unknown> {
    try {
      await send();
    } catch (error) {
      return error;
    }
    return undefined;
  }

  class WithUndefinedJson {
    toJSON(): undefined {
      return undefined;
    }
  }

  test.each([
    ['toJSON returning undefined', () => device.sendTelemetry(new WithUndefinedJson() as never)],
    ['options null', () => device.sendTelemetry({ a: 1 }, null as never)],
    ['options a string', () => device.sendTelemetry({ a: 1 }, 'x' as never)],
    ['an unknown option', () => device.sendTelemetry({ a: 1 }, { propertys: {} } as never)],
    ["properties: 'abc'", () => device.sendTelemetry({ a: 1 }, { properties: 'abc' as never })],
    ['properties an array', () => device.sendTelemetry({ a: 1 }, { properties: ['a'] as never })],
    ['a numeric property value', () => device.sendTelemetry({ a: 1 }, { properties: { p: 5 as never } })],
    ['a numeric component', () => device.sendTelemetry({ a: 1 }, { component: 5 as never })],
    ['a Buffer body', () => device.sendTelemetry(Buffer.from('hello') as never)],
    ['a Date body', () => device.sendTelemetry(new Date() as never)],
    ['a Map body', () => device.sendTelemetry(new Map([['a', 1]]) as never)],
    ['a Set body', () => device.sendTelemetry(new Set([1]) as never)],
    ['a Uint8Array body', () => device.sendTelemetry(new Uint8Array(4) as never)],
    ['an array body', () => device.sendTelemetry([1, 2] as never)],
    ['a string body', () => device.sendTelemetry('{"a":1}' as never)],
    ['null body', () => device.sendTelemetry(null as never)],
    ['a BigInt inside', () => device.sendTelemetry({ n: 10n })],
    ['a cycle', () => device.sendTelemetry((() => { const o: Record<string, unknown> = {}; o['self'] = o; return o; })())],
    ['a Map inside', () => device.sendTelemetry({ readings: new Map([['t', 21]]) })],
    ['a Buffer inside', () => device.sendTelemetry({ blob: Buffer.from('abc') })],
    ['NaN inside', () => device.sendTelemetry({ t: NaN })],
    ['Infinity inside an array', () => device.sendTelemetry({ t: [1, Infinity] })],
    ['a function inside an array', () => device.sendTelemetry({ t: [() => 1] })],
  ])('sendTelemetry: %s → MessageRejectedError', async (_what, send) => {
    const error = await rejection(send);
    expect(error).toBeInstanceOf(MessageRejectedError);
  });

  test('what JSON means on purpose is kept: a nested Date is its ISO string, an undefined member is left out', async () => {
    await expect(device.sendTelemetry({ at: new Date(0), gone: undefined, t: 21 })).resolves.toHaveProperty('messageId');
  });

  test.each([
    ['a numeric component', () => device.reportProperties({ a: 1 }, { component: 5 as never })],
    ['options null', () => device.reportProperties({ a: 1 }, null as never)],
    ['options a string', () => device.reportProperties({ a: 1 }, 'thermostat1' as never)],
    ['an unknown option', () => device.reportProperties({ a: 1 }, { componnet: 'x' } as never)],
    ['a Map patch', () => device.reportProperties(new Map([['a', 1]]) as never)],
    ['a Date patch', () => device.reportProperties(new Date() as never)],
    ['a Buffer patch', () => device.reportProperties(Buffer.from('ab') as never)],
    ['a Map value', () => device.reportProperties({ a: new Map([['x', 1]]) })],
    ['a Set value', () => device.reportProperties({ a: new Set([1]) })],
    ['a Buffer value', () => device.reportProperties({ a: Buffer.from('x') })],
    ['NaN value', () => device.reportProperties({ a: NaN })],
    ['a BigInt value', () => device.reportProperties({ a: 1n })],
    ['toJSON returning undefined', () => device.reportProperties({ a: new WithUndefinedJson() })],
  ])('reportProperties: %s → PropertiesRejectedError', (_what, report) => {
    let thrown: unknown;
    try {
      report();
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(PropertiesRejectedError);
  });

  test.each([
    ['options a string', 'now', 'stop options'],
    ['drainMs NaN', { drainMs: NaN }, 'drainMs'],
    ['drainMs an hour', { drainMs: 3_600_000 }, 'drainMs'],
    ['an unknown key', { drain: 5 }, 'stop options.drain'],
  ])('stop: %s → ConfigError', async (_what, options, field) => {
    const error = await rejection(() => device.stop(options as never));
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).field).toBe(field);
  });

  test('jsonOddity names where the problem is', () => {
    expect(jsonOddity({ a: { b: [1, new Map()] } })).toMatch(/'a\.b\[1\]' is a Map/);
    expect(jsonOddity({ a: 1, b: 'x', c: [true, null], d: new Date() })).toBeUndefined();
  });
});

// -------------------------------------------------------------------------------------------
// Timers beyond 2^31 − 1 ms (finding 3)
// -------------------------------------------------------------------------------------------

describe('timers beyond 2^31 − 1 ms are not fired early (finding 3)', () => {
  afterEach(() => jest.useRealTimers());

  test("systemClock: a 35-day timer does not fire after 1 ms (Node's overflow), nor at 2^31 − 1 ms, but at 35 days", () => {
    jest.useFakeTimers();
    const fired = jest.fn();
    const delay = 35 * 86_400_000;
    systemClock.setTimeout(fired, delay);
    jest.advanceTimersByTime(1);
    expect(fired).not.toHaveBeenCalled();
    jest.advanceTimersByTime(MAX_TIMER_MS);
    expect(fired).not.toHaveBeenCalled();
    jest.advanceTimersByTime(delay - MAX_TIMER_MS - 2);
    expect(fired).not.toHaveBeenCalled();
    jest.advanceTimersByTime(1);
    expect(fired).toHaveBeenCalledTimes(1);
  });

  test('systemClock: a chained timer can be cleared at any link; Infinity never fires; NaN fires at once', () => {
    jest.useFakeTimers();
    const fired = jest.fn();
    const id = systemClock.setTimeout(fired, 3 * MAX_TIMER_MS);
    jest.advanceTimersByTime(MAX_TIMER_MS + 5);
    systemClock.clearTimeout(id);
    jest.advanceTimersByTime(3 * MAX_TIMER_MS);
    expect(fired).not.toHaveBeenCalled();
    const never = jest.fn();
    systemClock.setTimeout(never, Infinity);
    jest.advanceTimersByTime(10 * MAX_TIMER_MS);
    expect(never).not.toHaveBeenCalled();
    const now = jest.fn();
    systemClock.setTimeout(now, NaN);
    jest.advanceTimersByTime(1);
    expect(now).toHaveBeenCalledTimes(1);
  });

  test('withDeadline on the system clock: a 30-day deadline is not a timeout after 1 ms', async () => {
    jest.useFakeTimers();
    let outcome = 'pending';
    withDeadline(systemClock, new Promise<never>(() => undefined), 30 * 86_400_000, () => new Error('timeout')).catch(() => (outcome = 'timed out'));
    await jest.advanceTimersByTimeAsync(60_000);
    expect(outcome).toBe('pending');
    await jest.advanceTimersByTimeAsync(30 * 86_400_000);
    expect(outcome).toBe('timed out');
  });

  test('the BackingOff wait on the system clock: a retryAt 40 days ahead is waited out, not skipped', async () => {
    jest.useFakeTimers();
    let done = false;
    const controller = new AbortController();
    void waitUntilWork(systemClock)({ input: { retryAt: monotonicNow(systemClock) + 40 * 86_400_000 }, signal: controller.signal } as never).then(() => (done = true));
    await jest.advanceTimersByTimeAsync(MAX_TIMER_MS + 1000);
    expect(done).toBe(false);
    await jest.advanceTimersByTimeAsync(40 * 86_400_000);
    expect(done).toBe(true);
  });

  test('simulated clock: a DPS retry-after of 3,000,000 s is capped at 1 h (+ jitter), not a wait of 35 days nor an immediate retry', () => {
    const clock = new SimulatedClock();
    const policy = resolvePolicy();
    const { delayMs } = nextDelay(policy, { errorClass: 'throttled', attempt: 1, afterLoss: false, retryAfterMs: 3_000_000_000 }, 1);
    expect(delayMs).toBeGreaterThanOrEqual(MAX_RETRY_AFTER_MS);
    expect(delayMs).toBeLessThanOrEqual(MAX_RETRY_AFTER_MS * 1.5);
    const fired = jest.fn();
    clock.setTimeout(fired, delayMs);
    clock.increment(MAX_RETRY_AFTER_MS - 1);
    expect(fired).not.toHaveBeenCalled();
    clock.increment(delayMs - MAX_RETRY_AFTER_MS + 1);
    expect(fired).toHaveBeenCalledTimes(1);
  });
});

describe("the README's options table shows every bound", () => {
  const readme = readFileSync(join(__dirname, '../../README.md'), 'utf8');
  const table = readme.slice(readme.indexOf('### Options (`createDevice`)'), readme.indexOf('### Plug and Play'));
  test.each(Object.entries(OPTION_BOUNDS).filter(([field]) => field !== 'tokenRenewalMarginSeconds'))('%s', (field, bound) => {
    const row = table.split('\n').find((line) => line.includes(`\`${field.split('.').pop()!}\``))!;
    expect(row).toBeDefined();
    expect(row).toContain(bound.max.toLocaleString('en-US'));
  });
  test('ca, trustOnlyCa and unknown keys are documented', () => {
    expect(table).toMatch(/in addition to\*\* Node's default roots/);
    expect(table).toContain('`trustOnlyCa`');
    expect(table).toMatch(/unknown key/);
  });
});
