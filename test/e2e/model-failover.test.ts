/**
 * Model-based failover suite: every two-fault sequence generated from the fault model
 * (test/e2e/fault-model.ts, via xstate/graph) is replayed against the local cloud with the real
 * SDK. Each path asserts the sequence of states the device went through, that it ended on the
 * right hub, and that every message sent before, during and after the faults arrived. A path with
 * a refusal in it (failover, failback) runs under both CONNACK codes (3 as Azure, and 5); the
 * model's long faults (flapping hub, DPS outages, disabled device) are in model-paths.test.ts.
 * The identity is a dimension too: the paths with a refusal in them run once more (CONNACK 3) with
 * an X.509 device (certificate from the cloud's enrollment group) instead of a SAS key.
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import {
  EXPECTED_LEG,
  faultModelCoverage,
  generateFaultPaths,
  generateFaultSequences,
  isLongPath,
  replayCases,
  type Fault,
  type RefusalCode,
} from './fault-model';
import { deliveryReport, startDevice, waitFor, waitForState, keepSending, type DeviceUnderTest } from './harness';

let cloud: LocalCloud;
/**
 * A connection counts as a success after 0.5 s here (30 s by default, 1 s in the harness): each
 * fault waits for that before it hits, so a shorter one keeps the suite short with both codes.
 */
const STABLE_CONNECTION_MS = 500;
/**
 * The paths assert states, hubs and delivery, not delays (failover.test.ts and model-paths.test.ts
 * do): the first retry after a loss within 0.3 s (1 s by default), the curve from 0.2 s (1 s), and
 * retry-after + at most 0.2 s of jitter (1 s), so 34 runs stay within a couple of minutes.
 */
const POLICY = { stableConnectionMs: STABLE_CONNECTION_MS, firstRetryMaxMs: 300, minDelayMs: 200, retryAfterJitterMs: 200 };
const sequences = generateFaultSequences();
type Identity = 'sas' | 'x509';
const keyCases = replayCases(sequences).map((c) => ({ ...c, identity: 'sas' as Identity }));
/** The failover/failback paths, as Azure refuses (3), with a certificate identity. */
const x509Cases = keyCases.filter((c) => c.refusalCode === 3).map((c) => ({ ...c, name: `${c.name} [X.509]`, identity: 'x509' as Identity }));
const cases = [...keyCases, ...x509Cases];
const duplicatesByPath: Record<string, number> = {};

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'model-failover', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});
afterAll(async () => {
  console.log(`model-based failover paths: ${sequences.length} (${cases.length} runs); duplicates per run: ${JSON.stringify(duplicatesByPath)}`);
  await cloud.stop();
});

const hubOf = (dut: DeviceUnderTest) => cloud.hubs.find((h) => h.host === dut.device.assignment()?.hubHost)!.name;

async function inject(fault: Fault, dut: DeviceUnderTest, mark: number, refusalCode: RefusalCode | undefined): Promise<void> {
  const deviceId = dut.device.assignment()!.deviceId;
  const hub = cloud.hub(hubOf(dut));
  const since = () => dut.states.slice(mark);
  switch (fault) {
    case 'DROP':
      hub.disconnect(deviceId);
      break;
    case 'CRASH':
      await hub.kill();
      await waitFor('two failed reconnects', () => since().filter((s) => s.value === 'BackingOff').length >= 2);
      await hub.restart();
      break;
    case 'FAILOVER':
      cloud.manualFailover(deviceId, { ttlMinutes: 60, refusalCode });
      break;
    case 'FAILBACK':
      cloud.manualFailback(deviceId);
      break;
    case 'USER_REPROVISION':
      dut.device.reprovision();
      break;
    case 'THROTTLED_REPROVISION':
      cloud.dps.throttle({ retryAfterSec: 0.3, count: 1 });
      dut.device.reprovision();
      break;
    default:
      throw new Error(`${fault} is a long fault: replayed by model-paths.test.ts`);
  }
  await waitFor(`Connected again after ${fault}`, () => since().some((s) => s.value === 'Connected'), 30_000);
}

