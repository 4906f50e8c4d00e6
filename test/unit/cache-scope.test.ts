/**
 * The provisioning cache is keyed by ID scope, provisioning host, registration id and a
 * fingerprint of the credential (a hash, never the key), and authenticated by a MAC keyed from the
 * device key: a cache planted for another app, DPS or key is ignored with a warning and the device
 * provisions; one written by an earlier version (no MAC) is ignored and re-provisioned once; a
 * matching one goes straight to the hub.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { createDevice, type StateChange } from '../../src/device';
import { cacheMacKey, credentialFingerprint, FileProvisioningCache, type CacheScope } from '../../src/store/cache';
import { deriveDeviceKey } from '../../src/actors/credentials';
import { FileIdScopeStore } from '../../src/store/id-scope';
import { MemoryProvisioningCache } from '../../src/store/cache';

const DEVICE_KEY = Buffer.alloc(32, 7).toString('base64');
const GROUP_KEY = Buffer.alloc(32, 9).toString('base64');
const SCOPE: CacheScope = {
  idScope: '0ne00AAA111',
  provisioningHost: 'localhost:9', // nothing listens: the device tests below only watch the first step
  registrationId: 'sensor-1',
  credential: credentialFingerprint(DEVICE_KEY),
};
const ASSIGNMENT = { hubHost: 'localhost:19', deviceId: 'sensor-1', assignedAt: 1_700_000_000_000 };
const KEY = cacheMacKey(DEVICE_KEY);

function freshDir() {
  return mkdtempSync(join(tmpdir(), 'hubstate-cache-scope-'));
}
function capture() {
  const lines: string[] = [];
  return { lines, logger: pino({ level: 'info' }, { write: (line: string) => lines.push(line) }) };
}
function plant(dir: string, content: object): string {
  const path = join(dir, 'assignment-sensor-1.json');
  writeFileSync(path, JSON.stringify(content));
  return path;
}

test('written with its scope (version 2) and loaded back under the same scope', () => {
  const dir = freshDir();
  const cache = new FileProvisioningCache(dir, 'sensor-1', pino({ level: 'silent' }), SCOPE, KEY);
  cache.save(ASSIGNMENT);
  expect(JSON.parse(readFileSync(cache.path, 'utf8'))).toEqual({ version: 3, for: SCOPE, ...ASSIGNMENT, mac: expect.stringMatching(/^[0-9a-f]{64}$/) });
  expect(cache.load()).toEqual(ASSIGNMENT);
  // Case does not matter (DPS ids and host names are case-insensitive).
  const upper = { ...SCOPE, idScope: SCOPE.idScope.toUpperCase(), provisioningHost: 'LOCALHOST:9' };
  expect(new FileProvisioningCache(dir, 'sensor-1', pino({ level: 'silent' }), upper, KEY).load()).toEqual(ASSIGNMENT);
});

test.each([
  ['idScope', { ...SCOPE, idScope: '0ne00BBB222' }],
  ['provisioningHost', { ...SCOPE, provisioningHost: 'global.azure-devices-provisioning.net' }],
  ['credential', { ...SCOPE, credential: credentialFingerprint(Buffer.alloc(32, 8).toString('base64')) }],
])('a cache planted for another %s is ignored with a warning naming it', (field, plantedFor) => {
  const dir = freshDir();
  plant(dir, { version: 3, for: plantedFor, ...ASSIGNMENT, mac: '0'.repeat(64) });
  const { lines, logger } = capture();
  expect(new FileProvisioningCache(dir, 'sensor-1', logger, SCOPE, KEY).load()).toBeNull();
  expect(lines).toHaveLength(1);
  const line = JSON.parse(lines[0]!) as { level: number; msg: string; differing: string[] };
  expect(line.level).toBe(40);
  expect(line.msg).toMatch(/written for another scope, DPS or credential/);
  expect(line.differing).toEqual([field]);
});

test.each([
  ['version 1 (before scopes)', ASSIGNMENT],
  ['version 2 (scoped, no MAC)', { version: 2, for: SCOPE, ...ASSIGNMENT }],
])('a %s file is ignored with a warning (never trusted, never migrated) and left for the next save', (_, content) => {
  const dir = freshDir();
  const path = plant(dir, content);
  const { lines, logger } = capture();
  const cache = new FileProvisioningCache(dir, 'sensor-1', logger, SCOPE, KEY);
  expect(cache.load()).toBeNull();
  expect(JSON.parse(readFileSync(path, 'utf8'))).toEqual(content);
  expect(lines.some((l) => l.includes('earlier (unauthenticated) or unknown version'))).toBe(true);
  // A malformed scope is unreadable, not trusted.
  plant(dir, { version: 3, for: { idScope: 42 }, ...ASSIGNMENT });
  expect(cache.load()).toBeNull();
  // The next assignment is saved authenticated, and trusted from then on.
  cache.save(ASSIGNMENT);
  expect(cache.load()).toEqual(ASSIGNMENT);
});

test('the file holds a fingerprint of the key, never the key (group key and derived key alike)', () => {
  const derived = deriveDeviceKey(GROUP_KEY, 'sensor-1');
  const scope = { ...SCOPE, credential: credentialFingerprint(derived) };
  const dir = freshDir();
  const key = cacheMacKey(derived);
  const cache = new FileProvisioningCache(dir, 'sensor-1', pino({ level: 'silent' }), scope, key);
  cache.save(ASSIGNMENT);
  const text = readFileSync(cache.path, 'utf8');
  for (const secret of [GROUP_KEY, derived, Buffer.from(derived, 'base64').toString('hex'), key.toString('hex')]) expect(text).not.toContain(secret);
  expect(scope.credential).toMatch(/^[0-9a-f]{32}$/);
  expect(credentialFingerprint(derived)).toBe(scope.credential);
  expect(credentialFingerprint(DEVICE_KEY)).not.toBe(scope.credential);
});

describe('createDevice with a data directory', () => {
  /** The first transition of a device started on `dataDir` (nothing listens at the hosts: it only has to choose). */
  async function firstStep(dataDir: string, lines: string[], cache?: MemoryProvisioningCache): Promise<StateChange> {
    const device = createDevice({
      ...(cache ? { cache } : {}),
      idScope: SCOPE.idScope,
      registrationId: 'sensor-1',
      deviceKey: DEVICE_KEY,
      provisioningHost: SCOPE.provisioningHost,
      dataDir,
      logger: pino({ level: 'info' }, { write: (line: string) => lines.push(line) }),
      provisionTimeoutMs: 1000,
      connectTimeoutMs: 1000,
    });
    const first = new Promise<StateChange>((resolve) => device.once('state', resolve));
    device.start();
    const change = await first;
    await device.stop();
    return change;
  }

  test('a cache planted for another ID scope: warning, and the device provisions', async () => {
    const dir = freshDir();
    new FileProvisioningCache(dir, 'sensor-1', pino({ level: 'silent' }), { ...SCOPE, idScope: '0ne00BBB222' }, KEY).save(ASSIGNMENT);
    const lines: string[] = [];
    expect((await firstStep(dir, lines)).value).toBe('Provisioning');
    expect(lines.some((l) => l.includes('written for another scope'))).toBe(true);
  });

  test('a DeviceMove pending at boot registers under the new scope, whatever an injected cache holds (the old scope\'s hub)', async () => {
    const dir = freshDir();
    const binding = { configuredIdScope: SCOPE.idScope, provisioningHost: SCOPE.provisioningHost, registrationId: 'sensor-1', credential: SCOPE.credential };
    new FileIdScopeStore(dir, binding, KEY, pino({ level: 'silent' })).save({ idScope: '0ne00BBB222', pendingFrom: SCOPE.idScope });
    const lines: string[] = [];
    expect((await firstStep(dir, lines, new MemoryProvisioningCache(ASSIGNMENT))).value).toBe('Provisioning');
    expect(lines.some((l) => l.includes('resuming the move'))).toBe(true);
  });

  test("an injected cache's assignment is checked as a DPS answer: a device id with ';' (it would rewrite the connection string) is not used", async () => {
    const lines: string[] = [];
    const injected = new MemoryProvisioningCache({ ...ASSIGNMENT, deviceId: 'sensor-1;GatewayHostName=elsewhere.example' });
    expect((await firstStep(freshDir(), lines, injected)).value).toBe('Provisioning');
    expect(lines.some((l) => l.includes('cannot be connected with'))).toBe(true);
    expect((await firstStep(freshDir(), [], new MemoryProvisioningCache(ASSIGNMENT))).value).toBe('Connecting');
  });

  test('its own cache: straight to the cached hub', async () => {
    const dir = freshDir();
    new FileProvisioningCache(dir, 'sensor-1', pino({ level: 'silent' }), SCOPE, KEY).save(ASSIGNMENT);
    const lines: string[] = [];
    const change = await firstStep(dir, lines);
    expect(change.value).toBe('Connecting');
    expect(change.hubHost).toBe(ASSIGNMENT.hubHost);
  });
});
