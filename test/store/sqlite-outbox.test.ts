import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ConfigError, HubstateError, MessageRejectedError, StorageError } from '../../src/errors';
import { DEFAULT_OUTBOX_LIMITS, type DroppedMessage, type NewOutboxMessage } from '../../src/store/outbox';
import { openSqliteOutbox, SqliteOutbox, sqliteOutboxPath, type SqliteOutboxOptions } from '../../src/store/sqlite-outbox';

const message = (id: string, bytes = 10, createdAt = 0): NewOutboxMessage => ({
  messageId: id,
  body: JSON.stringify({ id }),
  properties: { 'iothub-creation-time-utc': new Date(createdAt).toISOString() },
  createdAt,
  bytes,
});

let dir: string;
const opened: SqliteOutbox[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'hubstate-outbox-'));
});

afterEach(() => {
  for (const outbox of opened.splice(0)) outbox.close();
  rmSync(dir, { recursive: true, force: true });
});

function open(options: Partial<SqliteOutboxOptions> = {}): SqliteOutbox {
  const outbox = new SqliteOutbox({ path: join(dir, 'outbox.sqlite'), ...options });
  opened.push(outbox);
  return outbox;
}

function reopen(outbox: SqliteOutbox, options: Partial<SqliteOutboxOptions> = {}): SqliteOutbox {
  outbox.close();
  return open({ path: outbox.path, ...options });
}

const ids = (outbox: SqliteOutbox) => outbox.after(0, 1_000_000).map((m) => m.messageId);

function collectDropped(outbox: SqliteOutbox): DroppedMessage[] {
  const dropped: DroppedMessage[] = [];
  outbox.onDropped((d) => dropped.push(d));
  return dropped;
}

describe('SQLite outbox: the Outbox contract', () => {
  test('keeps capture order; after() pages by sequence; remove() by message id; stats() follows', () => {
    const outbox = open();
    const stored = ['a', 'b', 'c', 'd', 'e'].map((id) => outbox.add(message(id)));
    expect(stored.map((m) => m.seq)).toEqual([...stored.map((m) => m.seq)].sort((x, y) => x - y));
    expect(new Set(stored.map((m) => m.seq)).size).toBe(5);

    expect(outbox.after(0, 2).map((m) => m.messageId)).toEqual(['a', 'b']);
    expect(outbox.after(stored[1].seq, 2).map((m) => m.messageId)).toEqual(['c', 'd']);
    expect(outbox.after(stored[3].seq, 2).map((m) => m.messageId)).toEqual(['e']);
    expect(outbox.after(stored[4].seq, 2)).toEqual([]);
    expect(outbox.after(0, 0)).toEqual([]);

    expect(outbox.remove('b')).toBe(true);
    expect(outbox.remove('b')).toBe(false);
    expect(outbox.remove('never-added')).toBe(false);
    expect(ids(outbox)).toEqual(['a', 'c', 'd', 'e']);
    expect(outbox.stats()).toEqual({ count: 4, bytes: 40 });
  });

  test('stores body, component, properties, createdAt and bytes exactly; no component stays absent', () => {
    const outbox = open();
    const withComponent: NewOutboxMessage = {
      messageId: 'm1',
      body: '{"temperature":21.5,"text":"ünïcødé"}',
      component: 'thermostat1',
      properties: { 'iothub-creation-time-utc': '2026-01-01T00:00:00.000Z', custom: 'x' },
      createdAt: 1_767_225_600_000,
      bytes: 123,
    };
    const returned = outbox.add(withComponent);
    outbox.add(message('m2'));
    const [first, second] = outbox.after(0, 10);
    expect(first).toEqual({ ...withComponent, seq: returned.seq });
    expect(returned).toEqual(first);
    expect(second).not.toHaveProperty('component');
  });

  test('sequence numbers are never reused, even after the newest message is removed and the file reopened', () => {
    let outbox = open();
    outbox.add(message('a'));
    const b = outbox.add(message('b'));
    outbox.remove('b');
    const c = outbox.add(message('c'));
    expect(c.seq).toBeGreaterThan(b.seq);
    outbox.remove('c');
    outbox = reopen(outbox);
    expect(outbox.add(message('d')).seq).toBeGreaterThan(c.seq);
  });

  test('onAdded fires once per accepted message, after it is stored; unsubscribe works', () => {
    const outbox = open({ limits: { maxCount: 1, maxBytes: 1000, whenFull: 'reject-new' } });
    const seen: number[] = [];
    const unsubscribe = outbox.onAdded(() => seen.push(outbox.stats().count));
    outbox.add(message('a'));
    expect(() => outbox.add(message('b'))).toThrow(MessageRejectedError);
    expect(seen).toEqual([1]);
    unsubscribe();
    outbox.remove('a');
    outbox.add(message('c'));
    expect(seen).toEqual([1]);
  });

  test('a duplicate message id is refused and changes nothing', () => {
    const outbox = open({ limits: { maxCount: 2, maxBytes: 1000, whenFull: 'drop-oldest' } });
    const dropped = collectDropped(outbox);
    outbox.add(message('a'));
    outbox.add(message('b'));
    // Full: drop-oldest would push 'a' out, but the insert fails, so the whole add rolls back.
    expect(() => outbox.add(message('b'))).toThrow(HubstateError);
    expect(ids(outbox)).toEqual(['a', 'b']);
    expect(outbox.stats()).toEqual({ count: 2, bytes: 20 });
    expect(dropped).toEqual([]);
  });
});

