/**
 * The device's figures (src/stats.ts) as OpenTelemetry metrics, through the application's Meter
 * (issue 16). Only the OpenTelemetry API is used, never an SDK: the application's MeterProvider
 * decides where they go. Counters are fed by the stats collector as it counts (one accounting);
 * the current figures (outbox, times, state) are observed from its snapshot at each collection,
 * with one batch callback per device, removed when the device stops.
 *
 * `metrics: true` loads `@opentelemetry/api` (an optional peer dependency) at createDevice, and
 * only then: a device without metrics never loads it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ConfigError } from './errors';
import type { DeviceStateName } from './device';
import type { DroppedMessage } from './store/outbox';
import type { ErrorClass } from './policy/types';
import type { DeviceStats, RecommendedAction, StatsCountListener } from './stats';
import type { PartLogger } from './logger';

/** Attributes of one measurement (a subset of @opentelemetry/api's MetricAttributes). */
export type MetricsAttributes = Readonly<Record<string, string>>;

/** What an instrument is told about itself: @opentelemetry/api's MetricOptions, the part used here. */
export interface MetricsInstrumentOptions {
  description?: string;
  unit?: string;
}

export interface MetricsCounter {
  add(value: number, attributes?: MetricsAttributes): void;
}

/** An asynchronous instrument (ObservableGauge, ObservableCounter, ObservableUpDownCounter). */
export type MetricsObservable = object;

export interface MetricsBatchResult {
  observe(observable: MetricsObservable, value: number, attributes?: MetricsAttributes): void;
}

export type MetricsBatchCallback = (result: MetricsBatchResult) => void;

/**
 * The part of an OpenTelemetry `Meter` (@opentelemetry/api 1.x) the device uses, written out so
 * that the device library's types do not need the optional peer: a Meter from any 1.x API is one.
 */
export interface MetricsMeter {
  createCounter(name: string, options?: MetricsInstrumentOptions): MetricsCounter;
  createObservableGauge(name: string, options?: MetricsInstrumentOptions): MetricsObservable;
  createObservableCounter(name: string, options?: MetricsInstrumentOptions): MetricsObservable;
  createObservableUpDownCounter(name: string, options?: MetricsInstrumentOptions): MetricsObservable;
  addBatchObservableCallback(callback: MetricsBatchCallback, observables: MetricsObservable[]): void;
  removeBatchObservableCallback(callback: MetricsBatchCallback, observables: MetricsObservable[]): void;
}

/** The Meter's methods the option is checked for. */
export const METER_METHODS = [
  'createCounter',
  'createObservableGauge',
  'createObservableCounter',
  'createObservableUpDownCounter',
  'addBatchObservableCallback',
  'removeBatchObservableCallback',
] as const satisfies ReadonlyArray<keyof MetricsMeter>;

/** The instrumentation scope name (`metrics.getMeter(METER_NAME, version)` with `metrics: true`). */
export const METER_NAME = 'hubstate';

/** Attribute names: the device's own, and `error.type` of the OpenTelemetry registry for the error class. */
export const ATTRIBUTE = {
  deviceId: 'hubstate.device.id',
  errorClass: 'error.type',
  rule: 'hubstate.error.rule',
  dropReason: 'hubstate.drop.reason',
  state: 'hubstate.device.state',
  action: 'hubstate.recommended_action',
} as const;

/** Instrument names (OpenTelemetry semantic-convention style: dotted, lowercase, units apart). */
export const INSTRUMENT = {
  connections: 'hubstate.hub.connections',
  disconnections: 'hubstate.hub.disconnections',
  hubChanges: 'hubstate.hub.changes',
  registrations: 'hubstate.dps.registrations',
  statusLookups: 'hubstate.dps.status_lookups',
  delivered: 'hubstate.telemetry.delivered.messages',
  resent: 'hubstate.telemetry.resent.messages',
  dropped: 'hubstate.telemetry.dropped.messages',
  outboxCount: 'hubstate.outbox.message.count',
  outboxMaxCount: 'hubstate.outbox.message.max_count',
  outboxSize: 'hubstate.outbox.size',
  oldestAge: 'hubstate.outbox.oldest_message.age',
  connectedTime: 'hubstate.hub.connected.time',
  connectedRatio: 'hubstate.hub.connected.ratio',
  lastDeliveryAge: 'hubstate.telemetry.last_delivery.age',
  // Not named as its attribute (hubstate.device.state): metric and attribute names share one namespace.
  state: 'hubstate.device.status',
  action: 'hubstate.device.recommended_action',
} as const;

