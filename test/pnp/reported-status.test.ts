/**
 * Twin operations by the status of the hub's answer (`$iothub/twin/res/{status}`), which the SDK
 * ignores: an `errorCode` body becomes a bare Error, any other body a success.
 * - Reported PATCHes: 429/5xx keep the batch and send it again after a jittered backoff (simulated
 *   clock) without holding up the twin GET; 400/413 drop only what the hub refuses (a batch is
 *   split into one PATCH per property), with a `dropped`-style report; a writable-property
 *   acknowledgement is re-sent without its value.
 * - The twin GET: 429/5xx ask again later on the same connection (it works); other refusals end
 *   the session, for the machine to classify.
 *
 * The transport is scripted but answers like the SDK's: through its MQTT base's 'message' event,
 * with the PATCH's callback called inside it.
 */
import { EventEmitter } from 'node:events';
import { SimulatedClock } from 'xstate';
import type { HubSession } from '../../src/actors/hub';
import { createPnp, type Pnp } from '../../src/pnp';
import type { DroppedProperties } from '../../src/pnp/reported';
import { TWIN_RETRY_BASE_MS, TWIN_RETRY_MAX_MS, reportedPatchVerdict, twinResponseStatus } from '../../src/pnp/session';
import { capturingLogger } from '../e2e/harness';

type Callback = (error?: Error | null, result?: unknown) => void;

/** Answers every reported PATCH from `answers` (then 204), through `_mqtt` as the SDK's twin client does. */
class TwinTransport extends EventEmitter {
  readonly _mqtt = new EventEmitter();
  patches: Array<Record<string, unknown>> = [];
  calls: string[] = [];
  answers: Array<{ status: number; body?: string }> = [];
  /** Answers of the twin GETs (then the twin below, at once, as the SDK passes it). */
  getAnswers: Array<{ status: number; body?: string }> = [];
  private pending: Callback | undefined;
  private pendingGet: Callback | undefined;

  constructor() {
    super();
    this._mqtt.on('message', (topic: string, payload: Buffer) => {
      const isGet = topic.endsWith('$rid=get');
      const callback = isGet ? this.pendingGet : this.pending;
      if (isGet) this.pendingGet = undefined;
      else this.pending = undefined;
      const text = payload.toString();
      const parsed = text ? (JSON.parse(text) as { errorCode?: number; message?: string }) : undefined;
      if (parsed?.errorCode) callback?.(new Error(parsed.message));
      else callback?.(null, parsed);
      void topic;
    });
  }
  enableTwinDesiredPropertiesUpdates(done: Callback) {
    done(null);
  }
  enableMethods(done: Callback) {
    done(null);
  }
  enableC2D(done: Callback) {
    done(null);
  }
  getTwin(done: Callback) {
    this.calls.push('get');
    const answer = this.getAnswers.shift();
    if (answer === undefined) return done(null, { desired: { $version: 1 }, reported: { $version: 1 } });
    this.pendingGet = done;
    const text = answer.body ?? JSON.stringify({ errorCode: answer.status * 1000 + 1, message: `status ${answer.status}` });
    setImmediate(() => this._mqtt.emit('message', `$iothub/twin/res/${answer.status}/?$rid=get`, Buffer.from(text)));
  }
  updateTwinReportedProperties(patch: Record<string, unknown>, done: Callback) {
    this.calls.push('patch');
    this.patches.push(patch);
    this.pending = done;
    const { status, body } = this.answers.shift() ?? { status: 204, body: '' };
    const text = body ?? JSON.stringify({ errorCode: status * 1000 + 1, message: `status ${status}` });
    setImmediate(() => this._mqtt.emit('message', `$iothub/twin/res/${status}/?$rid=1`, Buffer.from(text)));
  }
}

async function until(predicate: () => boolean, what: string, timeoutMs = 2000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}
const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

