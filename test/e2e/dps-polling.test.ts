/**
 * The provision actor's polling against the local cloud, with the real SDK transport over TLS:
 * - a 429/5xx to a status POLL polls the SAME operation again after retry-after (jittered, never
 *   earlier), without a new register request; bounded in count and by the deadline;
 * - a 429/5xx to the REGISTER request still goes to the machine, with retry-after;
 * - `deadlineMs` bounds silence, not an operation DPS keeps answering `assigning`; a hard cap
 *   bounds everything;
 * - cancelling really disconnects and nothing is sent afterwards.
 */
import { MqttBase } from 'azure-iot-mqtt-base';
import { registerOnce, type ProvisionSettings } from '../../src/actors/provision';
import { Credentials } from '../../src/actors/credentials';
import { systemClock } from '../../src/clock';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import type { Failure } from '../../src/policy/types';
import { capturingLogger, waitFor } from './harness';

let cloud: LocalCloud;
const logLines: string[] = [];
const uncaught: unknown[] = [];
const onUncaught = (error: unknown) => uncaught.push(error);
const publish = jest.spyOn(MqttBase.prototype, 'publish');

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'dps-polling', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  process.on('uncaughtException', onUncaught);
});
afterAll(async () => {
  process.off('uncaughtException', onUncaught);
  publish.mockRestore();
  await cloud.stop();
});
beforeEach(() => publish.mockClear());
afterEach(() => cloud.dps.clearFaults());

function settings(target: LocalCloud, overrides: Partial<ProvisionSettings> = {}): ProvisionSettings {
  return {
    provisioningHost: target.provisioningHost,
    idScope: target.idScope,
    credentials: new Credentials({ groupKey: target.groupKey }),
    ca: target.ca,
    deadlineMs: 10_000,
    pollJitterSeed: 42,
    clock: systemClock,
    logger: capturingLogger(logLines),
    ...overrides,
  };
}

const kinds = (target: LocalCloud, id: string) => target.dps.answers(id).map((a) => `${a.request} ${a.status}`);

/** What the SDK transport published: register requests and the operation id of every poll. */
function sent() {
  const topics = publish.mock.calls.map((call) => String(call[0]));
  return {
    registers: topics.filter((t) => t.startsWith('$dps/registrations/PUT/iotdps-register/')).length,
    polledOperations: topics
      .filter((t) => t.startsWith('$dps/registrations/GET/iotdps-get-operationstatus/'))
      .map((t) => new URLSearchParams(t.slice(t.indexOf('?') + 1)).get('operationId')),
  };
}

/** Gaps (ms) between each refused answer and the next answer. */
function gapsAfterRefusals(target: LocalCloud, id: string): number[] {
  const answers = target.dps.answers(id);
  return answers.flatMap((a, i) => (i + 1 < answers.length && (a.status === 429 || a.status >= 500) ? [answers[i + 1]!.at - a.at] : []));
}

async function rejection(work: Promise<unknown>): Promise<Failure> {
  try {
    await work;
  } catch (failure) {
    return failure as Failure;
  }
  throw new Error('the registration did not fail');
}