/** Every state, so the state gauge reports 0 for the others (a cumulative exporter repeats what it last saw). */
export const DEVICE_STATES = [
  'Idle',
  'Provisioning',
  'Connecting',
  'Connected',
  'BackingOff',
  'CheckingAssignment',
  'Reprovisioning',
  'Disconnecting',
  'Stopped',
  'Failed',
] as const satisfies readonly DeviceStateName[];

export const RECOMMENDED_ACTIONS = [
  'none',
  'wait',
  'check-credentials',
  'check-clock',
  'check-registration',
  'check-configuration',
  'call-retry',
] as const satisfies readonly RecommendedAction[];

// Compile-time: a state or action added elsewhere must be added to the lists above.
type Missing<All, Listed> = [Exclude<All, Listed>] extends [never] ? true : Exclude<All, Listed>;
const everyState: Missing<DeviceStateName, (typeof DEVICE_STATES)[number]> = true;
const everyAction: Missing<RecommendedAction, (typeof RECOMMENDED_ACTIONS)[number]> = true;
void everyState;
void everyAction;

interface Instruments {
  connections: MetricsCounter;
  disconnections: MetricsCounter;
  hubChanges: MetricsCounter;
  registrations: MetricsCounter;
  statusLookups: MetricsCounter;
  delivered: MetricsCounter;
  resent: MetricsCounter;
  dropped: MetricsCounter;
  outboxCount: MetricsObservable;
  outboxMaxCount: MetricsObservable;
  outboxSize: MetricsObservable;
  oldestAge: MetricsObservable;
  connectedTime: MetricsObservable;
  connectedRatio: MetricsObservable;
  lastDeliveryAge: MetricsObservable;
  state: MetricsObservable;
  action: MetricsObservable;
  /** The observables of the batch callback. */
  observed: MetricsObservable[];
}

function createInstruments(meter: MetricsMeter): Instruments {
  const counter = (name: string, unit: string, description: string) => meter.createCounter(name, { unit, description });
  const observables = {
    // Additive across devices (a fleet's total outbox): asynchronous UpDownCounters, not gauges.
    outboxCount: meter.createObservableUpDownCounter(INSTRUMENT.outboxCount, { unit: '{message}', description: 'Telemetry messages waiting in the outbox.' }),
    outboxSize: meter.createObservableUpDownCounter(INSTRUMENT.outboxSize, { unit: 'By', description: 'Bytes of the telemetry waiting in the outbox.' }),
    outboxMaxCount: meter.createObservableGauge(INSTRUMENT.outboxMaxCount, { unit: '{message}', description: 'The deepest the outbox has been since the device started.' }),
    oldestAge: meter.createObservableGauge(INSTRUMENT.oldestAge, { unit: 's', description: 'Age of the oldest message waiting in the outbox (not observed when it is empty).' }),
    connectedTime: meter.createObservableCounter(INSTRUMENT.connectedTime, { unit: 's', description: 'Time spent connected to a hub since the device started.' }),
    connectedRatio: meter.createObservableGauge(INSTRUMENT.connectedRatio, { unit: '1', description: 'Share of the time since the device started spent connected (0 to 1).' }),
    lastDeliveryAge: meter.createObservableGauge(INSTRUMENT.lastDeliveryAge, { unit: 's', description: 'Time since the hub last acknowledged a message (not observed before the first).' }),
    state: meter.createObservableGauge(INSTRUMENT.state, { unit: '1', description: "1 for the device's current state, 0 for the others." }),
    action: meter.createObservableGauge(INSTRUMENT.action, { unit: '1', description: '1 for the action recommended now, 0 for the others.' }),
  };
  return {
    connections: counter(INSTRUMENT.connections, '{connection}', 'Hub connections accepted.'),
    disconnections: counter(INSTRUMENT.disconnections, '{disconnection}', 'Hub connections lost (not closed by stop()), by error class and classifier rule.'),
    hubChanges: counter(INSTRUMENT.hubChanges, '{change}', "Connections to another hub than the previous connection's (failovers, moves)."),
    registrations: counter(INSTRUMENT.registrations, '{registration}', 'DPS registrations attempted.'),
    statusLookups: counter(INSTRUMENT.statusLookups, '{lookup}', 'DPS registration status lookups attempted.'),
    delivered: counter(INSTRUMENT.delivered, '{message}', 'Telemetry messages acknowledged by the hub.'),
    resent: counter(INSTRUMENT.resent, '{message}', 'Telemetry messages published again after a connection ended before their acknowledgement.'),
    dropped: counter(INSTRUMENT.dropped, '{message}', 'Telemetry messages dropped, by reason.'),
    ...observables,
    observed: Object.values(observables),
  };
}