describe('SQLite outbox: durability across reopen', () => {
  test('reopening returns the same messages, ids, sequence numbers and order, and the same stats', () => {
    let outbox = open();
    for (let i = 0; i < 50; i++) outbox.add({ ...message(`m${i}`, 7 + i, 1000 + i), component: i % 2 ? 'c1' : undefined });
    outbox.remove('m3');
    outbox.remove('m40');
    const before = outbox.after(0, 1000);
    const stats = outbox.stats();
    outbox = reopen(outbox);
    expect(outbox.after(0, 1000)).toEqual(before);
    expect(outbox.stats()).toEqual(stats);
    expect(stats.count).toBe(48);
  });

  test('openSqliteOutbox puts one file per registration id in the data directory', () => {
    const dataDir = join(dir, 'data');
    const outbox = openSqliteOutbox(dataDir, 'device/1 é');
    opened.push(outbox);
    expect(outbox.path).toBe(sqliteOutboxPath(dataDir, 'device/1 é'));
    expect(outbox.path.startsWith(join(dataDir, 'outbox-'))).toBe(true);
    outbox.add(message('a'));
    const other = openSqliteOutbox(dataDir, 'device-2');
    opened.push(other);
    expect(other.stats().count).toBe(0);
  });
});

describe('SQLite outbox: limits, and nothing dropped silently', () => {
  test('reject-new, by count: the new message is refused with a typed error; the queue is untouched', () => {
    let outbox = open({ limits: { maxCount: 2, maxBytes: 1000, whenFull: 'reject-new' } });
    const dropped = collectDropped(outbox);
    outbox.add(message('a'));
    outbox.add(message('b'));
    expect(() => outbox.add(message('c'))).toThrow(expect.objectContaining({ reason: 'outbox-full' }));
    expect(ids(outbox)).toEqual(['a', 'b']);
    expect(dropped).toEqual([]);
    outbox = reopen(outbox, { limits: { maxCount: 2, maxBytes: 1000, whenFull: 'reject-new' } });
    expect(ids(outbox)).toEqual(['a', 'b']);
  });

  test('reject-new, by bytes', () => {
    const outbox = open({ limits: { maxCount: 100, maxBytes: 25, whenFull: 'reject-new' } });
    outbox.add(message('a'));
    outbox.add(message('b'));
    expect(() => outbox.add(message('c'))).toThrow(MessageRejectedError);
    outbox.add(message('small', 5));
    expect(outbox.stats()).toEqual({ count: 3, bytes: 25 });
  });

  test('drop-oldest, by count: the oldest go, each with a dropped event, and stay gone after reopen', () => {
    const limits = { maxCount: 3, maxBytes: 1000, whenFull: 'drop-oldest' as const };
    let outbox = open({ limits });
    const dropped = collectDropped(outbox);
    for (const id of ['a', 'b', 'c', 'd', 'e']) outbox.add(message(id));
    expect(dropped).toEqual([
      { messageId: 'a', reason: 'outbox-full' },
      { messageId: 'b', reason: 'outbox-full' },
    ]);
    expect(ids(outbox)).toEqual(['c', 'd', 'e']);
    expect(outbox.stats()).toEqual({ count: 3, bytes: 30 });
    outbox = reopen(outbox, { limits });
    expect(ids(outbox)).toEqual(['c', 'd', 'e']);
  });

  test('drop-oldest, by bytes: as many of the oldest as needed go, each named', () => {
    const outbox = open({ limits: { maxCount: 100, maxBytes: 30, whenFull: 'drop-oldest' } });
    const dropped = collectDropped(outbox);
    outbox.add(message('a'));
    outbox.add(message('b'));
    outbox.add(message('c'));
    outbox.add(message('big', 25));
    expect(dropped.map((d) => d.messageId)).toEqual(['a', 'b', 'c']);
    expect(ids(outbox)).toEqual(['big']);
    expect(outbox.stats()).toEqual({ count: 1, bytes: 25 });
  });

  test('drop-oldest still refuses a message larger than the whole outbox, and drops nothing for it', () => {
    const outbox = open({ limits: { maxCount: 100, maxBytes: 30, whenFull: 'drop-oldest' } });
    const dropped = collectDropped(outbox);
    outbox.add(message('a'));
    expect(() => outbox.add(message('huge', 31))).toThrow(MessageRejectedError);
    expect(ids(outbox)).toEqual(['a']);
    expect(dropped).toEqual([]);
  });

  test('age: on add, messages older than maxAgeMs are dropped as expired before the limits apply', () => {
    let now = 1_000_000;
    const clock = { now: () => now };
    const outbox = open({ clock, limits: { maxCount: 2, maxBytes: 1000, whenFull: 'reject-new', maxAgeMs: 60_000 } });
    const dropped = collectDropped(outbox);
    outbox.add(message('a', 10, now));
    now += 30_000;
    outbox.add(message('b', 10, now));
    now += 30_000; // 'a' is exactly maxAgeMs old: not yet older than that
    expect(() => outbox.add(message('c', 10, now))).toThrow(MessageRejectedError);
    expect(dropped).toEqual([]);
    now += 1; // now 'a' is older than maxAgeMs: its expiry makes room, so 'c' is accepted
    outbox.add(message('c', 10, now));
    expect(dropped).toEqual([{ messageId: 'a', reason: 'expired' }]);
    expect(ids(outbox)).toEqual(['b', 'c']);
    expect(outbox.stats()).toEqual({ count: 2, bytes: 20 });
  });

  test('age: after() drops expired messages (persistently, with events) before reading', () => {
    let now = 5_000;
    const clock = { now: () => now };
    const limits = { ...{ maxCount: 100, maxBytes: 1000 }, whenFull: 'drop-oldest' as const, maxAgeMs: 1000 };
    let outbox = open({ clock, limits });
    const dropped = collectDropped(outbox);
    outbox.add(message('a', 10, now));
    outbox.add(message('b', 10, now + 500));
    outbox.add(message('c', 10, now + 900));
    now += 1600;
    expect(outbox.after(0, 10).map((m) => m.messageId)).toEqual(['c']);
    expect(dropped).toEqual([
      { messageId: 'a', reason: 'expired' },
      { messageId: 'b', reason: 'expired' },
    ]);
    expect(outbox.stats()).toEqual({ count: 1, bytes: 10 });
    outbox = reopen(outbox, { clock, limits: { ...limits, maxAgeMs: undefined } });
    expect(ids(outbox)).toEqual(['c']);
  });

  test('age: a rejected add still commits (and reports) the expiries it found', () => {
    let now = 0;
    const clock = { now: () => now };
    const limits = { maxCount: 100, maxBytes: 20, whenFull: 'reject-new' as const, maxAgeMs: 100 };
    let outbox = open({ clock, limits });
    const dropped = collectDropped(outbox);
    outbox.add(message('old', 10, 0));
    now = 50;
    outbox.add(message('young', 10, 50));
    now = 101;
    expect(() => outbox.add(message('too-big', 15, now))).toThrow(MessageRejectedError);
    expect(dropped).toEqual([{ messageId: 'old', reason: 'expired' }]);
    outbox = reopen(outbox, { clock, limits });
    expect(ids(outbox)).toEqual(['young']);
  });

  test('invalid limits are a ConfigError naming the field', () => {
    expect(() => open({ limits: { maxCount: 0, maxBytes: 1, whenFull: 'reject-new' } })).toThrow(ConfigError);
    expect(() => open({ limits: { maxCount: 1, maxBytes: 1, whenFull: 'reject-new', maxAgeMs: -1 } })).toThrow(
      /limits\.maxAgeMs/,
    );
  });
});

