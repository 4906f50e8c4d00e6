/**
 * Issue 13, High 2: the data directory is trusted only if it can be. Table-driven: each case
 * plants something in (or makes something of) a data directory and asserts a typed error, or a
 * warning and a fallback (DPS, an empty queue), and that what was accepted before is not lost and
 * what was planted is left untouched (never written through).
 *
 * Tests run as root here: "owned by someone else" is a chown to uid 65534 (nobody).
 */
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { deriveDeviceKey } from '../../src/actors/credentials';
import { createDevice, type StateChange } from '../../src/device';
import { ConfigError, StorageError } from '../../src/errors';
import { ReportedQueue } from '../../src/pnp/reported';
import { isHubHost } from '../../src/assignment';
import { cacheMacKey, credentialFingerprint, FileProvisioningCache, type CacheScope } from '../../src/store/cache';
import { commandInboxPath, openCommandInbox } from '../../src/store/command-inbox';
import { checkDataDir, temporaryNames, writeFileAtomic } from '../../src/store/files';
import { FileIdScopeStore } from '../../src/store/id-scope';
import { SqliteOutbox, sqliteOutboxPath } from '../../src/store/sqlite-outbox';

const OTHER_UID = 65534;
const REG = 'sensor-1';
const DEVICE_KEY = Buffer.alloc(32, 7).toString('base64');
const OTHER_KEY = Buffer.alloc(32, 8).toString('base64');
const KEY = cacheMacKey(DEVICE_KEY);
const SCOPE: CacheScope = {
  idScope: '0ne00AAA111',
  provisioningHost: 'localhost:9', // nothing listens: device tests only watch the first step
  registrationId: REG,
  credential: credentialFingerprint(DEVICE_KEY),
};
const ASSIGNMENT = { hubHost: 'localhost:19', deviceId: REG, assignedAt: 1_700_000_000_000 };
const PRECIOUS = 'precious: must never be overwritten\n';

const silent = pino({ level: 'silent' });
function capture() {
  const lines: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(line) });
  const warnings = () => lines.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.level === 40);
  return { lines, logger, warnings };
}
function freshDir(): string {
  return mkdtempSync(join(tmpdir(), 'hubstate-datadir-'));
}
const cachePath = (dir: string) => join(dir, `assignment-${REG}.json`);
const reportedPath = (dir: string) => join(dir, `reported-${REG}.json`);

function deviceOptions(dataDir: string, logger = silent) {
  return {
    idScope: SCOPE.idScope,
    registrationId: REG,
    deviceKey: DEVICE_KEY,
    provisioningHost: SCOPE.provisioningHost,
    dataDir,
    logger,
    provisionTimeoutMs: 1000,
    connectTimeoutMs: 1000,
  };
}

/** The error `fn` throws (fails the test if it returns). */
function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected an error, none was thrown');
}

// ---------------------------------------------------------------------------------------------
// 1. The directory itself: owned by the effective user, not group/other writable, else ConfigError.
// ---------------------------------------------------------------------------------------------

