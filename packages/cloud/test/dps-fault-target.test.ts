/**
 * `throttle` and `failWith` narrowed to one kind of MQTT request: `target: 'register'` hits only
 * the register request, `target: 'poll'` only the operation status polls (the shared targets
 * `registration` and `lookup` are covered in dps-lookup.test.ts). Driven by the unmodified SDK,
 * which re-polls a refused poll and re-sends a refused register request after retry-after.
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from '../src';
import { provision } from './helpers';

let cloud: LocalCloud;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'dps-fault-target', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});

afterAll(async () => {
  await cloud?.stop();
});

afterEach(() => cloud.dps.clearFaults());

const kinds = (id: string) => cloud.dps.answers(id).map((a) => `${a.request} ${a.status}`);

test("target 'poll': the register request passes, the next polls are refused", async () => {
  cloud.dps.throttle({ retryAfterSec: 0.1, count: 2, target: 'poll' });
  const outcome = await provision(cloud, 'target-poll-429');
  expect(outcome.error).toBeUndefined();
  expect(kinds('target-poll-429')).toEqual(['register 202', 'poll 429', 'poll 429', 'poll 202', 'poll 200']);
  expect(cloud.dps.answers('target-poll-429').filter((a) => a.status === 429).every((a) => a.retryAfterSec === 0.1)).toBe(true);

  cloud.dps.failWith({ status: 503, count: 1, retryAfterSec: 0.1, target: 'poll' });
  expect((await provision(cloud, 'target-poll-503')).error).toBeUndefined();
  expect(kinds('target-poll-503')).toEqual(['register 202', 'poll 503', 'poll 202', 'poll 200']);
});

test("target 'register': only the register request is refused, polls pass", async () => {
  cloud.dps.throttle({ retryAfterSec: 0.1, count: 1, target: 'register' });
  expect((await provision(cloud, 'target-register-429')).error).toBeUndefined();
  expect(kinds('target-register-429')).toEqual(['register 429', 'register 202', 'poll 202', 'poll 200']);

  cloud.dps.failWith({ status: 500, count: 1, retryAfterSec: 0.1, target: 'register' });
  expect((await provision(cloud, 'target-register-500')).error).toBeUndefined();
  expect(kinds('target-register-500')).toEqual(['register 500', 'register 202', 'poll 202', 'poll 200']);
});

test("a fault for one kind waits for it: 'poll' is not spent on register requests, nor 'register' on polls", async () => {
  cloud.dps.throttle({ retryAfterSec: 0.1, count: 1, target: 'register' });
  cloud.dps.failWith({ status: 503, count: 1, retryAfterSec: 0.1, target: 'poll' });
  expect((await provision(cloud, 'target-both')).error).toBeUndefined();
  expect(kinds('target-both')).toEqual(['register 429', 'register 202', 'poll 503', 'poll 202', 'poll 200']);
  expect(cloud.dps.metrics().throttled).toBeGreaterThanOrEqual(1);
});
