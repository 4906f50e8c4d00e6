/**
 * The CLI's own file handling, hardened against careless or hostile paths:
 * - `readBoundedFile`: a regular file only (not /dev/zero, a FIFO, a directory), at most 1 MiB;
 * - `ensureDirectory`: creates missing directories one level at a time, never with a recursive
 *   mkdir (Node's recursive mkdir spins forever, deaf to SIGTERM, on paths such as /proc/x/y
 *   where mkdir answers ENOENT under an existing parent);
 * - `openLogFile`: a log file created 0600 whatever the umask, refused when it is a directory.
 * Every failure is a ConfigError naming the field as the user wrote it (exit code 2).
 */
import { closeSync, constants, fstatSync, mkdirSync, openSync, readSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ConfigError } from 'hubstate';
import type { RunConfig } from './run-config';

/** The largest file the CLI reads (`--config`, `--ca-file`): far above any config or CA bundle. */
export const MAX_INPUT_FILE_BYTES = 1024 * 1024;

const codeOf = (error: unknown): string => (error as NodeJS.ErrnoException).code ?? 'unreadable';

/**
 * Reads a regular file of at most `maxBytes` as UTF-8. Opened non-blocking (a FIFO does not
 * hang the open), checked with fstat on the open descriptor (no race with a swapped path), and
 * read in bounded chunks (a file that grows, or a /proc file reporting size 0, stops at the limit).
 */
export function readBoundedFile(path: string, field: string, what: string, shown = path, maxBytes = MAX_INPUT_FILE_BYTES): string {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (error) {
    throw new ConfigError(field, `${what} (${codeOf(error)}: ${shown})`);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new ConfigError(field, `${what}: a regular file, not ${kindOf(stat)} (${shown})`);
    if (stat.size > maxBytes) throw new ConfigError(field, `${what} of at most ${maxBytes} bytes (${shown} has ${stat.size})`);
    const buffer = Buffer.alloc(maxBytes + 1);
    let length = 0;
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, buffer, length, buffer.length - length, null);
      } catch (error) {
        throw new ConfigError(field, `${what} (${codeOf(error)}: ${shown})`);
      }
      if (n === 0) break;
      length += n;
      if (length > maxBytes) throw new ConfigError(field, `${what} of at most ${maxBytes} bytes (${shown} is larger)`);
    }
    return buffer.subarray(0, length).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

function kindOf(stat: { isFile(): boolean; isDirectory(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean; isFIFO(): boolean; isSocket(): boolean }): string {
  if (stat.isFile()) return 'a file';
  if (stat.isDirectory()) return 'a directory';
  if (stat.isCharacterDevice() || stat.isBlockDevice()) return 'a device';
  if (stat.isFIFO()) return 'a FIFO';
  if (stat.isSocket()) return 'a socket';
  return 'a special file';
}

/**
 * Makes sure `dir` is a directory, creating what is missing one level at a time (mode `mode`).
 * A path whose existing part is a file, or that cannot be created, is a ConfigError naming `field`.
 */
export function ensureDirectory(dir: string, field: string, mode = 0o700): void {
  const path = resolve(dir);
  const missing: string[] = [];
  for (let at = path; ; ) {
    let stat;
    try {
      stat = statSync(at);
    } catch (error) {
      const code = codeOf(error);
      if (code !== 'ENOENT') throw new ConfigError(field, `a directory it can create or use (${code}: ${at})`);
      missing.unshift(at);
      const parent = dirname(at);
      if (parent === at) throw new ConfigError(field, `a directory it can create or use (no existing parent: ${path})`);
      at = parent;
      continue;
    }
    if (!stat.isDirectory()) {
      throw new ConfigError(field, at === path ? `a directory, but ${path} is ${kindOf(stat)}` : `a path under directories, but ${at} is not a directory`);
    }
    break;
  }
  for (const at of missing) {
    try {
      mkdirSync(at, { mode });
    } catch (error) {
      if (codeOf(error) === 'EEXIST' && safeIsDirectory(at)) continue;
      throw new ConfigError(field, `a directory it can create (${codeOf(error)}: ${at})`);
    }
  }
}

function safeIsDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Opens (appending, creating 0600) a log file; its directory is created as by ensureDirectory.
 * Returns the file descriptor (for pino.destination). A directory or a special file at the path
 * is a ConfigError naming `field`.
 */
export function openLogFile(path: string, field: string): number {
  const file = resolve(path);
  ensureDirectory(dirname(file), field, 0o700);
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO at the path fails (ENXIO) instead of blocking until a reader appears.
    fd = openSync(file, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | (constants.O_NONBLOCK ?? 0), 0o600);
  } catch (error) {
    const code = codeOf(error);
    throw new ConfigError(field, code === 'EISDIR' ? `a log file path, got a directory (${file})` : `a writable log file (${code}: ${file})`);
  }
  const stat = fstatSync(fd);
  // A regular file, or a character device such as /dev/null (logs discarded).
  if (!stat.isFile() && !stat.isCharacterDevice()) {
    closeSync(fd);
    throw new ConfigError(field, `a regular log file, not ${kindOf(stat)} (${file})`);
  }
  return fd;
}

/**
 * Creates the data directory (0700) and opens the log file (0600) before anything starts: a
 * path that cannot be used is a ConfigError naming the field (exit 2), never a recursive mkdir
 * that spins on /proc, never a stack trace. Returns the log file's descriptor (when --log).
 */
export function prepareRunPaths(config: Pick<RunConfig, 'device' | 'logFile' | 'names'>): { logFd?: number } {
  if (config.device.dataDir !== undefined) ensureDirectory(config.device.dataDir, config.names.dataDir, 0o700);
  return config.logFile === undefined ? {} : { logFd: openLogFile(config.logFile, config.names.log) };
}
