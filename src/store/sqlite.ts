/**
 * What the SQLite stores (the outbox, the command inbox) share: opening a database file of ours
 * the same careful way, and turning SQLite / fs failures into StorageErrors that name the file.
 */
import type Database from 'better-sqlite3';
import { StorageError } from '../errors';
import { checkStoreFile, chmodPrivate, createPrivateFile } from './files';

/**
 * better-sqlite3, loaded when the first store opens: a device without a data directory (the
 * in-memory outbox, no command inbox) never needs it, so loading hubstate does not load it.
 */
let sqlite: typeof Database | undefined;
function loadSqlite(): typeof Database {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  sqlite ??= require('better-sqlite3') as typeof Database;
  return sqlite;
}

/** The files SQLite opens beside a database (by name, following symlinks): checked like the database. */
const SIDECARS = ['-wal', '-shm', '-journal'];

/** How a store is named in its errors: `short` ('inbox') in most, `long` ('command inbox') for its kind. */
export interface StoreNames {
  short: string;
  long: string;
}

/** The extended result code of a better-sqlite3 error (`SQLITE_BUSY`, …), or '' for anything else. */
export function sqliteCode(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : '';
}

/** Map a better-sqlite3 / fs failure of `store` (its short name) to a StorageError that names the file. */
export function storageError(path: string, error: unknown, doing: string, store: string): StorageError {
  if (error instanceof StorageError) return error;
  const code = sqliteCode(error);
  const message = error instanceof Error ? error.message : String(error);
  if (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT')) {
    return new StorageError(
      'corrupt',
      path,
      `${doing}: the file is corrupt or not a database (${message}); it was left untouched: move it aside to start an empty ${store}`,
      error,
    );
  }
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    return new StorageError('locked', path, `${doing}: the ${store} is open in another process or connection (${message})`, error);
  }
  return new StorageError('io', path, `${doing}: ${code ? `${code}: ` : ''}${message}`, error);
}

export interface SqliteStoreFile {
  path: string;
  names: StoreNames;
  /** `PRAGMA application_id`: marks the file as this kind of store. */
  applicationId: number;
  /** `PRAGMA user_version`: a file with a newer one is refused, not guessed at. */
  schemaVersion: number;
  /** The tables and indexes, created in one transaction on a new, empty file (with the two marks above). */
  schema: string;
  /**
   * With WAL, `normal`: a commit survives a crash of the process (SIGKILL), in the WAL file in the
   * OS page cache; `full`: the WAL is fsynced on every commit, so it survives power loss too.
   */
  synchronous: 'normal' | 'full';
}

/**
 * Open (or create) a store's database: file mode 0600 (its directory 0700), never through a
 * symlink: a database or sidecar file (-wal, -shm, -journal) that is a symlink (dangling or not),
 * not a regular file, or owned by someone else is refused with StorageError('unsafe') before
 * SQLite opens anything (SQLite itself would follow it and create the file where it points). Exclusive locking
 * (a second opener, in this process or another, fails with StorageError('locked') at once instead
 * of waiting), WAL. A file that is corrupt, not this kind of store, or of a newer schema is
 * refused with a StorageError and left untouched.
 */
export function openSqliteStore(file: SqliteStoreFile): Database.Database {
  const { path, names } = file;
  try {
    for (const suffix of SIDECARS) checkStoreFile(path + suffix);
    // Before SQLite opens it: SQLite gives its WAL the mode of the file.
    createPrivateFile(path);
  } catch (error) {
    throw storageError(path, error, `cannot create or open the ${names.short} file`, names.short);
  }
  let db: Database.Database | undefined;
  try {
    // timeout 0: a held lock means another live store on this file; fail now, never wait.
    const connection = new (loadSqlite())(path, { timeout: 0 });
    db = connection;
    // Before the first access, so that the lock is held from now on and no -shm file is used.
    connection.pragma('locking_mode = EXCLUSIVE');
    // Read-only checks first (a file that is not a database fails here, SQLITE_NOTADB): a file
    // that is not ours is refused before anything, even its journal mode, is written to it.
    const fresh = checkOwnership(connection, file);
    const journalMode = connection.pragma('journal_mode = WAL', { simple: true });
    if (journalMode !== 'wal') {
      throw new StorageError('io', path, `cannot use WAL mode (journal_mode is '${String(journalMode)}')`);
    }
    connection.pragma(`synchronous = ${file.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
    if (fresh) {
      connection.transaction(() => {
        connection.exec(file.schema);
        connection.pragma(`application_id = ${file.applicationId}`);
        connection.pragma(`user_version = ${file.schemaVersion}`);
      })();
    }
    // Take the write lock now, so that a second opener fails at open rather than on its first write.
    else connection.exec('BEGIN IMMEDIATE; COMMIT');
    tightenModes(path);
  } catch (error) {
    db?.close();
    throw storageError(path, error, `cannot open the ${names.long}`, names.short);
  }
  return db;
}

/** True for a new, empty file; throws unless the file is this kind of store, of a schema this version reads. */
function checkOwnership(db: Database.Database, file: SqliteStoreFile): boolean {
  const applicationId = db.pragma('application_id', { simple: true }) as number;
  const version = db.pragma('user_version', { simple: true }) as number;
  const objects = (db.prepare('SELECT COUNT(*) AS n FROM sqlite_schema').get() as { n: number }).n;
  if (applicationId === 0 && version === 0 && objects === 0) return true;
  if (applicationId !== file.applicationId) {
    throw new StorageError(
      'incompatible',
      file.path,
      `this SQLite database is not a hubstate ${file.names.long} (application_id differs); it was left untouched`,
    );
  }
  if (version > file.schemaVersion) {
    throw new StorageError(
      'incompatible',
      file.path,
      `the ${file.names.short} was written by a newer hubstate (schema ${version}, this one reads ${file.schemaVersion}); it was left untouched`,
    );
  }
  return false;
}

/** Once the file is known to be ours: 0600 for it and whatever sidecar files exist (never through a symlink). */
function tightenModes(path: string): void {
  chmodPrivate(path);
  for (const suffix of SIDECARS) {
    const sidecar = path + suffix;
    if (checkStoreFile(sidecar)) chmodPrivate(sidecar);
  }
}
