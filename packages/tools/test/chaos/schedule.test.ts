/** The soak's pure parts: the seeded fault schedule, the bounds derived from the policy, the secret scanner. */
import { CLASSIFICATION_TABLE } from 'hubstate/internal';
import { nextDelay, resolvePolicy } from 'hubstate';
import type { ErrorClass } from 'hubstate';
import {
  attemptRateBound,
  checkAttemptRate,
  checkWindow,
  disabledDpsBound,
  describeFault,
  fastestHubCycleMs,
  FAULT_KINDS,
  LONG_FAULTS,
  faultsByKind,
  generateSchedule,
  maxBackoff,
  policyLowerBoundMs,
  recoveryBound,
  rssVerdict,
  scheduleDigest,
  SecretScanner,
  SERVER_ERROR_FLOOR_MS,
  SOAK_POLICY,
  type ScheduledFault,
} from '../../src/chaos';

const shape = { durationMs: 60_000, devices: 20, hubs: 2 };

describe('fault schedule', () => {
  test('the same seed gives the same schedule; another seed a different one', () => {
    const a = generateSchedule({ seed: 42, ...shape });
    const b = generateSchedule({ seed: 42, ...shape });
    expect(b).toEqual(a);
    expect(scheduleDigest(b)).toBe(scheduleDigest(a));
    expect(scheduleDigest(generateSchedule({ seed: 43, ...shape }))).not.toBe(scheduleDigest(a));
    expect(scheduleDigest(generateSchedule({ seed: 'nightly', ...shape }))).toBe(scheduleDigest(generateSchedule({ seed: 'nightly', ...shape })));
    expect(scheduleDigest(generateSchedule({ seed: 'nightly', ...shape }))).not.toBe(scheduleDigest(generateSchedule({ seed: 'nightly2', ...shape })));
  });

  test.each([1, 2, 3, 7, 1234])('seed %p: every kind of the fault list occurs; faults are bounded and never overlap on one target', (seed) => {
    const schedule = generateSchedule({ seed, ...shape });
    const counts = faultsByKind(schedule);
    for (const kind of FAULT_KINDS) expect(counts[kind]).toBeGreaterThan(0);
    for (const f of schedule) {
      expect(f.atMs).toBeGreaterThanOrEqual(0);
      expect(f.atMs + f.durationMs).toBeLessThanOrEqual(shape.durationMs);
      expect(f.durationMs).toBeLessThanOrEqual(LONG_FAULTS.has(f.kind) ? 90_000 : 15_000);
      if (f.kind.startsWith('hub.')) expect(f.hub).toBeGreaterThanOrEqual(0);
      if (f.kind.startsWith('device.') || f.kind.startsWith('dps.')) expect(f.devices!.length).toBeGreaterThan(0);
      for (const d of f.devices ?? []) expect(d).toBeLessThan(shape.devices);
    }
    const overlap = (x: ScheduledFault, y: ScheduledFault, settle: number) =>
      x.atMs < y.atMs + Math.max(y.durationMs, settle) && y.atMs < x.atMs + Math.max(x.durationMs, settle);
    for (let i = 0; i < schedule.length; i++) {
      for (let j = i + 1; j < schedule.length; j++) {
        const [x, y] = [schedule[i]!, schedule[j]!];
        if (x.kind === y.kind && !x.kind.startsWith('device.') && x.hub === y.hub) expect(overlap(x, y, 0)).toBe(false);
        if (x.kind.startsWith('device.') && y.kind.startsWith('device.') && x.devices!.some((d) => y.devices!.includes(d))) {
          expect(overlap(x, y, 3000)).toBe(false);
        }
      }
    }
  });

  test('flapping hub and disabled device: long periods, a hold far below stableConnectionMs, deterministic from the seed', () => {
    const long = { durationMs: 600_000, devices: 50, hubs: 2 };
    const a = generateSchedule({ seed: 99, ...long });
    expect(generateSchedule({ seed: 99, ...long })).toEqual(a);
    const flaps = a.filter((f) => f.kind === 'device.flap');
    const disables = a.filter((f) => f.kind === 'device.disable');
    expect(flaps.length).toBeGreaterThan(3);
    expect(disables.length).toBeGreaterThan(3);
    for (const f of [...flaps, ...disables]) {
      // Long enough to meet several backoff cycles, unless cut by the end of the phase.
      if (f.atMs + 90_000 <= long.durationMs) expect(f.durationMs).toBeGreaterThanOrEqual(20_000);
      expect(f.durationMs).toBeLessThanOrEqual(90_000);
      expect(f.devices!.length).toBeGreaterThanOrEqual(1);
      expect(f.devices!.length).toBeLessThanOrEqual(5); // 10 % of 50
    }
    for (const f of flaps) {
      expect(f.holdMs).toBeGreaterThanOrEqual(100);
      expect(f.holdMs).toBeLessThanOrEqual(1000);
      expect(f.holdMs!).toBeLessThan(resolvePolicy(SOAK_POLICY).stableConnectionMs);
      expect(describeFault(f)).toMatch(/device\.flap \d+ device\(s\) sessions dropped after \d+ ms for \d+\.\ds/);
    }
    for (const f of disables) expect(f.holdMs).toBeUndefined();
    // The same draw, the same values: the first flap of seed 99 is pinned.
    expect(flaps[0]).toEqual(generateSchedule({ seed: 99, ...long }).find((f) => f.kind === 'device.flap'));
    // Another seed moves them.
    const b = generateSchedule({ seed: 100, ...long }).filter((f) => f.kind === 'device.flap');
    expect(b.map((f) => [f.atMs, f.holdMs])).not.toEqual(flaps.map((f) => [f.atMs, f.holdMs]));
    // Options: the long period and the hold are configurable, and checked.
    const short = generateSchedule({ seed: 99, ...long, longFaultMinMs: 5000, longFaultMaxMs: 6000, minFlapHoldMs: 200, maxFlapHoldMs: 200 });
    for (const f of short.filter((x) => LONG_FAULTS.has(x.kind))) expect(f.durationMs).toBeLessThanOrEqual(6000);
    for (const f of short.filter((x) => x.kind === 'device.flap')) expect(f.holdMs).toBe(200);
    expect(() => generateSchedule({ seed: 1, ...long, longFaultMinMs: 9000, longFaultMaxMs: 1000 })).toThrow(/longFaultMinMs/);
    expect(() => generateSchedule({ seed: 1, ...long, minFlapHoldMs: 0.5 })).toThrow(/minFlapHoldMs/);
  });

  test('invalid shapes are refused', () => {
    expect(() => generateSchedule({ seed: 1, ...shape, devices: 0 })).toThrow(/devices/);
    expect(() => generateSchedule({ seed: 1, ...shape, minFaultMs: 5000, maxFaultMs: 1000 })).toThrow(/minFaultMs/);
  });
});