/** [case, make the data directory inside a fresh dir (returns its path), the expected error or null]. */
const DIRECTORIES: Array<[string, (root: string) => string, RegExp | null]> = [
  ['ours, 0700', (root) => root, null],
  ['ours, 0755', (root) => (chmodSync(root, 0o755), root), null],
  ['ours, 0750', (root) => (chmodSync(root, 0o750), root), null],
  ['ours, group nobody, 0750 (not writable by the group)', (root) => (chownSync(root, process.geteuid!(), OTHER_UID), chmodSync(root, 0o750), root), null],
  ['missing: created 0700', (root) => join(root, 'new'), null],
  ['missing, nested: created 0700', (root) => join(root, 'a', 'b', 'c'), null],
  ['a symlink to a directory of ours', (root) => (mkdirSync(join(root, 'real')), symlinkSync(join(root, 'real'), join(root, 'link')), join(root, 'link')), null],
  ['ours, 0770 (group-writable)', (root) => (chmodSync(root, 0o770), root), /group and others cannot write.*mode 0770/],
  ['ours, 0775', (root) => (chmodSync(root, 0o775), root), /mode 0775/],
  ['ours, 0777 (world-writable)', (root) => (chmodSync(root, 0o777), root), /mode 0777/],
  ['ours, 0702 (others-writable only)', (root) => (chmodSync(root, 0o702), root), /mode 0702/],
  ['ours, 0720', (root) => (chmodSync(root, 0o720), root), /mode 0720/],
  ['ours, 1777 (sticky, like /tmp)', (root) => (chmodSync(root, 0o1777), root), /mode 0777/],
  ['owned by uid 65534, 0700', (root) => (chownSync(root, OTHER_UID, OTHER_UID), root), /owned by uid 65534/],
  ['owned by uid 65534, 0755', (root) => (chownSync(root, OTHER_UID, OTHER_UID), chmodSync(root, 0o755), root), /owned by uid 65534/],
  ['owned by uid 65534, 0777', (root) => (chownSync(root, OTHER_UID, OTHER_UID), chmodSync(root, 0o777), root), /owned by uid 65534/],
  ['a regular file', (root) => (writeFileSync(join(root, 'file'), 'x'), join(root, 'file')), /a directory \(.* is not one\)/],
  [
    'a symlink to a directory owned by uid 65534',
    (root) => (mkdirSync(join(root, 'theirs')), chownSync(join(root, 'theirs'), OTHER_UID, OTHER_UID), symlinkSync(join(root, 'theirs'), join(root, 'link')), join(root, 'link')),
    /owned by uid 65534/,
  ],
  [
    'a symlink to a world-writable directory',
    (root) => (mkdirSync(join(root, 'open')), chmodSync(join(root, 'open'), 0o777), symlinkSync(join(root, 'open'), join(root, 'link')), join(root, 'link')),
    /mode 0777/,
  ],
];

describe('the data directory', () => {
  test.each(DIRECTORIES)('%s', async (_, make, expected) => {
    const dataDir = make(freshDir());
    const existed = existsSync(dataDir);
    const before = existed && statSync(dataDir).isDirectory() ? readdirSync(dataDir) : [];
    if (expected === null) {
      const device = createDevice(deviceOptions(dataDir));
      await device.stop();
      if (!existed) expect(statSync(dataDir).mode & 0o777).toBe(0o700);
      expect(readdirSync(dataDir)).toContain(`outbox-${REG}.sqlite`);
      return;
    }
    const error = thrown(() => createDevice(deviceOptions(dataDir)));
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).field).toBe('dataDir');
    expect(error.message).toMatch(expected);
    // Refused before anything in it was read or written.
    if (statSync(dataDir).isDirectory()) expect(readdirSync(dataDir)).toEqual(before);
  });

  test('checkDataDir alone: the same verdicts (the check the device runs first)', () => {
    const root = freshDir();
    expect(() => checkDataDir(root)).not.toThrow();
    chmodSync(root, 0o777);
    expect(() => checkDataDir(root)).toThrow(ConfigError);
  });
});

// ---------------------------------------------------------------------------------------------
// 2. Store files: never followed through a symlink, never someone else's.
// ---------------------------------------------------------------------------------------------

/** What is planted at a store path; `target` is what a symlink points at (must stay as it was). */
interface Plant {
  target?: string;
  /** Content of the target before (undefined: it must not come to exist). */
  before?: string;
}
const PLANTS: Array<[string, (path: string, dir: string) => Plant]> = [
  [
    'a symlink to a file',
    (path, dir) => {
      const target = join(dir, 'victim.txt');
      writeFileSync(target, PRECIOUS);
      symlinkSync(target, path);
      return { target, before: PRECIOUS };
    },
  ],
  [
    'a dangling symlink',
    (path, dir) => {
      const target = join(dir, 'created-through-the-link');
      symlinkSync(target, path);
      return { target };
    },
  ],
  [
    'a file owned by uid 65534',
    (path) => {
      writeFileSync(path, PRECIOUS);
      chownSync(path, OTHER_UID, OTHER_UID);
      return { target: path, before: PRECIOUS };
    },
  ],
  [
    'a directory',
    (path) => {
      mkdirSync(path);
      return {};
    },
  ],
];

function assertUntouched(plant: Plant): void {
  if (plant.target === undefined) return;
  if (plant.before === undefined) expect(existsSync(plant.target)).toBe(false);
  else expect(readFileSync(plant.target, 'utf8')).toBe(plant.before);
}

