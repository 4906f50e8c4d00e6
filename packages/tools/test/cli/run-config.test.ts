/**
 * `hubstate run` configuration: flags > HUBSTATE_* environment > --config JSON file > defaults;
 * every mistake names the field as the user wrote it; keys never appear in a message. And the
 * CLI's contract for bad input: one line on stderr, exit code 2, no stack trace.
 */
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { rootCertificates } from 'node:tls';
import { join } from 'node:path';
import { ConfigError } from 'hubstate';
import { envOf, flagOf, resolveRunConfig, RUN_FLAG_OPTIONS } from '../../src/cli/run-config';
import { spawnCli } from './spawn';

const key = Buffer.alloc(32, 9).toString('base64');
const otherKey = Buffer.alloc(32, 3).toString('base64');
const dir = mkdtempSync(join(tmpdir(), 'hubstate-run-config-'));
const minimal = { 'id-scope': '0ne00ABC123', 'registration-id': 'sensor-1', 'device-key': key };

function errorOf(run: () => unknown): ConfigError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).not.toContain(key);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

function writeJson(name: string, value: unknown, mode = 0o600): string {
  const path = join(dir, name);
  writeFileSync(path, typeof value === 'string' ? value : JSON.stringify(value));
  chmodSync(path, mode);
  return path;
}