test('the fault model yields every allowed two-fault sequence, and its paths take every transition of the model', () => {
  expect(sequences).toHaveLength(25);
  expect(sequences).toContainEqual(['FAILOVER', 'FAILBACK']);
  expect(sequences).not.toContainEqual(['FAILBACK', 'FAILOVER']);
  // 9 sequences have a failover in them: those run under CONNACK 3 and 5, and with X.509 (code 3)
  expect(keyCases).toHaveLength(25 + 9);
  expect(x509Cases).toHaveLength(9);
  expect(x509Cases.map((c) => c.name)).toContain('FAILOVER → FAILBACK (CONNACK 3) [X.509]');
  expect(cases.map((c) => c.name)).toContain('FAILOVER → FAILBACK (CONNACK 5)');
  expect(cases.map((c) => c.name)).toContain('DROP → CRASH');
  const all = generateFaultPaths();
  // the long faults are paths of their own (model-paths.test.ts)
  expect(all.filter(isLongPath)).toEqual([['FLAPPING_HUB'], ['DPS_OUTAGE'], ['DPS_OUTAGE_REPROVISION'], ['DISABLED_DEVICE']]);
  const coverage = faultModelCoverage();
  console.log(`${coverage.line}: ${cases.length} runs here, ${replayCases(all.filter(isLongPath)).length} in model-paths.test.ts`);
  expect(coverage.missing).toEqual([]);
  expect(coverage.covered).toBe(coverage.total);
  expect(coverage.total).toBe(11); // ten faults and Connected → Done
});

/**
 * The model's faults hit a device whose connection has lasted (stableConnectionMs): a second fault
 * inside that window is a flapping hub, which the policy rightly answers with ever longer retries
 * (the model's FLAPPING_HUB path, model-paths.test.ts, and test/machine/hour-of-refusals.test.ts).
 */
async function untilConnectionStable(dut: DeviceUnderTest): Promise<void> {
  const connectedAt = [...dut.states].reverse().find((s) => s.value === 'Connected')!.at;
  await waitFor('the connection to last', () => Date.now() >= connectedAt + STABLE_CONNECTION_MS + 200);
  expect(dut.device.state()).toBe('Connected');
}

test.each(cases.map((c, i) => [c.name, c.faults, c.refusalCode, c.identity, i] as const))('%s', async (_name, faults, refusalCode, identity, index) => {
  const registrationId = `mb-${index}`;
  const credential = identity === 'x509' ? { groupKey: undefined, x509: await cloud.issueDeviceCertificate(registrationId).then(({ cert, key }) => ({ cert, key })) } : {};
  const dut = startDevice(cloud, registrationId, { seed: index + 1, policy: POLICY, ...credential });
  let producer: ReturnType<typeof keepSending> | undefined;
  try {
    await waitForState(dut, 'Connected');
    producer = keepSending(dut, { path: index });
    const home = hubOf(dut);
    let failedOver = false;
    for (const fault of faults) {
      await untilConnectionStable(dut);
      const mark = dut.states.length;
      const hubBefore = hubOf(dut);
      await inject(fault, dut, mark, refusalCode);
      const leg = ['Connected', ...dut.states.slice(mark).map((s) => s.value)].join(' ');
      expect(leg).toMatch(EXPECTED_LEG[fault]);
      if (fault === 'FAILOVER' || fault === 'FAILBACK') {
        // the hub it left refused it, with this run's code, as a moved device
        const refusals = cloud.hub(hubBefore).refusals(dut.device.assignment()!.deviceId);
        expect(refusals.at(-1)).toMatchObject({ code: refusalCode, reason: 'moved' });
      }
      if (fault === 'FAILOVER') failedOver = true;
      if (fault === 'FAILBACK') failedOver = false;
      if (fault === 'FAILOVER' || fault === 'FAILBACK') expect(hubOf(dut)).not.toBe(hubBefore);
      else expect(hubOf(dut)).toBe(hubBefore);
      expect(hubOf(dut) === home).toBe(!failedOver);
      // telemetry continues on the hub the device is on now
      const after = dut.accepted.length;
      await waitFor('telemetry after the fault', () => dut.accepted.length > after + 2 && deliveryReport(cloud, dut.accepted.slice(after)).lost.length === 0);
    }
    await producer.stop();
    await waitFor('every message delivered', () => deliveryReport(cloud, dut.accepted).lost.length === 0, 30_000);
    if (identity === 'x509') expect(cloud.dps.x509AttestationOf(registrationId)).toEqual({ kind: 'ca' });
    duplicatesByPath[faults.join('>') + (refusalCode ? `/${refusalCode}` : '') + (identity === 'x509' ? '/x509' : '')] = deliveryReport(cloud, dut.accepted).duplicates;
  } finally {
    await producer?.abandon(); // a failed path must not leave a producer behind
    await dut.device.stop();
  }
});