describe('a 429/5xx to a status poll', () => {
  test('429 (retry-after 1) to the first two polls: one register request, the same operation polled until assigned, waits in [1 s, 1.5 s]', async () => {
    const id = 'poll-429';
    cloud.dps.throttle({ retryAfterSec: 1, count: 2, target: 'poll' });
    const result = await registerOnce(settings(cloud), id);

    expect(result).toMatchObject({ deviceId: id, hubHost: cloud.dps.registration(id)!.assignedHub });
    expect(kinds(cloud, id)).toEqual(['register 202', 'poll 429', 'poll 429', 'poll 202', 'poll 200']);
    const { registers, polledOperations } = sent();
    expect(registers).toBe(1);
    expect(polledOperations).toHaveLength(4);
    expect(new Set(polledOperations).size).toBe(1);
    expect(cloud.dps.registration(id)!.registrations).toBe(1);
    const gaps = gapsAfterRefusals(cloud, id);
    expect(gaps).toHaveLength(2);
    for (const gap of gaps) {
      expect(gap).toBeGreaterThanOrEqual(1000); // never earlier than retry-after
      expect(gap).toBeLessThan(1500 + 1000); // jitter at most R/2 (+ generous scheduling slack)
    }
  });

  test('a 503 to a poll: the same operation again, no sooner than the 5 s floor for a 5xx (retry-after 0.2 s)', async () => {
    const id = 'poll-503';
    cloud.dps.failWith({ status: 503, count: 1, retryAfterSec: 0.2, target: 'poll' });
    await registerOnce(settings(cloud), id);
    expect(kinds(cloud, id)).toEqual(['register 202', 'poll 503', 'poll 202', 'poll 200']);
    expect(sent().registers).toBe(1);
    expect(new Set(sent().polledOperations).size).toBe(1);
    const [gap] = gapsAfterRefusals(cloud, id);
    expect(gap).toBeGreaterThanOrEqual(5000);
    expect(gap).toBeLessThan(7500 + 1000);
  });

  test('bounded: after maxThrottledPolls refused polls in a row the throttled failure goes to the machine, still one register request', async () => {
    const id = 'poll-429-forever';
    cloud.dps.throttle({ retryAfterSec: 0.1, target: 'poll' });
    const failure = await rejection(registerOnce(settings(cloud, { maxThrottledPolls: 3 }), id));
    expect(failure).toMatchObject({ phase: 'dps', errorClass: 'throttled', retryAfterMs: 100, code: 429 });
    expect(kinds(cloud, id)).toEqual(['register 202', 'poll 429', 'poll 429', 'poll 429', 'poll 429']);
    expect(sent().registers).toBe(1);
    for (const gap of gapsAfterRefusals(cloud, id).slice(0, 3)) expect(gap).toBeGreaterThanOrEqual(100);
  });

  test('a wait that would end past the deadline is handed to the machine at once, with its retry-after', async () => {
    const id = 'poll-429-past-deadline';
    cloud.dps.throttle({ retryAfterSec: 2, count: 1, target: 'poll' });
    const failure = await rejection(registerOnce(settings(cloud, { deadlineMs: 1500 }), id));
    const refusedAt = cloud.dps.answers(id).find((a) => a.status === 429)!.at;
    expect(failure).toMatchObject({ errorClass: 'throttled', retryAfterMs: 2000 });
    expect(failure.at - refusedAt).toBeLessThan(1000); // not a timeout after the deadline
    expect(kinds(cloud, id)).toEqual(['register 202', 'poll 429']);
  });

  test('cancelled while waiting to poll again: rejected, disconnected, nothing sent afterwards', async () => {
    const id = 'poll-429-cancelled';
    cloud.dps.throttle({ retryAfterSec: 1, count: 1, target: 'poll' });
    const abort = new AbortController();
    const work = rejection(registerOnce(settings(cloud), id, abort.signal));
    await waitFor('a refused poll', () => kinds(cloud, id).includes('poll 429'));
    abort.abort();
    expect((await work).message).toMatch(/cancelled/);
    await waitFor('the DPS connection to close', () => cloud.dps.metrics().currentConnections === 0);
    const answered = cloud.dps.answers(id).length;
    await new Promise((resolve) => setTimeout(resolve, 1700)); // past the longest wait (1.5 × 1 s)
    expect(cloud.dps.answers(id)).toHaveLength(answered);
    expect(sent().registers).toBe(1);
  });
});

