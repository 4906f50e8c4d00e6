/**
 * The runner's long faults: how they join the paths, the wait windows they check (those the
 * policy's nextDelay draws from, for the curve, the fixed baselines and the fleet formula), and a
 * device app that gets them wrong failing with reports that say what it did.
 */
import { createDevice, nextDelay, PRESETS, resolvePolicy } from 'hubstate';
import { flapWindowMs, generateFailoverPaths, isLongPath, policyWindow, runFailoverPath } from 'hubstate-testing';

test('long faults are paths of their own, once per refusal code where a hub refuses, never multiplied by identity or transport', () => {
  const paths = generateFailoverPaths({ depth: 1, refusalCodes: [3, 5], x509: true, websockets: true, longFaults: true, seed: 10 });
  expect(paths.filter((p) => isLongPath(p.faults)).map((p) => [p.name, p.identity, p.transport ?? 'mqtt'])).toEqual([
    ['FLAPPING_HUB', 'sas', 'mqtt'],
    ['DPS_OUTAGE', 'sas', 'mqtt'],
    ['DPS_OUTAGE_REPROVISION', 'sas', 'mqtt'],
    ['DISABLED_DEVICE (CONNACK 3)', 'sas', 'mqtt'],
    ['DISABLED_DEVICE (CONNACK 5)', 'sas', 'mqtt'],
  ]);
  expect(new Set(paths.map((p) => p.seed)).size).toBe(paths.length);
  // the short paths are those without longFaults, with the same seeds
  const short = generateFailoverPaths({ depth: 1, refusalCodes: [3, 5], x509: true, websockets: true, seed: 10 });
  expect(paths.filter((p) => !isLongPath(p.faults))).toEqual(short);
});

test('the windows the checks allow are where nextDelay draws, for every preset', () => {
  for (const name of Object.keys(PRESETS)) {
    const policy = resolvePolicy({ preset: name as keyof typeof PRESETS });
    let rng = 7;
    for (let attempt = 1; attempt <= 6; attempt++) {
      for (const afterLoss of [true, false]) {
        for (let draw = 0; draw < 20; draw++) {
          const decision = nextDelay(policy, { errorClass: 'transient', attempt, afterLoss }, rng);
          rng = decision.rngState;
          const { min, max } = policyWindow(policy, attempt, afterLoss);
          expect([name, attempt, afterLoss, decision.delayMs >= min && decision.delayMs <= max]).toEqual([name, attempt, afterLoss, true]);
        }
      }
    }
  }
  // the default policy: the quick retries on the curve, then the minute floor
  expect(policyWindow(PRESETS.default, 1, true)).toEqual({ min: 0, max: 1000 });
  expect(policyWindow(PRESETS.default, 3, false)).toEqual({ min: 2000, max: 4000 });
  expect(policyWindow(PRESETS.default, 4, false)).toEqual({ min: 60_000, max: 90_000 });
  // a flapping hub lasts past the quick retries, but less than the minute after which a failing hub sends the device to DPS
  expect(flapWindowMs(PRESETS.default)).toBe(59_000);
});

test('an app that reprovisions whenever its connection drops fails the disabled-device path: DPS registrations, the wrong leg', async () => {
  const path = generateFailoverPaths({ longFaults: true, refusalCodes: [5], seed: 60 }).find((p) => p.name === 'DISABLED_DEVICE (CONNACK 5)')!;
  const report = await runFailoverPath(path, {
    clock: 'simulated',
    policy: { preset: 'default' },
    device: (connection) => {
      const device = createDevice({ ...connection });
      device.on('state', (change) => {
        if (change.value === 'BackingOff' && change.previous === 'Connected') device.reprovision();
      });
      return device;
    },
  });
  expect(report.ok).toBe(false);
  const prefix = 'DISABLED_DEVICE (CONNACK 5), step 1 (DISABLED_DEVICE): ';
  expect(report.failures).toEqual(
    expect.arrayContaining([
      expect.stringMatching(/^DISABLED_DEVICE \(CONNACK 5\), step 1 \(DISABLED_DEVICE\): states Connected → BackingOff → Reprovisioning → /),
      `${prefix}registered with DPS while disabled`,
      `${prefix}DPS lookups answered none, expected one (200)`,
    ]),
  );
  // its messages still arrive: the failure is its path, not a loss
  expect(report.lost).toEqual([]);
});
