/** The local cloud's X.509 PKI: issuance, and every kind of refusal of the chain check. */
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { CloudPki, commonNameOf, parsePemChain, thumbprintOf, verifySelfSigned } from '../src/x509';

const DAY = 24 * 60 * 60 * 1000;

let pki: CloudPki;
let other: CloudPki;

beforeAll(async () => {
  [pki, other] = await Promise.all([CloudPki.create(), CloudPki.create('another cloud')]);
});

describe('issueDeviceCertificate', () => {
  test('a leaf with CN = registration id, followed by the intermediate; the key is the leaf key', async () => {
    const issued = await pki.issueDeviceCertificate('dev-x1', { validDays: 2 });
    const chain = parsePemChain(issued.cert);
    expect(chain).toHaveLength(2);
    const [leaf, intermediate] = chain as [X509Certificate, X509Certificate];
    expect(commonNameOf(leaf)).toBe('dev-x1');
    expect(leaf.ca).toBe(false);
    expect(intermediate.ca).toBe(true);
    expect(intermediate.toString()).toBe(pki.intermediateCertificate);
    expect(leaf.checkPrivateKey(createPrivateKey(issued.key))).toBe(true);
    expect(leaf.verify(createPublicKey(pki.intermediateCertificate))).toBe(true);
    expect(issued.thumbprint).toBe(thumbprintOf(leaf));
    expect(new Date(leaf.validTo).getTime() - new Date(leaf.validFrom).getTime()).toBe(2 * DAY);
    expect(issued.key).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(pki.verify(chain)).toEqual({ ok: true, commonName: 'dev-x1', thumbprint: issued.thumbprint, notAfter: issued.notAfter });
  });

  test('notBefore is honoured (whole seconds)', async () => {
    const notBefore = new Date(Date.now() + 3 * DAY + 500);
    const issued = await pki.issueDeviceCertificate('dev-later', { notBefore, validDays: 1 });
    expect(issued.notBefore.getTime()).toBe(Math.floor(notBefore.getTime() / 1000) * 1000);
    expect(new Date(parsePemChain(issued.cert)[0]!.validFrom).getTime()).toBe(issued.notBefore.getTime());
  });

  test('bad arguments are refused', async () => {
    await expect(pki.issueDeviceCertificate('')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(pki.issueDeviceCertificate('d', { validDays: 0 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(pki.issueDeviceCertificate('d', { notBefore: new Date(NaN) })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});

describe('verify refuses', () => {
  test('no certificate', () => {
    expect(pki.verify([])).toMatchObject({ ok: false, reason: 'no-certificate' });
  });

  test('an expired certificate', async () => {
    const issued = await pki.issueDeviceCertificate('dev-old', { notBefore: new Date(Date.now() - 10 * DAY), validDays: 1 });
    expect(pki.verify(parsePemChain(issued.cert))).toMatchObject({ ok: false, reason: 'expired' });
  });

  test('a certificate not yet valid', async () => {
    const issued = await pki.issueDeviceCertificate('dev-future', { notBefore: new Date(Date.now() + DAY) });
    const chain = parsePemChain(issued.cert);
    expect(pki.verify(chain)).toMatchObject({ ok: false, reason: 'not-yet-valid' });
    // ... and valid once its time has come
    expect(pki.verify(chain, Date.now() + 2 * DAY)).toMatchObject({ ok: true });
  });

  test('a revoked certificate (by PEM or by thumbprint), and everything under a revoked intermediate', async () => {
    const a = await pki.issueDeviceCertificate('dev-rev-a');
    const b = await pki.issueDeviceCertificate('dev-rev-b');
    const c = await pki.issueDeviceCertificate('dev-rev-c');
    pki.revokeCertificate(a.cert);
    pki.revokeCertificate(b.thumbprint.toLowerCase().replace(/(..)/g, '$1:').slice(0, -1));
    expect(pki.verify(parsePemChain(a.cert))).toMatchObject({ ok: false, reason: 'revoked' });
    expect(pki.verify(parsePemChain(b.cert))).toMatchObject({ ok: false, reason: 'revoked' });
    expect(pki.verify(parsePemChain(c.cert))).toMatchObject({ ok: true });
    expect(() => pki.revokeCertificate('abc')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    const own = await CloudPki.create('revoked intermediate');
    const d = await own.issueDeviceCertificate('dev-rev-d');
    own.revokeCertificate(own.intermediateCertificate);
    expect(own.verify(parsePemChain(d.cert))).toMatchObject({ ok: false, reason: 'revoked' });
  });

  test('a certificate of another CA, a chain without its intermediate, a self-signed one, a CA certificate', async () => {
    const foreign = await other.issueDeviceCertificate('dev-foreign');
    expect(pki.verify(parsePemChain(foreign.cert))).toMatchObject({ ok: false, reason: 'untrusted' });
    // Our leaf presented with the other cloud's intermediate: wrongly chained.
    const ours = await pki.issueDeviceCertificate('dev-mixed');
    const [leaf] = parsePemChain(ours.cert);
    expect(pki.verify([leaf!, ...parsePemChain(other.intermediateCertificate)])).toMatchObject({ ok: false, reason: 'untrusted' });
    expect(pki.verify([leaf!])).toMatchObject({ ok: false, reason: 'untrusted' });
    const self = await pki.issueSelfSignedCertificate('dev-self');
    expect(pki.verify(parsePemChain(self.cert))).toMatchObject({ ok: false, reason: 'untrusted' });
    expect(pki.verify(parsePemChain(pki.intermediateCertificate + pki.rootCertificate))).toMatchObject({ ok: false, reason: 'untrusted' });
  });

  test('an expired certificate of another CA is untrusted, not expired (who signed it is checked first)', async () => {
    const foreign = await other.issueDeviceCertificate('dev-f-old', { notBefore: new Date(Date.now() - 10 * DAY), validDays: 1 });
    expect(pki.verify(parsePemChain(foreign.cert))).toMatchObject({ ok: false, reason: 'untrusted' });
  });
});

describe('verifySelfSigned (individual enrollments, hub thumbprints)', () => {
  test('matches SHA-256 or SHA-1 thumbprints; refuses others, revoked and expired', async () => {
    const self = await pki.issueSelfSignedCertificate('dev-thumb', { validDays: 1 });
    const chain = parsePemChain(self.cert);
    const sha1 = chain[0]!.fingerprint;
    expect(verifySelfSigned(chain, [self.thumbprint])).toMatchObject({ ok: true, commonName: 'dev-thumb' });
    expect(verifySelfSigned(chain, [sha1])).toMatchObject({ ok: true });
    expect(verifySelfSigned(chain, ['00'.repeat(32)])).toMatchObject({ ok: false, reason: 'untrusted' });
    expect(verifySelfSigned([], [self.thumbprint])).toMatchObject({ ok: false, reason: 'no-certificate' });
    expect(verifySelfSigned(chain, [self.thumbprint], { isRevoked: () => true })).toMatchObject({ ok: false, reason: 'revoked' });
    expect(verifySelfSigned(chain, [self.thumbprint], { now: Date.now() + 2 * DAY })).toMatchObject({ ok: false, reason: 'expired' });
  });
});
