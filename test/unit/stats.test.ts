/**
 * Issue 16, "The device reports on itself": the figures of `device.stats()` (StatsCollector, fed
 * transitions and outbox callbacks as the device feeds them), the recommended-action table, the
 * coalescing of the `resilience` component's reports (one at each connection, at most one per
 * interval, none when opted out), the option's validation, and the DTDL interface naming exactly
 * the properties reported. Simulated clock throughout.
 */
import pino from 'pino';
import { SimulatedClock } from 'xstate';
import model from '../../examples/dtmi-hubstate-resilience-1.json';
import exampleModel from '../../examples/dtmi-sample-failover-1.json';
import { createDevice } from '../../src/device';
import { ConfigError } from '../../src/errors';
import { OPTION_BOUNDS, resolveOptions, type DeviceOptions } from '../../src/options';
import { ReportedQueue } from '../../src/pnp/reported';
import { eventFigures, RESILIENCE_INTERFACE_ID, RECONNECTION_REPORT_GAP_MS, RESILIENCE_REFRESH_MS, ResilienceReporter, resiliencePatch, type ResilienceSettings } from '../../src/pnp/resilience';
import { ACTION_BY_CLASS, ACTION_BY_RULE, MAX_RULE_KEYS, recommendedAction, saturatingIncrement, StatsCollector, type DeviceStats } from '../../src/stats';
import { CLASSIFICATION_TABLE } from '../../src/policy/classify';
import { MemoryProvisioningCache } from '../../src/store/cache';
import { MemoryOutbox } from '../../src/store/outbox';
import { failure, message, statsDriver, T0 } from '../support/stats-driver';

const silent = pino({ level: 'silent' });
/** A collector driven as the device drives it: state by state, on a simulated clock. */
const harness = statsDriver;