/** The SQLite files: the database and every sidecar SQLite opens by name. */
const SQLITE_FILES: Array<[string, (dir: string) => string, (dir: string) => { close(): void }]> = [
  ['outbox', (dir) => sqliteOutboxPath(dir, REG), (dir) => new SqliteOutbox({ path: sqliteOutboxPath(dir, REG) })],
  ['outbox -wal', (dir) => `${sqliteOutboxPath(dir, REG)}-wal`, (dir) => new SqliteOutbox({ path: sqliteOutboxPath(dir, REG) })],
  ['outbox -shm', (dir) => `${sqliteOutboxPath(dir, REG)}-shm`, (dir) => new SqliteOutbox({ path: sqliteOutboxPath(dir, REG) })],
  ['outbox -journal', (dir) => `${sqliteOutboxPath(dir, REG)}-journal`, (dir) => new SqliteOutbox({ path: sqliteOutboxPath(dir, REG) })],
  ['command inbox', (dir) => commandInboxPath(dir, REG), (dir) => openCommandInbox(dir, REG)],
  ['command inbox -wal', (dir) => `${commandInboxPath(dir, REG)}-wal`, (dir) => openCommandInbox(dir, REG)],
];

describe('SQLite stores refuse a planted file with StorageError(unsafe), left untouched', () => {
  const cases = SQLITE_FILES.flatMap(([store, pathOf, open]) => PLANTS.map(([plant, make]) => [store, plant, pathOf, open, make] as const));
  test.each(cases)('%s: %s', (_, plantName, pathOf, open, make) => {
    const dir = freshDir();
    const path = pathOf(dir);
    const plant = make(path, dir);
    const error = thrown(() => open(dir).close());
    expect(error).toBeInstanceOf(StorageError);
    expect((error as StorageError).reason).toBe('unsafe');
    expect((error as StorageError).path).toBe(path);
    expect(error.message).toMatch(plantName === 'a directory' ? /not a regular file/ : /symbolic link|owned by uid 65534/);
    assertUntouched(plant);
    expect(lstatSync(path).isSymbolicLink() || lstatSync(path).isDirectory() || lstatSync(path).uid === OTHER_UID).toBe(true);
  });

  test('createDevice with a dangling symlink at outbox-*.sqlite: StorageError(unsafe), no database where it points', () => {
    const dir = freshDir();
    const target = join(dir, 'elsewhere.sqlite');
    symlinkSync(target, sqliteOutboxPath(dir, REG));
    const error = thrown(() => createDevice(deviceOptions(dir)));
    expect(error).toBeInstanceOf(StorageError);
    expect((error as StorageError).reason).toBe('unsafe');
    expect(existsSync(target)).toBe(false);
  });

  test('nothing accepted is lost: a refused open leaves the outbox as it was, and it opens once the plant is gone', () => {
    const dir = freshDir();
    const path = sqliteOutboxPath(dir, REG);
    const outbox = new SqliteOutbox({ path });
    for (const id of ['a', 'b', 'c']) outbox.add({ messageId: id, body: '{}', properties: {}, createdAt: 1, bytes: 2 });
    outbox.close();
    symlinkSync(join(dir, 'nowhere'), `${path}-shm`);
    expect((thrown(() => new SqliteOutbox({ path })) as StorageError).reason).toBe('unsafe');
    expect(existsSync(join(dir, 'nowhere'))).toBe(false);
    execFileSync('rm', [`${path}-shm`]);
    const reopened = new SqliteOutbox({ path });
    expect(reopened.after(0, 10).map((m) => m.messageId)).toEqual(['a', 'b', 'c']);
    reopened.close();
  });
});