describe('bounds derived from the policy', () => {
  const policy = resolvePolicy(SOAK_POLICY);

  test('the 5 s floor is the classification table’s largest minimum', () => {
    expect(SERVER_ERROR_FLOOR_MS).toBe(5000);
    expect(CLASSIFICATION_TABLE.filter((r) => r.minDelayMs === 5000).map((r) => r.rule)).toEqual(
      expect.arrayContaining(['connack-3-server-unavailable', 'hub-server-error', 'dps-server-error']),
    );
  });

  test('maxBackoff and the recovery bound: 2 × maxBackoff, plus the PUBACK stall of a late withholdPubacks', () => {
    const throttle: ScheduledFault = { id: 0, kind: 'dps.throttle', atMs: 0, durationMs: 1000, retryAfterSec: 4, devices: [0] };
    expect(maxBackoff(policy, [throttle]).valueMs).toBe(7500); // max(4000, 5000 floor) + max(5000/2, 1000)
    const late: ScheduledFault = { id: 1, kind: 'hub.withholdPubacks', atMs: 20_000, durationMs: 5000, hub: 0, store: true };
    expect(recoveryBound(policy, [throttle], 30_000, 30).valueMs).toBe(15_000);
    // The SDK default (30 s, checked every 10 s) and the soak's 5 s (checked every 2.5 s).
    expect(recoveryBound(policy, [throttle, late], 30_000, 30).valueMs).toBe(15_000 + (25_000 + 30_000 + 500 + 10_000 - 30_000));
    expect(recoveryBound(policy, [throttle, late], 30_000, 5).valueMs).toBe(15_000 + (25_000 + 5000 + 500 + 2500 - 30_000));
    const early: ScheduledFault = { ...late, atMs: 0, durationMs: 1000 };
    expect(recoveryBound(policy, [early], 60_000, 30).valueMs).toBe(10_000);
    // A failover or failback in the schedule: at least one hub window + maxBackoff (a DPS
    // confirmation of the old hub lasts a window).
    const failback: ScheduledFault = { id: 2, kind: 'device.failback', atMs: 1000, durationMs: 0, devices: [0] };
    expect(recoveryBound(policy, [early, failback], 60_000, 30).valueMs).toBe(policy.hubRetryWindowMs + 5000); // 30 s + 5 s over 2 × 5 s
  });

  test('policyLowerBoundMs is never above what nextDelay draws (10 000 random draws)', () => {
    const classes: ErrorClass[] = ['transient', 'throttled', 'reprovision'];
    // Retry-after up to 3 s, also on a 5xx (with its 5 s floor): max(3000, 5000) + max(5000/2, jitter).
    const ceiling = maxBackoff(policy, [
      { id: 0, kind: 'dps.throttle', atMs: 0, durationMs: 1, retryAfterSec: 3 },
      { id: 1, kind: 'dps.failWith', atMs: 0, durationMs: 1, status: 503, retryAfterSec: 3 },
    ]).valueMs;
    expect(ceiling).toBe(7500);
    let rng = 7;
    for (let i = 0; i < 10_000; i++) {
      const errorClass = classes[i % 3]!;
      const attempt = 1 + (i % 9);
      const afterLoss = i % 4 === 0;
      const retryAfterMs = i % 5 === 0 ? 1000 + (i % 3) * 1000 : undefined;
      const minDelayMs = i % 7 === 0 ? 5000 : undefined;
      const req = { errorClass, attempt, afterLoss, ...(retryAfterMs ? { retryAfterMs } : {}), ...(minDelayMs ? { minDelayMs } : {}) };
      const decision = nextDelay(policy, req, rng);
      rng = decision.rngState;
      expect(decision.delayMs).toBeGreaterThanOrEqual(policyLowerBoundMs(policy, req) - 1e-9);
      expect(decision.delayMs).toBeLessThanOrEqual(ceiling + 1e-9);
    }
  });

  test('attempt-rate bound: a retry loop without backoff is caught, a backed-off device is not', () => {
    const bound = attemptRateBound(policy, 2000);
    expect(bound.base).toBe(bound.hub + bound.dps);
    const loop = Array.from({ length: 600 }, (_, i) => i * 100); // every 100 ms for a minute
    expect(checkAttemptRate(loop, [], [], bound, 5000).violations).toBeGreaterThan(0);
    const backedOff = [0, 250, 750, 1750, 3750, 6250, 8750, 11250, 13750, 16250];
    expect(checkAttemptRate(backedOff, [], [], bound, 5000).violations).toBe(0);
    // Lost connections restart the curve: each one allows another run.
    const flapping = Array.from({ length: 300 }, (_, i) => i * 200);
    const losses = Array.from({ length: 60 }, (_, i) => i * 1000);
    expect(checkAttemptRate(flapping, losses, [], bound, 5000).violations).toBe(0);
  });

  test('flapping hub: sessions shorter than stableConnectionMs allow nothing more, so a flap storm is seen', () => {
    const window = 60_000;
    const bound = attemptRateBound(policy, 2000, window);
    // A hub that accepts and drops within 100 ms, retried 100 ms later each time: 5 attempts a second.
    const storm = Array.from({ length: 300 }, (_, i) => i * 200);
    expect(bound.base).toBeLessThan(150);
    // Only the first drop ended a stable connection; the soak counts no short session as a loss.
    expect(checkWindow(storm, [0], [], bound, 0, window).count).toBeGreaterThan(checkWindow(storm, [0], [], bound, 0, window).limit);
    // Counting every flap as a loss (the old rule) would have hidden it.
    const everyFlap = storm.filter((_, i) => i % 2 === 0);
    expect(checkWindow(storm, everyFlap, [], bound, 0, window).count).toBeLessThanOrEqual(checkWindow(storm, everyFlap, [], bound, 0, window).limit);
    // A device on the curve through the flap (each short session the next attempt): within the bound.
    const curve: number[] = [0];
    let at = 0;
    for (let n = 1; at < window; n++) {
      at += policy.minDelayMs * Math.min(2 ** (n - 1), policy.maxDelayMs / policy.minDelayMs) / 2 + 300;
      curve.push(at);
    }
    const r = checkWindow(curve, [0], [], bound, 0, window);
    expect(r.count).toBeLessThanOrEqual(r.limit);
    // User reprovision commands add 2 each.
    expect(checkWindow(storm, [0], [1000, 2000], bound, 0, window).limit).toBe(2 * bound.base + 4);
  });

  test('disabled device: DPS requests bounded by the parked wait and the hub cycle', () => {
    const cycle = fastestHubCycleMs(policy, 2000);
    // w(1..4) = min(cap/2, cap_throttled/2, 2 s) = 250 + 500 + 1000 + 2000.
    expect(cycle).toBe(3750);
    const b = disabledDpsBound(policy, 2000, 60_000);
    expect(b.value).toBe(2 + policy.quickRetries + Math.ceil(60_000 / Math.min(policy.parkedMinDelayMs, cycle)));
    expect(b.formula).toContain(`= ${b.value}`);
    // The default policy: parked 15-30 min, a 15 min window: at most 9 DPS requests in an hour disabled.
    const defaults = resolvePolicy({});
    expect(disabledDpsBound(defaults, Infinity, 3_600_000).value).toBe(9);
    // The soak compresses the parked wait to 3-5 s, so its bound is loose (about 20 a minute);
    // a device that registers every second, or at each refused connect of a fresh curve, exceeds it.
    expect(b.value).toBe(25);
    expect(60).toBeGreaterThan(b.value);
  });

  test('RSS verdict is one-sided: a leak fails, a drop passes', () => {
    const series = (f: (i: number) => number) => Array.from({ length: 40 }, (_, i) => ({ at: i * 1000, rss: f(i) * 1048576, heapUsed: 0 }));
    const tol = { growth: 0.1, drift: 1.1 };
    expect(rssVerdict(series(() => 100), tol).ok).toBe(true);
    expect(rssVerdict(series((i) => 100 + (i % 2) * 3), tol).ok).toBe(true);
    expect(rssVerdict(series((i) => 100 + i * 2), tol).ok).toBe(false);
    expect(rssVerdict(series((i) => (i < 30 ? 120 : 90)), tol).ok).toBe(true);
  });
});

