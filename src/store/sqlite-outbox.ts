import { join } from 'node:path';
import type Database from 'better-sqlite3';
import type { Clock } from '../clock';
import { ConfigError, HubstateError, MessageRejectedError } from '../errors';
import {
  DEFAULT_OUTBOX_LIMITS,
  OutboxSignals,
  storedMessage,
  type DroppedMessage,
  type NewOutboxMessage,
  type Outbox,
  type OutboxLimits,
  type OutboxMessage,
} from './outbox';
import { openSqliteStore, sqliteCode, storageError, type SqliteStoreFile } from './sqlite';
import { SeqQueue } from './seq-queue';

/** The in-memory limits plus a maximum age: older messages are dropped with reason `expired`. */
export type SqliteOutboxLimits = OutboxLimits & { maxAgeMs?: number };

export interface SqliteOutboxOptions {
  /** The database file. Its directory is created with mode 0700 if missing; the file gets mode 0600. */
  path: string;
  limits?: SqliteOutboxLimits;
  /** Read for the age limit only. Defaults to the system clock. */
  clock?: Pick<Clock, 'now'>;
  /**
   * `normal` (default): with WAL, a commit survives a crash of the process (SIGKILL, OOM kill,
   * uncaught exception) because it is in the WAL file, that is in the OS page cache, when `add`
   * returns; the last commits can be lost on power loss or kernel panic. `full`: the WAL is
   * fsynced on every commit, so commits survive power loss too, at the cost of one fsync per `add`
   * (per batch with `addBatched`).
   */
  synchronous?: 'normal' | 'full';
}

/** Written in the database header (`PRAGMA application_id`): 'hbst'. Marks the file as ours. */
const APPLICATION_ID = 0x68627374;
/** `PRAGMA user_version`: bumped with every schema change; a newer file is refused, not guessed at. */
const SCHEMA_VERSION = 1;

const SCHEMA = `
  CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT, -- capture order; AUTOINCREMENT: never reused after deletes
    message_id TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    component  TEXT,
    properties TEXT    NOT NULL,                  -- JSON object of strings
    created_at INTEGER NOT NULL,                  -- epoch ms of capture
    bytes      INTEGER NOT NULL
  );
  CREATE UNIQUE INDEX outbox_message_id ON outbox (message_id);
  CREATE INDEX outbox_created_at ON outbox (created_at);
`;

/** How openSqliteStore opens and checks this file. */
const FILE: Omit<SqliteStoreFile, 'path' | 'synchronous'> =
  { names: { short: 'outbox', long: 'outbox' }, applicationId: APPLICATION_ID, schemaVersion: SCHEMA_VERSION, schema: SCHEMA };

interface Row {
  seq: number;
  message_id: string;
  body: string;
  component: string | null;
  properties: string;
  created_at: number;
  bytes: number;
}

interface Victim {
  seq: number;
  message_id: string;
  bytes: number;
}

/** One message's fate inside the batch transaction, with the drops it caused (reported after commit). */
type AddOutcome =
  | { accepted: OutboxMessage; dropped: DroppedMessage[] }
  | { refused: HubstateError; dropped: DroppedMessage[] };

/** What the caller of an add is told once its batch has committed, or failed. */
type AddResult = { accepted: OutboxMessage } | { error: Error };

/** A message waiting for the next batch commit. */
interface PendingAdd {
  message: NewOutboxMessage;
  settle(result: AddResult): void;
}

/** The outbox file for one registration id in the device's data directory. */
export function sqliteOutboxPath(dataDir: string, registrationId: string): string {
  return join(dataDir, `outbox-${encodeURIComponent(registrationId)}.sqlite`);
}

/** Open (or create) the durable outbox of `registrationId` in `dataDir`. */
export function openSqliteOutbox(
  dataDir: string,
  registrationId: string,
  options: Omit<SqliteOutboxOptions, 'path'> = {},
): SqliteOutbox {
  return new SqliteOutbox({ ...options, path: sqliteOutboxPath(dataDir, registrationId) });
}

