/**
 * Device Registration Status Lookup on the DPS port itself (REST reference:
 * `POST https://{dps}/{idScope}/registrations/{registrationId}?api-version=2021-10-01`), driven
 * with node's https and a SAS token built by the SDK's own security client, while the real SDK
 * registers over MQTT on the same port.
 */
import * as https from 'node:https';
import type { SharedAccessSignature } from 'azure-iot-common';
import { SymmetricKeySecurityClient } from 'azure-iot-security-symmetric-key';
import { FAST_DPS_POLL_SEC, createSasToken, dpsResource, dpsSasToken, startLocalCloud, type LocalCloud } from '../src';
import { MAX_LOOKUP_BODY_BYTES } from '../src/dps';
import { provision } from './helpers';

let cloud: LocalCloud;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'dps-lookup', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});

afterAll(async () => {
  await cloud?.stop();
});

/** The token azure-iot-security-symmetric-key builds for a registration (sr raw, skn=registration). */
async function sdkToken(target: LocalCloud, registrationId: string, key = target.deviceKey(registrationId)): Promise<string> {
  const security = new SymmetricKeySecurityClient(registrationId, key);
  return ((await security.createSharedAccessSignature(target.idScope)) as SharedAccessSignature).toString();
}

interface LookupRequest {
  token?: string;
  /** Default: `{"registrationId": id}`. */
  body?: string;
  /** Default application/json; charset=utf-8 (what the C# SDK and the device client send); null: none. */
  contentType?: string | null;
  method?: string;
  /** Default: the lookup path of the registration id. */
  path?: string;
  agent?: https.Agent;
  /** Send the body chunked (no Content-Length): the size limit must hold while reading. */
  chunked?: boolean;
  /** Give up waiting for an answer after this long (blackhole). */
  timeoutMs?: number;
}

interface LookupAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Record<string, unknown>;
  reusedSocket: boolean;
}

function lookup(target: LocalCloud, registrationId: string, req: LookupRequest = {}): Promise<LookupAnswer> {
  const body = req.body ?? JSON.stringify({ registrationId });
  const path = req.path ?? `/${encodeURIComponent(target.idScope)}/registrations/${encodeURIComponent(registrationId)}?api-version=2021-10-01`;
  const headers: Record<string, string | number> = { Accept: 'application/json' };
  if (!req.chunked) headers['Content-Length'] = Buffer.byteLength(body);
  if (req.contentType !== null) headers['Content-Type'] = req.contentType ?? 'application/json; charset=utf-8';
  if (req.token) headers['Authorization'] = req.token;
  return new Promise((resolve, reject) => {
    const r = https.request(
      { hostname: 'localhost', port: target.dps.port, path, method: req.method ?? 'POST', ca: target.ca, headers, agent: req.agent ?? false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode!, headers: res.headers, body: text ? (JSON.parse(text) as Record<string, unknown>) : {}, reusedSocket: r.reusedSocket });
        });
      },
    );
    r.on('error', reject);
    if (req.timeoutMs) r.setTimeout(req.timeoutMs, () => r.destroy(new Error('no answer')));
    if (req.chunked) r.write(body.slice(0, 10));
    r.end(req.chunked ? body.slice(10) : body);
  });
}