describe('resolveRunConfig', () => {
  test('names: --max-hub-attempts / HUBSTATE_MAX_HUB_ATTEMPTS; every field has a flag', () => {
    expect(flagOf('maxHubAttempts')).toBe('--max-hub-attempts');
    expect(envOf('maxHubAttempts')).toBe('HUBSTATE_MAX_HUB_ATTEMPTS');
    expect(Object.keys(RUN_FLAG_OPTIONS)).toEqual(expect.arrayContaining(['config', 'id-scope', 'group-key', 'device-key', 'ca-file', 'preset']));
  });

  test('flags alone: defaults applied, data dir ./hubstate-data, a warning about the key on the command line', () => {
    const config = resolveRunConfig(minimal, {}, dir);
    expect(config.device).toMatchObject({ idScope: '0ne00ABC123', registrationId: 'sensor-1', deviceKey: key, dataDir: join(dir, 'hubstate-data') });
    expect(config.device.groupKey).toBeUndefined();
    expect(config).toMatchObject({ intervalMs: 5000, logLevel: 'info', inspect: false });
    expect(config.warnings.join()).toContain('--device-key on the command line');
    expect(config.warnings.join()).not.toContain(key);
  });

  test('precedence: flag over environment over file', () => {
    const file = writeJson('all.json', { idScope: 'FromFile1', registrationId: 'from-file', groupKey: key, maxHubAttempts: 7, preset: 'iotCentral', intervalMs: 250 });
    const env = { HUBSTATE_REGISTRATION_ID: 'from-env', HUBSTATE_MAX_HUB_ATTEMPTS: '5' };
    const config = resolveRunConfig({ config: file, 'max-hub-attempts': '3' }, env, dir);
    expect(config.device).toMatchObject({ idScope: 'FromFile1', registrationId: 'from-env', groupKey: key, policy: { preset: 'iotCentral', maxHubAttempts: 3 } });
    expect(config.intervalMs).toBe(250);
    expect(config.warnings).toEqual([]);
  });

  test('environment alone (HUBSTATE_CONFIG too); --ca-file is read', () => {
    const ca = join(dir, 'ca.pem');
    writeFileSync(ca, `${rootCertificates[0]}\n`); // a real certificate (the library parses it)
    const file = writeJson('env.json', { caFile: ca });
    const config = resolveRunConfig({}, { HUBSTATE_ID_SCOPE: '0ne00X', HUBSTATE_REGISTRATION_ID: 'r', HUBSTATE_GROUP_KEY: key, HUBSTATE_CONFIG: file }, dir);
    expect(config.device.ca).toContain('BEGIN CERTIFICATE');
  });

  test.each([
    ['missing id scope', { 'registration-id': 'x', 'device-key': key }, {}, /^--id-scope \(or HUBSTATE_ID_SCOPE/],
    ['bad id scope from the environment', {}, { HUBSTATE_ID_SCOPE: 'has space', HUBSTATE_REGISTRATION_ID: 'x', HUBSTATE_DEVICE_KEY: key }, /^HUBSTATE_ID_SCOPE$/],
    ['both keys', { ...minimal, 'group-key': otherKey }, {}, /^--group-key \| --device-key$/],
    ['no key', { 'id-scope': '0ne00A', 'registration-id': 'x' }, {}, /^--group-key .* \| --device-key /],
    ['a key that is not base64', { ...minimal, 'device-key': 'not a key!' }, {}, /^--device-key$/],
    ['a number that is not one', { ...minimal, 'max-hub-attempts': 'ten' }, {}, /^--max-hub-attempts$/],
    ['a fractional integer', { ...minimal, 'keepalive-seconds': '1.5' }, {}, /^--keepalive-seconds$/],
    ['an unknown preset', { ...minimal, preset: 'fast' }, {}, /^--preset$/],
    ['a bad model id', { ...minimal, 'model-id': 'thermostat' }, {}, /^--model-id$/],
    ['a provisioning host with a path', { ...minimal, 'provisioning-host': 'a/b' }, {}, /^--provisioning-host$/],
    ['a missing CA file', { ...minimal, 'ca-file': 'nope.pem' }, {}, /^--ca-file$/],
    ['a bad log level', { ...minimal, 'log-level': 'loud' }, {}, /^--log-level$/],
    ['an interval that is too short', { ...minimal, 'interval-ms': '1' }, {}, /^--interval-ms$/],
    ['a publish timeout under 2 s', { ...minimal, 'publish-timeout-seconds': '1' }, {}, /^--publish-timeout-seconds$/],
    ['a fractional publish timeout', { ...minimal, 'publish-timeout-seconds': '2.5' }, {}, /^--publish-timeout-seconds$/],
    ['a publish timeout from the environment', minimal, { HUBSTATE_PUBLISH_TIMEOUT_SECONDS: 'soon' }, /^HUBSTATE_PUBLISH_TIMEOUT_SECONDS$/],
    ['a zero property handler timeout', { ...minimal, 'property-handler-timeout-ms': '0' }, {}, /^--property-handler-timeout-ms$/],
    ['a property handler timeout from the environment', minimal, { HUBSTATE_PROPERTY_HANDLER_TIMEOUT_MS: '-5' }, /^HUBSTATE_PROPERTY_HANDLER_TIMEOUT_MS$/],
  ])('%s → ConfigError naming the field', (_name, flags, env, field) => {
    const error = errorOf(() => resolveRunConfig(flags as Record<string, string>, env as NodeJS.ProcessEnv, dir));
    expect(error.field).toMatch(field);
    expect(error.message).toMatch(/expected .+/);
  });

  test('publishTimeoutSeconds and propertyHandlerTimeoutMs: from a flag, the environment or the file, into the device options', () => {
    const unset = resolveRunConfig(minimal, {}, dir).device;
    expect(unset.publishTimeoutSeconds).toBeUndefined(); // the library's defaults apply (30 s, 30000 ms)
    expect(unset.propertyHandlerTimeoutMs).toBeUndefined();
    const fromFlags = resolveRunConfig({ ...minimal, 'publish-timeout-seconds': '2', 'property-handler-timeout-ms': '1500' }, {}, dir);
    expect(fromFlags.device).toMatchObject({ publishTimeoutSeconds: 2, propertyHandlerTimeoutMs: 1500 });
    const env = { HUBSTATE_PUBLISH_TIMEOUT_SECONDS: '5', HUBSTATE_PROPERTY_HANDLER_TIMEOUT_MS: '2500' };
    expect(resolveRunConfig(minimal, env, dir).device).toMatchObject({ publishTimeoutSeconds: 5, propertyHandlerTimeoutMs: 2500 });
    const file = writeJson('timeouts.json', { publishTimeoutSeconds: 10, propertyHandlerTimeoutMs: 750 });
    expect(resolveRunConfig({ ...minimal, config: file }, {}, dir).device).toMatchObject({ publishTimeoutSeconds: 10, propertyHandlerTimeoutMs: 750 });
  });

  test('bad timeouts in the config file are named with the file', () => {
    const short = writeJson('short-publish.json', { publishTimeoutSeconds: 1 });
    expect(errorOf(() => resolveRunConfig({ ...minimal, config: short }, {}, dir)).field).toBe(`${short}: publishTimeoutSeconds`);
    const text = writeJson('text-handler.json', { propertyHandlerTimeoutMs: '30000' });
    expect(errorOf(() => resolveRunConfig({ ...minimal, config: text }, {}, dir)).field).toBe(`${text}: propertyHandlerTimeoutMs`);
  });

  test('a CA file that is not PEM is reported as --ca-file', () => {
    const notPem = join(dir, 'not.pem');
    writeFileSync(notPem, 'hello');
    expect(errorOf(() => resolveRunConfig({ ...minimal, 'ca-file': notPem }, {}, dir)).field).toBe('--ca-file');
  });

  test('config file mistakes: unreadable, not JSON, unknown key, wrong type — named with the file', () => {
    expect(errorOf(() => resolveRunConfig({ config: 'missing.json' }, {}, dir)).field).toBe('--config');
    expect(errorOf(() => resolveRunConfig({ config: writeJson('bad.json', '{ nope') }, {}, dir)).field).toBe('--config');
    expect(errorOf(() => resolveRunConfig({ config: writeJson('arr.json', [1]) }, {}, dir)).field).toBe('--config');
    const unknown = writeJson('unknown.json', { idScope: '0ne00A', registrationid: 'x' });
    expect(errorOf(() => resolveRunConfig({ config: unknown }, {}, dir)).field).toBe(`${unknown}: registrationid`);
    const typed = writeJson('typed.json', { idScope: '0ne00A', registrationId: 'x', deviceKey: key, maxHubAttempts: '3' });
    expect(errorOf(() => resolveRunConfig({ config: typed }, {}, dir)).field).toBe(`${typed}: maxHubAttempts`);
    const badScope = writeJson('scope.json', { idScope: 'no spaces please', registrationId: 'x', deviceKey: key });
    expect(errorOf(() => resolveRunConfig({ config: badScope }, {}, dir)).field).toBe(`${badScope}: idScope`);
  });

  test('a config file holding a key and readable by others gets a warning', () => {
    const open = writeJson('open.json', { idScope: '0ne00A', registrationId: 'x', deviceKey: key }, 0o644);
    expect(resolveRunConfig({ config: open }, {}, dir).warnings.join()).toContain('chmod 600');
    const closed = writeJson('closed.json', { idScope: '0ne00A', registrationId: 'x', deviceKey: key }, 0o600);
    expect(resolveRunConfig({ config: closed }, {}, dir).warnings).toEqual([]);
  });
});

describe('hubstate run: invalid input on the command line', () => {
  test.each([
    ['a bad number', ['run', '--id-scope', '0ne00A', '--registration-id', 'x', '--device-key', key, '--max-hub-attempts', 'lots'], /invalid option '--max-hub-attempts': expected a positive integer/],
    ['no id scope', ['run', '--registration-id', 'x', '--device-key', key], /invalid option '--id-scope \(or HUBSTATE_ID_SCOPE/],
    ['an unknown flag', ['run', '--no-such-flag'], /Unknown option '--no-such-flag'/],
  ])('%s → one line naming the field, exit 2, no stack trace', async (_name, args, message) => {
    const cli = spawnCli(args, { env: { HUBSTATE_ID_SCOPE: '', HUBSTATE_DEVICE_KEY: '', HUBSTATE_GROUP_KEY: '' } });
    const exit = await cli.exited;
    expect(exit.code).toBe(2);
    expect(cli.stderr()).toMatch(message);
    expect(cli.stderr()).not.toMatch(/\n\s+at /);
    expect(cli.stderr()).not.toContain(key);
  });
});