describe('StatsCollector: the figures', () => {
  test('nothing yet: zeros, no since, no error, action none', () => {
    const { stats } = harness();
    expect(stats.snapshot()).toEqual<DeviceStats>({
      since: null,
      at: T0,
      connects: 0,
      disconnects: { total: 0, byClass: {}, byRule: {} },
      hubChanges: 0,
      hubHost: null,
      dps: { registrations: 0, statusLookups: 0 },
      connected: { ms: 0, percent: 0 },
      outbox: { depth: 0, maxDepth: 0, bytes: 0, oldestAgeMs: null },
      messages: { delivered: 0, resent: 0, dropped: 0, droppedByReason: {}, sinceLastDeliveredMs: null },
      lastError: null,
      recommendedAction: 'none',
    });
  });

  test('connects, disconnects by class and rule, hub changes, DPS calls and time connected', () => {
    const { clock, stats, go, lose } = harness();
    stats.started();
    go('Provisioning', null, 'START');
    clock.increment(1000);
    go('Connecting');
    go('Connected', 'hub-a');
    clock.increment(9000); // 9 s connected of 10
    lose('transient', 'socket-reset');
    expect(stats.snapshot()).toMatchObject({ connected: { ms: 9000, percent: 90 }, recommendedAction: 'wait' });
    clock.increment(5000);
    go('Connecting');
    go('Connected', 'hub-a'); // same hub: not a change
    clock.increment(5000);
    lose('transient', 'socket-reset', 'CheckingAssignment');
    go('Reprovisioning');
    go('Connecting', 'hub-b');
    go('Connected', 'hub-b'); // failover
    clock.increment(1000);
    lose('throttled', 'hub-throttled');
    const snapshot = stats.snapshot();
    expect(snapshot).toMatchObject({
      since: T0,
      connects: 3,
      disconnects: { total: 3, byClass: { transient: 2, throttled: 1 }, byRule: { 'socket-reset': 2, 'hub-throttled': 1 } },
      hubChanges: 1,
      hubHost: 'hub-b',
      dps: { registrations: 2, statusLookups: 1 },
      connected: { ms: 15_000, percent: 71.43 }, // 15 s of 21
      lastError: { errorClass: 'throttled', rule: 'hub-throttled', phase: 'hub-session', at: T0 + 21_000 },
      recommendedAction: 'wait',
    });
    // Connected again: the error is history, nothing to do; the time connected runs on.
    go('Connecting');
    go('Connected', 'hub-b');
    clock.increment(7000);
    expect(stats.snapshot()).toMatchObject({ connected: { ms: 22_000, percent: 78.57 }, recommendedAction: 'none', lastError: { rule: 'hub-throttled' } });
  });

  test('stop() closing the connection is not a disconnect', () => {
    const { stats, go } = harness();
    stats.started();
    go('Connecting');
    go('Connected');
    go('Disconnecting', 'hub-a', 'STOP');
    go('Stopped', 'hub-a', 'xstate.done.actor.closeHub');
    expect(stats.snapshot().disconnects.total).toBe(0);
  });

  test('NTP stepping the wall clock moves the dates (since, lastError.at), never the durations (connected ms and percent, since last delivery)', () => {
    const monotonic = new SimulatedClock();
    monotonic.set(T0);
    let stepMs = 0;
    // The device's clock: wall time over a monotonic one a step does not move.
    const clock = { now: () => monotonic.now() + stepMs, monotonicNow: () => monotonic.now(), setTimeout: monotonic.setTimeout.bind(monotonic), clearTimeout: monotonic.clearTimeout.bind(monotonic) };
    const stats = new StatsCollector(clock, new MemoryOutbox());
    stats.started();
    stats.transition({ value: 'Connecting', previous: 'Idle', event: 'START', hubHost: 'hub-a', lastError: null });
    stats.transition({ value: 'Connected', previous: 'Connecting', event: 'xstate.done.actor', hubHost: 'hub-a', lastError: null });
    monotonic.increment(10_000);
    stats.delivered();
    const lost = failure('transient', 'socket-reset', monotonic.now());
    stats.transition({ value: 'BackingOff', previous: 'Connected', event: 'HUB_LOST', hubHost: 'hub-a', lastError: lost });
    stepMs = -6 * 3_600_000; // the RTC's local time corrected to UTC
    monotonic.increment(10_000);
    const snapshot = stats.snapshot();
    expect(snapshot.connected).toEqual({ ms: 10_000, percent: 50 });
    expect(snapshot.messages.sinceLastDeliveredMs).toBe(10_000);
    expect(snapshot.at).toBe(T0 + 20_000 - 6 * 3_600_000);
    expect(snapshot.since).toBe(T0 - 6 * 3_600_000);
    expect(snapshot.lastError?.at).toBe(T0 + 10_000 - 6 * 3_600_000);
  });

  test('outbox depth, maximum depth, bytes and the oldest message’s age', () => {
    const { clock, outbox, stats } = harness();
    outbox.add(message('m1', T0));
    clock.increment(2000);
    outbox.add(message('m2', T0 + 2000));
    outbox.add(message('m3', T0 + 2000));
    outbox.remove('m1');
    outbox.remove('m2');
    clock.increment(500);
    expect(stats.snapshot().outbox).toEqual({ depth: 1, maxDepth: 3, bytes: 10, oldestAgeMs: 500 });
  });

  test('delivered, resent (published again before its PUBACK), dropped by reason, time since the last delivery', () => {
    const { clock, outbox, stats } = harness();
    const [a, b] = ['a', 'b', 'c'].map((id) => outbox.add(message(id, T0)));
    stats.published(a!.seq);
    stats.published(b!.seq);
    // The connection ended before b's PUBACK: the next one publishes from b again.
    stats.published(b!.seq);
    stats.delivered();
    outbox.remove('a');
    clock.increment(3000);
    stats.delivered();
    outbox.remove('b');
    outbox.drop('c', 'unsendable', 'too big');
    clock.increment(4000);
    expect(stats.snapshot().messages).toEqual({
      delivered: 2,
      resent: 1,
      dropped: 1,
      droppedByReason: { unsendable: 1 },
      sinceLastDeliveredMs: 4000,
    });
    // A message captured later is no resend, even one with a delivered message's id.
    stats.published(outbox.add(message('b', T0)).seq);
    expect(stats.snapshot().messages.resent).toBe(1);
  });

  test('bounded: counters saturate at Number.MAX_SAFE_INTEGER, rules beyond MAX_RULE_KEYS count as other', () => {
    const { stats, go, lose } = harness();
    for (let i = 0; i < MAX_RULE_KEYS + 10; i++) {
      go('Connected');
      lose('transient', `rule-${i}`);
    }
    const { byRule, total } = stats.snapshot().disconnects;
    expect(Object.keys(byRule)).toHaveLength(MAX_RULE_KEYS);
    expect(byRule.other).toBe(11);
    expect(total).toBe(MAX_RULE_KEYS + 10);
    // Saturation, without walking 2^53 steps: the increment every counter uses.
    expect(saturatingIncrement(41)).toBe(42);
    expect(saturatingIncrement(Number.MAX_SAFE_INTEGER - 1)).toBe(Number.MAX_SAFE_INTEGER);
    expect(saturatingIncrement(Number.MAX_SAFE_INTEGER)).toBe(Number.MAX_SAFE_INTEGER);
  });
});

