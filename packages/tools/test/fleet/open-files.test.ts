/** `hubstate fleet` warns before starting when N devices need more open files than the process may hold. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileDescriptorsNeeded, openFileLimit } from '../../src/fleet/command';

test('10,000 devices with the local cloud in the process need more than a 20,000-file limit; without it, fewer', () => {
  expect(fileDescriptorsNeeded(10_000, true)).toBeGreaterThan(20_000);
  expect(fileDescriptorsNeeded(10_000, false)).toBeLessThan(20_000);
});

test('the soft limit is read from a /proc/self/limits table; unknown is null, not a guess', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hubstate-limits-'));
  const limits = join(dir, 'limits');
  writeFileSync(limits, 'Limit                     Soft Limit           Hard Limit           Units\nMax open files            20000                40000                files\n');
  expect(openFileLimit(limits)).toBe(20_000);
  writeFileSync(limits, 'Max open files            unlimited            unlimited            files\n');
  expect(openFileLimit(limits)).toBeNull();
  expect(openFileLimit(join(dir, 'missing'))).toBeNull();
});