describe('JSON stores refuse a planted file with a warning, fall back, and replace it on the next write', () => {
  test.each(PLANTS)('provisioning cache: %s', (plantName, make) => {
    const dir = freshDir();
    const plant = make(cachePath(dir), dir);
    const { logger, warnings } = capture();
    const cache = new FileProvisioningCache(dir, REG, logger, SCOPE, KEY);
    expect(cache.load()).toBeNull();
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]!.msg).toMatch(/provisioning cache refused/);
    assertUntouched(plant);
    if (plantName === 'a directory') return; // rename cannot replace a directory: the cache is not saved (a warning in the device)
    cache.save(ASSIGNMENT); // the next assignment replaces the plant (rename), never writes through it
    if (plant.target !== cachePath(dir)) assertUntouched(plant);
    expect(lstatSync(cachePath(dir)).isFile()).toBe(true);
    expect(lstatSync(cachePath(dir)).uid).toBe(process.geteuid!());
    expect(cache.load()).toEqual(ASSIGNMENT);
  });

  test.each(PLANTS)('queued reported properties: %s', (plantName, make) => {
    const dir = freshDir();
    const plant = make(reportedPath(dir), dir);
    const { logger, warnings } = capture();
    const queue = new ReportedQueue(logger, reportedPath(dir));
    expect(queue.size).toBe(0);
    expect(warnings()[0]!.msg).toMatch(/pending reported properties refused/);
    assertUntouched(plant);
    if (plantName === 'a directory') return;
    queue.set({ temperature: 21 });
    if (plant.target !== reportedPath(dir)) assertUntouched(plant);
    expect(lstatSync(reportedPath(dir)).isFile()).toBe(true);
    expect(lstatSync(reportedPath(dir)).uid).toBe(process.geteuid!());
    // Nothing accepted is lost: what was queued is read back by the next start.
    expect(new ReportedQueue(silent, reportedPath(dir)).size).toBe(1);
  });

  test.each(PLANTS)('persisted ID scope (DeviceMove): %s', (plantName, make) => {
    const dir = freshDir();
    const binding = { configuredIdScope: SCOPE.idScope, provisioningHost: SCOPE.provisioningHost, registrationId: REG, credential: SCOPE.credential };
    const path = new FileIdScopeStore(dir, binding, KEY, silent).path;
    const plant = make(path, dir);
    const { logger, warnings } = capture();
    const store = new FileIdScopeStore(dir, binding, KEY, logger);
    expect(store.load()).toBeNull();
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]!.msg).toMatch(/persisted ID scope refused/);
    assertUntouched(plant);
    const move = { idScope: '0ne00BBB222', pendingFrom: SCOPE.idScope };
    if (plantName === 'a directory') {
      // rename cannot replace a directory: the move is not persisted, so not made (DeviceMove answers 500)
      expect(() => store.save(move)).toThrow();
      return;
    }
    store.save(move);
    if (plant.target !== path) assertUntouched(plant);
    expect(lstatSync(path).isFile()).toBe(true);
    expect(lstatSync(path).uid).toBe(process.geteuid!());
    expect(store.load()).toEqual(move);
  });

  test('a FIFO at the cache path: refused at once, never a hang', () => {
    const dir = freshDir();
    execFileSync('mkfifo', [cachePath(dir)]);
    const { logger, warnings } = capture();
    expect(new FileProvisioningCache(dir, REG, logger, SCOPE, KEY).load()).toBeNull();
    expect(warnings()[0]!.msg).toMatch(/refused/);
  });
});

// ---------------------------------------------------------------------------------------------
// 3. Planted caches: a bad hub host, a missing or wrong MAC, another scope, an earlier version.
// ---------------------------------------------------------------------------------------------

/** The content of a cache as this device writes it (version 3, MAC right), for `assignment`, `scope`, `key`. */
function signed(assignment = ASSIGNMENT, scope = SCOPE, key = KEY): Record<string, unknown> {
  const dir = freshDir();
  const cache = new FileProvisioningCache(dir, REG, silent, scope, key);
  cache.save(assignment);
  return JSON.parse(readFileSync(cache.path, 'utf8')) as Record<string, unknown>;
}

const BAD_HOSTS = [
  'attacker.example.net/path',
  'https://attacker.example.net',
  'user@attacker.example.net',
  'attacker.example.net:0',
  'attacker.example.net:65536',
  'attacker.example.net:08883',
  'attacker.example.net:',
  ':8883',
  'attacker.example.net:1:2',
  '[::1]:8883',
  'attacker example.net',
  'attacker.example.net\n',
  '-attacker.example.net',
  'attacker-.example.net',
  'attacker..example.net',
  'attacker.example.net.',
  'under_score.example.net',
  `${'a'.repeat(64)}.example.net`,
  `${'abcdefghi.'.repeat(26)}net`,
  '*.example.net',
];
const GOOD_HOSTS = ['localhost:19', 'hub.azure-devices.net', 'iotc-0a1b.azure-devices.net:8883', 'x.y:1', 'x.y:65535', '127.0.0.1:8883', `${'a'.repeat(63)}.example.net`];