describe('SQLite outbox: files, errors and closing', () => {
  test('the database file (and its WAL) have mode 0600; a created directory has mode 0700', () => {
    const path = join(dir, 'new', 'nested', 'outbox.sqlite');
    const outbox = open({ path });
    outbox.add(message('a'));
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(existsSync(`${path}-wal`)).toBe(true);
    expect(statSync(`${path}-wal`).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'new', 'nested')).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'new')).mode & 0o777).toBe(0o700);
  });

  test('an existing file with a loose mode is tightened to 0600', () => {
    let outbox = open();
    outbox.add(message('a'));
    outbox.close();
    chmodSync(outbox.path, 0o644);
    outbox = open({ path: outbox.path });
    expect(statSync(outbox.path).mode & 0o777).toBe(0o600);
    expect(ids(outbox)).toEqual(['a']);
  });

  test('a corrupt file is a StorageError naming the path, and the file is left untouched', () => {
    const path = join(dir, 'outbox.sqlite');
    writeFileSync(path, 'this is not a database, it is a pile of bytes. '.repeat(200));
    const before = readFileSync(path);
    let error: unknown;
    try {
      open({ path });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(StorageError);
    expect(error).toBeInstanceOf(HubstateError);
    expect((error as StorageError).reason).toBe('corrupt');
    expect((error as StorageError).path).toBe(path);
    expect((error as Error).message).toContain(path);
    expect(readFileSync(path).equals(before)).toBe(true);
  });

  test('a damaged outbox (header intact, pages overwritten) is a StorageError, not silently emptied', () => {
    let outbox = open();
    for (let i = 0; i < 500; i++) outbox.add({ ...message(`m${i}`), body: JSON.stringify({ i, pad: 'p'.repeat(200) }) });
    outbox.close();
    const bytes = readFileSync(outbox.path);
    bytes.fill(0xa5, 4096, bytes.length); // keep page 1 (header + schema), trash every other page
    writeFileSync(outbox.path, bytes);
    expect(() => open({ path: outbox.path })).toThrow(expect.objectContaining({ name: 'StorageError', reason: 'corrupt' }));
  });

  test('another SQLite database is refused as incompatible, and left untouched', () => {
    const path = join(dir, 'someone-else.db');
    const foreign = new Database(path);
    foreign.exec("CREATE TABLE notes (text TEXT); INSERT INTO notes VALUES ('keep me')");
    foreign.close();
    const before = readFileSync(path);
    expect(() => open({ path })).toThrow(expect.objectContaining({ reason: 'incompatible', path }));
    expect(readFileSync(path).equals(before)).toBe(true);
  });

  test('a second outbox on the same file is refused as locked while the first is open', () => {
    const first = open();
    first.add(message('a'));
    expect(() => open({ path: first.path })).toThrow(expect.objectContaining({ reason: 'locked', path: first.path }));
    first.close();
    expect(ids(open({ path: first.path }))).toEqual(['a']);
  });

  test('close() is idempotent; afterwards add() is refused as stopped and reads are empty', () => {
    const outbox = open();
    outbox.add(message('a'));
    outbox.close();
    outbox.close();
    expect(() => outbox.add(message('b'))).toThrow(expect.objectContaining({ reason: 'stopped' }));
    expect(outbox.after(0, 10)).toEqual([]);
    expect(outbox.remove('a')).toBe(false);
    expect(outbox.stats()).toEqual({ count: 1, bytes: 10 });
  });
});

