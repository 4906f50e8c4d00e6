/**
 * Issue 16, metrics: the device's figures through OpenTelemetry (src/metrics.ts), read with the
 * real SDK (@opentelemetry/sdk-metrics, a MeterProvider and a reader whose collect() the test
 * calls). Counters equal the stats they are fed with; the observed instruments read the snapshot;
 * every point names the device; a stopped device leaves the Meter; `metrics: true` takes the
 * global MeterProvider's Meter and loads @opentelemetry/api only then; bad options are ConfigErrors.
 * Simulated clock where time matters.
 */
import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { metrics as otelMetrics } from '@opentelemetry/api';
import {
  AggregationTemporality,
  DataPointType,
  InstrumentType,
  MeterProvider,
  MetricReader,
  type MetricData,
  type MetricReaderOptions,
} from '@opentelemetry/sdk-metrics';
import pino from 'pino';
import { SimulatedClock } from 'xstate';
import { createDevice } from '../../src/device';
import { ConfigError } from '../../src/errors';
import {
  ATTRIBUTE,
  DEVICE_STATES,
  DeviceMetrics,
  INSTRUMENT,
  METER_NAME,
  RECOMMENDED_ACTIONS,
  type MetricsBatchCallback,
  type MetricsMeter,
  type MetricsObservable,
} from '../../src/metrics';
import type { DeviceOptions } from '../../src/options';
import { MAX_RULE_KEYS, StatsCollector } from '../../src/stats';
import { MemoryProvisioningCache } from '../../src/store/cache';
import { MemoryOutbox } from '../../src/store/outbox';
import { failure, message, statsDriver, T0 } from '../support/stats-driver';

const silent = pino({ level: 'silent' });
const DEVICE = 'metrics-device';

