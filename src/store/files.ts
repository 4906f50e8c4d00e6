/**
 * How hubstate touches files in its data directory. The directory may be shared, planted or
 * copied, so no store file is ever trusted for what its name says:
 *
 * - the data directory must be owned by the effective user and not writable by group or others
 *   (`checkDataDir`, a ConfigError('dataDir') naming the problem); one it creates is 0700;
 * - a store file is never opened through a symlink (O_NOFOLLOW, and lstat where Node lacks it),
 *   and one that is a symlink, not a regular file, or owned by someone else is refused with
 *   StorageError('unsafe') (`checkStoreFile`, `readStoreFile`, `createPrivateFile`);
 * - every write of a whole file goes through `writeFileAtomic`: a temporary sibling with a random
 *   name, created exclusively (O_EXCL: a file or symlink already there fails the open, it is never
 *   written through), mode 0600, fsynced, renamed over the target (which replaces a symlink there,
 *   never follows it), then the directory fsynced.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  constants,
  fchmodSync,
  fstatSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { dirname } from 'node:path';
import { ConfigError, StorageError } from '../errors';

/** O_NOFOLLOW where the platform has it (Linux, macOS, the BSDs); 0 elsewhere, where lstat checks stand alone. */
const O_NOFOLLOW = constants.O_NOFOLLOW ?? 0;
/** The largest store file read whole (the cache, the reported-properties queue): 4 MiB. */
export const MAX_STORE_FILE_BYTES = 4 * 1024 * 1024;
/** Exclusive creations tried before a temporary-file name is given up on (each name is 64 random bits). */
const TEMP_ATTEMPTS = 8;

/** The effective uid, or undefined where there is none (Windows: ownership is not checked there). */
function effectiveUid(): number | undefined {
  return typeof process.geteuid === 'function' ? process.geteuid() : undefined;
}

const octal = (mode: number) => `0${(mode & 0o777).toString(8).padStart(3, '0')}`;

/**
 * Check (and create, 0700, if missing) a device's data directory before anything in it is read or
 * written: it must be a directory, owned by the effective user, not writable by group or others.
 * Anyone else who can write there can plant a cache that sends the device to another hub, or a
 * symlink that makes it write elsewhere. Throws ConfigError('dataDir') naming the problem.
 */
