/**
 * What a configuration does not use is not loaded (module load is a figure of bench 6):
 * `require('hubstate')` loads neither pino, the SQLite stores nor the X.509 security, and a device
 * without a data directory loads no SQLite code. A device with one loads the durable outbox and
 * the offline-command inbox as it is created.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type * as Hubstate from '../../src/index';

/** Modules of the optional features, as this file names them for jest.doMock. */
const WATCHED = ['pino', 'better-sqlite3', 'azure-iot-security-x509', '../../src/store/sqlite-outbox', '../../src/store/command-inbox'] as const;

const silent = pino({ level: 'silent' });

/** The watched modules loaded by `run` in a fresh module registry (requiring hubstate included). */
function loadedBy(run: (hubstate: typeof Hubstate) => void): string[] {
  const loaded = new Set<string>();
  jest.isolateModules(() => {
    for (const name of WATCHED) {
      jest.doMock(name, () => {
        loaded.add(name);
        return jest.requireActual(name);
      });
    }
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    run(require('../../src/index') as typeof Hubstate);
  });
  for (const name of WATCHED) jest.dontMock(name);
  return [...loaded].sort();
}

const keys = { idScope: '0ne00AAA111', registrationId: 'lazy-1', deviceKey: Buffer.alloc(32, 3).toString('base64'), provisioningHost: 'localhost:9', logger: silent };

test('require(hubstate) loads none of them', () => {
  expect(loadedBy(() => undefined)).toEqual([]);
});

test('a device without a data directory loads none of them', () => {
  expect(loadedBy((hubstate) => void hubstate.createDevice(keys).stop())).toEqual([]);
});

test('a device without a logger loads pino', () => {
  const { logger: _mine, ...withoutLogger } = keys;
  expect(loadedBy((hubstate) => void hubstate.createDevice(withoutLogger).stop())).toEqual(['pino']);
});

test('a device with a data directory loads the SQLite outbox and command inbox as it is created', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'hubstate-lazy-'));
  try {
    expect(loadedBy((hubstate) => void hubstate.createDevice({ ...keys, dataDir }).stop())).toEqual([
      '../../src/store/command-inbox',
      '../../src/store/sqlite-outbox',
      'better-sqlite3',
    ]);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
