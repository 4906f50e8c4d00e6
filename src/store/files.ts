import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/** The directory that will hold `path`, created with mode 0700 if missing. */
function makeParentDir(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
}

/**
 * Write a file atomically with mode 0600: write a temporary sibling, fsync, rename over the
 * target. A crash leaves either the old file or the new one, never half of one.
 */
export function writeFileAtomic(path: string, data: string): void {
  makeParentDir(path);
  const temporary = `${path}.${process.pid}.${Date.now()}.tmp`;
  const fd = openSync(temporary, 'w', 0o600);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, path);
}

/**
 * Create `path` empty with mode 0600 (its directory 0700) unless it exists. An existing file is
 * opened for writing only to check access, never modified. Throws the fs error.
 */
export function createPrivateFile(path: string): void {
  makeParentDir(path);
  closeSync(openSync(path, 'a', 0o600));
}