describe('recommended action: one table', () => {
  test('every class has an action; the rules that differ from their class are named', () => {
    expect(ACTION_BY_CLASS).toEqual({ transient: 'wait', throttled: 'wait', reprovision: 'wait', parked: 'check-registration', fatal: 'call-retry' });
    expect(ACTION_BY_RULE).toEqual({
      'device-certificate-expired': 'check-credentials',
      'tls-certificate-time': 'check-clock',
      'tls-certificate': 'check-configuration',
      'config-error': 'check-configuration',
      'dps-bad-request': 'check-configuration',
      'dps-connack-rejected': 'check-credentials',
      'dps-unauthorized': 'check-credentials',
      'dps-forbidden': 'check-registration',
      'dps-not-found': 'check-registration',
      'registration-failed': 'check-registration',
    });
  });

  test('every rule of the table is a rule of the classifier', () => {
    const rules = new Set(CLASSIFICATION_TABLE.map((row) => row.rule));
    for (const rule of Object.keys(ACTION_BY_RULE)) expect(rules).toContain(rule);
  });

  test.each([
    [null, 'none'],
    [{ errorClass: 'transient', rule: 'socket-reset' }, 'wait'],
    [{ errorClass: 'reprovision', rule: 'hub-unauthorized' }, 'wait'],
    [{ errorClass: 'parked', rule: 'registration-disabled' }, 'check-registration'],
    [{ errorClass: 'parked', rule: 'device-certificate-expired' }, 'check-credentials'],
    [{ errorClass: 'parked', rule: 'tls-certificate-time' }, 'check-clock'],
    [{ errorClass: 'fatal', rule: 'dps-unauthorized' }, 'check-credentials'],
    [{ errorClass: 'fatal', rule: 'message-too-large' }, 'call-retry'],
    [{ errorClass: 'transient', rule: 'toString' }, 'wait'], // no prototype lookups
  ] as const)('%j → %s', (failed, action) => {
    expect(recommendedAction(failed)).toBe(action);
  });
});