function setup(getAnswers: TwinTransport['getAnswers'] = []) {
  const clock = new SimulatedClock();
  const lines: string[] = [];
  const pnp: Pnp = createPnp({
    clock,
    logger: capturingLogger(lines),
    commandTimeoutMs: 1000,
    propertyHandlerTimeoutMs: 1000,
    twinTimeoutMs: 60_000,
    registrationId: 'unit',
    reprovision: () => undefined,
  });
  const transport = new TwinTransport();
  transport.getAnswers = getAnswers;
  const lost = jest.fn();
  const dropped: DroppedProperties[] = [];
  pnp.reported.onDropped((d) => dropped.push(d));
  const session = { client: {} as HubSession['client'], transport: transport as unknown as HubSession['transport'], epoch: 1, deviceId: 'unit', lost } as HubSession;
  // As the hub does: the inbound part before open(), then the session.
  const detach = pnp.feature.inbound!(session);
  const stopSession = pnp.feature(session);
  const stop = () => {
    stopSession();
    detach();
  };
  /** Resolves once `n` retries have been scheduled (the answer that asked for it was read). */
  const retriesScheduled = (n: number) =>
    until(() => lines.filter((l) => l.includes('sent again later')).length === n, `${n} retries scheduled`);
  /** Resolves once `n` GET retries have been scheduled. */
  const getRetriesScheduled = (n: number) =>
    until(() => lines.filter((l) => l.includes('asking again later')).length === n, `${n} GET retries scheduled`);
  const gets = () => transport.calls.filter((call) => call === 'get').length;
  return { clock, pnp, transport, lost, dropped, stop, retriesScheduled, getRetriesScheduled, gets, lines };
}

test('the verdict by status: 2xx delivered, 400/413 refused, 429/5xx and anything else retried; no status: by the error', () => {
  expect(twinResponseStatus('$iothub/twin/res/429/?$rid=7')).toBe(429);
  expect(twinResponseStatus('$iothub/twin/PATCH/properties/desired/?$version=2')).toBeUndefined();
  expect([204, 200, 400, 413, 429, 500, 503, 401].map((status) => reportedPatchVerdict(status, undefined))).toEqual([
    'delivered',
    'delivered',
    'refused',
    'refused',
    'retry',
    'retry',
    'retry',
    'retry',
  ]);
  // A 429 whose body had no errorCode reaches us as a success from the SDK: the status decides.
  expect(reportedPatchVerdict(429, undefined)).toBe('retry');
  expect(reportedPatchVerdict(undefined, new Error('refused, status unknown'))).toBe('retry');
  expect(reportedPatchVerdict(undefined, Object.assign(new Error('closed'), { name: 'NotConnectedError' }))).toBe('lost');
});

test('429, then 503 with an empty body: the batch is kept and sent again after a jittered backoff; the twin GET is not held up', async () => {
  const { clock, pnp, transport, lost, dropped, stop, retriesScheduled } = setup();
  transport.answers = [{ status: 429 }, { status: 503, body: '' }];
  pnp.reported.set({ battery: 50 });
  await retriesScheduled(1);
  await until(() => transport.calls.includes('get'), 'the GET after the throttled PATCH');
  expect(transport.calls).toEqual(['patch', 'get']);

  // First retry: uniform in [base/2, base].
  clock.increment(TWIN_RETRY_BASE_MS / 2 - 1);
  await settle();
  expect(transport.patches).toHaveLength(1);
  pnp.reported.set({ battery: 49 }); // newer value while waiting: no extra PATCH, the retry carries it
  await settle();
  expect(transport.patches).toHaveLength(1);
  clock.increment(TWIN_RETRY_BASE_MS / 2 + 1);
  await until(() => transport.patches.length === 2, 'the first retry');
  expect(transport.patches[1]).toEqual({ battery: 49 });
  await retriesScheduled(2);

  // Second retry (after the 503 with no errorCode the SDK called a success): within [base, 2·base].
  clock.increment(TWIN_RETRY_BASE_MS - 1);
  await settle();
  expect(transport.patches).toHaveLength(2);
  clock.increment(TWIN_RETRY_BASE_MS + 1);
  await until(() => transport.patches.length === 3 && pnp.reported.size === 0, 'the second retry, accepted');
  expect(dropped).toEqual([]);
  expect(lost).not.toHaveBeenCalled();
  stop();
});

test('a hub that throttles reported properties for a day: the retries double to 15 min, ~100–200 PATCHes, warnings on attempts 1, 2, 4, 8…', async () => {
  const { clock, transport, lost, stop, retriesScheduled, lines, pnp } = setup();
  transport.answers = Array.from({ length: 1000 }, () => ({ status: 429 }));
  pnp.reported.set({ battery: 50 });
  const DAY_MS = 86_400_000;
  let elapsedMs = 0;
  let retries = 0;
  expect(TWIN_RETRY_MAX_MS).toBe(15 * 60_000);
  while (elapsedMs < DAY_MS) {
    retries++;
    await retriesScheduled(retries);
    // Retry n waits in [cap/2, cap], cap = 1 s · 2^(n−1) up to 15 min: nothing before cap/2, sent by cap.
    const capMs = Math.min(15 * 60_000, 1000 * 2 ** (retries - 1));
    clock.increment(capMs / 2 - 1);
    await settle();
    expect(transport.patches).toHaveLength(retries);
    clock.increment(capMs / 2 + 1);
    elapsedMs += capMs;
    await until(() => transport.patches.length === retries + 1, `retry ${retries}`);
  }
  // Ten retries climb to the cap (~17 min), then at most one per 7.5 min: at most 202 in a day.
  expect(retries).toBeLessThanOrEqual(10 + DAY_MS / (7.5 * 60_000));
  const warnings = lines.filter((l) => l.includes('sent again later') && (JSON.parse(l) as { level: number }).level === 40);
  const powersOfTwo = Array.from({ length: 12 }, (_, k) => 2 ** k).filter((n) => n <= retries);
  expect(warnings.map((l) => (JSON.parse(l) as { attempt: number }).attempt)).toEqual(powersOfTwo);
  expect(powersOfTwo.length).toBeLessThanOrEqual(8);
  expect(lost).not.toHaveBeenCalled();
  expect(pnp.reported.size).toBe(1);
  stop();
});