describe('SQLite outbox: crash safety', () => {
  /** One add() at a time. */
  const singleChild = join(__dirname, '..', 'fixtures', 'sqlite-outbox-child.js');
  /** addBatched(), 25 per event-loop turn: one commit per batch. */
  const batchedChild = join(__dirname, 'sqlite-outbox-batched-child.js');

  /** Run the child until it has reported `killAfter` accepted messages, then SIGKILL it. */
  function runAndKill(
    child: string,
    path: string,
    prefix: string,
    killAfter: number,
  ): Promise<{ accepted: Array<{ seq: number; id: string }> }> {
    return new Promise((resolve, reject) => {
      const proc = spawn(process.execPath, [child, path, prefix, '1000000'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      let killed = false;
      proc.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        stdout += chunk;
        if (!killed && (stdout.match(/^accepted /gm)?.length ?? 0) >= killAfter) {
          killed = true;
          proc.kill('SIGKILL');
        }
      });
      proc.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      proc.on('error', reject);
      proc.on('close', (code, signal) => {
        if (signal !== 'SIGKILL') return reject(new Error(`child was not killed (code ${code}): ${stderr}`));
        if (stdout.includes('finished')) return reject(new Error('child finished before it was killed'));
        // Only complete lines: a line cut by the kill was never fully reported.
        const accepted = stdout
          .split('\n')
          .slice(0, -1)
          .filter((line) => line.startsWith('accepted '))
          .map((line) => {
            const [, seq, id] = line.split(' ');
            return { seq: Number(seq), id };
          });
        resolve({ accepted });
      });
    });
  }

  test.each([
    ['add()', singleChild],
    ['addBatched() (group commit)', batchedChild],
  ])('SIGKILL mid-stream, twice, with %s: every message reported accepted is there after reopen, in order, same ids', async (_, child) => {
    const path = join(dir, 'outbox.sqlite');
    const first = await runAndKill(child, path, 'first', 300);
    const second = await runAndKill(child, path, 'second', 300); // reopens the crashed file, then crashes again
    expect(first.accepted.length).toBeGreaterThanOrEqual(300);
    expect(second.accepted.length).toBeGreaterThanOrEqual(300);

    const outbox = open({ path });
    const stored = outbox.after(0, 10_000_000);
    const byId = new Map(stored.map((m) => [m.messageId, m]));
    const reported = [...first.accepted, ...second.accepted];
    const lost = reported.filter(({ id }) => !byId.has(id));
    expect(lost).toEqual([]);
    for (const { seq, id } of reported) expect(byId.get(id)?.seq).toBe(seq);
    // Capture order: all of the first run, then all of the second; ids as the children reported.
    const storedIds = stored.map((m) => m.messageId);
    expect(storedIds.slice(0, first.accepted.length)).toEqual(first.accepted.map((a) => a.id));
    const secondStart = storedIds.indexOf('second-0');
    expect(storedIds.slice(secondStart, secondStart + second.accepted.length)).toEqual(second.accepted.map((a) => a.id));
    expect(outbox.stats().count).toBe(stored.length);
    expect(byId.get('first-7')?.body).toBe(JSON.stringify({ i: 7, padding: 'x'.repeat(100) }));
  });
});

