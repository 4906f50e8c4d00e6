/**
 * `retry-after` as DPS sends it: whole seconds, 3 with `assigning` (the Embedded C SDK's example
 * flow `$dps/registrations/res/202/?$rid=1&retry-after=3`, parsed there as an integer; REST
 * reference: `retry-after: integer`), 1 with the local cloud's rate-limit 429s. Both are the
 * defaults; only tests that want speed configure a fraction (FAST_DPS_POLL_SEC).
 */
import { startLocalCloud, type LocalCloud } from '../src';
import { provision } from './helpers';

let cloud: LocalCloud;

beforeAll(async () => {
  // Defaults on purpose (one poll less keeps this test at ~4 s instead of ~7 s).
  cloud = await startLocalCloud({ hubs: 1, seed: 'dps-retry-after', dps: { assigningPolls: 0, rateLimitPerSec: 1 } });
});

afterAll(async () => {
  await cloud?.stop();
});

test('by default: 202 assigning with retry-after 3, 429 with retry-after 1, whole seconds, and the SDK waits them out', async () => {
  expect(cloud.dps.pollRetryAfterSec).toBe(3);
  // Two devices at once against 1 registration/s: one is throttled first.
  const [a, b] = await Promise.all([provision(cloud, 'ra-1', { timeoutMs: 15_000 }), provision(cloud, 'ra-2', { timeoutMs: 15_000 })]);
  expect(a.error).toBeUndefined();
  expect(b.error).toBeUndefined();

  const answers = [...cloud.dps.answers('ra-1'), ...cloud.dps.answers('ra-2')];
  const assigning = answers.filter((x) => x.status === 202);
  const throttled = answers.filter((x) => x.status === 429);
  expect(assigning.length).toBeGreaterThanOrEqual(2);
  expect(throttled.length).toBeGreaterThanOrEqual(1);
  for (const x of assigning) expect(x.retryAfterSec).toBe(3);
  for (const x of throttled) expect(x.retryAfterSec).toBe(1);

  // The SDK honoured them: the poll came ≥ 3 s after its 202, the retry ≥ 1 s after its 429.
  for (const id of ['ra-1', 'ra-2']) {
    const log = cloud.dps.answers(id);
    for (let i = 1; i < log.length; i++) {
      const waited = log[i]!.at - log[i - 1]!.at;
      expect(waited).toBeGreaterThanOrEqual((log[i - 1]!.retryAfterSec ?? 0) * 1000 - 50);
    }
  }
});
