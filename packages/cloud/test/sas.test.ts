import { SharedAccessSignature } from 'azure-iot-common';
import {
  deriveDeviceKey,
  dpsSasToken,
  hmacSha256Base64,
  hubSasToken,
  parseSasToken,
  verifySasToken,
  hubResource,
  dpsResource,
} from '../src';
import { parseDpsUsername } from '../src/dps';
import { parseHubUsername } from '../src/hub';
import { PeakRate, RingBuffer, TokenBucket, formatPropertyBag, mergePatch, parsePropertyBag } from '../src/util';

const KEY = Buffer.alloc(32, 9).toString('base64');
const SE = 2_000_000_000;

describe('SAS helpers match the Azure SDK', () => {
  test('group key derivation is base64(HMAC-SHA256(base64decode(groupKey), regId))', () => {
    const groupKey = Buffer.from('group-key-bytes-0123456789abcdef').toString('base64');
    expect(deriveDeviceKey(groupKey, 'dev-1')).toBe(hmacSha256Base64(groupKey, 'dev-1'));
    expect(deriveDeviceKey(groupKey, 'dev-1')).not.toBe(deriveDeviceKey(groupKey, 'dev-2'));
    expect(Buffer.from(deriveDeviceKey(groupKey, 'dev-1'), 'base64')).toHaveLength(32);
  });

  test('hub token equals the SDK token (sr URL-encoded with :port, no skn)', () => {
    const sdk = SharedAccessSignature.create(encodeURIComponent('localhost:8883/devices/dev-1'), '', KEY, SE).toString();
    expect(hubSasToken('localhost:8883', 'dev-1', KEY, SE)).toBe(sdk);
    expect(sdk).toContain('sr=localhost%3A8883%2Fdevices%2Fdev-1&');
  });

  test('DPS token equals the SDK token (sr raw, skn=registration)', () => {
    const sdk = SharedAccessSignature.create('0ne00ABCDEF/registrations/dev-1', 'registration', KEY, SE).toString();
    expect(dpsSasToken('0ne00ABCDEF', 'dev-1', KEY, SE)).toBe(sdk);
  });

  test('verification: ok, bad signature, wrong resource, expired, revoked, malformed', () => {
    const now = SE - 100;
    const hub = hubSasToken('localhost:1', 'd', KEY, SE);
    const resource = hubResource('localhost:1', 'd');
    expect(verifySasToken(hub, { keys: [KEY], resource, nowSec: now })).toMatchObject({ ok: true, token: { se: SE } });
    expect(verifySasToken(hub, { keys: [Buffer.alloc(32, 1).toString('base64'), KEY], resource, nowSec: now })).toMatchObject({ ok: true, keyIndex: 1 });
    expect(verifySasToken(hub, { keys: [Buffer.alloc(32, 1).toString('base64')], resource, nowSec: now })).toEqual({ ok: false, reason: 'bad-signature' });
    expect(verifySasToken(hub, { keys: [KEY], resource: hubResource('localhost:2', 'd'), nowSec: now })).toEqual({ ok: false, reason: 'resource-mismatch' });
    expect(verifySasToken(hub, { keys: [KEY], resource, nowSec: SE })).toEqual({ ok: false, reason: 'expired' });
    expect(verifySasToken(hub, { keys: [KEY], resource, nowSec: now, revokedThroughSec: SE })).toEqual({ ok: false, reason: 'revoked' });
    expect(verifySasToken('Bearer x', { keys: [KEY], resource })).toEqual({ ok: false, reason: 'malformed' });
    expect(verifySasToken(undefined, { keys: [KEY], resource })).toEqual({ ok: false, reason: 'malformed' });
    const dps = dpsSasToken('scope', 'reg', KEY, SE);
    expect(parseSasToken(dps)).toMatchObject({ sr: 'scope/registrations/reg', skn: 'registration', se: SE });
    expect(verifySasToken(dps, { keys: [KEY], resource: dpsResource('scope', 'reg'), nowSec: now }).ok).toBe(true);
    // The resource comparison is case-insensitive, the signature is not.
    expect(verifySasToken(dps, { keys: [KEY], resource: dpsResource('SCOPE', 'reg'), nowSec: now }).ok).toBe(true);
    expect(verifySasToken(dps.replace('sr=scope', 'sr=SCOPE'), { keys: [KEY], resource: dpsResource('scope', 'reg'), nowSec: now })).toEqual({
      ok: false,
      reason: 'bad-signature',
    });
  });
});

describe('usernames', () => {
  test('hub username with model id', () => {
    const u = parseHubUsername('localhost:1234/dev-1/?api-version=2021-04-12&model-id=dtmi:com:example:Thermostat;1&DeviceClientType=azure-iot-device%2F1.18.4');
    expect(u).toEqual({
      host: 'localhost:1234',
      deviceId: 'dev-1',
      params: { 'api-version': '2021-04-12', 'model-id': 'dtmi:com:example:Thermostat;1', DeviceClientType: 'azure-iot-device/1.18.4' },
    });
    expect(parseHubUsername('nohost')).toBeUndefined();
    expect(parseHubUsername(undefined)).toBeUndefined();
  });

  test('DPS username', () => {
    expect(parseDpsUsername('0ne1/registrations/reg-1/api-version=2019-03-31&ClientVersion=x')).toMatchObject({ idScope: '0ne1', registrationId: 'reg-1' });
    expect(parseDpsUsername('0ne1/devices/reg-1/x')).toBeUndefined();
  });
});

describe('codecs and bounded structures', () => {
  test('property bags round-trip as one topic segment', () => {
    const props = { '$.mid': 'm/1', 'a b': 'c&d=e', ü: '%' };
    const bag = formatPropertyBag(props);
    expect(bag).not.toMatch(/[/ ]/);
    expect(parsePropertyBag(bag)).toEqual(props);
    expect(parsePropertyBag('a=%ZZ&b')).toEqual({ a: '%ZZ', b: '' });
  });

  test('merge patch: objects merge, null deletes, arrays replace', () => {
    const target = { a: 1, b: { c: 2, d: 3 }, e: [1, 2] };
    expect(mergePatch(target, { a: null, b: { c: null, x: 1 }, e: [3], f: { g: 1 } })).toEqual({ b: { d: 3, x: 1 }, e: [3], f: { g: 1 } });
    expect(target).toEqual({ a: 1, b: { c: 2, d: 3 }, e: [1, 2] });
  });

  test('ring buffer keeps the newest items', () => {
    const r = new RingBuffer<number>(3);
    for (let i = 1; i <= 5; i++) r.push(i);
    expect(r.toArray()).toEqual([3, 4, 5]);
    expect(r.dropped).toBe(2);
    r.clear();
    expect(r.size).toBe(0);
  });

  test('token bucket and peak rate', () => {
    const b = new TokenBucket(2, 2, 0);
    expect([b.tryTake(0), b.tryTake(0), b.tryTake(0)]).toEqual([true, true, false]);
    expect(b.tryTake(500)).toBe(true);
    expect(b.tryTake(500)).toBe(false);
    const p = new PeakRate();
    for (const t of [0, 100, 900, 1000, 1500]) p.hit(t);
    expect(p.peak).toBe(3);
    p.reset();
    expect(p.peak).toBe(0);
    for (const t of [2000, 2100]) p.hit(t);
    expect(p.peak).toBe(2);
  });
});
