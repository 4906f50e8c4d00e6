/**
 * The command inbox on its own: dedupe by message id while pending and once done, replay of what
 * is pending after a reopen (receipt order, payload bytes, attempts), the bounded set of done ids,
 * file modes, and files or rows that are not sound giving typed errors instead of crashes.
 */
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { StorageError } from '../../src/errors';
import { CommandInbox, commandInboxPath, openCommandInbox } from '../../src/store/command-inbox';
import { openSqliteOutbox } from '../../src/store/sqlite-outbox';

const dir = () => mkdtempSync(join(tmpdir(), 'hubstate-inbox-'));
const open: CommandInbox[] = [];
function inbox(dataDir: string, maxDone?: number) {
  const created = openCommandInbox(dataDir, 'dev/1', maxDone === undefined ? {} : { maxDone });
  open.push(created);
  return created;
}
afterEach(() => {
  for (const created of open.splice(0)) created.close();
});

function storageErrorOf(fn: () => unknown): StorageError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(StorageError);
    return error as StorageError;
  }
  throw new Error('expected a StorageError');
}

test('a message id is run once: a redelivery is refused while pending and once done', () => {
  const box = inbox(dir());
  const first = box.accept({ messageId: 'm-1', command: 'setAlarm', body: Buffer.from('"07:30:00"') });
  expect(first).toEqual({ accepted: true, command: { messageId: 'm-1', command: 'setAlarm', body: Buffer.from('"07:30:00"'), receivedAt: expect.any(Number), attempts: 1 } });
  expect(box.accept({ messageId: 'm-1', command: 'setAlarm' })).toEqual({ accepted: false, state: 'pending' });
  box.complete('m-1', 200);
  expect(box.accept({ messageId: 'm-1', command: 'setAlarm' })).toEqual({ accepted: false, state: 'done' });
  expect(box.counts()).toEqual({ pending: 0, done: 1 });
  box.complete('m-1', 500); // completing twice changes nothing
  expect(box.counts()).toEqual({ pending: 0, done: 1 });
});

test('after a reopen, what was pending is there to replay: receipt order, payload bytes, attempts counted', () => {
  const dataDir = dir();
  const before = inbox(dataDir);
  before.accept({ messageId: 'a', command: 'thermostat1*reset' });
  before.accept({ messageId: 'b', command: 'setAlarm', body: Buffer.from([0, 255, 1]) });
  before.accept({ messageId: 'c', command: 'setAlarm', body: Buffer.alloc(0) });
  before.complete('b', 200);
  before.close();

  const after = inbox(dataDir);
  const { commands, bad } = after.pending();
  expect(bad).toEqual([]);
  expect(commands.map((c) => [c.messageId, c.command, c.body, c.attempts])).toEqual([
    ['a', 'thermostat1*reset', undefined, 1],
    ['c', 'setAlarm', Buffer.alloc(0), 1],
  ]);
  expect(after.begin('a')).toBe(2);
  expect(after.begin('b')).toBe(0); // done: not started again
  expect(after.accept({ messageId: 'b', command: 'setAlarm' })).toEqual({ accepted: false, state: 'done' });
});

test('done ids are bounded (the most recent kept); pending ones are never forgotten', () => {
  const box = inbox(dir(), 3);
  box.accept({ messageId: 'pending-0', command: 'x' });
  for (let n = 1; n <= 6; n++) {
    box.accept({ messageId: `m-${n}`, command: 'x' });
    box.complete(`m-${n}`, 200);
  }
  expect(box.counts()).toEqual({ pending: 1, done: 3 });
  expect(box.accept({ messageId: 'm-6', command: 'x' })).toEqual({ accepted: false, state: 'done' });
  expect(box.accept({ messageId: 'm-4', command: 'x' })).toEqual({ accepted: false, state: 'done' });
  expect(box.accept({ messageId: 'pending-0', command: 'x' })).toEqual({ accepted: false, state: 'pending' });
  expect(box.accept({ messageId: 'm-1', command: 'x' }).accepted).toBe(true); // forgotten: beyond the bound
});