function validateLimits(limits: SqliteOutboxLimits): void {
  const positiveInteger = (value: unknown) => typeof value === 'number' && Number.isInteger(value) && value > 0;
  if (!positiveInteger(limits.maxCount)) throw new ConfigError('limits.maxCount', 'a positive integer');
  if (!positiveInteger(limits.maxBytes)) throw new ConfigError('limits.maxBytes', 'a positive integer');
  if (limits.whenFull !== 'reject-new' && limits.whenFull !== 'drop-oldest') {
    throw new ConfigError('limits.whenFull', "'reject-new' or 'drop-oldest'");
  }
  if (limits.maxAgeMs !== undefined && !(typeof limits.maxAgeMs === 'number' && limits.maxAgeMs > 0)) {
    throw new ConfigError('limits.maxAgeMs', 'a positive number of milliseconds');
  }
}

/** A range DELETE that did not find exactly the rows expected (its transaction is rolled back). */
class RangeMismatch extends Error {}

/** Messages and bytes the read-ahead copy of the newest messages keeps at most (see RecentMessages). */
const RECENT_MAX_COUNT = 1024;
const RECENT_MAX_BYTES = 1024 * 1024;

/**
 * The newest committed messages, kept as they were added, so the sender reads what it was just
 * given without a SELECT and a JSON.parse per row (it reads right behind the writer). Holds every
 * live row with seq > `floor`, in seq order (plus removed ones not yet passed over); bounded: the
 * oldest are forgotten (the floor moves up) past RECENT_MAX_COUNT or RECENT_MAX_BYTES. Whatever
 * removes rows other than an acknowledgement (drops, expiry) forgets it all: reads go to the table
 * until new messages come.
 */
class RecentMessages {
  private readonly messages = new SeqQueue();

  constructor(private floor: number) {}

  /** A committed message (seqs increase). */
  added(message: OutboxMessage): void {
    this.messages.push(message);
    while (this.messages.size > RECENT_MAX_COUNT || this.messages.bytes > RECENT_MAX_BYTES) {
      const oldest = this.messages.oldest()!;
      this.floor = oldest.seq;
      this.messages.remove(oldest.messageId);
    }
  }

  removed(messageId: string): void {
    this.messages.remove(messageId);
  }

  /** Forget everything: rows up to `lastSeq` (the newest committed) are read from the table. */
  forget(lastSeq: number): void {
    this.messages.clear();
    this.floor = lastSeq;
  }

  /**
   * The seq range that holds exactly these messages and no other row, when all are here (an
   * acknowledged burst normally is the oldest run of them): one range DELETE removes them.
   */
  exactRange(messageIds: readonly string[]): { first: number; last: number; removed: Array<{ messageId: string; bytes: number }> } | undefined {
    let first = Infinity;
    let last = -Infinity;
    const removed: Array<{ messageId: string; bytes: number }> = [];
    const seqs = new Set<number>();
    for (const id of messageIds) {
      const message = this.messages.get(id);
      if (!message) return undefined;
      seqs.add(message.seq);
      if (message.seq < first) first = message.seq;
      if (message.seq > last) last = message.seq;
      removed.push({ messageId: id, bytes: message.bytes });
    }
    // A repeated id would make the count below match with a row that was not acknowledged.
    if (seqs.size !== messageIds.length || first <= this.floor) return undefined;
    return this.messages.liveInRange(first, last) === messageIds.length ? { first, last, removed } : undefined;
  }

  /** `after` from memory, or undefined when rows after `afterSeq` may not all be here. */
  after(afterSeq: number, limit: number): OutboxMessage[] | undefined {
    if (afterSeq < this.floor) return undefined;
    return this.messages.after(afterSeq, limit);
  }
}

/**
 * The durable outbox: one SQLite database (better-sqlite3, synchronous) per device, in WAL mode.
 * Same contract as MemoryOutbox; in addition, messages survive a restart with their ids and order,
 * so a device that crashed re-sends its unacknowledged tail with the same message ids.
 *
 * The connection holds the database in exclusive locking mode: a second outbox on the same file,
 * in this process or another, fails to open with StorageError('locked') instead of double-sending.
 *
 * Group commit: the messages given to `addBatched` during one event-loop turn are stored in one
 * transaction (a WAL commit costs far more than an insert) and each promise settles only after
 * that commit. `add` commits at once, together with whatever is waiting, so call order is
 * capture order whichever method is used.
 */