describe('the cached hub host is a host[:port], nothing else', () => {
  test.each(BAD_HOSTS)('%j: ignored with a warning, the device provisions', (hubHost) => {
    const dir = freshDir();
    // Even with a right MAC (a device key holder's mistake, a hub that sent junk): never used.
    writeFileSync(cachePath(dir), JSON.stringify(signed({ ...ASSIGNMENT, hubHost })));
    const { logger, warnings } = capture();
    expect(isHubHost(hubHost)).toBe(false);
    expect(new FileProvisioningCache(dir, REG, logger, SCOPE, KEY).load()).toBeNull();
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]!.msg).toMatch(/invalid hub host/);
  });

  test.each(GOOD_HOSTS)('%j: used', (hubHost) => {
    const dir = freshDir();
    writeFileSync(cachePath(dir), JSON.stringify(signed({ ...ASSIGNMENT, hubHost })));
    expect(isHubHost(hubHost)).toBe(true);
    expect(new FileProvisioningCache(dir, REG, silent, SCOPE, KEY).load()).toEqual({ ...ASSIGNMENT, hubHost });
  });
});

/** [case, the planted content (from a right one), the warning]. */
const PLANTED: Array<[string, () => unknown, RegExp]> = [
  ['no MAC', () => ({ ...signed(), mac: undefined }), /MAC missing or wrong/],
  ['an empty MAC', () => ({ ...signed(), mac: '' }), /MAC missing or wrong/],
  ['a MAC with one digit changed', () => { const c = signed(); const mac = c.mac as string; return { ...c, mac: (mac[0] === '0' ? '1' : '0') + mac.slice(1) }; }, /MAC missing or wrong/],
  ['a MAC in upper case', () => { const c = signed(); return { ...c, mac: (c.mac as string).toUpperCase() }; }, /MAC missing or wrong/],
  ['a truncated MAC', () => { const c = signed(); return { ...c, mac: (c.mac as string).slice(0, 32) }; }, /MAC missing or wrong/],
  ['a MAC that is a number', () => ({ ...signed(), mac: 42 }), /MAC missing or wrong/],
  ['a MAC made with another device key', () => signed(ASSIGNMENT, SCOPE, cacheMacKey(OTHER_KEY)), /MAC missing or wrong/],
  ['a MAC made with the fingerprint as key', () => signed(ASSIGNMENT, SCOPE, Buffer.from(SCOPE.credential, 'hex')), /MAC missing or wrong/],
  ['the hub host changed after signing (attacker.example.net)', () => ({ ...signed(), hubHost: 'attacker.example.net' }), /MAC missing or wrong/],
  ['the device id changed after signing', () => ({ ...signed(), deviceId: 'someone-else' }), /MAC missing or wrong/],
  ['assignedAt changed after signing', () => ({ ...signed(), assignedAt: 1 }), /MAC missing or wrong/],
  ['written for another ID scope (MAC right)', () => signed(ASSIGNMENT, { ...SCOPE, idScope: '0ne00BBB222' }), /written for another scope/],
  ['written for another DPS (MAC right)', () => signed(ASSIGNMENT, { ...SCOPE, provisioningHost: 'attacker.example.net' }), /written for another scope/],
  ['written for another registration id (MAC right)', () => signed(ASSIGNMENT, { ...SCOPE, registrationId: 'sensor-2' }), /written for another scope/],
  ['written for another credential', () => signed(ASSIGNMENT, { ...SCOPE, credential: credentialFingerprint(OTHER_KEY) }, cacheMacKey(OTHER_KEY)), /written for another scope/],
  ['version 1, before scopes (no MAC)', () => ({ ...ASSIGNMENT, hubHost: 'attacker.example.net' }), /earlier \(unauthenticated\) or unknown version/],
  ['version 2, scoped, fingerprint right (no MAC)', () => ({ version: 2, for: SCOPE, ...ASSIGNMENT, hubHost: 'attacker.example.net' }), /earlier \(unauthenticated\) or unknown version/],
  ['a version from the future', () => ({ ...signed(), version: 4 }), /earlier \(unauthenticated\) or unknown version/],
  ["version '3' as a string", () => ({ ...signed(), version: '3' }), /earlier \(unauthenticated\) or unknown version/],
  ['a malformed scope', () => ({ ...signed(), for: { idScope: 42 } }), /unreadable/],
  ['not JSON', () => '{"hubHost": "attacker.example.net"', /unreadable/],
  ['a JSON array', () => [ASSIGNMENT], /unreadable/],
  ['JSON null', () => null, /unreadable/],
  ['a device id with a slash', () => ({ ...signed(), deviceId: 'a/b' }), /unreadable/],
  ['assignedAt not a number', () => ({ ...signed(), assignedAt: '1' }), /unreadable/],
  ['over 4 MiB', () => ({ ...signed(), pad: 'x'.repeat(4 * 1024 * 1024) }), /provisioning cache refused/],
];

