/**
 * The durable inbox of offline (C2D) commands: the device's half of at-least-once.
 *
 * mqtt.js PUBACKs a C2D message right after its synchronous 'message' event, long before an async
 * command handler finishes: a crash during the handler loses the command (the hub has forgotten
 * it). So the command is written here inside that event (better-sqlite3 is synchronous: the commit
 * is in the WAL before the PUBACK is written), run from here, and marked done when its handler
 * settles; what is still pending at the next start is run again. Ids are remembered, so a
 * redelivery of the same C2D message (the hub did not get our PUBACK) is not run a second time
 * while it is pending or done; the done ids kept are bounded (`maxDone`, the most recent).
 *
 * One SQLite database per device (WAL, exclusive lock, file mode 0600). A file that is corrupt or
 * not ours is refused with a StorageError and left untouched; a row that does not read back as a
 * command is reported as a StorageError and retired (marked done), never run and never a crash.
 */
import { join } from 'node:path';
import type Database from 'better-sqlite3';
import type { Clock } from '../clock';
import { ConfigError, StorageError } from '../errors';
import { openSqliteStore, sqliteCode, storageError, type SqliteStoreFile } from './sqlite';

/** An offline command as stored: what to run, and how often it was started. */
export interface InboxCommand {
  /** The C2D message id (the dedupe key). */
  messageId: string;
  /** Full command name (`command` or `component*command`). */
  command: string;
  /** The raw payload; undefined when the message had none. */
  body?: Buffer;
  /** Epoch ms of receipt. */
  receivedAt: number;
  /** Runs started so far, this one included once `accept` or `begin` returned. */
  attempts: number;
}

export type AcceptResult =
  | { accepted: true; command: InboxCommand }
  /** Already received: `pending` (running, or to be replayed) or `done`. Not to be run again. */
  | { accepted: false; state: 'pending' | 'done' };

export interface CommandInboxOptions {
  /** The database file. Its directory is created with mode 0700 if missing; the file gets mode 0600. */
  path: string;
  /** Done ids remembered for dedupe (the most recent ones). Default 1000. */
  maxDone?: number;
  clock?: Pick<Clock, 'now'>;
}

/** 'hbci' (hubstate command inbox): marks the file as ours, and not an outbox. */
const APPLICATION_ID = 0x68626369;
const SCHEMA_VERSION = 1;
export const DEFAULT_MAX_DONE = 1000;

const SCHEMA = `
  CREATE TABLE inbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT, -- receipt order
    message_id  TEXT    NOT NULL UNIQUE,
    command     TEXT    NOT NULL CHECK (length(command) > 0),
    body        BLOB,                               -- NULL: no payload
    received_at INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    done_at     INTEGER,                            -- NULL while pending
    status      INTEGER                             -- the handler's outcome, once done
  );
  CREATE INDEX inbox_done ON inbox (done_at, seq);
`;

/** How openSqliteStore opens and checks this file. */
const FILE: Omit<SqliteStoreFile, 'path' | 'synchronous'> =
  { names: { short: 'inbox', long: 'command inbox' }, applicationId: APPLICATION_ID, schemaVersion: SCHEMA_VERSION, schema: SCHEMA };

interface Row {
  seq: unknown;
  message_id: unknown;
  command: unknown;
  body: unknown;
  received_at: unknown;
  attempts: unknown;
}

export function commandInboxPath(dataDir: string, registrationId: string): string {
  return join(dataDir, `inbox-${encodeURIComponent(registrationId)}.sqlite`);
}

export class CommandInbox {
  readonly path: string;
  private readonly db: Database.Database;
  private readonly maxDone: number;
  private readonly clock: Pick<Clock, 'now'>;
  private closed = false;
  private readonly insertStatement: Database.Statement<[string, string, Buffer | null, number]>;
  private readonly stateStatement: Database.Statement<[string], { done_at: number | null }>;
  private readonly beginStatement: Database.Statement<[string], { attempts: number }>;
  private readonly doneStatement: Database.Statement<[number, number | null, string]>;
  private readonly retireStatement: Database.Statement<[number, unknown]>;
  private readonly pruneStatement: Database.Statement<[number]>;
  private readonly pendingStatement: Database.Statement<[], Row>;
  private readonly completeTransaction: (messageId: string, status: number | null) => void;

  constructor(options: CommandInboxOptions) {
    if (typeof options.path !== 'string' || options.path.length === 0) throw new ConfigError('path', 'a file path');
    const maxDone = options.maxDone ?? DEFAULT_MAX_DONE;
    if (!Number.isInteger(maxDone) || maxDone < 0) throw new ConfigError('maxDone', 'a non-negative integer');
    this.path = options.path;
    this.maxDone = maxDone;
    this.clock = options.clock ?? { now: () => Date.now() };

    // With WAL, NORMAL: a commit survives a crash of the process (the case this store exists for).
    const db = openSqliteStore({ ...FILE, path: this.path, synchronous: 'normal' });
    this.db = db;
    this.insertStatement = db.prepare('INSERT INTO inbox (message_id, command, body, received_at, attempts) VALUES (?, ?, ?, ?, 1)');
    this.stateStatement = db.prepare<[string], { done_at: number | null }>('SELECT done_at FROM inbox WHERE message_id = ?');
    this.beginStatement = db.prepare<[string], { attempts: number }>(
      'UPDATE inbox SET attempts = attempts + 1 WHERE message_id = ? AND done_at IS NULL RETURNING attempts',
    );
    this.doneStatement = db.prepare<[number, number | null, string]>('UPDATE inbox SET done_at = ?, status = ? WHERE message_id = ? AND done_at IS NULL');
    this.retireStatement = db.prepare<[number, unknown]>('UPDATE inbox SET done_at = ? WHERE seq = ?');
    // Keep the `maxDone` most recent done rows (receipt order); pending rows are never pruned.
    this.pruneStatement = db.prepare<[number]>(
      'DELETE FROM inbox WHERE done_at IS NOT NULL AND seq NOT IN (SELECT seq FROM inbox WHERE done_at IS NOT NULL ORDER BY seq DESC LIMIT ?)',
    );
    this.pendingStatement = db.prepare<[], Row>(
      'SELECT seq, message_id, command, body, received_at, attempts FROM inbox WHERE done_at IS NULL ORDER BY seq',
    );
    this.completeTransaction = db.transaction((messageId: string, status: number | null) => {
      if (this.doneStatement.run(this.clock.now(), status, messageId).changes > 0) this.pruneStatement.run(this.maxDone);
    });
  }