export class SqliteOutbox implements Outbox {
  readonly path: string;
  private readonly db: Database.Database;
  private readonly limits: SqliteOutboxLimits;
  private readonly clock: Pick<Clock, 'now'>;
  private count = 0;
  private bytes = 0;
  private closed = false;
  private readonly signals = new OutboxSignals();
  /** Adds waiting for the commit scheduled by `addBatched`, in call order. */
  private pending: PendingAdd[] = [];
  private commitScheduled: NodeJS.Immediate | undefined;
  private committedAdds = 0;
  /** The newest committed seq (0 for an empty, new file). */
  private lastSeq: number;
  private readonly recent: RecentMessages;

  private readonly insertStatement: Database.Statement<[string, string, string | null, string, number, number]>;
  private readonly afterStatement: Database.Statement<[number, number], Row>;
  private readonly removeStatement: Database.Statement<[string], { bytes: number }>;
  private readonly oldestStatement: Database.Statement<[], Victim>;
  private readonly expiredStatement: Database.Statement<[number], Victim>;
  private readonly deleteUpToStatement: Database.Statement<[number]>;
  private readonly deleteSeqStatement: Database.Statement<[number]>;
  private readonly addTransaction: (messages: readonly NewOutboxMessage[]) => AddOutcome[];
  private readonly expireTransaction: () => DroppedMessage[];
  private readonly removeManyTransaction: (messageIds: readonly string[]) => Array<{ messageId: string; bytes: number }>;
  /** Deletes a seq range that must hold `expected` rows; throws RangeMismatch (rolled back) otherwise. */
  private readonly removeRangeTransaction: (first: number, last: number, expected: number) => void;

  constructor(options: SqliteOutboxOptions) {
    if (typeof options.path !== 'string' || options.path.length === 0) throw new ConfigError('path', 'a file path');
    this.path = options.path;
    this.limits = options.limits ?? DEFAULT_OUTBOX_LIMITS;
    validateLimits(this.limits);
    this.clock = options.clock ?? { now: () => Date.now() };
    const synchronous = options.synchronous ?? 'normal';
    if (synchronous !== 'normal' && synchronous !== 'full') throw new ConfigError('synchronous', "'normal' or 'full'");

    const db = openSqliteStore({ ...FILE, path: this.path, synchronous });
    try {
      const totals = db.prepare('SELECT COUNT(*) AS count, COALESCE(SUM(bytes), 0) AS bytes FROM outbox').get() as {
        count: number;
        bytes: number;
      };
      this.count = totals.count;
      this.bytes = totals.bytes;
      this.lastSeq = (db.prepare('SELECT COALESCE(MAX(seq), 0) AS seq FROM outbox').get() as { seq: number }).seq;
    } catch (error) {
      db.close();
      throw storageError(this.path, error, 'cannot open the outbox', 'outbox');
    }
    this.db = db;
    this.recent = new RecentMessages(this.lastSeq);

    this.insertStatement = db.prepare(
      'INSERT INTO outbox (message_id, body, component, properties, created_at, bytes) VALUES (?, ?, ?, ?, ?, ?)',
    );
    this.afterStatement = db.prepare<[number, number], Row>(
      'SELECT seq, message_id, body, component, properties, created_at, bytes FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?',
    );
    this.removeStatement = db.prepare<[string], { bytes: number }>('DELETE FROM outbox WHERE message_id = ? RETURNING bytes');
    this.oldestStatement = db.prepare<[], Victim>('SELECT seq, message_id, bytes FROM outbox ORDER BY seq');
    this.expiredStatement = db.prepare<[number], Victim>(
      'SELECT seq, message_id, bytes FROM outbox WHERE created_at < ? ORDER BY created_at, seq',
    );
    this.deleteUpToStatement = db.prepare<[number]>('DELETE FROM outbox WHERE seq <= ?');
    this.deleteSeqStatement = db.prepare<[number]>('DELETE FROM outbox WHERE seq = ?');
    this.addTransaction = db.transaction((messages: readonly NewOutboxMessage[]) => {
      // Expiries happen once, before the first message: they are reported with it.
      let dropped = this.expireInTransaction();
      const outcomes: AddOutcome[] = [];
      for (const message of messages) {
        outcomes.push(this.addInTransaction(message, dropped));
        dropped = [];
      }
      return outcomes;
    });
    this.expireTransaction = db.transaction(() => this.expireInTransaction());
    this.removeManyTransaction = db.transaction((messageIds: readonly string[]) => {
      const removed: Array<{ messageId: string; bytes: number }> = [];
      for (const messageId of messageIds) {
        const row = this.removeStatement.get(messageId);
        if (row) removed.push({ messageId, bytes: row.bytes });
      }
      return removed;
    });
    const deleteRangeStatement = db.prepare<[number, number]>('DELETE FROM outbox WHERE seq BETWEEN ? AND ?');
    this.removeRangeTransaction = db.transaction((first: number, last: number, expected: number) => {
      if (deleteRangeStatement.run(first, last).changes !== expected) throw new RangeMismatch();
    });
  }