describe('the resilience component: coalesced reports', () => {
  function reporter(settings: Partial<ResilienceSettings> = {}) {
    const clock = new SimulatedClock();
    clock.set(T0);
    const queue = new ReportedQueue(silent);
    const patches: Array<{ component: string; patch: Record<string, unknown> }> = [];
    const events: DeviceStats[] = [];
    const collector = new StatsCollector(clock, new MemoryOutbox());
    collector.started();
    const resilience = new ResilienceReporter({
      clock,
      logger: silent,
      settings: { report: true, component: 'resilience', intervalMs: 60_000, ...settings },
      read: () => collector.snapshot(),
      emit: (stats) => events.push(stats),
      queue: (patch, component) => {
        patches.push({ component, patch });
        queue.set(patch, component);
      },
    });
    return { clock, queue, patches, events, resilience, collector };
  }

  test('one patch at the connection; then, once per interval, one only if something happened', () => {
    const { clock, patches, events, resilience, queue, collector } = reporter();
    resilience.connected();
    expect(patches).toHaveLength(1);
    expect(patches[0]!.component).toBe('resilience');
    // Time passes, messages are delivered: nothing an operator needs from the twin. No patch
    // (each is a billed twin update), but the stats event every interval.
    collector.delivered();
    clock.increment(60_000);
    expect(patches).toHaveLength(1);
    expect(events).toHaveLength(2);
    // A message is dropped: reported at the next interval, not before.
    collector.dropped({ messageId: 'm-1', reason: 'expired' });
    clock.increment(59_999);
    expect(patches).toHaveLength(1);
    clock.increment(1);
    expect(patches).toHaveLength(2);
    expect(patches[1]!.patch).toMatchObject({ dropped: 1, droppedByReason: { expired: 1 }, delivered: 1 });
    // SimulatedClock fires the timers due when it is advanced, not those they set meanwhile: step.
    for (let i = 0; i < 3; i++) clock.increment(60_000);
    expect(patches).toHaveLength(2);
    // A resend (a message published again) is news too.
    collector.published(1);
    collector.published(1);
    clock.increment(60_000);
    expect(patches).toHaveLength(3);
    expect(patches[2]!.patch).toMatchObject({ resent: 1 });
    expect(events).toHaveLength(7);
    // The queue holds one value per property (the latest), under the component.
    expect(queue.take()!.patch).toEqual({ resilience: { __t: 'c', ...patches[2]!.patch } });
  });

  test('a day connected with nothing happening: one twin update (the connection’s), then one a day; a stats event every minute', () => {
    const { clock, patches, events, resilience, collector } = reporter();
    resilience.connected();
    for (let minute = 1; minute < 24 * 60; minute++) {
      // Messages go and are acknowledged all day: deliveries are not news.
      collector.delivered();
      clock.increment(60_000);
    }
    expect(patches).toHaveLength(1);
    // A day after the last report, the figures at the cloud are refreshed once, news or not.
    collector.delivered();
    clock.increment(60_000);
    expect(patches).toHaveLength(2);
    expect(patches[1]!.patch).toMatchObject({ delivered: 24 * 60 });
    expect(24 * 60 * 60_000).toBe(RESILIENCE_REFRESH_MS);
    expect(events).toHaveLength(1 + 24 * 60);
    for (let minute = 1; minute < 24 * 60; minute++) clock.increment(60_000);
    expect(patches).toHaveLength(2);
  });

  test('the figures that make a report news: each one alone changes them, time and deliveries do not', () => {
    const { clock, collector } = reporter();
    const before = eventFigures(collector.snapshot());
    collector.delivered();
    collector.added();
    clock.increment(3_600_000);
    expect(eventFigures(collector.snapshot())).toBe(before);
    const base = collector.snapshot();
    const changed: Array<Partial<DeviceStats>> = [
      { connects: base.connects + 1 },
      { disconnects: { ...base.disconnects, total: base.disconnects.total + 1 } },
      { hubChanges: base.hubChanges + 1 },
      { hubHost: 'hub-b.example' },
      { dps: { ...base.dps, registrations: base.dps.registrations + 1 } },
      { dps: { ...base.dps, statusLookups: base.dps.statusLookups + 1 } },
      { messages: { ...base.messages, resent: base.messages.resent + 1 } },
      { messages: { ...base.messages, dropped: base.messages.dropped + 1 } },
      { outbox: { ...base.outbox, maxDepth: base.outbox.maxDepth + 1 } },
      { lastError: { errorClass: 'transient', rule: 'econnreset', phase: 'hub-session', message: 'x', at: 1 } },
      { recommendedAction: 'check-clock' },
      // Delivery stalling: the oldest message has waited a minute.
      { outbox: { ...base.outbox, depth: 1, oldestAgeMs: 60_000 } },
    ];
    for (const change of changed) expect(eventFigures({ ...base, ...change })).not.toBe(eventFigures(base));
    // Another class, rule, phase or message is a new error; the same error's date is not news:
    // shown on the wall clock, it moves when NTP steps it.
    const failed = { ...base, lastError: { errorClass: 'transient' as const, rule: 'econnreset', phase: 'hub-session' as const, message: 'x', at: 1 } };
    for (const other of [{ errorClass: 'throttled' as const }, { rule: 'etimedout' }, { phase: 'hub-connect' as const }, { message: 'y' }]) {
      expect(eventFigures({ ...failed, lastError: { ...failed.lastError, ...other } })).not.toBe(eventFigures(failed));
    }
    expect(eventFigures({ ...failed, lastError: { ...failed.lastError, at: 1 + 3_600_000 } })).toBe(eventFigures(failed));
    // The oldest message's wait is news only when it crosses a minute, 10 minutes, an hour (either way).
    const waited = (oldestAgeMs: number | null) => eventFigures({ ...base, outbox: { ...base.outbox, depth: oldestAgeMs === null ? 0 : 1, oldestAgeMs } });
    expect(waited(59_999)).toBe(waited(null));
    expect(waited(599_999)).toBe(waited(60_000));
    expect(waited(3_599_999)).toBe(waited(600_000));
    expect(waited(86_400_000)).toBe(waited(3_600_000));
    expect(new Set([waited(null), waited(60_000), waited(600_000), waited(3_600_000)]).size).toBe(4);
  });

  /** The device's transitions into and out of Connected, as device.ts feeds them to both. */
  function connection(collector: StatsCollector, resilience: ResilienceReporter) {
    return {
      connect(hubHost: string) {
        collector.transition({ value: 'Connected', previous: 'Connecting', event: 'xstate.done.actor.openHub', hubHost, lastError: null });
        resilience.connected();
      },
      drop(hubHost: string) {
        collector.transition({ value: 'BackingOff', previous: 'Connected', event: 'HUB_LOST', hubHost, lastError: null });
        resilience.disconnected();
      },
    };
  }

  test('none between connections; at a connection to another hub at once; to the same hub once it lasts an interval; the interval restarts from each connection', () => {
    const { clock, patches, resilience, collector, events } = reporter({ intervalMs: 10_000 });
    const hub = connection(collector, resilience);
    hub.connect('hub-a');
    expect(patches).toHaveLength(1);
    clock.increment(4000);
    hub.drop('hub-a');
    collector.dropped({ messageId: 'm-1', reason: 'outbox-full' });
    clock.increment(60_000);
    expect(patches).toHaveLength(1);
    // Back on the same hub: not yet (a session that dies at once must not cost a report each time).
    hub.connect('hub-a');
    expect(patches).toHaveLength(1);
    expect(events).toHaveLength(2); // the stats event goes at every connection
    // Restarted from the connection: the interval reports the reconnection and the drop.
    clock.increment(9999);
    expect(patches).toHaveLength(1);
    clock.increment(1);
    expect(patches).toHaveLength(2);
    expect(patches[1]!.patch).toMatchObject({ connects: 2, dropped: 1, hubHost: 'hub-a' });
    // Another hub: at once, even with nothing new since (its twin may be stale or empty).
    hub.drop('hub-a');
    hub.connect('hub-b');
    expect(patches).toHaveLength(3);
    expect(patches[2]!.patch).toMatchObject({ hubHost: 'hub-b', hubChanges: 1 });
    collector.dropped({ messageId: 'm-3', reason: 'outbox-full' });
    resilience.stop();
    clock.increment(100_000);
    expect(patches).toHaveLength(3);
  });

  test.each([60_000, 3_600_000, 86_400_000])('intervalMs %i: a reconnection to the same hub that lasts is reported within the interval, and 15 min after the last report at the latest', (intervalMs) => {
    const { clock, patches, resilience, collector } = reporter({ intervalMs });
    const hub = connection(collector, resilience);
    hub.connect('hub-a');
    clock.increment(4 * 60_000);
    hub.drop('hub-a');
    clock.increment(5 * 60_000);
    hub.connect('hub-a');
    expect(patches).toHaveLength(1);
    // Reported at the first tick: the interval, or what is left of the 15 min since the last report (6 min).
    const dueMs = Math.min(intervalMs, RECONNECTION_REPORT_GAP_MS - 9 * 60_000);
    clock.increment(dueMs - 1);
    expect(patches).toHaveLength(1);
    clock.increment(1);
    expect(patches).toHaveLength(2);
    expect(patches[1]!.patch).toMatchObject({ connects: 2 });
  });

  test('a hub that accepts every connection and drops it at once, for a day (every ~75 s): a report at most every 15 min, not one per reconnection', () => {
    const { clock, patches, resilience, collector } = reporter();
    const hub = connection(collector, resilience);
    const DAY_MS = 86_400_000;
    let reconnections = 0;
    const reportedAt: number[] = [];
    for (let elapsed = 0; elapsed < DAY_MS; elapsed += 75_000) {
      const before = patches.length;
      hub.connect('hub-a');
      if (patches.length > before) reportedAt.push(elapsed);
      clock.increment(1000);
      hub.drop('hub-a');
      clock.increment(74_000);
      reconnections++;
    }
    expect(reconnections).toBe(1152);
    expect(RECONNECTION_REPORT_GAP_MS).toBe(15 * 60_000);
    expect(patches.length).toBeLessThanOrEqual(DAY_MS / RECONNECTION_REPORT_GAP_MS + 1);
    // Still reported all day: the operator sees the flapping within 15 min (+ one reconnection).
    const gaps = reportedAt.slice(1).map((at, i) => at - reportedAt[i]!);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(RECONNECTION_REPORT_GAP_MS + 75_000);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(RECONNECTION_REPORT_GAP_MS);
    expect(patches.at(-1)!.patch).toMatchObject({ connects: expect.any(Number) });
    expect((patches.at(-1)!.patch as { connects: number }).connects).toBeGreaterThan(1100);
  });

  test('opted out: no patch ever, the stats event on the same schedule', () => {
    const { clock, patches, events, resilience, queue } = reporter({ report: false });
    resilience.connected();
    clock.increment(60_000);
    clock.increment(60_000);
    expect(patches).toHaveLength(0);
    expect(queue.size).toBe(0);
    expect(events).toHaveLength(3);
  });

  test('the patch: every property of dtmi:hubstate:Resilience;1, and nothing else', () => {
    const { clock } = reporter();
    const collector = new StatsCollector(clock, new MemoryOutbox());
    const patch = resiliencePatch(collector.snapshot());
    expect(model['@id']).toBe(RESILIENCE_INTERFACE_ID);
    expect(model['@context']).toBe('dtmi:dtdl:context;2');
    expect(model['@type']).toBe('Interface');
    const properties = model.contents.filter((c) => c['@type'] === 'Property').map((c) => c.name);
    expect(properties).toHaveLength(model.contents.length);
    expect(Object.keys(patch).sort()).toEqual([...properties].sort());
    for (const item of model.contents) {
      expect(item['@id']).toBe(`dtmi:hubstate:Resilience:${item.name};1`);
      expect(item.writable).toBe(false);
      // A DTDL name: a letter, then letters, digits and underscores (at most 64).
      expect(item.name).toMatch(/^[A-Za-z](?:[A-Za-z0-9_]{0,62}[A-Za-z0-9])?$/);
    }
    const action = model.contents.find((c) => c.name === 'recommendedAction')!.schema as { enumValues: Array<{ enumValue: string }> };
    expect(action.enumValues.map((v) => v.enumValue).sort()).toEqual([...new Set([...Object.values(ACTION_BY_CLASS), ...Object.values(ACTION_BY_RULE), 'none'])].sort());
  });

  test('the example device’s model declares the component', () => {
    expect(exampleModel.contents).toContainEqual(expect.objectContaining({ '@type': 'Component', name: 'resilience', schema: RESILIENCE_INTERFACE_ID }));
  });
});