/** One set of instruments per Meter, shared by its devices (a fleet of 10,000 creates them once). */
const instrumentsByMeter = new WeakMap<MetricsMeter, Instruments>();

function instrumentsOf(meter: MetricsMeter): Instruments {
  let instruments = instrumentsByMeter.get(meter);
  if (instruments === undefined) {
    instruments = createInstruments(meter);
    instrumentsByMeter.set(meter, instruments);
  }
  return instruments;
}

type CountedEvent = Parameters<StatsCountListener['counted']>[0];

/** What the observation reads at each collection. */
export interface MetricsSource {
  stats(): DeviceStats;
  state(): DeviceStateName;
}

/**
 * One device's metrics: a StatsCountListener for the counters, and a batch callback for the rest
 * until `close()`. Every measurement carries the device's id. The Meter is the application's: a
 * call of it that throws (a broken SDK or exporter) is logged once and never reaches the device,
 * whose counts are made on its telemetry and connection paths.
 */
export class DeviceMetrics implements StatsCountListener {
  readonly #instruments: Instruments | null;
  readonly #device: MetricsAttributes;
  readonly #stateAttributes: ReadonlyMap<string, MetricsAttributes>;
  readonly #actionAttributes: ReadonlyMap<string, MetricsAttributes>;
  readonly #counters: Readonly<Record<CountedEvent, MetricsCounter>> | null;
  readonly #logger: PartLogger | undefined;
  #open = true;
  #warned = false;