  /**
   * Record a received command (durable when it returns) with its first attempt counted, or say
   * that its id is already known. Throws StorageError when it cannot be written.
   */
  accept(command: { messageId: string; command: string; body?: Buffer }): AcceptResult {
    if (this.closed) throw new StorageError('io', this.path, 'the inbox is closed');
    const receivedAt = this.clock.now();
    try {
      this.insertStatement.run(command.messageId, command.command, command.body ?? null, receivedAt);
    } catch (error) {
      if (sqliteCode(error) === 'SQLITE_CONSTRAINT_UNIQUE') {
        const row = this.stateStatement.get(command.messageId);
        return { accepted: false, state: row && row.done_at !== null ? 'done' : 'pending' };
      }
      throw storageError(this.path, error, 'cannot store an offline command', 'inbox');
    }
    const stored: InboxCommand = { messageId: command.messageId, command: command.command, receivedAt, attempts: 1 };
    if (command.body !== undefined) stored.body = command.body;
    return { accepted: true, command: stored };
  }

  /** A replayed run starts: its attempt counted first (so a command that crashes every run is seen). */
  begin(messageId: string): number {
    if (this.closed) throw new StorageError('io', this.path, 'the inbox is closed');
    try {
      return this.beginStatement.get(messageId)?.attempts ?? 0;
    } catch (error) {
      throw storageError(this.path, error, 'cannot count an attempt', 'inbox');
    }
  }

  /**
   * The handler settled (`status` is its outcome; null when it was never run). Done ids beyond
   * `maxDone` are forgotten, oldest first. After close this does nothing: the command stays
   * pending and runs again at the next start (at least once).
   */
  complete(messageId: string, status: number | null): void {
    if (this.closed) return;
    try {
      this.completeTransaction(messageId, status);
    } catch (error) {
      throw storageError(this.path, error, 'cannot mark an offline command done', 'inbox');
    }
  }

  /**
   * The commands still pending, in receipt order, and a StorageError for each row that does not
   * read back as a command (that row is retired: marked done, never run).
   */
  pending(): { commands: InboxCommand[]; bad: StorageError[] } {
    if (this.closed) return { commands: [], bad: [] };
    let rows: Row[];
    try {
      rows = this.pendingStatement.all();
    } catch (error) {
      throw storageError(this.path, error, 'cannot read pending offline commands', 'inbox');
    }
    const commands: InboxCommand[] = [];
    const bad: StorageError[] = [];
    for (const row of rows) {
      const problem = rowProblem(row);
      if (problem === undefined) {
        const command: InboxCommand = {
          messageId: row.message_id as string,
          command: row.command as string,
          receivedAt: row.received_at as number,
          attempts: row.attempts as number,
        };
        if (row.body !== null) command.body = row.body as Buffer;
        commands.push(command);
        continue;
      }
      bad.push(new StorageError('corrupt', this.path, `row ${String(row.seq)}: ${problem}; retired without running it`));
      try {
        this.retireStatement.run(this.clock.now(), row.seq);
      } catch (error) {
        bad.push(storageError(this.path, error, `cannot retire row ${String(row.seq)}`, 'inbox'));
      }
    }
    return { commands, bad };
  }

  /** Rows: pending and done (tests, diagnostics). */
  counts(): { pending: number; done: number } {
    const row = this.db
      .prepare('SELECT COUNT(*) - COUNT(done_at) AS pending, COUNT(done_at) AS done FROM inbox')
      .get() as { pending: number; done: number };
    return row;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }
}

function rowProblem(row: Row): string | undefined {
  if (typeof row.message_id !== 'string' || row.message_id.length === 0) return 'no message id';
  if (typeof row.command !== 'string' || row.command.length === 0) return 'no command name';
  if (row.body !== null && !Buffer.isBuffer(row.body)) return `a payload of type ${typeof row.body}, not bytes`;
  if (typeof row.received_at !== 'number' || !Number.isInteger(row.received_at)) return 'no receipt time';
  if (typeof row.attempts !== 'number' || !Number.isInteger(row.attempts) || row.attempts < 0) return 'no attempt count';
  return undefined;
}

/** Open (or create) the command inbox of `registrationId` in `dataDir`. */
export function openCommandInbox(dataDir: string, registrationId: string, options: Omit<CommandInboxOptions, 'path'> = {}): CommandInbox {
  return new CommandInbox({ ...options, path: commandInboxPath(dataDir, registrationId) });
}