describe('planted caches are ignored with one warning, never trusted', () => {
  test.each(PLANTED)('%s', (_, content, warning) => {
    const dir = freshDir();
    const planted = content();
    writeFileSync(cachePath(dir), typeof planted === 'string' ? planted : JSON.stringify(planted));
    const { logger, warnings } = capture();
    expect(new FileProvisioningCache(dir, REG, logger, SCOPE, KEY).load()).toBeNull();
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]!.msg).toMatch(warning);
  });

  test('the right cache, and only it, is used (group enrollment: keyed by the derived device key)', () => {
    const groupKey = Buffer.alloc(32, 9).toString('base64');
    const derived = deriveDeviceKey(groupKey, REG);
    const scope = { ...SCOPE, credential: credentialFingerprint(derived) };
    const dir = freshDir();
    new FileProvisioningCache(dir, REG, silent, scope, cacheMacKey(derived)).save(ASSIGNMENT);
    expect(new FileProvisioningCache(dir, REG, silent, scope, cacheMacKey(derived)).load()).toEqual(ASSIGNMENT);
    // The group key itself is not the MAC key.
    expect(new FileProvisioningCache(dir, REG, silent, scope, cacheMacKey(groupKey)).load()).toBeNull();
    expect(readFileSync(cachePath(dir), 'utf8')).not.toContain(cacheMacKey(derived).toString('hex'));
  });

  test('a scoped cache without a MAC key is a ConfigError (never an unauthenticated scoped cache)', () => {
    const error = thrown(() => new FileProvisioningCache(freshDir(), REG, silent, SCOPE));
    expect(error).toBeInstanceOf(ConfigError);
  });
});

describe('createDevice with a planted cache provisions through DPS, and keeps what was accepted', () => {
  async function firstStep(dataDir: string, lines: string[]): Promise<{ change: StateChange; outboxCount: number }> {
    const device = createDevice(deviceOptions(dataDir, pino({ level: 'info' }, { write: (line: string) => lines.push(line) })));
    const outboxCount = device.outboxStats().count;
    const first = new Promise<StateChange>((resolve) => device.once('state', resolve));
    device.start();
    const change = await first;
    await device.stop();
    return { change, outboxCount };
  }

  test.each([
    ['a version 2 cache for this scope pointing at attacker.example.net', { version: 2, for: SCOPE, ...ASSIGNMENT, hubHost: 'attacker.example.net' }],
    ['a version 3 cache with a forged MAC', { ...signed(), hubHost: 'attacker.example.net' }],
    ['a signed cache with a bad host', signed({ ...ASSIGNMENT, hubHost: 'attacker.example.net/x' })],
  ])('%s', async (_, planted) => {
    const dir = freshDir();
    const outbox = new SqliteOutbox({ path: sqliteOutboxPath(dir, REG) });
    for (const id of ['m1', 'm2']) outbox.add({ messageId: id, body: '{}', properties: {}, createdAt: Date.now(), bytes: 2 });
    outbox.close();
    writeFileSync(cachePath(dir), JSON.stringify(planted));
    const lines: string[] = [];
    const { change, outboxCount } = await firstStep(dir, lines);
    expect(change.value).toBe('Provisioning');
    expect(lines.join('\n')).not.toContain('"hub":"attacker.example.net');
    expect(lines.some((l) => l.includes('"level":40') && l.includes('provisioning cache'))).toBe(true);
    expect(outboxCount).toBe(2);
  });

  test('its own signed cache: straight to the cached hub', async () => {
    const dir = freshDir();
    new FileProvisioningCache(dir, REG, silent, SCOPE, KEY).save(ASSIGNMENT);
    const { change } = await firstStep(dir, []);
    expect(change.value).toBe('Connecting');
    expect(change.hubHost).toBe(ASSIGNMENT.hubHost);
  });
});