describe('the resilience option', () => {
  const base: DeviceOptions = { idScope: '0ne00AAA111', registrationId: 'stats-1', deviceKey: Buffer.alloc(32, 3).toString('base64') };
  const configError = (resilience: unknown): ConfigError => {
    try {
      resolveOptions({ ...base, resilience: resilience as DeviceOptions['resilience'] });
    } catch (error) {
      return error as ConfigError;
    }
    throw new Error('accepted');
  };

  test('defaults, false, and each setting', () => {
    expect(resolveOptions(base).resilience).toEqual({ report: true, component: 'resilience', intervalMs: 60_000 });
    expect(resolveOptions({ ...base, resilience: false }).resilience).toEqual({ report: false, component: 'resilience', intervalMs: 60_000 });
    expect(resolveOptions({ ...base, resilience: { report: false, component: 'health', intervalMs: 1000 } }).resilience).toEqual({
      report: false,
      component: 'health',
      intervalMs: 1000,
    });
    expect(resolveOptions({ ...base, resilience: { intervalMs: OPTION_BOUNDS['resilience.intervalMs'].max } }).resilience.intervalMs).toBe(86_400_000);
  });

  test.each([
    ['true', true, 'resilience'],
    ['a string', 'yes', 'resilience'],
    ['null', null, 'resilience'],
    ['an unknown key', { interval: 5000 }, 'resilience.interval'],
    ['report not a boolean', { report: 'no' }, 'resilience.report'],
    ['a component that is no DTDL name', { component: 'my component' }, 'resilience.component'],
    ['a component of 65 characters', { component: 'c'.repeat(65) }, 'resilience.component'],
    ['an interval below a second', { intervalMs: 999 }, 'resilience.intervalMs'],
    ['an interval over a day', { intervalMs: 86_400_001 }, 'resilience.intervalMs'],
    ['an interval of NaN', { intervalMs: NaN }, 'resilience.intervalMs'],
    ['an interval of Infinity', { intervalMs: Infinity }, 'resilience.intervalMs'],
  ])('%s: ConfigError', (_what, resilience, field) => {
    const error = configError(resilience);
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.field).toBe(field);
  });
});