  /**
   * Durable when it returns: the commit is in the WAL (see `synchronous`). Drops expired messages
   * first, then makes room (drop-oldest) or refuses (reject-new); every drop is notified.
   * Messages waiting for an `addBatched` commit go in the same transaction, before this one.
   */
  add(message: NewOutboxMessage): OutboxMessage {
    if (this.closed) throw new MessageRejectedError('stopped', 'the outbox is closed');
    const result: { current?: AddResult } = {};
    this.pending.push({ message, settle: (settled) => (result.current = settled) });
    this.commitPending();
    const settled = result.current!; // commitPending settles every message it took
    if ('error' in settled) throw settled.error;
    return settled.accepted;
  }

  /**
   * `add`, grouped: every message given here during this event-loop turn is stored in one
   * transaction, at the end of the turn (setImmediate, no timer). Resolves once committed;
   * rejects with what `add` would throw. If the commit fails, every message of the batch is
   * rejected with the same StorageError and nothing of it is stored.
   */
  addBatched(message: NewOutboxMessage): Promise<OutboxMessage> {
    if (this.closed) return Promise.reject(new MessageRejectedError('stopped', 'the outbox is closed'));
    return new Promise((resolve, reject) => {
      this.pending.push({ message, settle: (result) => ('error' in result ? reject(result.error) : resolve(result.accepted)) });
      this.commitScheduled ??= setImmediate(() => this.commitPending());
    });
  }

  /** Transactions that stored added messages since open: one per batch, however many messages. */
  get addCommits(): number {
    return this.committedAdds;
  }

  /** Stores every waiting message in one transaction, then notifies and settles each, in order. */
  private commitPending(): void {
    if (this.commitScheduled) clearImmediate(this.commitScheduled);
    this.commitScheduled = undefined;
    const batch = this.pending;
    if (batch.length === 0) return;
    this.pending = [];
    let outcomes: AddOutcome[];
    const before = this.stats();
    try {
      outcomes = this.addTransaction(batch.map((entry) => entry.message));
    } catch (error) {
      this.restore(before); // the transaction rolled back: so do the counters that mirror it
      const failure = storageError(this.path, error, batch.length === 1 ? 'cannot add a message' : `cannot add ${batch.length} messages`, 'outbox');
      for (const entry of batch) entry.settle({ error: failure });
      return;
    }
    this.committedAdds++;
    let dropsInBatch = false;
    for (const outcome of outcomes) {
      if (outcome.dropped.length > 0) dropsInBatch = true;
      if ('accepted' in outcome) {
        this.lastSeq = outcome.accepted.seq;
        if (!dropsInBatch) this.recent.added(outcome.accepted);
      }
    }
    if (dropsInBatch) this.recent.forget(this.lastSeq);
    // As if each message had been added alone: its drops, then the wake-up if accepted. A
    // listener's exception goes to that message's caller, as it would from a lone add().
    batch.forEach((entry, i) => {
      const outcome = outcomes[i]!;
      try {
        this.notifyDropped(outcome.dropped);
        if ('accepted' in outcome) this.signals.added();
      } catch (error) {
        entry.settle({ error: error as Error });
        return;
      }
      entry.settle('accepted' in outcome ? { accepted: outcome.accepted } : { error: outcome.refused });
    });
  }