describe('removeMany (bulk acknowledgement)', () => {
  test('removes the present ids in one transaction, skips unknown ones, keeps counters and survives a reopen', () => {
    const outbox = open();
    for (const id of ['a', 'b', 'c', 'd']) outbox.add(message(id, 10));
    expect(outbox.removeMany(['b', 'zz', 'a'])).toEqual(['b', 'a']);
    expect(outbox.stats()).toEqual({ count: 2, bytes: 20 });
    expect(outbox.removeMany([])).toEqual([]);
    const again = reopen(outbox);
    expect(again.after(0, 10).map((m) => m.messageId)).toEqual(['c', 'd']);
    expect(again.stats()).toEqual({ count: 2, bytes: 20 });
    again.close();
    expect(again.removeMany(['c'])).toEqual([]);
  });
});

describe('addBatched (group commit)', () => {
  /** Settles every promise, keeping each outcome in call order. */
  const outcomes = (promises: Array<Promise<unknown>>) => Promise.allSettled(promises);

  /** Records the listeners' calls, to compare with what one add() per message would produce. */
  function collectSignals(outbox: SqliteOutbox): string[] {
    const signals: string[] = [];
    outbox.onAdded(() => signals.push('added'));
    outbox.onDropped((d) => signals.push(`dropped ${d.messageId} (${d.reason})`));
    return signals;
  }

  test('the adds of one event-loop turn are one transaction; each resolves only after it committed; call order is kept', async () => {
    const outbox = open();
    outbox.add(message('before'));
    const commitsBefore = outbox.addCommits;
    const commitsWhenSettled: number[] = [];
    const names = Array.from({ length: 50 }, (_, i) => `m${i}`);
    const promises = names.map((id) =>
      outbox.addBatched(message(id)).then((stored) => {
        commitsWhenSettled.push(outbox.addCommits);
        return stored;
      }),
    );
    // Not stored during the turn that added them, nor by the microtasks that follow.
    expect(outbox.stats().count).toBe(1);
    await Promise.resolve();
    expect(outbox.stats().count).toBe(1);
    expect(outbox.addCommits).toBe(commitsBefore);

    const stored = await Promise.all(promises);
    expect(outbox.addCommits).toBe(commitsBefore + 1);
    expect(commitsWhenSettled).toEqual(names.map(() => commitsBefore + 1));
    expect(stored.map((m) => m.messageId)).toEqual(names);
    for (let i = 1; i < stored.length; i++) expect(stored[i].seq).toBeGreaterThan(stored[i - 1].seq);
    expect(outbox.after(stored[0].seq - 1, 100)).toEqual(stored);
    expect(outbox.stats()).toEqual({ count: 51, bytes: 510 });
  });

  test('a later microtask of the same turn joins the batch; the next turn starts another', async () => {
    const outbox = open();
    const commitsBefore = outbox.addCommits;
    const first = outbox.addBatched(message('a'));
    await Promise.resolve();
    const second = outbox.addBatched(message('b'));
    await Promise.all([first, second]);
    expect(outbox.addCommits).toBe(commitsBefore + 1);
    await outbox.addBatched(message('c'));
    expect(outbox.addCommits).toBe(commitsBefore + 2);
    expect(ids(outbox)).toEqual(['a', 'b', 'c']);
  });

  test('a reader woken by onAdded (as the telemetry pump is) finds every message, committed and in order', async () => {
    const outbox = open();
    const read: string[] = [];
    let cursor = 0;
    outbox.onAdded(() => {
      for (const m of outbox.after(cursor, 1000)) {
        read.push(m.messageId);
        cursor = m.seq;
      }
    });
    const names = Array.from({ length: 20 }, (_, i) => `m${i}`);
    await Promise.all(names.slice(0, 10).map((id) => outbox.addBatched(message(id))));
    await Promise.all(names.slice(10).map((id) => outbox.addBatched(message(id))));
    expect(read).toEqual(names);
  });

  test('add() in the same turn commits the waiting batch with it, in call order, in one transaction', async () => {
    const outbox = open();
    const commitsBefore = outbox.addCommits;
    const a = outbox.addBatched(message('a'));
    const b = outbox.add(message('b'));
    expect(outbox.addCommits).toBe(commitsBefore + 1);
    expect((await a).seq).toBeLessThan(b.seq);
    await new Promise((resolve) => setImmediate(resolve)); // the scheduled commit finds nothing left
    expect(outbox.addCommits).toBe(commitsBefore + 1);
    expect(ids(outbox)).toEqual(['a', 'b']);
  });

  test('reject-new inside a batch: exactly the messages past the bound are refused, nothing is dropped', async () => {
    let outbox = open({ limits: { maxCount: 3, maxBytes: 1000, whenFull: 'reject-new' } });
    const dropped = collectDropped(outbox);
    outbox.add(message('a'));
    const commitsBefore = outbox.addCommits;
    const results = await outcomes(['b', 'c', 'd', 'e'].map((id) => outbox.addBatched(message(id))));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'rejected']);
    for (const r of results.slice(2)) {
      const { reason } = r as PromiseRejectedResult;
      expect(reason).toBeInstanceOf(MessageRejectedError);
      expect(reason).toMatchObject({ reason: 'outbox-full' });
    }
    expect(outbox.addCommits).toBe(commitsBefore + 1);
    expect(dropped).toEqual([]);
    expect(outbox.stats()).toEqual({ count: 3, bytes: 30 });
    outbox = reopen(outbox);
    expect(ids(outbox)).toEqual(['a', 'b', 'c']);
  });

  test('reject-new by bytes inside a batch: a refused large message does not stop a smaller one after it', async () => {
    const outbox = open({ limits: { maxCount: 100, maxBytes: 30, whenFull: 'reject-new' } });
    const results = await outcomes([message('a', 10), message('big', 25), message('small', 20)].map((m) => outbox.addBatched(m)));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(ids(outbox)).toEqual(['a', 'small']);
    expect(outbox.stats()).toEqual({ count: 2, bytes: 30 });
  });

  test('drop-oldest inside a batch: the right ids are dropped, messages of the batch included, signals as with one add() each', async () => {
    const limits = { maxCount: 3, maxBytes: 1000, whenFull: 'drop-oldest' as const };
    let outbox = open({ limits });
    outbox.add(message('a'));
    outbox.add(message('b'));
    const signals = collectSignals(outbox);
    const stored = await Promise.all(['c', 'd', 'e', 'f'].map((id) => outbox.addBatched(message(id))));
    expect(stored.map((m) => m.messageId)).toEqual(['c', 'd', 'e', 'f']);
    expect(signals).toEqual([
      'added',
      'dropped a (outbox-full)',
      'added',
      'dropped b (outbox-full)',
      'added',
      'dropped c (outbox-full)', // accepted earlier in this batch, then pushed out by 'f'
      'added',
    ]);
    expect(ids(outbox)).toEqual(['d', 'e', 'f']);
    expect(outbox.stats()).toEqual({ count: 3, bytes: 30 });
    outbox = reopen(outbox, { limits });
    expect(ids(outbox)).toEqual(['d', 'e', 'f']);
  });

  test('expiries found by the batch are reported once, before its first message', async () => {
    let now = 10_000;
    const outbox = open({ clock: { now: () => now }, limits: { ...DEFAULT_OUTBOX_LIMITS, maxAgeMs: 1000 } });
    outbox.add(message('old', 10, now));
    now += 1001;
    const signals = collectSignals(outbox);
    await Promise.all(['a', 'b'].map((id) => outbox.addBatched(message(id, 10, now))));
    expect(signals).toEqual(['dropped old (expired)', 'added', 'added']);
    expect(ids(outbox)).toEqual(['a', 'b']);
  });

  test('a duplicate id inside a batch refuses that message only', async () => {
    const outbox = open();
    outbox.add(message('a'));
    const results = await outcomes([message('b'), message('a'), message('b'), message('c')].map((m) => outbox.addBatched(m)));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
    for (const r of [results[1], results[2]]) {
      const { reason } = r as PromiseRejectedResult;
      expect(reason).toBeInstanceOf(HubstateError);
      expect(reason).not.toBeInstanceOf(StorageError);
    }
    expect(ids(outbox)).toEqual(['a', 'b', 'c']);
    expect(outbox.stats()).toEqual({ count: 3, bytes: 30 });
  });

  test('a failed transaction rejects every caller of the batch with a StorageError, keeps what was stored, and the outbox goes on', async () => {
    const limits = { maxCount: 2, maxBytes: 1_000_000, whenFull: 'drop-oldest' as const };
    let outbox = open({ limits });
    outbox.add(message('kept'));
    const signals = collectSignals(outbox);
    // A full disk, for real: SQLite may not grow the file past its current size.
    const db = (outbox as unknown as { db: Database.Database }).db;
    db.pragma(`max_page_count = ${db.pragma('page_count', { simple: true }) as number}`);
    const big = { ...message('x3', 200_000), body: 'x'.repeat(200_000) };
    const results = await outcomes([message('x1'), message('x2'), big].map((m) => outbox.addBatched(m)));

    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
    const errors = results.map((r) => (r as PromiseRejectedResult).reason as StorageError);
    for (const error of errors) {
      expect(error).toBeInstanceOf(StorageError);
      expect(error).toMatchObject({ reason: 'io', path: outbox.path });
    }
    expect(errors[0].message).toContain('SQLITE_FULL');
    // Nothing of the batch, and nothing it would have pushed out ('kept', by x2) is gone.
    expect(signals).toEqual([]);
    expect(ids(outbox)).toEqual(['kept']);
    expect(outbox.stats()).toEqual({ count: 1, bytes: 10 });

    db.pragma('max_page_count = 4294967294');
    const next = await outbox.addBatched(message('y'));
    expect(next.messageId).toBe('y');
    expect(outbox.add(message('z')).seq).toBeGreaterThan(next.seq);
    expect(signals).toEqual(['added', 'dropped kept (outbox-full)', 'added']);
    outbox = reopen(outbox, { limits });
    expect(ids(outbox)).toEqual(['y', 'z']);
  });

  test('close() commits the adds still waiting; after close addBatched is refused as stopped; a reopen finds all', async () => {
    const outbox = open();
    const waiting = ['a', 'b', 'c'].map((id) => outbox.addBatched(message(id)));
    outbox.close();
    expect((await Promise.all(waiting)).map((m) => m.messageId)).toEqual(['a', 'b', 'c']);
    await expect(outbox.addBatched(message('d'))).rejects.toMatchObject({ name: 'MessageRejectedError', reason: 'stopped' });
    expect(ids(open({ path: outbox.path }))).toEqual(['a', 'b', 'c']);
  });
});

