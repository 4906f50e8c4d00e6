/**
 * The chaos soak, short and seeded (the full one is `npm run soak`): 12 real devices against a
 * fresh local cloud in a process of its own (as `npm run soak` runs it), 30 s of faults (one every second on average, every kind of the cloud's
 * fault list at least once), then everything
 * cleared and a quiet period that ends once the fleet is healthy; every invariant must hold.
 * Reproduce outside Jest: npm run soak -- --seed 20261122 --devices 12 --duration 30 --fault-rate 1000
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TS_REGISTER } from '../cli/spawn';
import { FAULT_KINDS, faultsByKind, formatReport, generateSchedule, readRecordedSchedule, runSoak, scheduleDigest, type SoakReport } from '../../src/chaos';

const SEED = 20261122; // its DPS 500 and 429 faults do not overlap dps.down/blackhole, so devices meet them
const SHAPE = { devices: 12, durationMs: 30_000, faultRateMs: 1000 };
let report: SoakReport;

beforeAll(async () => {
  report = await runSoak({
    seed: SEED,
    ...SHAPE,
    endQuietWhenHealthy: true,
    cloudProcess: 'child-process',
    // As under DEBUG=*: the MQTT stack traces every CONNECT (its password is the SAS token); the
    // secret scan reads the traces too.
    traceDebug: true,
    cloudExecArgv: ['-r', TS_REGISTER],
    // 'same seed, same schedule': against the schedule an earlier run of this test recorded.
    compareWith: readRecordedSchedule(join(__dirname, 'fixtures', `soak-${SEED}.json`)),
    reportPath: join(mkdtempSync(join(tmpdir(), 'hubstate-soak-test-')), `soak-${SEED}.json`),
  });
  console.log(formatReport(report));
}, 240_000);

test('the schedule is a pure function of the seed and covers the whole fault list', () => {
  const options = { seed: SEED, ...SHAPE, hubs: 2 };
  expect(scheduleDigest(generateSchedule(options))).toBe(report.schedule.digest);
  expect(generateSchedule(options)).toEqual(generateSchedule(options));
  expect(scheduleDigest(generateSchedule({ ...options, seed: SEED + 1 }))).not.toBe(report.schedule.digest);
  const counts = faultsByKind(generateSchedule(options));
  expect(FAULT_KINDS.filter((k) => counts[k] === 0)).toEqual([]);
  expect(report.faults.every((f) => f.startedAtMs !== undefined)).toBe(true);
});

const INVARIANTS = [
  'the run completed',
  'zero accepted telemetry lost',
  'every device Connected again after the faults',
  'no delay below the policy (device side)',
  'no retry before its deadline (device side)',
  'DPS retry-after and 5xx floor honoured (cloud side)',
  'CONNACK 3 floor honoured (cloud side)',
  'no retry storm (attempts per device per minute)',
  'flapping hub: attempts within the policy (short sessions are attempts on the curve)',
  'disabled device: no DPS storm',
  'back on a lasting session after a flap or a disable',
  'no unhandled rejection or uncaught exception',
  'RSS flat over the second half',
  'same seed, same schedule',
  'no secret in logs, snapshots or errors',
];

test.each(INVARIANTS)('invariant: %s', (name) => {
  const invariant = report.invariants.find((i) => i.name === name);
  expect(invariant).toBeDefined();
  // The measured figures are in the failure message, next to the bound.
  expect({ name, ok: invariant!.ok, measured: invariant!.measured, bound: invariant!.bound }).toMatchObject({ ok: true });
});

test('the faults were met, not just scheduled: retries, reprovisioning, throttling and secrets scanned', () => {
  const figures = report.figures as {
    backoff: { entries: number; byRule: Record<string, number> };
    telemetry: { accepted: number };
    userReprovisions: number;
    transitions: Record<string, number>;
  };
  expect(figures.telemetry.accepted).toBeGreaterThan(SHAPE.devices * 20);
  expect(figures.backoff.entries).toBeGreaterThan(SHAPE.devices);
  expect(figures.userReprovisions).toBeGreaterThan(0);
  // Failover / disable / token refused: DPS was asked, by a status lookup or a registration.
  const askedDps = ['Connected→Reprovisioning', 'Connecting→CheckingAssignment', 'BackingOff→CheckingAssignment'].reduce((n, t) => n + (figures.transitions[t] ?? 0), 0);
  expect(askedDps).toBeGreaterThan(0);
  expect(Object.keys(figures.backoff.byRule)).toEqual(expect.arrayContaining(['socket-refused']));
  // Some device met a DPS 429 or 5xx (a registration or a status lookup); its next DPS request, if
  // it needed one, is checked by the 'DPS retry-after' invariant (a device that finds its hub again
  // after a failed lookup asks DPS no more, so that invariant may have nothing to check).
  const dps = (report.figures as { dps: { throttled: number; failuresInjected: number; lookupsThrottled: number; lookupFailuresInjected: number } }).dps;
  expect(dps.throttled + dps.failuresInjected + dps.lookupsThrottled + dps.lookupFailuresInjected).toBeGreaterThan(0);
  expect(report.security.scanned.log.items).toBeGreaterThan(100);
  // The cloud ran in its own process: the RSS invariant measured the devices alone.
  expect(report.figures).toMatchObject({ cloudProcess: 'child-process', cloudRssMb: expect.any(Number) });
  expect(report.security.scanned.snapshot.items).toBeGreaterThan(100);
  // The scan ran with DEBUG=* on: it read the MQTT stack's traces, CONNECTs included, and found nothing.
  expect(report.security.debugTrace).toMatchObject({ lines: expect.any(Number), connectWrites: expect.any(Number) });
  expect(report.security.debugTrace!.connectWrites).toBeGreaterThanOrEqual(SHAPE.devices);
  expect(report.security.total).toBe(0);
});