describe('answers', () => {
  test('a registered device: 200 with its DeviceRegistrationResult; counted apart from registrations, nothing re-allocated', async () => {
    const registered = await provision(cloud, 'lk-1'); // MQTT on the same port
    expect(registered.error).toBeUndefined();
    const before = cloud.dps.metrics();
    const record = cloud.dps.registration('lk-1')!;

    const answer = await lookup(cloud, 'lk-1', { token: await sdkToken(cloud, 'lk-1') });
    expect(answer.status).toBe(200);
    expect(answer.headers['content-type']).toMatch(/^application\/json/);
    expect(answer.body).toEqual({
      registrationId: 'lk-1',
      createdDateTimeUtc: record.createdDateTimeUtc,
      assignedHub: registered.assignedHub,
      deviceId: 'lk-1',
      status: 'assigned',
      substatus: 'initialAssignment',
      lastUpdatedDateTimeUtc: record.lastUpdatedDateTimeUtc,
      etag: record.etag,
    });

    const after = cloud.dps.metrics();
    expect(after.lookupRequests - before.lookupRequests).toBe(1);
    expect(after.lookupsFound - before.lookupsFound).toBe(1);
    expect(after.requestsTotal).toBe(before.requestsTotal);
    expect(after.registerRequests).toBe(before.registerRequests);
    expect(after.peakLookupsPerSec).toBeGreaterThanOrEqual(1);
    expect(cloud.dps.registration('lk-1')).toEqual(record);
    expect(cloud.dps.lookups('lk-1')).toEqual([expect.objectContaining({ status: 200 })]);

    // And the SDK still registers over MQTT on that port afterwards.
    expect((await provision(cloud, 'lk-1')).assignedHub).toBe(registered.assignedHub);
  });

  test('after a manual failover: the other hub (deviceDataMigrated); after failback: the original (reprovisionedToInitialAssignment)', async () => {
    const registered = await provision(cloud, 'lk-failover');
    const token = await sdkToken(cloud, 'lk-failover');
    const info = cloud.manualFailover('lk-failover', { ttlMs: 60_000 });
    const during = await lookup(cloud, 'lk-failover', { token });
    expect(during.status).toBe(200);
    expect(during.body).toMatchObject({ assignedHub: cloud.hub(info.toHub).host, substatus: 'deviceDataMigrated', status: 'assigned' });
    expect(during.body['assignedHub']).not.toBe(registered.assignedHub);

    cloud.manualFailback('lk-failover');
    const after = await lookup(cloud, 'lk-failover', { token });
    expect(after.body).toMatchObject({ assignedHub: registered.assignedHub, substatus: 'reprovisionedToInitialAssignment' });
    expect(cloud.dps.registration('lk-failover')!.registrations).toBe(1);
  });

  test('unknown device → 404 with an error body; wrong key, expired or foreign token → 401; unknown id scope → 404', async () => {
    const unknown = await lookup(cloud, 'lk-never-registered', { token: await sdkToken(cloud, 'lk-never-registered') });
    expect(unknown.status).toBe(404);
    expect(unknown.body).toMatchObject({ errorCode: expect.any(Number), trackingId: expect.any(String), message: expect.any(String), timestampUtc: expect.any(String) });
    expect(Math.floor((unknown.body['errorCode'] as number) / 1000)).toBe(404);

    await provision(cloud, 'lk-auth');
    const nowSec = Math.floor(Date.now() / 1000);
    const wrongKey = await lookup(cloud, 'lk-auth', { token: await sdkToken(cloud, 'lk-auth', Buffer.alloc(32, 5).toString('base64')) });
    expect(wrongKey.status).toBe(401);
    expect(wrongKey.body).toMatchObject({ errorCode: 401002, message: 'Unauthorized' });
    const expired = await lookup(cloud, 'lk-auth', { token: dpsSasToken(cloud.idScope, 'lk-auth', cloud.deviceKey('lk-auth'), nowSec - 1) });
    expect(expired.status).toBe(401);
    const foreign = await lookup(cloud, 'lk-auth', { token: await sdkToken(cloud, 'lk-1') });
    expect(foreign.status).toBe(401);
    const none = await lookup(cloud, 'lk-auth');
    expect(none.status).toBe(401);

    const otherScope = await lookup(cloud, 'lk-auth', {
      token: await sdkToken(cloud, 'lk-auth'),
      path: `/0ne00000000/registrations/lk-auth?api-version=2021-10-01`,
    });
    expect(otherScope.status).toBe(404);
    expect(cloud.dps.metrics().lookupsUnauthorized).toBeGreaterThanOrEqual(4);
  });

  test('the C# and C SDKs\' token (sr URL-encoded) works too; the id matches case-insensitively', async () => {
    await provision(cloud, 'lk-encoded');
    const key = cloud.deviceKey('lk-encoded');
    const token = createSasToken({
      sr: encodeURIComponent(dpsResource(cloud.idScope, 'lk-encoded')),
      keyBase64: key,
      expiresAtSec: Math.floor(Date.now() / 1000) + 600,
      keyName: 'registration',
    });
    expect((await lookup(cloud, 'lk-encoded', { token })).status).toBe(200);
    // A group-enrolled device derives its key from the id as it spells it.
    const shouted = await lookup(cloud, 'LK-ENCODED', { token: await sdkToken(cloud, 'LK-ENCODED') });
    expect(shouted.status).toBe(200);
    expect(shouted.body['registrationId']).toBe('lk-encoded');
  });

  test('keep-alive: several lookups share one TLS connection', async () => {
    await provision(cloud, 'lk-keepalive');
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const token = await sdkToken(cloud, 'lk-keepalive');
      const first = await lookup(cloud, 'lk-keepalive', { token, agent });
      const second = await lookup(cloud, 'lk-keepalive', { token, agent });
      expect([first.status, second.status]).toEqual([200, 200]);
      expect(second.reusedSocket).toBe(true);
    } finally {
      agent.destroy();
    }
  });
});

