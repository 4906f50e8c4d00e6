/**
 * Issue 16, metrics end to end: a device with `metrics: { meter }` (the real OpenTelemetry SDK)
 * fails over between the local cloud's hubs (manual failover: the old hub refuses it, DPS is asked
 * where it belongs, it connects to the other hub). The collected metrics show the failover and
 * count exactly the messages the cloud received, by id.
 */
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { ATTRIBUTE, INSTRUMENT } from '../../src/metrics';
import { startDevice, waitFor, waitForState, type DeviceUnderTest } from './harness';

class TestReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

let cloud: LocalCloud;
let dut: DeviceUnderTest | undefined;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 2, seed: 'metrics-e2e', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});
afterAll(async () => {
  await dut?.device.stop();
  await cloud.stop();
});

/** The points of one collection, by instrument name. */
async function collect(reader: MetricReader): Promise<Map<string, Array<{ attributes: Record<string, unknown>; value: number }>>> {
  const { resourceMetrics, errors } = await reader.collect();
  expect(errors).toEqual([]);
  const byName = new Map<string, Array<{ attributes: Record<string, unknown>; value: number }>>();
  for (const metric of resourceMetrics.scopeMetrics.flatMap((scope) => scope.metrics)) {
    byName.set(metric.descriptor.name, (metric.dataPoints as Array<{ attributes: Record<string, unknown>; value: unknown }>).map((p) => ({ attributes: p.attributes, value: p.value as number })));
  }
  return byName;
}

const sum = (points: Array<{ value: number }> | undefined) => (points ?? []).reduce((total, p) => total + p.value, 0);

test('a manual failover: one hub change, a status lookup, the delivered count equal to the messages at the cloud by id', async () => {
  const id = 'metrics-failover';
  const reader = new TestReader();
  const provider = new MeterProvider({ readers: [reader] });
  dut = startDevice(cloud, id, { metrics: { meter: provider.getMeter('e2e') } });
  const delivered = new Set<string>();
  dut.device.on('delivered', (messageId) => delivered.add(messageId));
  await waitForState(dut, 'Connected');
  const home = dut.device.assignment()!.hubHost;
  for (let n = 0; n < 5; n++) await dut.send({ n });
  await waitFor('the first five delivered', () => dut!.accepted.every((m) => delivered.has(m)));

  cloud.manualFailover(id, { ttlMs: null });
  await waitFor('connected to the other hub', () => dut!.device.state() === 'Connected' && dut!.device.assignment()?.hubHost !== home, 30_000);
  for (let n = 5; n < 10; n++) await dut.send({ n });
  await waitFor('all ten delivered', () => dut!.accepted.every((m) => delivered.has(m)));
  await waitFor('all ten at the cloud', () => dut!.accepted.every((m) => cloud.deliveredIds(id).has(m)));

  const points = await collect(reader);
  const stats = dut.device.stats();
  expect({
    hubChanges: sum(points.get(INSTRUMENT.hubChanges)),
    lookupsAtLeastOne: sum(points.get(INSTRUMENT.statusLookups)) >= 1,
    connectionsAtLeastTwo: sum(points.get(INSTRUMENT.connections)) >= 2,
    delivered: sum(points.get(INSTRUMENT.delivered)),
    connectedState: points.get(INSTRUMENT.state)!.find((p) => p.attributes[ATTRIBUTE.state] === 'Connected')?.value,
    outbox: sum(points.get(INSTRUMENT.outboxCount)),
  }).toEqual({ hubChanges: 1, lookupsAtLeastOne: true, connectionsAtLeastTwo: true, delivered: 10, connectedState: 1, outbox: 0 });
  // Ten distinct ids sent, all ten acknowledged and at the cloud: the count is the messages, by id.
  expect(new Set(dut.accepted).size).toBe(10);
  // One accounting: the metrics say what device.stats() says.
  expect(sum(points.get(INSTRUMENT.statusLookups))).toBe(stats.dps.statusLookups);
  expect(sum(points.get(INSTRUMENT.connections))).toBe(stats.connects);
  expect(sum(points.get(INSTRUMENT.disconnections))).toBe(stats.disconnects.total);
  expect(stats).toMatchObject({ hubChanges: 1, messages: { delivered: 10 } });
  for (const instrumentPoints of points.values()) {
    for (const point of instrumentPoints) expect(point.attributes[ATTRIBUTE.deviceId]).toBe(id);
  }
});

type Broken = 'add' | 'createCounter' | 'addBatchObservableCallback';

/** A Meter one of whose calls throws (and removeBatchObservableCallback too): a broken SDK or exporter. */
function throwingMeter(broken: Broken) {
  const boom = () => {
    throw new Error('meter broken');
  };
  const fine = () => ({});
  return {
    createCounter: broken === 'createCounter' ? boom : () => ({ add: broken === 'add' ? boom : () => undefined }),
    createObservableGauge: fine,
    createObservableCounter: fine,
    createObservableUpDownCounter: fine,
    addBatchObservableCallback: broken === 'addBatchObservableCallback' ? boom : () => undefined,
    removeBatchObservableCallback: boom,
  };
}

test.each<Broken>(['add', 'createCounter', 'addBatchObservableCallback'])(
  'a Meter whose %s() throws: the device still connects, delivers every message and stops, and says so once',
  async (broken) => {
    const id = `metrics-throwing-${broken}`;
    const logLines: string[] = [];
    const throwing = startDevice(cloud, id, { metrics: { meter: throwingMeter(broken) } }, logLines);
    try {
      const delivered = new Set<string>();
      throwing.device.on('delivered', (messageId) => delivered.add(messageId));
      await waitForState(throwing, 'Connected');
      for (let n = 0; n < 3; n++) await throwing.send({ n });
      await waitFor('all three delivered', () => throwing.accepted.every((m) => delivered.has(m)));
      await waitFor('all three at the cloud', () => throwing.accepted.every((m) => cloud.deliveredIds(id).has(m)));
      expect(throwing.device.stats().messages.delivered).toBe(3);
    } finally {
      await throwing.device.stop();
    }
    expect(throwing.device.state()).toBe('Stopped');
    // Said once, not once per count.
    expect(logLines.filter((line) => line.includes('meter broken')).length).toBe(1);
  },
);
