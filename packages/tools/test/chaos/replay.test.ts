/** 'same seed, same schedule': this run's schedule against the one an earlier run recorded in its report. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeFault, generateSchedule, readRecordedSchedule, sameScheduleAsRecorded, scheduleDigest, type ScheduleOptions } from '../../src/chaos';
import { planSoak } from '../../src/chaos/options';
import { resolveScheduleOptions } from '../../src/chaos/schedule';

/** The report of an earlier soak test run (seed 20261122, 12 devices, 30 s, a fault per second), trimmed to what a comparison reads. */
const RECORDED = join(__dirname, 'fixtures', 'soak-20261122.json');
const SHAPE: ScheduleOptions = { seed: 20261122, devices: 12, durationMs: 30_000, hubs: 2, faultRateMs: 1000 };

function current(options: ScheduleOptions) {
  const schedule = generateSchedule(options);
  return { resolved: resolveScheduleOptions(options), digest: scheduleDigest(schedule), list: schedule.map(describeFault) };
}

test('the recorded schedule is the one this code generates from its seed and options', () => {
  const recorded = readRecordedSchedule(RECORDED);
  const verdict = sameScheduleAsRecorded(recorded, current(SHAPE));
  expect(verdict).toMatchObject({ name: 'same seed, same schedule', ok: true });
  expect(verdict.measured).toContain(recorded.digest);
  expect(verdict.measured).not.toContain('differ');
});

test('a different schedule fails, naming the first fault that differs', () => {
  const recorded = { ...readRecordedSchedule(RECORDED) };
  const edited = recorded.list.slice();
  edited[3] = '+0.0s hub.crash hub-9 for 1.0s';
  const verdict = sameScheduleAsRecorded({ ...recorded, digest: '0000000000000000', list: edited }, current(SHAPE));
  expect(verdict.ok).toBe(false);
  expect(verdict.measured).toContain('first difference at fault #3');
  expect(verdict.measured).toContain('hub-9');
});

test('other options than the recorded run: fails, and says which', () => {
  const verdict = sameScheduleAsRecorded(readRecordedSchedule(RECORDED), current({ ...SHAPE, devices: 13 }));
  expect(verdict.ok).toBe(false);
  expect(verdict.measured).toContain('options differ: devices 13 here, 12 there');
});

test('a file that is not a soak report is refused', () => {
  const path = join(mkdtempSync(join(tmpdir(), 'hubstate-replay-')), 'not-a-report.json');
  writeFileSync(path, JSON.stringify({ seed: 1, invariants: [] }));
  expect(() => readRecordedSchedule(path)).toThrow(/invalid option 'compare': expected a soak report with seed, options and schedule/);
});

test("a soak compared with another seed's run is refused before it starts", () => {
  const compareWith = readRecordedSchedule(RECORDED);
  expect(() => planSoak({ seed: 20261123, devices: 12, durationMs: 30_000, compareWith })).toThrow(/seed 20261122/);
  expect(planSoak({ seed: 20261122, devices: 12, durationMs: 30_000, faultRateMs: 1000, compareWith }).digest).toBe(compareWith.digest);
});