describe('malformed requests', () => {
  let token: string;
  beforeAll(async () => {
    await provision(cloud, 'lk-bad');
    token = await sdkToken(cloud, 'lk-bad');
  });

  test.each([
    ['no Content-Type', 415, { contentType: null }],
    ['a text/plain body', 415, { contentType: 'text/plain' }],
    ['malformed JSON', 400, { body: '{"registrationId":' }],
    ['a JSON array', 400, { body: '[]' }],
    ['a body naming another registration', 400, { body: JSON.stringify({ registrationId: 'lk-1' }) }],
    ['GET instead of POST', 405, { method: 'GET', body: '' }],
    ['no api-version', 400, { path: '/IDSCOPE/registrations/lk-bad' }],
    ['another path', 404, { path: '/IDSCOPE/enrollments/lk-bad?api-version=2021-10-01' }],
    ['a body over the limit', 413, { body: JSON.stringify({ registrationId: 'lk-bad', pad: 'x'.repeat(MAX_LOOKUP_BODY_BYTES) }) }],
    ['a chunked body over the limit', 413, { chunked: true, body: JSON.stringify({ registrationId: 'lk-bad', pad: 'x'.repeat(MAX_LOOKUP_BODY_BYTES) }) }],
  ] as Array<[string, number, LookupRequest]>)('%s → %i', async (_label, status, req) => {
    const path = req.path?.replace('IDSCOPE', cloud.idScope);
    const answer = await lookup(cloud, 'lk-bad', { token, ...req, ...(path ? { path } : {}) });
    expect(answer.status).toBe(status);
    expect(Math.floor((answer.body['errorCode'] as number) / 1000)).toBe(status);
    if (status === 405) expect(answer.headers['allow']).toBe('POST');
  });

  test('a registration id DPS does not allow → 400 (checked before the token)', async () => {
    const answer = await lookup(cloud, '-bad-id', { token: await sdkToken(cloud, '-bad-id') });
    expect(answer.status).toBe(400);
  });

  test('rejections are counted as such and kept in lookups()', () => {
    expect(cloud.dps.metrics().lookupsRejected).toBeGreaterThanOrEqual(7);
    expect(cloud.dps.lookups('lk-bad').map((l) => l.status)).toEqual(expect.arrayContaining([415, 400, 405, 413]));
  });
});