  /** One message of a batch. A refusal writes nothing; the batch goes on with the next message. */
  private addInTransaction(message: NewOutboxMessage, dropped: DroppedMessage[]): AddOutcome {
    const { maxCount, maxBytes, whenFull } = this.limits;
    const fits = this.count + 1 <= maxCount && this.bytes + message.bytes <= maxBytes;
    if (!fits && (whenFull === 'reject-new' || message.bytes > maxBytes)) {
      return { refused: new MessageRejectedError('outbox-full', `${this.count} messages, ${this.bytes} bytes queued`), dropped };
    }
    let seq: number;
    try {
      const result = this.insertStatement.run(
        message.messageId,
        message.body,
        message.component ?? null,
        JSON.stringify(message.properties),
        message.createdAt,
        message.bytes,
      );
      seq = Number(result.lastInsertRowid);
    } catch (error) {
      // Only this statement is undone (SQLite's ABORT): the rest of the batch stands.
      if (sqliteCode(error) !== 'SQLITE_CONSTRAINT_UNIQUE') throw error;
      return { refused: new HubstateError(`message id '${message.messageId}' is already in the outbox`), dropped };
    }
    this.count++;
    this.bytes += message.bytes;
    // Inserted first, so a duplicate id never drops anything; the new message is never a victim
    // (it alone fits: checked above).
    if (!fits) this.dropOldestToFit(dropped);
    return { accepted: storedMessage(message, seq), dropped };
  }

  private dropOldestToFit(dropped: DroppedMessage[]): void {
    const { maxCount, maxBytes } = this.limits;
    let lastSeq: number | undefined;
    for (const victim of this.oldestStatement.iterate()) {
      if (this.count <= maxCount && this.bytes <= maxBytes) break;
      lastSeq = victim.seq;
      this.count--;
      this.bytes -= victim.bytes;
      dropped.push({ messageId: victim.message_id, reason: 'outbox-full' });
    }
    if (lastSeq !== undefined) this.deleteUpToStatement.run(lastSeq);
  }

  private expireInTransaction(): DroppedMessage[] {
    if (this.limits.maxAgeMs === undefined || this.count === 0) return [];
    const victims = this.expiredStatement.all(this.clock.now() - this.limits.maxAgeMs);
    for (const victim of victims) {
      this.deleteSeqStatement.run(victim.seq);
      this.count--;
      this.bytes -= victim.bytes;
    }
    return victims.map((victim) => ({ messageId: victim.message_id, reason: 'expired' as const }));
  }

  /** Up to `limit` messages with seq > `afterSeq`, in capture order; expired ones are dropped first. */
  after(afterSeq: number, limit: number): OutboxMessage[] {
    if (this.closed || limit <= 0) return [];
    let rows: Row[];
    let expired: DroppedMessage[] = [];
    const before = this.stats();
    try {
      if (this.limits.maxAgeMs !== undefined) expired = this.expireTransaction();
    } catch (error) {
      this.restore(before);
      throw storageError(this.path, error, 'cannot drop expired messages', 'outbox');
    }
    if (expired.length > 0) this.recent.forget(this.lastSeq);
    const recent = this.recent.after(afterSeq, limit);
    if (recent) {
      this.notifyDropped(expired);
      return recent;
    }
    try {
      rows = this.afterStatement.all(afterSeq, limit);
    } catch (error) {
      this.notifyDropped(expired);
      throw storageError(this.path, error, 'cannot read messages', 'outbox');
    }
    this.notifyDropped(expired);
    const messages: OutboxMessage[] = [];
    for (const row of rows) {
      const message = toMessage(row);
      // A row this version did not write (or a damaged one) would fail every read: dropped, said so.
      if (message) messages.push(message);
      else this.drop(row.message_id, 'unsendable', 'its stored properties are not a JSON object');
    }
    // A page of nothing but dropped rows is not the end of the outbox: read on.
    if (messages.length === 0 && rows.length === limit) return this.after(rows[rows.length - 1]!.seq, limit);
    return messages;
  }

