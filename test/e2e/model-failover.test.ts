/**
 * Model-based failover suite, on the toolkit users get (hubstate-testing): every two-fault
 * sequence generated from the fault model (via xstate/graph) is replayed against the local cloud
 * with the real SDK by `runFailoverPath`, which checks after each fault the states the device went
 * through, the hub it is on (and that the hub it left refused it as moved, with the run's code),
 * that telemetry continues, and at the end that every accepted message arrived. A path with a
 * refusal in it (failover, failback) runs under both CONNACK codes (3 as Azure, and 5), and once
 * more (code 3) with an X.509 device (certificate from the cloud's enrollment group) and once over
 * MQTT on WebSockets (raw MQTT refused by the cloud meanwhile). The model's
 * long faults (flapping hub, DPS outages, disabled device) are in model-paths.test.ts.
 */
import { createDevice } from 'hubstate';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { faultModelCoverage, generateFailoverPaths, generateFaultPaths, isLongPath, replayCases, runFailoverPath } from 'hubstate-testing';

let cloud: LocalCloud;
const paths = generateFailoverPaths({ depth: 2, refusalCodes: [3, 5], x509: true, websockets: true, seed: 1 });
const duplicatesByPath: Record<string, number> = {};

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'model-failover', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});
afterAll(async () => {
  console.log(`model-based failover paths: ${paths.length} runs; duplicates per run: ${JSON.stringify(duplicatesByPath)}`);
  await cloud.stop();
});

test('the fault model yields every allowed two-fault sequence, and its paths take every transition of the model', () => {
  const names = paths.map((p) => p.name);
  // 25 sequences; the 9 with a failover in them run under CONNACK 3 and 5, with X.509 and over WebSockets (code 3)
  expect(paths).toHaveLength(25 + 9 + 9 + 9);
  expect(names).toContain('FAILOVER → FAILBACK (CONNACK 3) [X.509]');
  expect(names).toContain('DROP → FAILOVER (CONNACK 3) [WebSockets]');
  expect(names).toContain('FAILOVER → FAILBACK (CONNACK 5)');
  expect(names).toContain('DROP → CRASH');
  expect(names.some((n) => n.startsWith('FAILBACK → FAILOVER'))).toBe(false);
  expect(new Set(paths.map((p) => p.seed)).size).toBe(paths.length);
  const all = generateFaultPaths();
  // the long faults are paths of their own (model-paths.test.ts)
  expect(all.filter(isLongPath)).toEqual([['FLAPPING_HUB'], ['DPS_OUTAGE'], ['DPS_OUTAGE_REPROVISION'], ['DISABLED_DEVICE']]);
  const coverage = faultModelCoverage();
  console.log(`${coverage.line}: ${paths.length} runs here, ${replayCases(all.filter(isLongPath)).length} in model-paths.test.ts`);
  expect(coverage.missing).toEqual([]);
  expect(coverage.covered).toBe(coverage.total);
  expect(coverage.total).toBe(11); // ten faults and Connected → Done
});

test('depth is the number of faults per path: five single faults (a failback needs a failover first), 125 sequences of three', () => {
  expect(generateFailoverPaths({ depth: 1, refusalCodes: [3] }).map((p) => p.name).sort()).toEqual([
    'CRASH',
    'DROP',
    'FAILOVER (CONNACK 3)',
    'THROTTLED_REPROVISION',
    'USER_REPROVISION',
  ]);
  // 4 faults always allowed, FAILOVER/FAILBACK alternating: 5 · 5 · 5 sequences of three
  expect(generateFailoverPaths({ depth: 3, refusalCodes: [3] })).toHaveLength(125);
  expect(() => generateFailoverPaths({ depth: 5 })).toThrow(/depth/);
});

test.each(paths.map((p) => [p.name, p] as const))('%s', async (_name, path) => {
  // Over WebSockets, raw MQTT is refused (8883 blocked, as on a corporate network): only the WebSocket path can work.
  cloud.blockRawMqtt(path.transport === 'mqtt-ws');
  const report = await runFailoverPath(path, { cloud, device: (connection) => createDevice({ ...connection, modelId: 'dtmi:Sample:Failover;1' }) }).finally(() =>
    cloud.blockRawMqtt(false),
  );
  expect(report.failures).toEqual([]);
  expect(report.ok).toBe(true);
  expect(report.steps.map((s) => s.fault)).toEqual(path.faults);
  expect(report.lost).toEqual([]);
  expect(report.accepted).toBeGreaterThan(0);
  if (path.identity === 'x509') expect(cloud.dps.x509AttestationOf(report.registrationId)).toEqual({ kind: 'ca' });
  duplicatesByPath[path.name] = report.duplicates;
});
