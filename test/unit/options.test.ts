import { createDevice } from '../../src/device';
import { ConfigError } from '../../src/errors';
import { resolveOptions, type DeviceOptions } from '../../src/options';

const groupKey = Buffer.alloc(32, 7).toString('base64');
const valid: DeviceOptions = { idScope: '0ne00ABC123', registrationId: 'sensor-1', groupKey };

function fieldOf(options: unknown): string | undefined {
  try {
    resolveOptions(options as DeviceOptions);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).not.toContain(groupKey);
    return (error as ConfigError).field;
  }
  return undefined;
}

describe('options validation', () => {
  test('valid options resolve with defaults', () => {
    const resolved = resolveOptions(valid);
    expect(resolved.provisioningHost).toBe('global.azure-devices-provisioning.net');
    expect(resolved.credential).toEqual({ groupKey: { primary: groupKey } });
    expect(resolved.keepaliveSeconds).toBe(30);
    expect(resolved.publishTimeoutSeconds).toBe(30);
    expect(resolved.propertyHandlerTimeoutMs).toBe(30_000);
    expect(resolved.policy).toMatchObject({ maxHubAttempts: 100, hubRetryWindowMs: 15 * 60_000, stableConnectionMs: 30_000 });
  });

  test.each([
    ['missing id scope', { ...valid, idScope: undefined }, 'idScope'],
    ['id scope with spaces', { ...valid, idScope: '0ne 00' }, 'idScope'],
    ['missing registration id', { ...valid, registrationId: '' }, 'registrationId'],
    ['registration id with a slash', { ...valid, registrationId: 'a/b' }, 'registrationId'],
    ['no key at all', { idScope: '0ne00ABC123', registrationId: 'x' }, 'groupKey|deviceKey'],
    ['both keys', { ...valid, deviceKey: groupKey }, 'groupKey|deviceKey'],
    ['group key that is not base64', { ...valid, groupKey: 'not base64 at all!' }, 'groupKey'],
    ['device key that is not base64', { idScope: '0ne00ABC123', registrationId: 'x', deviceKey: '%%%%%%%%%%%%%%%%%%%%' }, 'deviceKey'],
    ['model id that is not a DTMI', { ...valid, modelId: 'thermostat' }, 'modelId'],
    ['provisioning host with a path', { ...valid, provisioningHost: 'host/path' }, 'provisioningHost'],
    ['ca that is not PEM', { ...valid, ca: 'hello' }, 'ca'],
    ['negative keepalive', { ...valid, keepaliveSeconds: -1 }, 'keepaliveSeconds'],
    ['publish timeout under 2 s (the SDK counts whole seconds)', { ...valid, publishTimeoutSeconds: 1 }, 'publishTimeoutSeconds'],
    ['fractional publish timeout', { ...valid, publishTimeoutSeconds: 2.5 }, 'publishTimeoutSeconds'],
    ['zero property handler timeout', { ...valid, propertyHandlerTimeoutMs: 0 }, 'propertyHandlerTimeoutMs'],
    ['property handler timeout as a string', { ...valid, propertyHandlerTimeoutMs: '30s' }, 'propertyHandlerTimeoutMs'],
    ['fractional send window', { ...valid, sendWindow: 1.5 }, 'sendWindow'],
    ['renewal margin above validity', { ...valid, tokenValiditySeconds: 60, tokenRenewalMarginSeconds: 120 }, 'tokenRenewalMarginSeconds'],
    ['unknown outbox limit', { ...valid, outboxLimits: { maxMessages: 5 } }, 'outboxLimits.maxMessages'],
    ['outbox full policy misspelled', { ...valid, outboxLimits: { whenFull: 'drop-newest' } }, 'outboxLimits.whenFull'],
    ['zero outbox byte limit', { ...valid, outboxLimits: { maxBytes: 0 } }, 'outboxLimits.maxBytes'],
    ['options that are not an object', null, 'options'],
    ['unknown policy key', { ...valid, policy: { maxHubAttempt: 3 } }, undefined],
    ['negative policy delay', { ...valid, policy: { minDelayMs: -5 } }, undefined],
  ])('%s → ConfigError', (_name, options, field) => {
    const got = fieldOf(options);
    expect(got).toBeDefined();
    if (field) expect(got).toBe(field);
    else expect(got).toMatch(/^policy/);
  });

  test('createDevice refuses invalid options before any I/O', () => {
    expect(() => createDevice({ ...valid, idScope: '' })).toThrow(ConfigError);
  });
});

describe('ca: parsed once per process for a fleet sharing it (issue 16), refused every time when bad', () => {
  test('a valid CA, a bad one, the valid one again, a bad one again', async () => {
    const { generateCertificates } = await import('hubstate-cloud');
    const { ca } = await generateCertificates();
    const bad = ca.replace(/[A-Za-z0-9+/]{20}\n/, 'not base64 at all!!\n');
    expect(fieldOf({ ...valid, ca })).toBeUndefined();
    expect(fieldOf({ ...valid, ca: bad })).toBe('ca');
    expect(fieldOf({ ...valid, ca })).toBeUndefined();
    expect(fieldOf({ ...valid, ca: bad })).toBe('ca');
    expect(fieldOf({ ...valid, ca: 'hello' })).toBe('ca');
  });
});