  constructor(
    private readonly meter: MetricsMeter,
    deviceId: string,
    private readonly source: MetricsSource,
    logger?: PartLogger,
  ) {
    this.#logger = logger;
    // Built once: every collection observes with the same objects.
    this.#device = Object.freeze({ [ATTRIBUTE.deviceId]: deviceId });
    this.#stateAttributes = new Map(DEVICE_STATES.map((state) => [state, Object.freeze({ ...this.#device, [ATTRIBUTE.state]: state })]));
    this.#actionAttributes = new Map(RECOMMENDED_ACTIONS.map((action) => [action, Object.freeze({ ...this.#device, [ATTRIBUTE.action]: action })]));
    let instruments: Instruments | null = null;
    try {
      instruments = instrumentsOf(meter);
      meter.addBatchObservableCallback(this.#observe, instruments.observed);
    } catch (error) {
      // A Meter that cannot make the instruments: the device runs without metrics.
      instruments = null;
      this.#open = false;
      this.#failed(error);
    }
    this.#instruments = instruments;
    if (instruments === null) this.#counters = null;
    else {
      const { connections, hubChanges, registrations, statusLookups, delivered, resent } = instruments;
      this.#counters = { connects: connections, hubChanges, registrations, statusLookups, delivered, resent };
    }
  }

  counted(what: CountedEvent): void {
    const counter = this.#counters?.[what];
    if (counter) this.#guarded(() => counter.add(1, this.#device));
  }

  disconnected(errorClass: ErrorClass, rule: string): void {
    const counter = this.#instruments?.disconnections;
    if (counter) this.#guarded(() => counter.add(1, { ...this.#device, [ATTRIBUTE.errorClass]: errorClass, [ATTRIBUTE.rule]: rule }));
  }

  dropped(reason: DroppedMessage['reason']): void {
    const counter = this.#instruments?.dropped;
    if (counter) this.#guarded(() => counter.add(1, { ...this.#device, [ATTRIBUTE.dropReason]: reason }));
  }

  /** The device stopped: its figures are no longer observed (the counters stay as counted). Idempotent. */
  close(): void {
    if (!this.#open || this.#instruments === null) return;
    this.#open = false;
    const observed = this.#instruments.observed;
    this.#guarded(() => this.meter.removeBatchObservableCallback(this.#observe, observed));
  }

  #guarded(call: () => void): void {
    try {
      call();
    } catch (error) {
      this.#failed(error);
    }
  }

  /** Once per device: a Meter that throws would throw at every count. */
  #failed(error: unknown): void {
    if (this.#warned) return;
    this.#warned = true;
    this.#logger?.warn({ err: error instanceof Error ? error.message : String(error) }, 'metrics: the Meter threw; the device carries on (later metric failures are not logged)');
  }

  readonly #observe = (result: MetricsBatchResult): void => {
    const instruments = this.#instruments;
    if (instruments === null) return;
    const stats = this.source.stats();
    const state = this.source.state();
    const device = this.#device;
    result.observe(instruments.outboxCount, stats.outbox.depth, device);
    result.observe(instruments.outboxSize, stats.outbox.bytes, device);
    result.observe(instruments.outboxMaxCount, stats.outbox.maxDepth, device);
    if (stats.outbox.oldestAgeMs !== null) result.observe(instruments.oldestAge, stats.outbox.oldestAgeMs / 1000, device);
    result.observe(instruments.connectedTime, stats.connected.ms / 1000, device);
    result.observe(instruments.connectedRatio, stats.connected.percent / 100, device);
    if (stats.messages.sinceLastDeliveredMs !== null) result.observe(instruments.lastDeliveryAge, stats.messages.sinceLastDeliveredMs / 1000, device);
    for (const [name, attributes] of this.#stateAttributes) result.observe(instruments.state, name === state ? 1 : 0, attributes);
    for (const [name, attributes] of this.#actionAttributes) result.observe(instruments.action, name === stats.recommendedAction ? 1 : 0, attributes);
  };
}

/** The shape of `@opentelemetry/api` that `metrics: true` uses. */
interface OpenTelemetryApi {
  metrics: { getMeter(name: string, version?: string): MetricsMeter };
}

/** This package's version (the instrumentation scope's), from its package.json; undefined if not found. */
function packageVersion(): string | undefined {
  // This code runs from src/ (tests) or dist/hubstate.js (the package): the manifest is one folder up.
  const path = join(dirname(__dirname), 'package.json');
  if (!existsSync(path)) return undefined;
  try {
    const manifest = JSON.parse(readFileSync(path, 'utf8')) as { name?: unknown; version?: unknown };
    if (manifest.name === 'hubstate' && typeof manifest.version === 'string') return manifest.version;
  } catch {
    // not ours, or unreadable: the scope goes without a version
  }
  return undefined;
}

let loadedApi: OpenTelemetryApi | undefined;
/** Read with the API, not at module load (loading hubstate reads no file for metrics). */
let scopeVersion: string | undefined;

/**
 * `metrics: true`: the Meter of the global MeterProvider (`metrics.getMeter('hubstate', version)`),
 * loading `@opentelemetry/api` the first time. ConfigError when it is not installed. Asked at each
 * createDevice: the API hands out a no-op Meter until a global MeterProvider is registered (no
 * proxy that would pick up a later one), so register it before creating devices.
 */
export function globalHubstateMeter(): MetricsMeter {
  if (loadedApi === undefined) {
    loadedApi = loadApi();
    scopeVersion = packageVersion();
  }
  return loadedApi.metrics.getMeter(METER_NAME, scopeVersion);
}

function loadApi(): OpenTelemetryApi {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only when metrics are asked for
    return require('@opentelemetry/api') as OpenTelemetryApi;
  } catch (error) {
    const notFound = (error as { code?: unknown }).code === 'MODULE_NOT_FOUND';
    throw new ConfigError(
      'metrics',
      notFound
        ? "the package '@opentelemetry/api' (an optional peer dependency: npm install @opentelemetry/api), or { meter } from your MeterProvider"
        : `a loadable '@opentelemetry/api' (${(error as Error).message})`,
    );
  }
}