/** A reader the test collects from when it wants (cumulative unless told otherwise). */
class TestReader extends MetricReader {
  constructor(options?: MetricReaderOptions) {
    super(options);
  }
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

type Points = Array<{ attributes: Record<string, unknown>; value: number }>;

/** One collection: each instrument's descriptor and points, by name. */
async function collect(reader: MetricReader): Promise<Map<string, { metric: MetricData; points: Points }>> {
  const { resourceMetrics, errors } = await reader.collect();
  expect(errors).toEqual([]);
  const byName = new Map<string, { metric: MetricData; points: Points }>();
  for (const scope of resourceMetrics.scopeMetrics) {
    for (const metric of scope.metrics) {
      const points = (metric.dataPoints as Array<{ attributes: Record<string, unknown>; value: unknown }>).map(({ attributes, value }) => ({ attributes, value: value as number }));
      byName.set(metric.descriptor.name, { metric, points });
    }
  }
  return byName;
}

/** The instrument's kind: the SDK's descriptor carries it (not in its public type). */
function kindOf(metric: MetricData): string {
  return (metric.descriptor as MetricData['descriptor'] & { type: string }).type;
}

/** The value of `name`'s point whose attributes include `attributes` (undefined: no such point). */
function valueOf(collected: Awaited<ReturnType<typeof collect>>, name: string, attributes: Record<string, string> = {}): number | undefined {
  const want = { [ATTRIBUTE.deviceId]: DEVICE, ...attributes };
  const matching = (collected.get(name)?.points ?? []).filter((p) => Object.entries(want).every(([k, v]) => p.attributes[k] === v));
  expect(matching.length).toBeLessThanOrEqual(1);
  return matching[0]?.value;
}

/** A StatsCollector driven as the device drives it, with DeviceMetrics listening, on a simulated clock. */
function harness() {
  const driver = statsDriver();
  const reader = new TestReader();
  const provider = new MeterProvider({ readers: [reader] });
  // The SDK's Meter is a MetricsMeter (a compile-time check of the structural type).
  const meter: MetricsMeter = provider.getMeter('hubstate-test');
  const { stats } = driver;
  const metrics = new DeviceMetrics(meter, DEVICE, { stats: () => stats.snapshot(), state: driver.state });
  stats.onCount(metrics);
  const { clock, outbox, go, lose } = driver;
  return { clock, reader, provider, meter, outbox, stats, metrics, go, lose };
}

describe('DeviceMetrics: counters fed as the stats count', () => {
  test('connections, disconnections by error class and rule, hub changes, DPS calls: equal to the stats', async () => {
    const { clock, reader, stats, go, lose } = harness();
    stats.started();
    go('Provisioning', null, 'START');
    go('Connecting');
    go('Connected', 'hub-a');
    lose('transient', 'socket-reset');
    go('Connecting');
    go('Connected', 'hub-a'); // same hub: not a change
    clock.increment(1000);
    lose('transient', 'socket-reset', 'CheckingAssignment');
    go('Reprovisioning');
    go('Connecting', 'hub-b');
    go('Connected', 'hub-b'); // failover
    lose('throttled', 'hub-throttled');
    go('Connecting', 'hub-b');
    go('Connected', 'hub-b');
    go('Disconnecting', 'hub-b', 'STOP'); // stop() closing the connection: not a disconnection
    const collected = await collect(reader);
    const snapshot = stats.snapshot();
    expect({
      connections: valueOf(collected, INSTRUMENT.connections),
      hubChanges: valueOf(collected, INSTRUMENT.hubChanges),
      registrations: valueOf(collected, INSTRUMENT.registrations),
      statusLookups: valueOf(collected, INSTRUMENT.statusLookups),
      socketReset: valueOf(collected, INSTRUMENT.disconnections, { [ATTRIBUTE.errorClass]: 'transient', [ATTRIBUTE.rule]: 'socket-reset' }),
      throttled: valueOf(collected, INSTRUMENT.disconnections, { [ATTRIBUTE.errorClass]: 'throttled', [ATTRIBUTE.rule]: 'hub-throttled' }),
    }).toEqual({ connections: 4, hubChanges: 1, registrations: 2, statusLookups: 1, socketReset: 2, throttled: 1 });
    // One accounting: the counters say what the stats say.
    expect(snapshot).toMatchObject({
      connects: 4,
      hubChanges: 1,
      dps: { registrations: 2, statusLookups: 1 },
      disconnects: { total: 3, byRule: { 'socket-reset': 2, 'hub-throttled': 1 } },
    });
    expect(collected.get(INSTRUMENT.disconnections)!.points).toHaveLength(2);
  });

  test('delivered, resent and dropped by reason; every point carries the device id', async () => {
    const { reader, outbox, stats } = harness();
    const limited = new MemoryOutbox({ maxCount: 1, maxBytes: 1_000_000, whenFull: 'drop-oldest' });
    limited.onDropped((dropped) => stats.dropped(dropped));
    const [a, b] = ['a', 'b', 'c'].map((id) => outbox.add(message(id, T0)));
    stats.published(a!.seq);
    stats.published(b!.seq);
    stats.published(a!.seq); // the connection ended before a's PUBACK: sent again
    stats.delivered();
    stats.delivered();
    outbox.drop('c', 'unsendable');
    limited.add(message('x', T0));
    limited.add(message('y', T0)); // x dropped: outbox-full
    limited.dropAll('stopped'); // y
    const collected = await collect(reader);
    expect({
      delivered: valueOf(collected, INSTRUMENT.delivered),
      resent: valueOf(collected, INSTRUMENT.resent),
      unsendable: valueOf(collected, INSTRUMENT.dropped, { [ATTRIBUTE.dropReason]: 'unsendable' }),
      full: valueOf(collected, INSTRUMENT.dropped, { [ATTRIBUTE.dropReason]: 'outbox-full' }),
      stopped: valueOf(collected, INSTRUMENT.dropped, { [ATTRIBUTE.dropReason]: 'stopped' }),
    }).toEqual({ delivered: 2, resent: 1, unsendable: 1, full: 1, stopped: 1 });
    expect(stats.snapshot().messages).toMatchObject({ delivered: 2, resent: 1, dropped: 3, droppedByReason: { unsendable: 1, 'outbox-full': 1, stopped: 1 } });
    const allPoints = [...collected.values()].flatMap(({ points }) => points);
    expect(allPoints.length).toBeGreaterThan(20);
    expect(allPoints.filter((p) => p.attributes[ATTRIBUTE.deviceId] !== DEVICE)).toEqual([]);
  });

  test('rules past MAX_RULE_KEYS are counted as other: the rule attribute stays bounded', async () => {
    const { reader, go, lose } = harness();
    for (let n = 0; n < MAX_RULE_KEYS + 20; n++) {
      go('Connected');
      lose('transient', `rule-${n}`);
    }
    const points = (await collect(reader)).get(INSTRUMENT.disconnections)!.points;
    const rules = new Set(points.map((p) => p.attributes[ATTRIBUTE.rule]));
    expect(rules.size).toBe(MAX_RULE_KEYS);
    expect(valueOf(await collect(reader), INSTRUMENT.disconnections, { [ATTRIBUTE.errorClass]: 'transient', [ATTRIBUTE.rule]: 'other' })).toBe(21);
    expect(points.reduce((sum, p) => sum + p.value, 0)).toBe(MAX_RULE_KEYS + 20);
  });
});

describe('DeviceMetrics: what is observed at each collection', () => {
  test('outbox count, bytes, deepest, oldest age; time connected and its share; time since the last delivery; state; action', async () => {
    const { clock, reader, outbox, stats, go, lose } = harness();
    stats.started();
    go('Connecting');
    go('Connected');
    const m1 = outbox.add(message('m1', T0, 100));
    outbox.add(message('m2', T0, 50));
    outbox.add(message('m3', T0, 25));
    stats.published(m1.seq);
    stats.delivered();
    outbox.remove('m1');
    clock.increment(30_000); // 30 s connected
    lose('transient', 'socket-reset');
    clock.increment(10_000); // of 40 s since start
    const collected = await collect(reader);
    expect({
      count: valueOf(collected, INSTRUMENT.outboxCount),
      bytes: valueOf(collected, INSTRUMENT.outboxSize),
      maxCount: valueOf(collected, INSTRUMENT.outboxMaxCount),
      oldestAge: valueOf(collected, INSTRUMENT.oldestAge),
      connectedTime: valueOf(collected, INSTRUMENT.connectedTime),
      connectedRatio: valueOf(collected, INSTRUMENT.connectedRatio),
      lastDeliveryAge: valueOf(collected, INSTRUMENT.lastDeliveryAge),
      backingOff: valueOf(collected, INSTRUMENT.state, { [ATTRIBUTE.state]: 'BackingOff' }),
      connected: valueOf(collected, INSTRUMENT.state, { [ATTRIBUTE.state]: 'Connected' }),
      wait: valueOf(collected, INSTRUMENT.action, { [ATTRIBUTE.action]: 'wait' }),
      none: valueOf(collected, INSTRUMENT.action, { [ATTRIBUTE.action]: 'none' }),
    }).toEqual({
      count: 2,
      bytes: 75,
      maxCount: 3,
      oldestAge: 40,
      connectedTime: 30,
      connectedRatio: 0.75,
      lastDeliveryAge: 40,
      backingOff: 1,
      connected: 0,
      wait: 1,
      none: 0,
    });
    // One point per state and per action, exactly one of each at 1.
    for (const [name, count] of [[INSTRUMENT.state, DEVICE_STATES.length], [INSTRUMENT.action, RECOMMENDED_ACTIONS.length]] as const) {
      const points = collected.get(name)!.points;
      expect({ name, points: points.length, ones: points.filter((p) => p.value === 1).length }).toEqual({ name, points: count, ones: 1 });
    }
  });

  test('an empty outbox has no oldest age, and nothing delivered yet no last-delivery age', async () => {
    const { reader, stats } = harness();
    stats.started();
    const collected = await collect(reader);
    expect(valueOf(collected, INSTRUMENT.outboxCount)).toBe(0);
    expect(collected.has(INSTRUMENT.oldestAge)).toBe(false);
    expect(collected.has(INSTRUMENT.lastDeliveryAge)).toBe(false);
    expect(valueOf(collected, INSTRUMENT.state, { [ATTRIBUTE.state]: 'Idle' })).toBe(1);
  });

  test('the instruments: names, kinds and units (the README table lists each)', async () => {
    const { reader, stats, outbox, go, lose } = harness();
    stats.started();
    go('Connected');
    const m = outbox.add(message('m', T0));
    stats.published(m.seq);
    stats.published(m.seq);
    stats.delivered();
    go('Provisioning');
    go('CheckingAssignment');
    go('Connected', 'hub-b');
    lose('transient', 'socket-reset');
    outbox.add(message('n', T0));
    outbox.drop('n', 'expired');
    const collected = await collect(reader);
    const table = Object.fromEntries([...collected.values()].map(({ metric }) => [metric.descriptor.name, `${kindOf(metric)} ${metric.descriptor.unit}`]));
    const { COUNTER, OBSERVABLE_COUNTER: OBS_COUNTER, OBSERVABLE_GAUGE: GAUGE, OBSERVABLE_UP_DOWN_COUNTER: OBS_UP_DOWN } = InstrumentType;
    expect(table).toEqual({
      [INSTRUMENT.connections]: `${COUNTER} {connection}`,
      [INSTRUMENT.disconnections]: `${COUNTER} {disconnection}`,
      [INSTRUMENT.hubChanges]: `${COUNTER} {change}`,
      [INSTRUMENT.registrations]: `${COUNTER} {registration}`,
      [INSTRUMENT.statusLookups]: `${COUNTER} {lookup}`,
      [INSTRUMENT.delivered]: `${COUNTER} {message}`,
      [INSTRUMENT.resent]: `${COUNTER} {message}`,
      [INSTRUMENT.dropped]: `${COUNTER} {message}`,
      [INSTRUMENT.outboxCount]: `${OBS_UP_DOWN} {message}`,
      [INSTRUMENT.outboxSize]: `${OBS_UP_DOWN} By`,
      [INSTRUMENT.outboxMaxCount]: `${GAUGE} {message}`,
      [INSTRUMENT.oldestAge]: `${GAUGE} s`,
      [INSTRUMENT.connectedTime]: `${OBS_COUNTER} s`,
      [INSTRUMENT.connectedRatio]: `${GAUGE} 1`,
      [INSTRUMENT.lastDeliveryAge]: `${GAUGE} s`,
      [INSTRUMENT.state]: `${GAUGE} 1`,
      [INSTRUMENT.action]: `${GAUGE} 1`,
    });
    expect(collected.get(INSTRUMENT.connections)!.metric.dataPointType).toBe(DataPointType.SUM);
    // The README's table names every instrument with its unit.
    const readme = readFileSync(join(__dirname, '../../README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('### Metrics (OpenTelemetry)'));
    for (const [name, kindAndUnit] of Object.entries(table)) {
      const unit = kindAndUnit.split(' ')[1]!;
      expect({ name, listed: new RegExp(`\\| \`${name.replace(/\./g, '\\.')}\` \\|[^|]*\\| \`${unit.replace(/[{}]/g, '\\$&')}\` \\|`).test(section) }).toEqual({ name, listed: true });
    }
  });

  test('close(): the callback leaves the Meter (a delta reader then sees no observed point), counters stay as counted', async () => {
    const reader = new TestReader({ aggregationTemporalitySelector: () => AggregationTemporality.DELTA });
    const provider = new MeterProvider({ readers: [reader] });
    const stats = new StatsCollector(new SimulatedClock(), new MemoryOutbox());
    const metrics = new DeviceMetrics(provider.getMeter('m'), DEVICE, { stats: () => stats.snapshot(), state: () => 'Idle' });
    stats.onCount(metrics);
    expect(valueOf(await collect(reader), INSTRUMENT.state, { [ATTRIBUTE.state]: 'Idle' })).toBe(1);
    metrics.close();
    metrics.close(); // idempotent
    expect((await collect(reader)).has(INSTRUMENT.state)).toBe(false);
  });
});

/** A device that is never started, or fails to connect (nothing listens on port 9). */
function deviceOptions(overrides: Partial<DeviceOptions> = {}): DeviceOptions {
  return {
    idScope: '0ne00AAA111',
    registrationId: DEVICE,
    deviceKey: Buffer.alloc(32, 3).toString('base64'),
    provisioningHost: 'localhost:9',
    cache: new MemoryProvisioningCache({ hubHost: 'localhost:9', deviceId: DEVICE, assignedAt: 1 }),
    seed: 1,
    logger: silent,
    ...overrides,
  };
}

/** A Meter that counts the batch callbacks registered on it (and passes everything to the SDK's). */
function countingMeter(meter: MetricsMeter): { meter: MetricsMeter; registered: Set<MetricsBatchCallback> } {
  const registered = new Set<MetricsBatchCallback>();
  const counting: MetricsMeter = {
    createCounter: (name, options) => meter.createCounter(name, options),
    createObservableGauge: (name, options) => meter.createObservableGauge(name, options),
    createObservableCounter: (name, options) => meter.createObservableCounter(name, options),
    createObservableUpDownCounter: (name, options) => meter.createObservableUpDownCounter(name, options),
    addBatchObservableCallback: (callback: MetricsBatchCallback, observables: MetricsObservable[]) => {
      registered.add(callback);
      meter.addBatchObservableCallback(callback, observables);
    },
    removeBatchObservableCallback: (callback: MetricsBatchCallback, observables: MetricsObservable[]) => {
      registered.delete(callback);
      meter.removeBatchObservableCallback(callback, observables);
    },
  };
  return { meter: counting, registered };
}

describe('createDevice({ metrics })', () => {
  test('{ meter }: the device observes its state and outbox; stop() counts the in-memory drops and leaves the Meter', async () => {
    const clock = new SimulatedClock();
    clock.set(T0);
    const reader = new TestReader({ aggregationTemporalitySelector: () => AggregationTemporality.DELTA });
    const counting = countingMeter(new MeterProvider({ readers: [reader] }).getMeter('app'));
    const device = createDevice(deviceOptions({ clock, metrics: { meter: counting.meter } }));
    await device.sendTelemetry({ t: 1 });
    await device.sendTelemetry({ t: 2 });
    clock.increment(2500);
    const before = await collect(reader);
    expect(valueOf(before, INSTRUMENT.state, { [ATTRIBUTE.state]: 'Idle' })).toBe(1);
    expect(valueOf(before, INSTRUMENT.outboxCount)).toBe(2);
    expect(valueOf(before, INSTRUMENT.oldestAge)).toBe(2.5);
    expect(counting.registered.size).toBe(1);
    await device.stop();
    expect(counting.registered.size).toBe(0);
    const after = await collect(reader);
    expect(valueOf(after, INSTRUMENT.dropped, { [ATTRIBUTE.dropReason]: 'stopped' })).toBe(2);
    expect(after.has(INSTRUMENT.state)).toBe(false);
  });

  test('stop() while Connecting (a hub that accepts the socket and never answers) leaves the Meter too', async () => {
    const sockets = new Set<Socket>();
    const silentHub = createServer((socket) => sockets.add(socket));
    await new Promise<void>((resolve) => silentHub.listen(0, '127.0.0.1', resolve));
    const hubHost = `localhost:${(silentHub.address() as AddressInfo).port}`;
    try {
      const reader = new TestReader({ aggregationTemporalitySelector: () => AggregationTemporality.DELTA });
      const counting = countingMeter(new MeterProvider({ readers: [reader] }).getMeter('app'));
      const device = createDevice(deviceOptions({ cache: new MemoryProvisioningCache({ hubHost, deviceId: DEVICE, assignedAt: 1 }), metrics: { meter: counting.meter } }));
      device.start();
      for (let waited = 0; device.state() !== 'Connecting' || sockets.size === 0; waited += 10) {
        if (waited > 10_000) throw new Error(`never connecting (now ${device.state()})`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(valueOf(await collect(reader), INSTRUMENT.state, { [ATTRIBUTE.state]: 'Connecting' })).toBe(1);
      expect(counting.registered.size).toBe(1);
      await device.stop();
      expect(counting.registered.size).toBe(0);
      expect((await collect(reader)).has(INSTRUMENT.state)).toBe(false);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silentHub.close(resolve));
    }
  });

  test('1,000 devices created and stopped leave no callback on the Meter, and one set of instruments', async () => {
    const reader = new TestReader({ aggregationTemporalitySelector: () => AggregationTemporality.DELTA });
    const provider = new MeterProvider({ readers: [reader] });
    const counting = countingMeter(provider.getMeter('fleet'));
    let created = 0;
    const create = counting.meter.createCounter;
    counting.meter.createCounter = (name, options) => {
      created++;
      return create(name, options);
    };
    for (let n = 0; n < 1000; n++) {
      const device = createDevice(deviceOptions({ registrationId: `cycle-${n}`, metrics: { meter: counting.meter } }));
      expect(counting.registered.size).toBe(1);
      await device.stop();
    }
    expect(counting.registered.size).toBe(0);
    expect(created).toBe(8); // the eight counters, once for the Meter, not once per device
    const collected = await collect(reader);
    expect([...collected.keys()].filter((name) => kindOf(collected.get(name)!.metric) !== InstrumentType.COUNTER)).toEqual([]);
  }, 60_000);

  test('metrics: true: the global MeterProvider’s Meter, scope hubstate with the package version', async () => {
    const reader = new TestReader();
    const provider = new MeterProvider({ readers: [reader] });
    expect(otelMetrics.setGlobalMeterProvider(provider)).toBe(true);
    try {
      const device = createDevice(deviceOptions({ metrics: true }));
      const { resourceMetrics } = await reader.collect();
      const scopes = resourceMetrics.scopeMetrics.map((s) => s.scope);
      const { version } = JSON.parse(readFileSync(join(__dirname, '../../package.json'), 'utf8')) as { version: string };
      expect(scopes).toEqual([expect.objectContaining({ name: METER_NAME, version })]);
      await device.stop();
    } finally {
      otelMetrics.disable();
    }
  });

  test.each<[string, unknown, string]>([
    ['a string', 'yes', 'metrics'],
    ['null', null, 'metrics'],
    ['an array', [], 'metrics'],
    ['an object without a meter', {}, 'metrics.meter'],
    ['a meter that is not one', { meter: { createCounter() {} } }, 'metrics.meter'],
    ['a null meter', { meter: null }, 'metrics.meter'],
    ['an unknown key', { meter: new MeterProvider().getMeter('x'), exporter: 'otlp' }, 'metrics.exporter'],
  ])('%s: ConfigError', (_what, metrics, field) => {
    let caught: unknown;
    try {
      createDevice(deviceOptions({ metrics: metrics as DeviceOptions['metrics'] }));
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).field).toBe(field);
  });
});

describe('@opentelemetry/api is loaded only when metrics are asked for', () => {
  /** In a fresh module registry: whether requiring hubstate and creating a device with `metrics` loaded the API. */
  function apiLoaded(metrics: DeviceOptions['metrics'] | 'module only', api: () => unknown = () => jest.requireActual('@opentelemetry/api')): { loaded: boolean; error?: unknown } {
    let loaded = false;
    let error: unknown;
    jest.isolateModules(() => {
      jest.doMock('@opentelemetry/api', () => {
        loaded = true;
        return api();
      });
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const hubstate = require('../../src/index') as typeof import('../../src/index');
      if (metrics === 'module only') return;
      try {
        const device = hubstate.createDevice(deviceOptions(metrics === undefined ? {} : { metrics }));
        void device.stop();
      } catch (caught) {
        error = caught;
      }
    });
    jest.dontMock('@opentelemetry/api');
    return { loaded, error };
  }

  test('require(hubstate), and a device without metrics or with metrics: false, never load it; metrics: true does', () => {
    expect(apiLoaded('module only')).toEqual({ loaded: false, error: undefined });
    expect(apiLoaded(undefined)).toEqual({ loaded: false, error: undefined });
    expect(apiLoaded(false)).toEqual({ loaded: false, error: undefined });
    expect(apiLoaded({ meter: new MeterProvider().getMeter('x') })).toEqual({ loaded: false, error: undefined });
    expect(apiLoaded(true)).toEqual({ loaded: true, error: undefined });
  });

  test('metrics: true without @opentelemetry/api installed: ConfigError at createDevice, naming the package', () => {
    const { error } = apiLoaded(true, () => {
      throw Object.assign(new Error("Cannot find module '@opentelemetry/api'"), { code: 'MODULE_NOT_FOUND' });
    });
    // (a fresh registry: its own ConfigError class)
    expect(error).toMatchObject({ name: 'ConfigError', field: 'metrics', message: expect.stringContaining("'@opentelemetry/api'") });
    expect((error as Error).message).toContain('npm install @opentelemetry/api');
  });
});