describe('throttling and faults', () => {
  test('beyond its own rate limit: 429 with Retry-After in whole seconds; registrations are not limited by it', async () => {
    const local = await startLocalCloud({ hubs: 1, seed: 'dps-lookup-rate', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC, lookupRateLimitPerSec: 2 } });
    try {
      await provision(local, 'lk-rate');
      const token = await sdkToken(local, 'lk-rate');
      const answers = await Promise.all(Array.from({ length: 6 }, () => lookup(local, 'lk-rate', { token })));
      const throttled = answers.filter((a) => a.status === 429);
      expect(answers.filter((a) => a.status === 200).length).toBeGreaterThanOrEqual(1);
      expect(throttled.length).toBeGreaterThanOrEqual(1);
      for (const a of throttled) {
        expect(a.headers['retry-after']).toBe('1');
        expect(a.body['errorCode']).toBe(429001);
      }
      const m = local.dps.metrics();
      expect(m.lookupsThrottled).toBe(throttled.length);
      expect(m.throttled).toBe(0);
      expect(local.dps.lookups('lk-rate').filter((l) => l.status === 429).every((l) => l.retryAfterSec === 1)).toBe(true);
      // The registration limit is another bucket: the SDK registers at once.
      expect((await provision(local, 'lk-rate-2')).error).toBeUndefined();

      local.dps.setLookupRateLimit(null);
      const unlimited = await Promise.all(Array.from({ length: 6 }, () => lookup(local, 'lk-rate', { token })));
      expect(unlimited.every((a) => a.status === 200)).toBe(true);
      local.dps.setLookupRateLimit(1, 2);
      const limited = await Promise.all(Array.from({ length: 3 }, () => lookup(local, 'lk-rate', { token })));
      expect(limited.find((a) => a.status === 429)?.headers['retry-after']).toBe('2');
      expect(() => local.dps.setLookupRateLimit(1, 0.5)).toThrow(/whole seconds/);
    } finally {
      await local.stop();
    }
  });

  test('throttle and failWith apply to lookups too (a fraction is rounded up), or to one kind with target', async () => {
    await provision(cloud, 'lk-fault');
    const token = await sdkToken(cloud, 'lk-fault');
    cloud.dps.throttle({ retryAfterSec: 0.3, count: 1 });
    const throttled = await lookup(cloud, 'lk-fault', { token });
    expect(throttled.status).toBe(429);
    expect(throttled.headers['retry-after']).toBe('1');

    cloud.dps.failWith({ status: 503, count: 1, retryAfterSec: 2 });
    const failed = await lookup(cloud, 'lk-fault', { token });
    expect(failed.status).toBe(503);
    expect(failed.headers['retry-after']).toBe('2');
    expect(cloud.dps.metrics().lookupFailuresInjected).toBeGreaterThanOrEqual(1);

    // target 'lookup': the SDK's registration is not hit, the next lookup is.
    cloud.dps.throttle({ retryAfterSec: 1, count: 1, target: 'lookup' });
    expect((await provision(cloud, 'lk-fault-2')).error).toBeUndefined();
    expect(cloud.dps.answers('lk-fault-2').some((a) => a.status === 429)).toBe(false);
    expect((await lookup(cloud, 'lk-fault', { token })).status).toBe(429);
    // target 'registration': lookups pass.
    cloud.dps.failWith({ status: 500, count: 1, target: 'registration' });
    expect((await lookup(cloud, 'lk-fault', { token })).status).toBe(200);
    cloud.dps.clearFaults();
  });

  test('blackhole: a lookup gets no answer, then works when it ends; down: refused, up: answered on the same port', async () => {
    await provision(cloud, 'lk-transport');
    const token = await sdkToken(cloud, 'lk-transport');
    cloud.dps.blackhole(true);
    try {
      await expect(lookup(cloud, 'lk-transport', { token, timeoutMs: 300 })).rejects.toThrow('no answer');
    } finally {
      cloud.dps.blackhole(false);
    }
    expect((await lookup(cloud, 'lk-transport', { token })).status).toBe(200);

    const port = cloud.dps.port;
    await cloud.dps.down();
    try {
      await expect(lookup(cloud, 'lk-transport', { token })).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    } finally {
      await cloud.dps.up();
    }
    expect(cloud.dps.port).toBe(port);
    expect((await lookup(cloud, 'lk-transport', { token })).status).toBe(200);
  });

  test('a keep-alive lookup connection goes silent when a blackhole starts', async () => {
    await provision(cloud, 'lk-silent');
    const token = await sdkToken(cloud, 'lk-silent');
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      expect((await lookup(cloud, 'lk-silent', { token, agent })).status).toBe(200);
      cloud.dps.blackhole(true);
      await expect(lookup(cloud, 'lk-silent', { token, agent, timeoutMs: 300 })).rejects.toThrow('no answer');
    } finally {
      cloud.dps.blackhole(false);
      agent.destroy();
    }
  });
});
