import { mkdtempSync, readdirSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { FileProvisioningCache } from '../../src/store/cache';

function freshDir() {
  return mkdtempSync(join(tmpdir(), 'hubstate-cache-'));
}

describe('provisioning cache', () => {
  test('saves hub and device id atomically with mode 0600, and loads them back', () => {
    const dir = freshDir();
    const cache = new FileProvisioningCache(dir, 'sensor-1', pino({ level: 'silent' }));
    cache.save({ hubHost: 'hub.example:8883', deviceId: 'sensor-1', assignedAt: 123 });
    expect(cache.load()).toEqual({ hubHost: 'hub.example:8883', deviceId: 'sensor-1', assignedAt: 123 });
    expect(statSync(cache.path).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir)).toEqual([cache.path.split('/').pop()]); // no temporary file left
  });

  test('never stores anything but the assignment', () => {
    const dir = freshDir();
    const cache = new FileProvisioningCache(dir, 'sensor-1', pino({ level: 'silent' }));
    cache.save({ hubHost: 'h', deviceId: 'd', assignedAt: 1, deviceKey: 'SECRET' } as never);
    expect(readFileSync(cache.path, 'utf8')).not.toContain('SECRET');
  });

  test('a corrupt cache is ignored with a warning, not a crash', () => {
    const dir = freshDir();
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(line) });
    const cache = new FileProvisioningCache(dir, 'sensor-1', logger);
    writeFileSync(cache.path, '{"hubHost": 42');
    expect(cache.load()).toBeNull();
    writeFileSync(cache.path, JSON.stringify({ hubHost: '', deviceId: 'x', assignedAt: 1 }));
    expect(cache.load()).toBeNull();
    expect(lines).toHaveLength(2);
    expect(lines[0]).toContain('provisioning cache unreadable');
  });

  test('clear removes the file; a missing file loads as null silently', () => {
    const dir = freshDir();
    const cache = new FileProvisioningCache(dir, 'sensor-1', pino({ level: 'silent' }));
    cache.save({ hubHost: 'h', deviceId: 'd', assignedAt: 1 });
    cache.clear();
    expect(cache.load()).toBeNull();
    cache.clear();
  });
});