test('400 drops only what the hub refuses: a batch is split into one PATCH per property; the report names it', async () => {
  const { pnp, transport, lost, dropped, stop } = setup();
  transport.answers = [{ status: 400 }, { status: 400, body: JSON.stringify({ errorCode: 400004, message: 'Invalid reported properties.' }) }];
  pnp.reported.set({ serial: 'A-1', firmware: '2.0' });
  await until(() => transport.patches.length === 3 && pnp.reported.size === 0, 'the split');
  expect(transport.patches).toEqual([{ serial: 'A-1', firmware: '2.0' }, { serial: 'A-1' }, { firmware: '2.0' }]);
  expect(dropped).toEqual([{ reason: 'refused', status: 400, properties: ['serial'], detail: 'Invalid reported properties.' }]);
  expect(lost).not.toHaveBeenCalled();
  stop();
});

test('a writable-property acknowledgement refused with 413 is sent again without its value; never dropped while it has one', async () => {
  const { pnp, transport, dropped, stop } = setup();
  transport.answers = [{ status: 413 }];
  pnp.reported.set({ fanSpeed: { value: 'x'.repeat(100), ac: 200, av: 7, ad: 'completed' } });
  await until(() => transport.patches.length === 2 && pnp.reported.size === 0, 'the ack without its value');
  expect(transport.patches[1]).toEqual({ fanSpeed: { ac: 200, av: 7, ad: 'the hub refused the value (413)' } });
  expect(dropped).toEqual([]);
  stop();
});

test('a component property refused for good is reported as component.name', async () => {
  const { pnp, transport, dropped, stop } = setup();
  transport.answers = [{ status: 413 }];
  pnp.reported.set({ maxTemp: 40 }, 'thermostat1');
  await until(() => dropped.length === 1, 'the report');
  expect(dropped[0]).toMatchObject({ reason: 'refused', status: 413, properties: ['thermostat1.maxTemp'] });
  expect(pnp.reported.size).toBe(0);
  stop();
});

test('the retry timer dies with the session: nothing is sent after cleanup, the batch stays for the next connection', async () => {
  const { clock, pnp, transport, stop, retriesScheduled } = setup();
  transport.answers = [{ status: 429 }];
  pnp.reported.set({ battery: 50 });
  await retriesScheduled(1);
  stop();
  clock.increment(10 * TWIN_RETRY_BASE_MS);
  await settle();
  expect(transport.patches).toHaveLength(1);
  expect(pnp.reported.size).toBe(1);
});