describe('SQLite outbox: the newest messages read from memory', () => {
  /** Deterministic PRNG (mulberry32). */
  function seeded(seed: number): () => number {
    let a = seed;
    return () => {
      a = (a + 0x6d2b79f5) | 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  test('after() answers what the table holds, through adds, acknowledgements, drops, expiry, a reopen and more messages than it keeps', async () => {
    const random = seeded(15);
    let now = 0;
    const clock = { now: () => now };
    // Small limits: drop-oldest and expiry happen; big messages pass the 1 MB it keeps in memory.
    const limits = { maxCount: 300, maxBytes: 1_500_000, whenFull: 'drop-oldest' as const, maxAgeMs: 50_000 };
    let outbox = open({ clock, limits });
    const live: Array<{ id: string; seq: number }> = [];
    const forget = (id: string) => {
      const at = live.findIndex((m) => m.id === id);
      if (at >= 0) live.splice(at, 1);
    };
    const reasons = new Set<string>();
    const watch = (o: SqliteOutbox) =>
      o.onDropped((d) => {
        reasons.add(d.reason);
        forget(d.messageId);
      });
    watch(outbox);
    let next = 0;
    for (let step = 0; step < 1200; step++) {
      const roll = random();
      if (roll < 0.5) {
        // A burst of adds (one commit), sometimes of big messages.
        const burst = Array.from({ length: 1 + Math.floor(random() * 8) }, () => message(`m${next++}`, random() < 0.05 ? 200_000 : 100, now));
        const stored = await Promise.all(burst.map((m) => outbox.addBatched(m)));
        for (const m of stored) live.push({ id: m.messageId, seq: m.seq });
      } else if (roll < 0.8 && live.length > 0) {
        // Usually the oldest run (PUBACKs in send order); sometimes with gaps, a repeat or an unknown id.
        const head = live.slice(0, 1 + Math.floor(random() * 16)).map((m) => m.id);
        const kind = random();
        const acked = kind < 0.7 ? head : kind < 0.8 ? head.filter(() => random() < 0.5) : kind < 0.9 ? [...head, head[0]!] : [...head, 'unknown'];
        expect(outbox.removeMany(acked)).toEqual([...new Set(acked)].filter((id) => id !== 'unknown'));
        acked.forEach(forget);
      } else if (roll < 0.9 && live.length > 0) {
        const victim = live[Math.floor(random() * live.length)]!.id;
        expect(outbox.drop(victim, 'unsendable', 'test')).toBe(true);
      } else if (roll < 0.95) {
        now += Math.floor(random() * 60_000);
      } else if (roll < 0.96) {
        outbox = reopen(outbox, { clock, limits });
        watch(outbox);
      }
      // Read from any point, as the sender does after a reconnect (0) or right behind the writer.
      const from = live.length === 0 || random() < 0.2 ? 0 : live[Math.floor(random() * live.length)]!.seq;
      const limit = 1 + Math.floor(random() * 300);
      const got = outbox.after(from, limit).map((m) => m.messageId);
      expect(got).toEqual(live.filter((m) => m.seq > from).slice(0, limit).map((m) => m.id));
    }
    expect(next).toBeGreaterThan(1024); // more than it keeps in memory passed through
    expect(reasons).toEqual(new Set(['outbox-full', 'expired', 'unsendable']));
    expect(ids(reopen(outbox, { clock, limits }))).toEqual(live.map((m) => m.id));
  });

  test('removeMany removes only what it is given: a repeated id around a gap never takes the message in the gap', () => {
    const outbox = open();
    ['a', 'b', 'c', 'd'].forEach((id) => outbox.add(message(id)));
    expect(outbox.removeMany(['a', 'c', 'a'])).toEqual(['a', 'c']);
    expect(ids(outbox)).toEqual(['b', 'd']);
    expect(outbox.stats()).toEqual({ count: 2, bytes: 20 });
    expect(outbox.removeMany(['b', 'd'])).toEqual(['b', 'd']);
    expect(ids(reopen(outbox))).toEqual([]);
  });

  test('more messages than it keeps in memory: the older ones are read from the table, in order', () => {
    const outbox = open();
    const stored = Array.from({ length: 1100 }, (_, i) => outbox.add(message(`m${i}`)));
    const all = stored.map((m) => m.messageId);
    expect(outbox.after(0, 2000).map((m) => m.messageId)).toEqual(all);
    expect(outbox.after(stored[10]!.seq, 100).map((m) => m.messageId)).toEqual(all.slice(11, 111));
    expect(outbox.after(stored[1000]!.seq, 200).map((m) => m.messageId)).toEqual(all.slice(1001));
    expect(outbox.removeMany(all.slice(0, 1050))).toEqual(all.slice(0, 1050));
    expect(outbox.after(0, 2000).map((m) => m.messageId)).toEqual(all.slice(1050));
  });
});
