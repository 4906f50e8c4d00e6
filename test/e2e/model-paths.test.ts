/**
 * The fault model's long faults, on the toolkit users get (hubstate-testing): a flapping hub, a
 * long DPS outage while the hub is fine and while the device needs DPS, and a disabled device
 * (under CONNACK 3 and 5). Each is a path of its own, replayed by `runFailoverPath` against the
 * local cloud with the real SDK while the device keeps sending. The runner checks (long-faults.ts)
 * that the device's states follow the fault's leg (EXPECTED_LEG), that its waits follow the curve
 * and floors of the policy it runs (here the runner's compressed TEST_POLICY: seconds, not
 * minutes), that every wait lasted to its deadline, that the cloud saw no more attempts than the
 * policy allows and DPS only when the fault needs it, and that every message arrived (by id).
 */
import { createDevice } from 'hubstate';
import type { LocalCloud } from 'hubstate-cloud';
import { EXPECTED_LEG, generateFailoverPaths, isLongPath, runFailoverPath, type Fault } from 'hubstate-testing';
import { useLocalCloud } from './harness';

let cloud: LocalCloud;
const paths = generateFailoverPaths({ longFaults: true, refusalCodes: [3, 5], seed: 100 }).filter((p) => isLongPath(p.faults));

useLocalCloud({ hubs: 2, seed: 'model-paths' }, (started) => {
  cloud = started;
});

test('the long faults of the fault model are paths of their own, those with a refusal under both codes', () => {
  expect(paths.map((p) => p.name)).toEqual([
    'FLAPPING_HUB',
    'DPS_OUTAGE',
    'DPS_OUTAGE_REPROVISION',
    'DISABLED_DEVICE (CONNACK 3)',
    'DISABLED_DEVICE (CONNACK 5)',
  ]);
  // without longFaults, the short sequences only
  expect(generateFailoverPaths({ refusalCodes: [3] }).some((p) => isLongPath(p.faults))).toBe(false);
});

test.each(paths.map((p) => [p.name, p] as const))('%s', async (_name, path) => {
  const report = await runFailoverPath(path, { cloud, device: (connection) => createDevice({ ...connection, modelId: 'dtmi:Sample:Failover;1' }) });
  expect(report.failures).toEqual([]);
  expect(report.ok).toBe(true);
  expect(report.steps).toHaveLength(1);
  const [step] = report.steps;
  expect(step!.states.join(' ')).toMatch(EXPECTED_LEG[path.faults[0] as Fault]);
  expect(step!.hubAfter).toBe(step!.hubBefore);
  // every long fault but the DPS outage with a working hub makes the device wait, past its quick retries or on a floor
  if (path.faults[0] !== 'DPS_OUTAGE') expect(step!.waits.length).toBeGreaterThanOrEqual(3);
  else expect(step!.states).toEqual(['Connected']);
  expect(report.lost).toEqual([]);
  expect(report.accepted).toBeGreaterThan(5);
  if (step!.notes.length > 0) console.log(step!.notes.join('\n'));
});