test('the file and its WAL are 0600, a created directory 0700', () => {
  const dataDir = join(dir(), 'nested');
  const box = inbox(dataDir);
  box.accept({ messageId: 'm', command: 'x' });
  const path = commandInboxPath(dataDir, 'dev/1');
  expect(path).toBe(join(dataDir, 'inbox-dev%2F1.sqlite'));
  expect(statSync(path).mode & 0o777).toBe(0o600);
  expect(statSync(`${path}-wal`).mode & 0o777).toBe(0o600);
  expect(statSync(dataDir).mode & 0o777).toBe(0o700);
});

test('a corrupt file, a foreign database, a second opener: typed errors, the file left untouched', () => {
  const dataDir = dir();
  const path = commandInboxPath(dataDir, 'dev/1');
  writeFileSync(path, 'x'.repeat(4096), { mode: 0o600 });
  const corrupt = storageErrorOf(() => inbox(dataDir));
  expect(corrupt.reason).toBe('corrupt');
  expect(corrupt.path).toBe(path);
  expect(readFileSync(path, 'utf8')).toBe('x'.repeat(4096));

  const outboxDir = dir(); // an outbox is SQLite too, but not an inbox
  openSqliteOutbox(outboxDir, 'dev/1').close();
  const foreign = storageErrorOf(() => new CommandInbox({ path: join(outboxDir, 'outbox-dev%2F1.sqlite') }));
  expect(foreign.reason).toBe('incompatible');

  const shared = dir();
  inbox(shared);
  expect(storageErrorOf(() => inbox(shared)).reason).toBe('locked');
});

test('rows that do not read back as commands: a StorageError each, retired (never run), the sound ones replayed', () => {
  const dataDir = dir();
  const box = inbox(dataDir);
  box.accept({ messageId: 'good', command: 'setAlarm', body: Buffer.from('1') });
  box.close();
  // Damage as a tool or a disk could leave it, past the schema's checks.
  const raw = new Database(commandInboxPath(dataDir, 'dev/1'));
  raw.pragma('ignore_check_constraints = ON');
  raw.prepare("INSERT INTO inbox (message_id, command, body, received_at, attempts) VALUES ('no-name', '', NULL, 1, 1)").run();
  raw.prepare("INSERT INTO inbox (message_id, command, body, received_at, attempts) VALUES ('text-body', 'setAlarm', 42, 1, 1)").run();
  raw.prepare("INSERT INTO inbox (message_id, command, body, received_at, attempts) VALUES ('no-time', 'setAlarm', NULL, 'yesterday', 1)").run();
  raw.close();

  const reopened = inbox(dataDir);
  const { commands, bad } = reopened.pending();
  expect(commands.map((c) => c.messageId)).toEqual(['good']);
  expect(bad).toHaveLength(3);
  for (const error of bad) {
    expect(error).toBeInstanceOf(StorageError);
    expect(error.reason).toBe('corrupt');
  }
  expect(bad.map((e) => e.message)).toEqual([
    expect.stringContaining('no command name'),
    expect.stringContaining('a payload of type number'),
    expect.stringContaining('no receipt time'),
  ]);
  // Retired: not reported again, and their ids still deduplicate.
  expect(reopened.pending().bad).toEqual([]);
  expect(reopened.accept({ messageId: 'text-body', command: 'setAlarm' })).toEqual({ accepted: false, state: 'done' });
});

test('after close: complete does nothing (the command stays pending for the next start); accept is a typed error', () => {
  const dataDir = dir();
  const box = inbox(dataDir);
  box.accept({ messageId: 'm', command: 'x' });
  box.close();
  expect(() => box.complete('m', 200)).not.toThrow();
  expect(storageErrorOf(() => box.accept({ messageId: 'n', command: 'x' })).reason).toBe('io');
  expect(inbox(dataDir).pending().commands.map((c) => c.messageId)).toEqual(['m']);
});