export function checkDataDir(dir: string): void {
  let stats: Stats;
  try {
    try {
      stats = statSync(dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      stats = statSync(dir);
    }
  } catch (error) {
    throw new ConfigError('dataDir', `a directory this user can create and use (${dir}: ${(error as Error).message})`);
  }
  if (!stats.isDirectory()) throw new ConfigError('dataDir', `a directory (${dir} is not one)`);
  const euid = effectiveUid();
  if (euid === undefined) return;
  if (stats.uid !== euid) {
    throw new ConfigError(
      'dataDir',
      `a directory owned by the effective user (uid ${euid}); ${dir} is owned by uid ${stats.uid}: anyone who owns it can plant files there`,
    );
  }
  if ((stats.mode & 0o022) !== 0) {
    throw new ConfigError(
      'dataDir',
      `a directory that group and others cannot write; ${dir} has mode ${octal(stats.mode)} (chmod go-w, or 0700)`,
    );
  }
}

/** Why `stats` (of `path`, from lstat or fstat) is not a store file of ours, or undefined when it is. */
function unsafeReason(stats: Stats): string | undefined {
  if (stats.isSymbolicLink()) return 'it is a symbolic link; store files are never followed through links';
  if (!stats.isFile()) return 'it is not a regular file';
  const euid = effectiveUid();
  if (euid !== undefined && stats.uid !== euid) return `it is owned by uid ${stats.uid}, not by the effective user (uid ${euid})`;
  return undefined;
}

function unsafe(path: string, reason: string): StorageError {
  return new StorageError('unsafe', path, `refused: ${reason}; it was left untouched (remove it if it is not yours)`);
}

/**
 * Throw StorageError('unsafe') if something is at `path` that is a symlink (dangling or not), not a
 * regular file, or owned by someone else. Nothing there is fine (returns false); a safe file, true.
 */
export function checkStoreFile(path: string): boolean {
  let stats: Stats;
  try {
    stats = lstatSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new StorageError('io', path, `cannot inspect the file: ${(error as Error).message}`, error);
  }
  const reason = unsafeReason(stats);
  if (reason) throw unsafe(path, reason);
  return true;
}

/** Open without following a symlink; a symlink there becomes StorageError('unsafe'). */
function openNoFollow(path: string, flags: number, mode?: number): number {
  // Where O_NOFOLLOW is missing, lstat first (a race remains there, in a directory only we can write).
  if (O_NOFOLLOW === 0) checkStoreFile(path);
  try {
    return openSync(path, flags | O_NOFOLLOW, mode);
  } catch (error) {
    // ELOOP: a symlink at the path (Linux, macOS); EMLINK: the same on FreeBSD.
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOOP' || code === 'EMLINK') throw unsafe(path, 'it is a symbolic link; store files are never followed through links');
    throw error;
  }
}

/** After open: the file really opened is a regular file of ours (fstat, no race). Does not close `fd`. */
function checkOpened(fd: number, path: string): Stats {
  const stats = fstatSync(fd);
  const reason = unsafeReason(stats);
  if (reason) throw unsafe(path, reason);
  return stats;
}

/**
 * Read a whole store file as UTF-8, never through a symlink: null when there is none; throws
 * StorageError('unsafe') for a symlink, a non-regular file or someone else's file, and
 * StorageError('io') for a file over `maxBytes` or an I/O error.
 */
export function readStoreFile(path: string, maxBytes = MAX_STORE_FILE_BYTES): string | null {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO planted at the path must not hang the open (it is refused just after).
    fd = openNoFollow(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (error) {
    if (error instanceof StorageError) throw error;
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new StorageError('io', path, `cannot read the file: ${(error as Error).message}`, error);
  }
  try {
    const stats = checkOpened(fd, path);
    if (stats.size > maxBytes) throw new StorageError('io', path, `the file is ${stats.size} bytes, over the ${maxBytes} this store reads`);
    const buffer = Buffer.alloc(stats.size);
    let read = 0;
    while (read < buffer.length) {
      const n = readSync(fd, buffer, read, buffer.length - read, read);
      if (n === 0) break;
      read += n;
    }
    return buffer.subarray(0, read).toString('utf8');
  } catch (error) {
    if (error instanceof StorageError) throw error;
    throw new StorageError('io', path, `cannot read the file: ${(error as Error).message}`, error);
  } finally {
    closeSync(fd);
  }
}

/** The directory that will hold `path`, created with mode 0700 if missing. */
function makeParentDir(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
}

/** fsync a directory, so that a rename in it survives power loss (best effort: not every platform can). */
function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, constants.O_RDONLY);
    fsyncSync(fd);
  } catch {
    // Windows and some file systems refuse to open or fsync a directory: the rename still happened.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** The name generator of temporary files (tests replace it to force collisions). */
export const temporaryNames = {
  next(path: string): string {
    return `${path}.${randomBytes(8).toString('hex')}.tmp`;
  },
};

/**
 * Write a file atomically with mode 0600 — the one way hubstate writes a whole file. The data
 * goes to a temporary sibling with a random name, created exclusively (O_CREAT|O_EXCL|O_NOFOLLOW:
 * a file or symlink planted at that name fails the open and is never written through; another
 * name is tried), fsynced, then renamed over `path` (rename replaces whatever is there, a symlink
 * included, and never follows it), and the directory is fsynced. A crash leaves either the old
 * file or the new one, never half of one. Throws the fs error (the temporary file is removed).
 */
export function writeFileAtomic(path: string, data: string | Buffer): void {
  makeParentDir(path);
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | O_NOFOLLOW;
  let temporary = '';
  let fd: number | undefined;
  for (let attempt = 1; fd === undefined; attempt++) {
    temporary = temporaryNames.next(path);
    try {
      fd = openSync(temporary, flags, 0o600);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= TEMP_ATTEMPTS) throw error;
    }
  }
  try {
    try {
      fchmodSync(fd, 0o600); // whatever the umask
      const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
      let written = 0;
      while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, path);
  } catch (error) {
    try {
      unlinkSync(temporary);
    } catch {
      // already renamed or never created
    }
    throw error;
  }
  fsyncDir(dirname(path));
}

/**
 * Create `path` empty with mode 0600 (its directory 0700) unless it exists, never through a
 * symlink. An existing file is opened for writing only to check access, never modified; one that
 * is a symlink (dangling or not), not a regular file, or someone else's is refused with
 * StorageError('unsafe'). Throws the fs error otherwise.
 */
export function createPrivateFile(path: string): void {
  makeParentDir(path);
  checkStoreFile(path);
  const fd = openNoFollow(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | (constants.O_NONBLOCK ?? 0), 0o600);
  try {
    checkOpened(fd, path);
  } finally {
    closeSync(fd);
  }
}

/** chmod without following a symlink: the file is opened O_NOFOLLOW and checked, then fchmod'ed. */
export function chmodPrivate(path: string, mode = 0o600): void {
  const fd = openNoFollow(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  try {
    checkOpened(fd, path);
    fchmodSync(fd, mode);
  } finally {
    closeSync(fd);
  }
}
