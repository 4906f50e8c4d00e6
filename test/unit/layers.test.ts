/**
 * The layer rules of the design, checked on the source: the machine has no I/O and no SDK, the
 * policies are pure, only actors and Plug and Play touch the SDK, the device never imports the
 * local cloud.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = join(__dirname, '../..');

function sources(dir: string): string[] {
  return readdirSync(join(root, dir)).flatMap((name) => {
    const path = join(dir, name);
    return statSync(join(root, path)).isDirectory() ? sources(path) : path.endsWith('.ts') ? [path] : [];
  });
}

function importsOf(file: string): string[] {
  const text = readFileSync(join(root, file), 'utf8');
  return [...text.matchAll(/(?:from|import\(|require\()\s*['"]([^'"]+)['"]/g)].map((m) => m[1]);
}

test('machines/ imports only xstate and the pure policies', () => {
  for (const file of sources('machines')) {
    for (const spec of importsOf(file)) expect(`${file}: ${spec}`).toMatch(/: (xstate|\.\.\/src\/policy\/[a-z]+)$/);
  }
});

test('src/policy/ is pure: no node built-ins that do I/O, no SDK, nothing outside itself but errors and validation', () => {
  for (const file of sources('src/policy')) {
    for (const spec of importsOf(file)) expect(`${file}: ${spec}`).toMatch(/: (\.\/[a-z-]+|\.\.\/errors|\.\.\/validate)$/);
  }
});

test('src/validate.ts, shared by the policy, is pure: it imports nothing', () => {
  expect(importsOf('src/validate.ts')).toEqual([]);
});

test('only src/actors/ and src/pnp/ import the Azure SDK', () => {
  const offenders = sources('src')
    .filter((file) => !file.startsWith('src/actors/') && !file.startsWith('src/pnp/'))
    .filter((file) => importsOf(file).some((spec) => spec.startsWith('azure-iot-')));
  expect(offenders).toEqual([]);
});

test('the device side never imports the local cloud', () => {
  const deviceSide = ['machines', 'src/actors', 'src/pnp', 'src/policy', 'src/store'].flatMap(sources).concat(['src/device.ts', 'src/index.ts']);
  const offenders = deviceSide.filter((file) => importsOf(file).some((spec) => spec.includes('emulator')));
  expect(offenders.map((file) => relative(root, join(root, file)))).toEqual([]);
});