// ---------------------------------------------------------------------------------------------
// 4. Temporary files: exclusive, random, 0600, never written through a planted link.
// ---------------------------------------------------------------------------------------------

describe('atomic writes', () => {
  const realNext = temporaryNames.next;
  afterEach(() => {
    temporaryNames.next = realNext;
  });

  test('symlinks planted at every predictable old-style temp name (pid, Date.now()) are never written through', () => {
    const dir = freshDir();
    const target = join(dir, 'victim.txt');
    writeFileSync(target, PRECIOUS);
    const path = cachePath(dir);
    const now = Date.now();
    for (let t = now - 50; t < now + 1500; t++) symlinkSync(target, `${path}.${process.pid}.${t}.tmp`);
    new FileProvisioningCache(dir, REG, silent, SCOPE, KEY).save(ASSIGNMENT);
    expect(readFileSync(target, 'utf8')).toBe(PRECIOUS);
    expect(new FileProvisioningCache(dir, REG, silent, SCOPE, KEY).load()).toEqual(ASSIGNMENT);
  });

  test('temporary names are random (crypto), not pid and time', () => {
    const names = new Set(Array.from({ length: 100 }, () => temporaryNames.next('/x/f')));
    expect(names.size).toBe(100);
    for (const name of names) expect(name).toMatch(/^\/x\/f\.[0-9a-f]{16}\.tmp$/);
  });

  test.each([
    ['a symlink to a file', (p: string, target: string) => symlinkSync(target, p)],
    ['a dangling symlink', (p: string) => symlinkSync(`${p}.points-here`, p)],
    ['a regular file', (p: string) => writeFileSync(p, 'theirs')],
  ])('a collision with %s at the temp name: created exclusively, another name is taken', (_, plant) => {
    const dir = freshDir();
    const target = join(dir, 'victim.txt');
    writeFileSync(target, PRECIOUS);
    const path = join(dir, 'store.json');
    const first = `${path}.collision.tmp`;
    plant(first, target);
    let calls = 0;
    temporaryNames.next = (p) => (++calls === 1 ? first : realNext(p));
    writeFileAtomic(path, '{"ok":true}');
    expect(calls).toBe(2);
    expect(readFileSync(path, 'utf8')).toBe('{"ok":true}');
    expect(readFileSync(target, 'utf8')).toBe(PRECIOUS);
    expect(existsSync(`${first}.points-here`)).toBe(false);
  });

  test('every temp name taken: the fs error (EEXIST), the old file intact, nothing written through', () => {
    const dir = freshDir();
    const target = join(dir, 'victim.txt');
    writeFileSync(target, PRECIOUS);
    const path = join(dir, 'store.json');
    writeFileSync(path, 'old');
    const taken = `${path}.taken.tmp`;
    symlinkSync(target, taken);
    temporaryNames.next = () => taken;
    const error = thrown(() => writeFileAtomic(path, 'new')) as NodeJS.ErrnoException;
    expect(error.code).toBe('EEXIST');
    expect(readFileSync(path, 'utf8')).toBe('old');
    expect(readFileSync(target, 'utf8')).toBe(PRECIOUS);
  });

  test('mode 0600 whatever the umask, no temporary file left, a symlink at the target replaced (not followed)', () => {
    const dir = freshDir();
    const target = join(dir, 'victim.txt');
    writeFileSync(target, PRECIOUS);
    const path = join(dir, 'store.json');
    symlinkSync(target, path);
    const umask = process.umask(0);
    try {
      writeFileAtomic(path, 'data');
    } finally {
      process.umask(umask);
    }
    expect(lstatSync(path).isFile()).toBe(true);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readFileSync(target, 'utf8')).toBe(PRECIOUS);
    expect(readdirSync(dir).sort()).toEqual(['store.json', 'victim.txt']);
  });

  test('a missing directory is created 0700', () => {
    const dir = join(freshDir(), 'deep', 'er');
    writeFileAtomic(join(dir, 'f.json'), '{}');
    expect(statSync(dir).mode & 0o777).toBe(0o700);
  });
});