describe('device.stats() on a device', () => {
  test('counts from start() on the device’s clock; a refused hub is a failure to wait out; the event is typed', async () => {
    const clock = new SimulatedClock();
    clock.set(T0);
    const device = createDevice({
      idScope: '0ne00AAA111',
      registrationId: 'stats-device',
      deviceKey: Buffer.alloc(32, 3).toString('base64'),
      provisioningHost: 'localhost:9',
      cache: new MemoryProvisioningCache({ hubHost: 'localhost:9', deviceId: 'stats-device', assignedAt: 1 }),
      clock,
      seed: 1,
      logger: silent,
    });
    expect(device.stats()).toMatchObject({ since: null, connects: 0 });
    const seen: DeviceStats[] = [];
    device.on('stats', (stats) => seen.push(stats));
    clock.increment(5000);
    device.start();
    await new Promise<void>((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error(`still ${device.state()}`)), 20_000);
      device.on('state', (change) => {
        if (change.value === 'BackingOff') {
          clearTimeout(deadline);
          resolve();
        }
      });
    });
    expect(device.stats()).toMatchObject({
      since: T0 + 5000,
      connects: 0,
      disconnects: { total: 0 },
      lastError: { phase: 'hub-connect', errorClass: 'transient' },
      recommendedAction: 'wait',
    });
    await device.sendTelemetry({ t: 1 });
    clock.increment(1500);
    expect(device.stats().outbox).toMatchObject({ depth: 1, maxDepth: 1, oldestAgeMs: 1500 });
    await device.stop();
    expect(seen).toEqual([]); // never connected: no report, no event
  });
});
