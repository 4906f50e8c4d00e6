/** DPS answer log: every answer a device got (status, retry-after), for cloud-side retry checks. */
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from '../src';
import { provision } from './helpers';

let cloud: LocalCloud;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'dps-answers-test', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});

afterAll(async () => {
  await cloud?.stop();
});

test('answers(): a 429 with its retry-after, then 202 assigning and 200 assigned, in order', async () => {
  cloud.dps.throttle({ retryAfterSec: 0.3, count: 1 });
  const p = await provision(cloud, 'answers-1');
  expect(p.assignedHub).toBeDefined();
  const answers = cloud.dps.answers('answers-1');
  expect(answers.map((a) => `${a.request}:${a.status}`)).toEqual(['register:429', 'register:202', 'poll:202', 'poll:200']);
  expect(answers[0]!.retryAfterSec).toBe(0.3);
  expect(answers[3]!.retryAfterSec).toBeUndefined();
  // The SDK waited the retry-after before registering again.
  expect(answers[1]!.at - answers[0]!.at).toBeGreaterThanOrEqual(290);
  for (let i = 1; i < answers.length; i++) expect(answers[i]!.at).toBeGreaterThanOrEqual(answers[i - 1]!.at);
  expect(cloud.dps.answers('never-seen')).toEqual([]);
});

test('answers() is bounded by attemptHistory', async () => {
  const small = await startLocalCloud({ hubs: 1, seed: 'dps-answers-small', dps: { attemptHistory: 2, pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  try {
    await provision(small, 'answers-2');
    expect(small.dps.answers('answers-2').map((a) => a.status)).toEqual([202, 200]);
  } finally {
    await small.stop();
  }
});
