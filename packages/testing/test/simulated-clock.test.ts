/**
 * The runner's simulated-clock mode: the long-fault paths under the DEFAULT policy (a minute and
 * more between slow retries, a 30 s stable connection, 5 s floors) run in seconds of wall time
 * with real sockets, while every wait is read on the simulated clock and checked against the
 * default policy; and the clock itself: skips fire what is due, never an operation's deadline.
 */
import { createDevice, DEFAULT_POLICY } from 'hubstate';
import { generateFailoverPaths, isLongPath, policyWindow, runFailoverPath, SkipAheadClock } from 'hubstate-testing';

const paths = generateFailoverPaths({ longFaults: true, refusalCodes: [3, 5], seed: 30 }).filter((p) => isLongPath(p.faults));

test.each(paths.map((p) => [p.name, p] as const))('%s under the default policy, on the simulated clock', async (_name, path) => {
  const wallStarted = Date.now();
  const report = await runFailoverPath(path, { clock: 'simulated', policy: { preset: 'default' }, device: (connection) => createDevice({ ...connection }) });
  const wallMs = Date.now() - wallStarted;
  expect(report.failures).toEqual([]);
  expect(report.ok).toBe(true);
  expect(report.clock.mode).toBe('simulated');
  // the 30 s stable connection before the fault was skipped, at least
  expect(report.clock.skippedMs).toBeGreaterThanOrEqual(DEFAULT_POLICY.stableConnectionMs - 1000);
  const [step] = report.steps;
  // the recovery, read on the simulated clock, holds every wait; the wall clock did not wait them
  const waited = step!.waits.reduce((sum, w) => sum + w, 0);
  expect(step!.recoveryMs).toBeGreaterThanOrEqual(waited - 50);
  expect(wallMs).toBeLessThan(20_000);
  if (path.faults[0] === 'DPS_OUTAGE_REPROVISION' || path.faults[0] === 'FLAPPING_HUB') {
    // past the three quick retries: the fourth wait is on the default policy's minute floor
    const slow = policyWindow(DEFAULT_POLICY, DEFAULT_POLICY.quickRetries + 1, false);
    expect(slow).toEqual({ min: 60_000, max: 90_000 });
    expect(step!.waits[DEFAULT_POLICY.quickRetries]).toBeGreaterThanOrEqual(slow.min);
    expect(step!.waits[DEFAULT_POLICY.quickRetries]).toBeLessThanOrEqual(slow.max);
    expect(step!.recoveryMs).toBeGreaterThan(60_000);
  }
  console.log(`${path.name}, default policy: waits ${step!.waits.join(', ')} ms; recovery ${step!.recoveryMs} ms simulated, ${step!.wallMs} ms wall; ${report.clock.skippedMs} ms skipped (path ${wallMs} ms wall)`);
});

test("a device that does not wait on the runner's clock is a failed report saying so", async () => {
  const path = paths.find((p) => p.name === 'DISABLED_DEVICE (CONNACK 5)')!;
  const report = await runFailoverPath(path, {
    clock: 'simulated',
    device: ({ clock: _clock, ...connection }) => createDevice({ ...connection }),
  });
  expect(report.ok).toBe(false);
  expect(report.failures).toContain("DISABLED_DEVICE (CONNACK 5): clock 'simulated', but the device does not wait on the runner's clock (give createDevice the connection's clock)");
});

test('a device timer that recurs more often than the stable-connection wait keeps the clock at wall speed: the timeout says so', async () => {
  const drop = generateFailoverPaths({ depth: 1, refusalCodes: [3], seed: 31 }).find((p) => p.name === 'DROP')!;
  const report = await runFailoverPath(drop, {
    clock: 'simulated',
    policy: { preset: 'default' },
    stepTimeoutMs: 5000,
    // the resilience report every 2 s: a timer due before the 30 s stable connection, every time
    device: (connection) => createDevice({ ...connection, resilience: { intervalMs: 2000 } }),
  });
  expect(report.ok).toBe(false);
  expect(report.clock.skippedMs).toBe(0);
  expect(report.failures).toHaveLength(1);
  expect(report.failures[0]).toMatch(/^DROP: timed out after 5000 ms waiting for the connection to last \(states so far: .+\); the simulated clock could not skip to the end of the stable-connection wait \(\+\d+ ms\): a timer on it is due sooner \(\+\d+ ms\)/);
  expect(report.failures[0]).toContain('resilience.intervalMs shorter than stableConnectionMs');
});

test('the clock runs at wall speed, a skip fires what is due in deadline order, an earlier deadline blocks a skip', async () => {
  const clock = new SkipAheadClock();
  const fired: string[] = [];
  const start = clock.now();
  clock.setTimeout(() => fired.push('b'), 60_000);
  clock.setTimeout(() => fired.push('a'), 30_000);
  const late = clock.setTimeout(() => fired.push('never'), 120_000);
  expect(clock.nextDeadline()).toBeGreaterThanOrEqual(start + 30_000);
  // a timer due before the target (an operation's deadline) blocks the skip
  expect(clock.skipToIfIdle(start + 60_000)).toBe(false);
  expect(clock.skippedMs).toBe(0);
  clock.increment(60_000);
  await new Promise((resolve) => setTimeout(resolve, 20));
  expect(fired).toEqual(['a', 'b']);
  expect(clock.skippedMs).toBe(60_000);
  const wall = Date.now();
  expect(clock.now() - wall).toBeGreaterThanOrEqual(60_000);
  expect(clock.now() - wall).toBeLessThan(60_050);
  // a cloud record made before the skip reads as it was; one after, with the skip added
  expect(clock.fromWall(start - 1)).toBe(start - 1);
  expect(clock.fromWall(wall)).toBe(wall + 60_000);
  clock.clearTimeout(late);
  expect(clock.pendingTimers).toBe(0);
  expect(clock.skipToIfIdle(clock.now() + 1000)).toBe(true);
  expect(() => clock.increment(-1)).toThrow(RangeError);
});
