/** The `x509` option: every bad input is a ConfigError naming the field, and none quotes the key. */
import { createPrivateKey } from 'node:crypto';
import { ConfigError } from '../../src/errors';
import { resolveOptions, type DeviceOptions } from '../../src/options';
import { certificateNotice, x509CacheFingerprint, x509CacheMacKey } from '../../src/actors/x509';
import { CloudPki, type IssuedCertificate } from 'hubstate-cloud';

const DAY = 86_400_000;
let pki: CloudPki;
let dev: IssuedCertificate;
let other: IssuedCertificate;

beforeAll(async () => {
  pki = await CloudPki.create();
  [dev, other] = await Promise.all([pki.issueDeviceCertificate('sensor-1'), pki.issueDeviceCertificate('sensor-2')]);
});

const base = (x509: unknown, extra: Partial<DeviceOptions> = {}) => ({ idScope: '0ne00ABC123', registrationId: 'sensor-1', x509, ...extra }) as DeviceOptions;

function fieldOf(options: DeviceOptions): string | undefined {
  try {
    resolveOptions(options);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).not.toContain('PRIVATE KEY');
    return (error as ConfigError).field;
  }
  return undefined;
}

test('a certificate, its chain and its key resolve to the x509 credential', () => {
  expect(resolveOptions(base({ cert: dev.cert, key: dev.key })).credential).toEqual({ x509: { cert: dev.cert, key: dev.key } });
  expect(resolveOptions(base({ cert: dev.cert, key: dev.key })).certificateExpiryWarningDays).toBe(30);
});

test('an encrypted key opens with its passphrase', () => {
  const encrypted = createPrivateKey(dev.key).export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'pw-1' }).toString();
  expect(fieldOf(base({ cert: dev.cert, key: encrypted, passphrase: 'pw-1' }))).toBeUndefined();
  expect(fieldOf(base({ cert: dev.cert, key: encrypted, passphrase: 'wrong' }))).toBe('x509.passphrase');
  expect(fieldOf(base({ cert: dev.cert, key: encrypted }))).toBe('x509.key');
});

test.each([
  ['not an object', () => 'pem', 'x509'],
  ['an unknown key', () => ({ cert: dev.cert, key: dev.key, pfx: 'x' }), 'x509.pfx'],
  ['no certificate', () => ({ key: dev.key }), 'x509.cert'],
  ['a certificate that is not PEM', () => ({ cert: 'hello', key: dev.key }), 'x509.cert'],
  ['a broken certificate', () => ({ cert: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----', key: dev.key }), 'x509.cert'],
  ['a CA certificate first', () => ({ cert: pki.intermediateCertificate, key: dev.key }), 'x509.cert'],
  ['no key', () => ({ cert: dev.cert }), 'x509.key'],
  ['a key that is not PEM', () => ({ cert: dev.cert, key: 'secret' }), 'x509.key'],
  ["another certificate's key", () => ({ cert: dev.cert, key: other.key }), 'x509.key'],
  ['a passphrase that is not a string', () => ({ cert: dev.cert, key: dev.key, passphrase: 1 }), 'x509.passphrase'],
])('%s → ConfigError', (_name, make, field) => {
  expect(fieldOf(base(make()))).toBe(field);
});

test('exactly one identity; the registration id is the certificate CN', () => {
  expect(fieldOf(base({ cert: dev.cert, key: dev.key }, { groupKey: Buffer.alloc(32, 1).toString('base64') }))).toBe('x509');
  expect(fieldOf(base({ cert: other.cert, key: other.key }))).toBe('registrationId');
  expect(fieldOf(base({ cert: dev.cert, key: dev.key }, { certificateExpiryWarningDays: -1 }))).toBe('certificateExpiryWarningDays');
});

test('cache binding: fingerprint from the thumbprint, MAC key from the private key (never the key itself)', () => {
  const id = { cert: dev.cert, key: dev.key };
  expect(x509CacheFingerprint(id)).toBe(`x509-${dev.thumbprint.slice(0, 32).toLowerCase()}`);
  const mac = x509CacheMacKey(id);
  expect(mac).toHaveLength(32);
  expect(x509CacheMacKey(id).equals(mac)).toBe(true);
  expect(x509CacheMacKey({ cert: other.cert, key: other.key }).equals(mac)).toBe(false);
  expect(dev.key).not.toContain(mac.toString('base64'));
});

test('certificateNotice: expiring within the warning, expired, not yet valid, quiet otherwise', () => {
  const id = { cert: dev.cert, key: dev.key };
  const notAfter = dev.notAfter.getTime();
  expect(certificateNotice(id, Date.now(), 30)).toBeUndefined();
  expect(certificateNotice(id, notAfter - 10 * DAY - 1000, 30)).toMatchObject({ kind: 'certificate-expiring', daysLeft: 10, thumbprint: dev.thumbprint });
  expect(certificateNotice(id, notAfter - 10 * DAY, 0)).toBeUndefined();
  expect(certificateNotice(id, notAfter + 1000, 30)).toMatchObject({ kind: 'certificate-expired' });
  expect(certificateNotice(id, dev.notBefore.getTime() - 1000, 30)).toMatchObject({ kind: 'certificate-not-yet-valid' });
});