  /** True if the message was queued and is now gone (acknowledged). False after close. */
  remove(messageId: string): boolean {
    if (this.closed) return false;
    let row: { bytes: number } | undefined;
    try {
      row = this.removeStatement.get(messageId);
    } catch (error) {
      throw storageError(this.path, error, 'cannot remove a message', 'outbox');
    }
    if (!row) return false;
    this.count--;
    this.bytes -= row.bytes;
    this.recent.removed(messageId);
    return true;
  }

  /** `remove`, then the `dropped` listeners are told (a message that will never be sent). */
  drop(messageId: string, reason: DroppedMessage['reason'], detail?: string): boolean {
    if (!this.remove(messageId)) return false;
    this.signals.dropped(detail === undefined ? { messageId, reason } : { messageId, reason, detail });
    return true;
  }

  /** O(1): kept in memory, computed from the table at open. */
  stats(): { count: number; bytes: number } {
    return { count: this.count, bytes: this.bytes };
  }

  onAdded(listener: () => void): () => void {
    return this.signals.onAdded(listener);
  }

  onDropped(listener: (dropped: DroppedMessage) => void): () => void {
    return this.signals.onDropped(listener);
  }

  /** Several removals in one transaction (one WAL commit for a burst of PUBACKs). */
  removeMany(messageIds: readonly string[]): string[] {
    if (this.closed || messageIds.length === 0) return [];
    let removed: Array<{ messageId: string; bytes: number }> | undefined;
    try {
      removed = this.removeRange(messageIds) ?? this.removeManyTransaction(messageIds);
    } catch (error) {
      throw storageError(this.path, error, 'cannot remove messages', 'outbox');
    }
    // Counters change only once the transaction committed.
    for (const { messageId, bytes } of removed) {
      this.count--;
      this.bytes -= bytes;
      this.recent.removed(messageId);
    }
    return removed.map((r) => r.messageId);
  }

  /**
   * An acknowledged burst that is exactly a run of seqs (the usual case: PUBACKs come in send
   * order) goes in one range DELETE, about half the cost of a DELETE by message id per row.
   * Undefined (nothing removed) when it is not such a run.
   */
  private removeRange(messageIds: readonly string[]): Array<{ messageId: string; bytes: number }> | undefined {
    const range = this.recent.exactRange(messageIds);
    if (!range) return undefined;
    try {
      this.removeRangeTransaction(range.first, range.last, messageIds.length);
    } catch (error) {
      if (error instanceof RangeMismatch) return undefined; // rolled back: removed by id instead
      throw error;
    }
    return range.removed;
  }

  /** Commits the adds still waiting, then closes the database (checkpointing the WAL into it). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.commitPending();
    if (this.closed) return; // a listener closed it meanwhile
    this.closed = true;
    this.signals.clear();
    this.db.close();
  }

  private restore(counters: { count: number; bytes: number }): void {
    this.count = counters.count;
    this.bytes = counters.bytes;
  }

  private notifyDropped(dropped: DroppedMessage[]): void {
    for (const message of dropped) this.signals.dropped(message);
  }
}

/** The message of a row, or undefined if its properties cannot be read back. */
function toMessage(row: Row): OutboxMessage | undefined {
  let properties: unknown;
  try {
    properties = JSON.parse(row.properties);
  } catch {
    return undefined;
  }
  if (typeof properties !== 'object' || properties === null || Array.isArray(properties)) return undefined;
  const message: OutboxMessage = {
    seq: row.seq,
    messageId: row.message_id,
    body: row.body,
    properties: properties as Record<string, string>,
    createdAt: row.created_at,
    bytes: row.bytes,
  };
  if (row.component !== null) message.component = row.component;
  return message;
}