describe('secret scanner', () => {
  const key = Buffer.alloc(32, 9).toString('base64'); // contains '+' or '/' depending on bytes
  const scanner = () => new SecretScanner([{ kind: 'device key', label: 'device key of d-1', value: key }]);

  test('finds a key raw, URL-encoded and inside longer text; finds the markers; samples never hold the key', () => {
    const s = scanner();
    s.scan(`{"msg":"x","k":"${key}"}`, 'log');
    s.scan(`HostName=h;SharedAccessKey=${encodeURIComponent(key)}`, 'error');
    s.scan('SharedAccessSignature sr=a&sig=abc&se=1', 'snapshot');
    s.scan('nothing to see', 'event');
    const r = s.report();
    expect(r.hits['device key']).toBe(2);
    expect(r.hits['SharedAccessKey=']).toBe(1);
    expect(r.hits['SharedAccessSignature']).toBe(1);
    expect(r.hits['sig=']).toBe(1);
    expect(r.scanned.event.items).toBe(1);
    expect(JSON.stringify(r.samples)).not.toContain(key);
    expect(JSON.stringify(r.samples)).toContain('<device key of d-1>');
  });

  test('clean text: zero hits', () => {
    const s = scanner();
    s.scan('{"level":30,"msg":"Connecting -> Connected","hub":"localhost:1234"}', 'log');
    expect(s.report().total).toBe(0);
  });
});
