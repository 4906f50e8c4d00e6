/**
 * DeviceMove (issue 16), without a network: the payload check, the persisted ID scope (atomic,
 * 0600, bound and authenticated like the cache), the move's verdicts (completed, rolled back on a
 * refusal, kept on what says nothing about the scope), the built-in command's dispatch, the
 * option, and the reported properties a move sends again.
 */
import { mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { ProvisionResult } from '../../machines/device.machine';
import { systemClock } from '../../src/clock';
import { ConfigError } from '../../src/errors';
import { IdScopeMigration, UNKNOWN_SCOPE_REFUSALS, type MigrationEvent } from '../../src/migration';
import { resolveOptions } from '../../src/options';
import { Commands } from '../../src/pnp/commands';
import { InvalidDeviceMoveError, parseDeviceMove } from '../../src/pnp/migration';
import { MAX_REPORTED_BYTES, ReportedQueue } from '../../src/pnp/reported';
import * as twinSizeModule from '../../src/pnp/twin-size';
import type { Failure } from '../../src/policy/types';
import { cacheMacKey } from '../../src/store/cache';
import { FileIdScopeStore, MemoryIdScopeStore, type IdScopeBinding, type IdScopeStore } from '../../src/store/id-scope';

const OLD = '0ne0000AAAA';
const NEW = '0ne0000BBBB';
const BINDING: IdScopeBinding = { configuredIdScope: OLD, provisioningHost: 'global.azure-devices-provisioning.net', registrationId: 'sensor-1', credential: 'f'.repeat(32) };
const KEY = cacheMacKey(Buffer.alloc(32, 3).toString('base64'));
const silent = pino({ level: 'silent' });

function capture() {
  const lines: string[] = [];
  return { lines, logger: pino({ level: 'info' }, { write: (line: string) => lines.push(line) }) };
}
const freshDir = () => mkdtempSync(join(tmpdir(), 'hubstate-migration-'));

describe('parseDeviceMove', () => {
  test('takes the fields of dtmi:azureiot:DeviceMigration;1; unknown fields are ignored, null ones skipped', () => {
    expect(parseDeviceMove({ idScope: NEW, dpsName: 'dps', dpsId: '/subscriptions/x', centralAppName: 'a', centralAppSubdomain: 'b', deviceTemplateId: null, extra: 1 })).toEqual({
      idScope: NEW,
      dpsName: 'dps',
      dpsId: '/subscriptions/x',
      centralAppName: 'a',
      centralAppSubdomain: 'b',
    });
  });

  test.each([
    ['no payload', undefined],
    ['a string', NEW],
    ['an array', [NEW]],
    ['no idScope', {}],
    ['an empty idScope', { idScope: '' }],
    ['an idScope with spaces', { idScope: '0ne 1' }],
    ['an idScope over 64 characters', { idScope: 'a'.repeat(65) }],
    ['a number idScope', { idScope: 12 }],
    ['a non-string dpsName', { idScope: NEW, dpsName: 3 }],
    ['an overlong deviceTemplateId', { idScope: NEW, deviceTemplateId: 'x'.repeat(1025) }],
  ])('refuses %s with InvalidDeviceMoveError (400)', (_what, payload) => {
    let error: unknown;
    try {
      parseDeviceMove(payload);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(InvalidDeviceMoveError);
    expect((error as InvalidDeviceMoveError).status).toBe(400);
  });
});

describe('FileIdScopeStore', () => {
  test('saves atomically with mode 0600 and loads back; nothing saved is null', () => {
    const dir = freshDir();
    const store = new FileIdScopeStore(dir, BINDING, KEY, silent);
    expect(store.load()).toBeNull();
    store.save({ idScope: NEW, pendingFrom: OLD });
    expect(statSync(store.path).mode & 0o777).toBe(0o600);
    expect(new FileIdScopeStore(dir, BINDING, KEY, silent).load()).toEqual({ idScope: NEW, pendingFrom: OLD });
    store.clear();
    expect(store.load()).toBeNull();
  });

  test('a file written for another configured idScope, credential or key, or edited, is ignored with a warning', () => {
    const dir = freshDir();
    new FileIdScopeStore(dir, BINDING, KEY, silent).save({ idScope: NEW, pendingFrom: null });
    for (const [binding, key] of [
      [{ ...BINDING, configuredIdScope: '0ne0000CCCC' }, KEY],
      [{ ...BINDING, credential: 'e'.repeat(32) }, KEY],
      [BINDING, cacheMacKey(Buffer.alloc(32, 4).toString('base64'))],
    ] as const) {
      const { lines, logger } = capture();
      expect(new FileIdScopeStore(dir, binding, key, logger).load()).toBeNull();
      expect(lines.join('')).toMatch(/persisted ID scope/);
    }
    const store = new FileIdScopeStore(dir, BINDING, KEY, silent);
    const written = JSON.parse(readFileSync(store.path, 'utf8')) as Record<string, unknown>;
    writeFileSync(store.path, JSON.stringify({ ...written, idScope: '0ne0000EVIL' }));
    expect(store.load()).toBeNull();
    writeFileSync(store.path, 'not json');
    expect(store.load()).toBeNull();
  });

  test('never read through a symlink', () => {
    const dir = freshDir();
    const elsewhere = new FileIdScopeStore(freshDir(), BINDING, KEY, silent);
    elsewhere.save({ idScope: NEW, pendingFrom: null });
    const store = new FileIdScopeStore(dir, BINDING, KEY, silent);
    symlinkSync(elsewhere.path, store.path);
    const { lines, logger } = capture();
    expect(new FileIdScopeStore(dir, BINDING, KEY, logger).load()).toBeNull();
    expect(lines.join('')).toMatch(/refused/);
  });
});

const ASSIGNED: ProvisionResult = { hubHost: 'hub-b.example', deviceId: 'sensor-1', assignedAt: 1, registeredAt: 1 };
function failure(errorClass: Failure['errorClass'], rule: string): Failure {
  return { errorClass, rule, phase: 'dps', name: 'Error', message: rule, at: 1 };
}

function migrationWith(store: IdScopeStore = new MemoryIdScopeStore()) {
  const events: MigrationEvent[] = [];
  const migration = new IdScopeMigration({ configuredIdScope: OLD, store, logger: silent, emit: (event) => events.push(event) });
  let reprovisions = 0;
  const move = (payload: unknown) => migration.move(payload, () => reprovisions++);
  /** One registration against the active scope, answered by `answer` (which sees that scope). */
  const register = (answer: (idScope: string) => ProvisionResult | Failure) =>
    migration.watch(async () => {
      const result = answer(migration.idScope);
      if ('errorClass' in result) throw result;
      return result;
    })({ input: { registrationId: 'sensor-1', attempt: 1 }, signal: new AbortController().signal });
  return { migration, events, store, move, register, reprovisions: () => reprovisions };
}

describe('IdScopeMigration', () => {
  test('a move: persisted with where it came from, answered 200, reprovisions after the answer; DPS assigning it completes it', async () => {
    const m = migrationWith();
    const outcome = m.move({ idScope: NEW });
    expect(outcome).toMatchObject({ status: 200, payload: { idScope: NEW } });
    expect(m.store.load()).toEqual({ idScope: NEW, pendingFrom: OLD });
    expect(m.migration.idScope).toBe(NEW);
    expect(m.reprovisions()).toBe(0);
    outcome.after!();
    expect(m.reprovisions()).toBe(1);
    const seen: string[] = [];
    await expect(m.register((scope) => (seen.push(scope), ASSIGNED))).resolves.toEqual(ASSIGNED);
    expect(seen).toEqual([NEW]);
    expect(m.store.load()).toEqual({ idScope: NEW, pendingFrom: null });
    expect(m.events).toEqual([
      { phase: 'started', from: OLD, to: NEW },
      { phase: 'completed', from: OLD, to: NEW, hubHost: 'hub-b.example' },
    ]);
  });

  test.each(['dps-unauthorized', 'dps-not-found', 'dps-forbidden', 'registration-failed', 'dps-connack-rejected'])(
    'DPS refusing the device under the new scope (%s) rolls back: old scope persisted, a transient failure for the machine, a rolled-back event',
    async (rule) => {
      const m = migrationWith();
      m.move({ idScope: NEW });
      const error = await m.register(() => failure('fatal', rule)).catch((caught: unknown) => caught as Failure);
      expect(error).toMatchObject({ errorClass: 'transient', rule: 'migration-rolled-back' });
      expect(m.migration.idScope).toBe(OLD);
      expect(m.migration.pending).toBe(false);
      // Back on the configured scope: nothing left to persist.
      expect(m.store.load()).toBeNull();
      expect(m.events[1]).toEqual({ phase: 'rolled-back', from: OLD, to: NEW, reason: rule });
      // The retry goes to the old scope and succeeds there.
      const seen: string[] = [];
      await m.register((scope) => (seen.push(scope), ASSIGNED));
      expect(seen).toEqual([OLD]);
      expect(m.events).toHaveLength(2);
    },
  );

  test(`an unknown scope (CONNACK 3 at DPS) rolls back after ${UNKNOWN_SCOPE_REFUSALS} refusals in a row; throttling and silence keep the new scope`, async () => {
    const m = migrationWith();
    m.move({ idScope: NEW });
    for (const other of [failure('throttled', 'throttled-429'), failure('transient', 'timeout'), failure('transient', 'dps-server-error')]) {
      await expect(m.register(() => other)).rejects.toBe(other);
      expect(m.migration.idScope).toBe(NEW);
    }
    for (let i = 1; i < UNKNOWN_SCOPE_REFUSALS; i++) {
      await expect(m.register(() => failure('transient', 'connack-3-server-unavailable'))).rejects.toMatchObject({ rule: 'connack-3-server-unavailable' });
      expect(m.migration.idScope).toBe(NEW);
    }
    // Another answer in between: the run starts again.
    await expect(m.register(() => failure('transient', 'timeout'))).rejects.toMatchObject({ rule: 'timeout' });
    for (let i = 1; i < UNKNOWN_SCOPE_REFUSALS; i++) {
      await expect(m.register(() => failure('transient', 'connack-3-server-unavailable'))).rejects.toMatchObject({ rule: 'connack-3-server-unavailable' });
    }
    expect(m.migration.idScope).toBe(NEW);
    await expect(m.register(() => failure('transient', 'connack-3-server-unavailable'))).rejects.toMatchObject({ rule: 'migration-rolled-back' });
    expect(m.migration.idScope).toBe(OLD);
    expect(m.events.at(-1)).toEqual({ phase: 'rolled-back', from: OLD, to: NEW, reason: 'unknown-id-scope' });
  });

  test('without a move, a refusal is the machine\'s as it is (no rollback)', async () => {
    const m = migrationWith();
    const refused = failure('fatal', 'dps-unauthorized');
    await expect(m.register(() => refused)).rejects.toBe(refused);
    expect(m.events).toEqual([]);
  });

  test('409 while a move is under way, 200 without a move for the current scope, 400 for a bad payload, 500 (no move) when it cannot be persisted', () => {
    const m = migrationWith();
    expect(m.move({ idScope: OLD.toLowerCase() })).toEqual({ status: 200, payload: { idScope: OLD, message: 'already on this ID scope' } });
    expect(m.move({ idScope: 'no!' })).toMatchObject({ status: 400 });
    expect(m.events).toEqual([]);
    m.move({ idScope: NEW });
    expect(m.move({ idScope: '0ne0000CCCC' })).toMatchObject({ status: 409 });

    const broken: IdScopeStore = {
      load: () => null,
      save: () => {
        throw new Error('ENOSPC: no space left on device');
      },
      clear: () => undefined,
    };
    const failing = migrationWith(broken);
    const outcome = failing.move({ idScope: NEW });
    expect(outcome.status).toBe(500);
    expect(outcome.after).toBeUndefined();
    expect(failing.migration.idScope).toBe(OLD);
    expect(failing.events).toEqual([]);
  });

  test.each([
    ['assigns it there', (): ProvisionResult | Failure => ({ ...ASSIGNED, hubHost: 'hub-a.example' })],
    ['refuses it there', (): ProvisionResult | Failure => failure('fatal', 'dps-unauthorized')],
  ])('a move during a registration under the old scope (the machine swallows its REPROVISION there): when the old scope %s, the device registers again under the new one', async (_what, oldAnswer) => {
    const m = migrationWith();
    const seen: string[] = [];
    let answerOld!: () => void;
    const oldAnswered = new Promise<void>((resolve) => (answerOld = resolve));
    const registration = m.migration.watch(async () => {
      const scope = m.migration.idScope;
      seen.push(scope);
      if (scope === OLD) await oldAnswered;
      const result = scope === OLD ? oldAnswer() : ASSIGNED;
      if ('errorClass' in result) throw result;
      return result;
    })({ input: { registrationId: 'sensor-1', attempt: 1 }, signal: new AbortController().signal });
    expect(m.move({ idScope: NEW }).status).toBe(200);
    answerOld();
    await expect(registration).resolves.toEqual(ASSIGNED);
    expect(seen).toEqual([OLD, NEW]);
    expect(m.migration.pending).toBe(false);
    expect(m.events.map((event) => event.phase)).toEqual(['started', 'completed']);
  });

  test('the completion is persisted after the completed event (which queues the reported properties again): a crash between them repeats the move\'s registration, never skips the resend', async () => {
    const store = new MemoryIdScopeStore();
    const seenAtCompletion: Array<ReturnType<IdScopeStore['load']>> = [];
    const migration = new IdScopeMigration({
      configuredIdScope: OLD,
      store,
      logger: silent,
      emit: (event) => {
        if (event.phase === 'completed') seenAtCompletion.push(store.load());
      },
    });
    migration.move({ idScope: NEW }, () => undefined);
    await migration.watch(async () => ASSIGNED)({ input: { registrationId: 'sensor-1', attempt: 1 }, signal: new AbortController().signal });
    expect(seenAtCompletion).toEqual([{ idScope: NEW, pendingFrom: OLD }]);
    expect(store.load()).toEqual({ idScope: NEW, pendingFrom: null });
  });

  test('a restart resumes from the file: a pending move is still judged by DPS, a completed one just used', async () => {
    const dir = freshDir();
    const store = () => new FileIdScopeStore(dir, BINDING, KEY, silent);
    migrationWith(store()).move({ idScope: NEW });
    const resumed = migrationWith(store());
    expect(resumed.migration.idScope).toBe(NEW);
    expect(resumed.migration.pending).toBe(true);
    await expect(resumed.register(() => failure('fatal', 'dps-unauthorized'))).rejects.toMatchObject({ rule: 'migration-rolled-back' });
    expect(migrationWith(store()).migration.idScope).toBe(OLD);

    migrationWith(store()).move({ idScope: NEW });
    await migrationWith(store()).register(() => ASSIGNED);
    const after = migrationWith(store());
    expect(after.migration.idScope).toBe(NEW);
    expect(after.migration.pending).toBe(false);
  });
});

describe('the built-in command', () => {
  function commands(deviceMove?: { component: string }) {
    const moves: unknown[] = [];
    const c = new Commands({
      timeoutMs: 1000,
      clock: systemClock,
      logger: silent,
      reprovision: () => undefined,
      ...(deviceMove ? { deviceMove: { component: deviceMove.component, move: (payload: unknown) => (moves.push(payload), { status: 200, payload: null }) } } : {}),
    });
    return { c, moves };
  }
  const body = (value: unknown) => Buffer.from(JSON.stringify(value));

  test('answers component*DeviceMove and the bare DeviceMove with the parsed payload; another component is unknown', async () => {
    const { c, moves } = commands({ component: 'mover' });
    expect((await c.invoke('mover*DeviceMove', body({ idScope: NEW }), { offline: false })).status).toBe(200);
    expect((await c.invoke('DeviceMove', body({ idScope: NEW }), { offline: false })).status).toBe(200);
    expect((await c.invoke('migration*DeviceMove', body({ idScope: NEW }), { offline: false })).status).toBe(404);
    expect((await c.invoke('mover*DeviceMove', Buffer.from('{'), { offline: false })).status).toBe(400);
    expect(moves).toEqual([{ idScope: NEW }, { idScope: NEW }]);
    expect(() => c.register('DeviceMove', () => undefined, { component: 'mover' })).toThrow(/built-in DeviceMove/);
  });

  test('without the option DeviceMove is an unknown command (404) and may be the application\'s own', async () => {
    const { c } = commands();
    expect(await c.invoke('migration*DeviceMove', body({ idScope: NEW }), { offline: false })).toEqual({ status: 404, payload: { message: "unknown command 'migration*DeviceMove'" } });
    c.register('DeviceMove', () => ({ payload: 'mine' }), { component: 'migration' });
    expect(await c.invoke('migration*DeviceMove', body({ idScope: NEW }), { offline: false })).toEqual({ status: 200, payload: 'mine' });
  });
});

describe('the migration option', () => {
  const base = { idScope: OLD, registrationId: 'sensor-1', deviceKey: Buffer.alloc(32, 1).toString('base64') };
  test('off by default; true is the samples\' component `migration`; a component of its own', () => {
    expect(resolveOptions(base).migration).toBeNull();
    expect(resolveOptions({ ...base, migration: false }).migration).toBeNull();
    expect(resolveOptions({ ...base, migration: true }).migration).toEqual({ component: 'migration' });
    expect(resolveOptions({ ...base, migration: { component: 'deviceMigration' } }).migration).toEqual({ component: 'deviceMigration' });
  });
  test.each([[{ component: 'a b' }], [{ component: '' }], [{ other: 1 }], ['yes'], [[]]])('refuses %p with ConfigError', (migration) => {
    expect(() => resolveOptions({ ...base, migration: migration as never })).toThrow(ConfigError);
  });
});

describe('reported properties after a move', () => {
  test('what the hub accepted is queued again (newer pending values win, writable acknowledgements are not resent), and survives a restart', () => {
    const path = join(freshDir(), 'reported-sensor-1.json');
    const queue = new ReportedQueue(silent, path);
    queue.set({ firmware: '1.0', serial: 'A1' });
    queue.set({ targetTemperature: { value: 21, ac: 200, av: 4 } });
    queue.settle(queue.take()!);
    expect(queue.size).toBe(0);
    queue.set({ firmware: '1.1' });
    expect(queue.requeueDelivered()).toBe(1);
    expect(queue.take()!.patch).toEqual({ firmware: '1.1', serial: 'A1' });
    queue.settle(queue.take()!);
    const restarted = new ReportedQueue(silent, path);
    expect(restarted.requeueDelivered()).toBe(2);
    expect(restarted.take()!.patch).toEqual({ firmware: '1.1', serial: 'A1' });
  });

  test('a move persisted with the option on and completed after a restart with it off still re-sends what the old hub had (review)', async () => {
    const path = join(freshDir(), 'reported-sensor-1.json');
    const store = new MemoryIdScopeStore();
    const boot1 = new ReportedQueue(silent, path, 'resilience');
    boot1.set({ serial: 'A1', firmware: '1.0' });
    boot1.settle(boot1.take()!);
    new IdScopeMigration({ configuredIdScope: '0ne0000AAAA', store, logger: silent, emit: () => undefined }).move({ idScope: '0ne0000BBBB' }, () => undefined);
    // Boot 2: the queue is built the same way whatever the migration option says.
    const boot2 = new ReportedQueue(silent, path, 'resilience');
    let requeued = -1;
    const scope = new IdScopeMigration({
      configuredIdScope: '0ne0000AAAA',
      store,
      logger: silent,
      emit: (event) => {
        if (event.phase === 'completed') requeued = boot2.requeueDelivered();
      },
    });
    expect(scope.pending).toBe(true);
    await scope.watch(async () => ({ hubHost: 'new-hub', deviceId: 'sensor-1' }) as never)({ input: { registrationId: 'sensor-1', attempt: 1 }, signal: new AbortController().signal });
    expect(requeued).toBe(2);
    expect(boot2.take()!.patch).toEqual({ serial: 'A1', firmware: '1.0' });
  });

  test('the component that reports itself at each connection is not remembered, on disk either; the others are', () => {
    const path = join(freshDir(), 'reported-sensor-2.json');
    const queue = new ReportedQueue(silent, path, 'resilience');
    queue.set({ serial: 'A1' });
    queue.set({ connects: 3 }, 'resilience');
    queue.set({ target: 20 }, 'thermostat1');
    queue.settle(queue.take()!);
    expect(JSON.parse(readFileSync(path, 'utf8')).delivered).toHaveLength(2);
    const restarted = new ReportedQueue(silent, path, 'resilience');
    expect(restarted.requeueDelivered()).toBe(2);
    expect(restarted.take()!.patch).toEqual({ serial: 'A1', thermostat1: { __t: 'c', target: 20 } });
  });

  test('what is remembered is bounded by a twin\'s reported section, newest kept, in time linear in the batch (a settle of 3,000 properties had taken ~20 s)', () => {
    const queue = new ReportedQueue(silent);
    const count = 3000;
    for (let i = 0; i < count; i++) queue.set({ [`p${i}`]: `value-${i}-${'x'.repeat(20)}` }, i % 2 === 0 ? 'thermostat1' : undefined);
    const batch = queue.take()!;
    const sizing = jest.spyOn(twinSizeModule, 'twinSize');
    try {
      queue.settle(batch);
      // The work: the JSON sized in all, a few times the batch's (it was thousands of times).
      const sized = sizing.mock.calls.reduce((sum, [value]) => sum + JSON.stringify(value).length, 0);
      expect(sized).toBeLessThan(5 * JSON.stringify(batch.patch).length);
    } finally {
      sizing.mockRestore();
    }
    expect(queue.requeueDelivered()).toBeGreaterThan(0);
    const { patch } = queue.take()!;
    const size = twinSizeModule.twinSize(patch);
    expect(size).toBeLessThanOrEqual(MAX_REPORTED_BYTES);
    expect(size).toBeGreaterThan(MAX_REPORTED_BYTES - 100);
    expect(patch[`p${count - 1}`]).toBeDefined();
    expect((patch['thermostat1'] as Record<string, unknown>)[`p${count - 2}`]).toBeDefined();
    expect(patch['p1']).toBeUndefined();
  });
});