describe('the twin GET answered but not done', () => {
  test('429, then 503 with an empty body: asked again on the same connection after a jittered backoff, then the twin is read; the session is never lost', async () => {
    const twin = { desired: { fanSpeed: 3, $version: 4 }, reported: { $version: 1 } };
    const { clock, pnp, transport, lost, stop, getRetriesScheduled, gets } = setup([{ status: 429 }, { status: 503, body: '' }, { status: 200, body: JSON.stringify(twin) }]);
    const applied: Array<[unknown, number]> = [];
    pnp.properties.register('fanSpeed', (value, ctx) => void applied.push([value, ctx.version]));
    await getRetriesScheduled(1);
    expect(gets()).toBe(1);
    // Retry n in [cap/2, cap] of 1 s doubling: nothing before cap/2, sent by cap.
    clock.increment(TWIN_RETRY_BASE_MS / 2 - 1);
    await settle();
    expect(gets()).toBe(1);
    clock.increment(TWIN_RETRY_BASE_MS / 2 + 1);
    await getRetriesScheduled(2);
    expect(gets()).toBe(2);
    // A patch the twin read later includes: not applied on its own.
    transport.emit('twinDesiredPropertiesUpdate', { fanSpeed: 2, $version: 3 });
    clock.increment(2 * TWIN_RETRY_BASE_MS);
    await until(() => applied.length === 1, 'the twin read and applied');
    expect(gets()).toBe(3);
    expect(applied).toEqual([[3, 4]]);
    await until(() => transport.patches.length === 1, 'the acknowledgement');
    expect(transport.patches[0]).toEqual({ fanSpeed: { value: 3, ac: 200, av: 4, ad: 'completed' } });
    expect(lost).not.toHaveBeenCalled();
    stop();
  });

  test('a hub that throttles the twin GET for a day: one GET per retry window (nothing before cap/2, sent by cap), ~100–200 on one connection, not a reconnection every ~75 s; warnings on attempts 1, 2, 4, 8…', async () => {
    const DAY_MS = 86_400_000;
    const { clock, lost, stop, getRetriesScheduled, gets, lines } = setup(Array.from({ length: 1000 }, () => ({ status: 429 })));
    let elapsedMs = 0;
    let retries = 0;
    while (elapsedMs < DAY_MS) {
      retries++;
      await getRetriesScheduled(retries);
      const capMs = Math.min(TWIN_RETRY_MAX_MS, TWIN_RETRY_BASE_MS * 2 ** (retries - 1));
      clock.increment(capMs / 2 - 1);
      await settle();
      expect(gets()).toBe(retries);
      clock.increment(capMs / 2 + 1);
      elapsedMs += capMs;
      await until(() => gets() === retries + 1, `GET retry ${retries}`);
    }
    expect(retries).toBeLessThanOrEqual(10 + DAY_MS / (TWIN_RETRY_MAX_MS / 2));
    const warned = lines.filter((l) => l.includes('asking again later') && (JSON.parse(l) as { level: number }).level === 40);
    expect(warned.map((l) => (JSON.parse(l) as { attempt: number }).attempt)).toEqual(Array.from({ length: 12 }, (_, k) => 2 ** k).filter((n) => n <= retries));
    expect(lost).not.toHaveBeenCalled();
    stop();
  });

  test.each([401, 403, 404])('a GET refused with %i ends the session: the machine classifies it (a moved device, the daily quota)', async (status) => {
    const { lost, stop, gets } = setup([{ status }]);
    await until(() => lost.mock.calls.length === 1, 'the session lost');
    expect((lost.mock.calls[0]![0] as Error).message).toBe(`status ${status}`);
    expect(gets()).toBe(1);
    stop();
  });

  test('the GET retry dies with the session: no timer left, no GET after cleanup', async () => {
    const { clock, stop, getRetriesScheduled, gets } = setup([{ status: 429 }]);
    await getRetriesScheduled(1);
    const timers = (clock as unknown as { timeouts: Map<unknown, unknown> }).timeouts;
    expect(timers.size).toBe(1);
    stop();
    expect(timers.size).toBe(0);
    clock.increment(10 * TWIN_RETRY_BASE_MS);
    await settle();
    expect(gets()).toBe(1);
  });

  test('properties registered while a throttled GET waits: no extra GET, one timer, the twin read once the wait is over', async () => {
    const { clock, pnp, transport, lost, stop, getRetriesScheduled, gets } = setup();
    await until(() => gets() === 1, 'the first GET');
    await settle();
    // A property registered after the twin was read re-reads it; the hub throttles that GET.
    const twin = { desired: { fanSpeed: 2, mode: 'eco', level: 3, $version: 5 }, reported: { $version: 1 } };
    transport.getAnswers = [{ status: 429 }, { status: 200, body: JSON.stringify(twin) }];
    const applied: string[] = [];
    pnp.properties.register('fanSpeed', () => void applied.push('fanSpeed'));
    await getRetriesScheduled(1);
    expect(gets()).toBe(2);
    pnp.properties.register('mode', () => void applied.push('mode'));
    pnp.properties.register('level', () => void applied.push('level'));
    await settle();
    expect(gets()).toBe(2);
    const timers = (clock as unknown as { timeouts: Map<unknown, unknown> }).timeouts;
    expect(timers.size).toBe(1);
    clock.increment(TWIN_RETRY_BASE_MS);
    await until(() => gets() === 3, 'the GET after the wait');
    // Every property registered meanwhile gets the twin's value from that one read.
    await until(() => applied.length === 3, 'the three handlers');
    expect(applied.sort()).toEqual(['fanSpeed', 'level', 'mode']);
    await settle();
    expect(gets()).toBe(3);
    expect(timers.size).toBe(0);
    expect(lost).not.toHaveBeenCalled();
    stop();
  });
});
