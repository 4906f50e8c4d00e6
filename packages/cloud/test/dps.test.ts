import { errors } from 'azure-iot-common';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from '../src';
import { provision } from './helpers';

let cloud: LocalCloud;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'dps-test', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});

afterAll(async () => {
  await cloud?.stop();
});

describe('DPS registration with the real ProvisioningDeviceClient', () => {
  test('group key → derived key → assigned, with the model id recorded', async () => {
    const p = await provision(cloud, 'dps-dev-1', { modelId: 'dtmi:Sample:Failover;1' });
    expect(p.error).toBeUndefined();
    expect(p.deviceId).toBe('dps-dev-1');
    expect(cloud.hubs.map((h) => h.host)).toContain(p.assignedHub);
    expect(p.result).toMatchObject({ status: 'assigned', substatus: 'initialAssignment', registrationId: 'dps-dev-1' });

    const reg = cloud.dps.registration('dps-dev-1')!;
    expect(reg).toMatchObject({
      registrationId: 'dps-dev-1',
      deviceId: 'dps-dev-1',
      assignedHub: p.assignedHub,
      status: 'assigned',
      substatus: 'initialAssignment',
      modelId: 'dtmi:Sample:Failover;1',
      registrations: 1,
    });
    // The identity now exists on the assigned hub (and only there).
    expect(cloud.hub(p.assignedHub!).hasDevice('dps-dev-1')).toBe(true);
    expect(cloud.hubs.filter((h) => h.hasDevice('dps-dev-1'))).toHaveLength(1);
  });

  test('even allocation spreads devices; a device re-registering keeps its hub', async () => {
    const results = await Promise.all(['even-a', 'even-b', 'even-c', 'even-d'].map((id) => provision(cloud, id)));
    expect(results.every((r) => r.assignedHub)).toBe(true);
    const counts = cloud.dps.hubCounts();
    expect(Math.abs((counts['hub-0'] ?? 0) - (counts['hub-1'] ?? 0))).toBeLessThanOrEqual(1);

    const again = await provision(cloud, 'even-a');
    expect(again.assignedHub).toBe(results[0]!.assignedHub);
    expect(cloud.dps.registration('even-a')!.registrations).toBe(2);
  });

  test('a wrong key: CONNECT accepted, register answered 401 → UnauthorizedError; an unknown id scope: CONNACK 3', async () => {
    const before = cloud.dps.metrics();
    const wrongKey = await provision(cloud, 'dps-bad-key', { key: Buffer.alloc(32, 7).toString('base64') });
    expect(wrongKey.error).toBeInstanceOf(errors.UnauthorizedError);
    expect(wrongKey.error!.result).toMatchObject({ errorCode: 401002, message: 'Unauthorized' });
    expect(cloud.dps.answers('dps-bad-key').map((a) => `${a.request}:${a.status}`)).toEqual(['register:401']);
    expect(cloud.dps.registration('dps-bad-key')).toBeUndefined();

    const wrongScope = await provision(cloud, 'dps-bad-scope', { idScope: '0ne00000000' });
    expect(wrongScope.error!.code ?? wrongScope.error!.transportError?.code).toBe(3);
    const after = cloud.dps.metrics();
    expect(after.unauthorized - before.unauthorized).toBe(1);
    expect(after.refusedConnects - before.refusedConnects).toBe(1);
  });

  test('individual enrollments take precedence over the group key', async () => {
    const key = cloud.dps.addIndividualEnrollment('indiv-1');
    expect(cloud.deviceKey('indiv-1')).toBe(key);
    const withGroupKey = await provision(cloud, 'indiv-1', { key: Buffer.alloc(32, 1).toString('base64') });
    expect(withGroupKey.error).toBeDefined();
    const ok = await provision(cloud, 'indiv-1', { key });
    expect(ok.assignedHub).toBeDefined();
  });

  test('429 with retry-after: the SDK waits and retries, metrics and attempt timestamps show it', async () => {
    const before = cloud.dps.metrics();
    cloud.dps.throttle({ retryAfterSec: 0.3, count: 1 });
    const p = await provision(cloud, 'throttled-1');
    expect(p.assignedHub).toBeDefined();
    const m = cloud.dps.metrics();
    expect(m.throttled - before.throttled).toBe(1);
    const attempts = cloud.dps.attempts('throttled-1');
    expect(attempts).toHaveLength(2);
    expect(attempts[1]! - attempts[0]!).toBeGreaterThanOrEqual(290);
  });

  test('registration rate limit answers 429 beyond the rate and everyone still registers', async () => {
    // One token a second (bucket of one): eight requests sent together cannot all pass, however
    // slowly a busy machine sends them (at 5/s they could spread past the refill and none be refused).
    const local = await startLocalCloud({ hubs: 1, dps: { rateLimitPerSec: 1, retryAfterSec: 0.1, pollRetryAfterSec: FAST_DPS_POLL_SEC } });
    try {
      const ids = Array.from({ length: 8 }, (_, i) => `rl-${i}`);
      const results = await Promise.all(ids.map((id) => provision(local, id)));
      expect(results.every((r) => r.assignedHub === local.hubs[0]!.host)).toBe(true);
      const m = local.dps.metrics();
      expect(m.registrations).toBe(8);
      expect(m.throttled).toBeGreaterThan(0);
      expect(m.peakRequestsPerSec).toBeGreaterThanOrEqual(8);
      expect(m.peakRegisterRequestsPerSec).toBeGreaterThanOrEqual(1);
      expect(m.peakRegisterRequestsPerSec).toBeLessThanOrEqual(m.registerRequests);
      expect(m.requestsTotal).toBe(m.registerRequests + m.pollRequests);
      local.dps.resetPeaks();
      expect(local.dps.metrics()).toMatchObject({ peakRequestsPerSec: 0, peakRegisterRequestsPerSec: 0, registrations: 8 });
    } finally {
      await local.stop();
    }
  });

  test('enrollment failed → DeviceRegistrationFailedError; disabled → status disabled', async () => {
    cloud.dps.setEnrollmentStatus('enr-failed', 'failed');
    const failed = await provision(cloud, 'enr-failed');
    expect(failed.error).toBeInstanceOf(errors.DeviceRegistrationFailedError);
    expect((failed.error!.result as { registrationState: { errorCode: number } }).registrationState.errorCode).toBeDefined();

    cloud.dps.setEnrollmentStatus('enr-disabled', 'disabled');
    const disabled = await provision(cloud, 'enr-disabled');
    expect(disabled.error).toBeDefined();
    expect((disabled.error!.result as { status: string }).status).toBe('disabled');
    expect(cloud.dps.registration('enr-disabled')).toBeUndefined();

    cloud.dps.setEnrollmentStatus('enr-disabled', 'enabled');
    expect((await provision(cloud, 'enr-disabled')).assignedHub).toBeDefined();
  });

  test('injected 401 fails the registration; an injected 503 is re-polled by the SDK', async () => {
    cloud.dps.failWith({ status: 401, count: 1 });
    const unauthorized = await provision(cloud, 'fail-401');
    expect(unauthorized.error).toBeInstanceOf(errors.UnauthorizedError);

    cloud.dps.failWith({ status: 503, count: 1, retryAfterSec: 0.1 });
    const before = cloud.dps.metrics().failuresInjected;
    const recovered = await provision(cloud, 'fail-503');
    expect(recovered.assignedHub).toBeDefined();
    expect(cloud.dps.metrics().failuresInjected - before).toBe(1);
  });

  test('down() refuses connections; up() listens again on the same port', async () => {
    const host = cloud.provisioningHost;
    await cloud.dps.down();
    expect(cloud.dps.isUp).toBe(false);
    const refused = await provision(cloud, 'down-1');
    expect(refused.error).toBeDefined();
    expect(String(refused.error!.message) + String(refused.error!.code)).toMatch(/ECONNREFUSED/);
    await cloud.dps.up();
    expect(cloud.provisioningHost).toBe(host);
    expect((await provision(cloud, 'down-1')).assignedHub).toBeDefined();
  });

  test('blackhole: connections are accepted but never answered', async () => {
    cloud.dps.blackhole(true);
    const silent = await provision(cloud, 'bh-dps', { timeoutMs: 300 });
    expect(silent.error?.message).toBe('provision deadline');
    cloud.dps.blackhole(false);
    expect((await provision(cloud, 'bh-dps')).assignedHub).toBeDefined();
  });

  test('static and custom allocation', async () => {
    const local = await startLocalCloud({ hubs: 3, dps: { allocation: 'static', staticHub: 'hub-2', assigningPolls: 0, pollRetryAfterSec: FAST_DPS_POLL_SEC } });
    try {
      expect((await provision(local, 's-1')).assignedHub).toBe(local.hub('hub-2').host);
    } finally {
      await local.stop();
    }
    const custom = await startLocalCloud({
      hubs: 2,
      dps: {
        allocation: (regId, hubs) => (regId.endsWith('1') ? hubs[1]! : hubs[0]!),
        returnData: (id) => ({ greeting: `hi ${id}` }),
        pollRetryAfterSec: FAST_DPS_POLL_SEC,
      },
    });
    try {
      const p = await provision(custom, 'c-1');
      expect(p.assignedHub).toBe(custom.hub('hub-1').host);
      expect(p.result!['payload']).toEqual({ greeting: 'hi c-1' });
    } finally {
      await custom.stop();
    }
  });
});