describe('a 429/5xx to the register request still goes to the machine', () => {
  test('429 with retry-after 1: rejected as throttled with retryAfterMs, no poll, no second register request', async () => {
    const id = 'register-429';
    cloud.dps.throttle({ retryAfterSec: 1, count: 1, target: 'register' });
    const failure = await rejection(registerOnce(settings(cloud), id));
    expect(failure).toMatchObject({ phase: 'dps', errorClass: 'throttled', retryAfterMs: 1000, code: 429 });
    expect(kinds(cloud, id)).toEqual(['register 429']);
    expect(sent()).toEqual({ registers: 1, polledOperations: [] });
    await waitFor('the DPS connection to close', () => cloud.dps.metrics().currentConnections === 0);
  });

  test('503: rejected with the status (and the 5xx floor), no poll', async () => {
    const id = 'register-503';
    cloud.dps.failWith({ status: 503, count: 1, target: 'register' });
    const failure = await rejection(registerOnce(settings(cloud), id));
    expect(failure).toMatchObject({ phase: 'dps', code: 503, minDelayMs: 5000 });
    expect(kinds(cloud, id)).toEqual(['register 503']);
    expect(sent().polledOperations).toEqual([]);
  });
});

describe('the deadline bounds silence, not an operation still assigning', () => {
  let slow: LocalCloud;
  const ASSIGNING_POLLS = 40;

  beforeAll(async () => {
    // Every registration answers `assigning` 40 times, 50 ms apart: ≥ 2 s, far past a 300 ms deadline.
    slow = await startLocalCloud({
      hubs: 1,
      seed: 'dps-polling-slow',
      dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC, assigningPolls: ASSIGNING_POLLS, attemptHistory: 2 * ASSIGNING_POLLS },
    });
  });
  afterAll(async () => {
    await slow.stop();
  });

  test('DPS answering assigning past deadlineMs: still assigned, on the same operation', async () => {
    const id = 'assigning-long';
    const startedAt = Date.now();
    const result = await registerOnce(settings(slow, { deadlineMs: 300 }), id);
    expect(Date.now() - startedAt).toBeGreaterThan(ASSIGNING_POLLS * FAST_DPS_POLL_SEC * 1000);
    expect(result).toMatchObject({ deviceId: id, hubHost: slow.dps.registration(id)!.assignedHub });
    const answers = kinds(slow, id);
    expect(answers).toEqual(['register 202', ...Array<string>(ASSIGNING_POLLS).fill('poll 202'), 'poll 200']);
    expect(sent().registers).toBe(1);
    expect(new Set(sent().polledOperations).size).toBe(1);
  });

  test('the hard cap ends it anyway (TimeoutError, transient)', async () => {
    const id = 'assigning-capped';
    const failure = await rejection(registerOnce(settings(slow, { deadlineMs: 300, hardDeadlineMs: 600 }), id));
    expect(failure).toMatchObject({ phase: 'dps', errorClass: 'transient', name: 'TimeoutError' });
    expect(failure.message).toMatch(/hard cap of 600 ms/);
    expect(kinds(slow, id)).not.toContain('poll 200');
    expect(sent().registers).toBe(1);
  });

  test('silence (DPS stops answering mid-poll): fails after deadlineMs without progress', async () => {
    const id = 'assigning-silenced';
    const work = rejection(registerOnce(settings(slow, { deadlineMs: 300 }), id));
    await waitFor('a few polls', () => kinds(slow, id).filter((k) => k === 'poll 202').length >= 3);
    slow.dps.blackhole(true);
    const silencedAt = Date.now();
    const failure = await work;
    slow.dps.blackhole(false);
    expect(failure).toMatchObject({ phase: 'dps', errorClass: 'transient', name: 'TimeoutError' });
    expect(failure.message).toMatch(/no progress within 300 ms/);
    expect(failure.at - silencedAt).toBeLessThan(300 + 1000);
    await new Promise((resolve) => setImmediate(resolve));
    expect(uncaught).toEqual([]);
  });
});

test('no key, SAS token or signature in any log line of this file', () => {
  expect(logLines.some((line) => line.includes('DPS refused a status poll'))).toBe(true);
  const text = logLines.join('\n');
  for (const secret of [cloud.groupKey, cloud.deviceKey('poll-429'), cloud.deviceKey('register-429')]) expect(text).not.toContain(secret);
  expect(text).not.toMatch(/SharedAccessSignature|sig=/);
});
