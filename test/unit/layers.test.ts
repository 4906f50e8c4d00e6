/**
 * The layer rules of the design, checked on the source: the machine has no I/O and no SDK, the
 * policies are pure, only actors and Plug and Play touch the SDK; the three packages (device
 * library, local cloud, tools) import each other only as the layout says.
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

/** Which package a resolved import lands in: a bare name is its package, a relative path its folder. */
function packageOf(file: string, spec: string): string {
  if (!spec.startsWith('.')) return spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
  const target = relative(root, join(root, file, '..', spec));
  if (target.startsWith('packages/cloud/')) return 'hubstate-cloud';
  if (target.startsWith('packages/tools/')) return 'hubstate-tools';
  if (target.startsWith('packages/testing/')) return 'hubstate-testing';
  return 'hubstate';
}

const manifest = (dir: string) =>
  JSON.parse(readFileSync(join(root, dir, 'package.json'), 'utf8')) as {
    name: string;
    dependencies?: Record<string, string>;
    peerDependencies?: Record<string, string>;
    peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  };

test('the device library imports neither the local cloud nor the tools, and needs only its runtime dependencies', () => {
  // (the example's own tests use the local cloud and the toolkit, as an application's tests would)
  const deviceLibrary = ['machines', 'src', 'examples'].flatMap(sources).filter((file) => !file.endsWith('.test.ts'));
  const imported = new Set(deviceLibrary.flatMap((file) => importsOf(file).filter((spec) => !spec.startsWith('node:')).map((spec) => packageOf(file, spec))));
  imported.delete('hubstate');
  expect([...imported].filter((name) => name.startsWith('hubstate'))).toEqual([]);
  // What `npm install hubstate` brings to a device, and nothing else (the SDK's provisioning and
  // symmetric-key packages are required by name inside the SDK's own modules, so listed too).
  expect(Object.keys(manifest('.').dependencies ?? {}).sort()).toEqual([
    'azure-iot-common',
    'azure-iot-device',
    'azure-iot-device-mqtt',
    'azure-iot-mqtt-base',
    'azure-iot-provisioning-device',
    'azure-iot-provisioning-device-mqtt',
    'azure-iot-security-symmetric-key',
    'azure-iot-security-x509',
    'better-sqlite3',
    'https-proxy-agent',
    'pino',
    'xstate',
  ]);
  // The OpenTelemetry API is an optional peer: the application's copy, required only when
  // metrics are asked for (src/metrics.ts), so a device without metrics installs nothing more.
  const { peerDependencies, peerDependenciesMeta } = manifest('.');
  expect(peerDependencies).toEqual({ '@opentelemetry/api': expect.stringMatching(/^\^1\./) });
  expect(peerDependenciesMeta).toEqual({ '@opentelemetry/api': { optional: true } });
  const optionalPeerImporters = deviceLibrary.filter((file) => importsOf(file).includes('@opentelemetry/api'));
  expect(optionalPeerImporters).toEqual(['src/metrics.ts']);
  const declared = new Set(Object.keys({ ...manifest('.').dependencies, ...peerDependencies }));
  expect([...imported].filter((name) => !declared.has(name))).toEqual([]);
});

test('the local cloud imports nothing of hubstate (it serves any device code) and only its own dependencies', () => {
  const cloud = sources('packages/cloud/src');
  expect(cloud.length).toBeGreaterThan(10);
  const imported = new Set(cloud.flatMap((file) => importsOf(file).filter((spec) => !spec.startsWith('node:')).map((spec) => packageOf(file, spec))));
  imported.delete('hubstate-cloud');
  expect([...imported].sort()).toEqual(Object.keys(manifest('packages/cloud').dependencies ?? {}).sort());
});

test('the testing toolkit reaches the device library and the local cloud by name, the library as its peer', () => {
  const testing = sources('packages/testing/src');
  const imported = new Set(testing.flatMap((file) => importsOf(file).filter((spec) => !spec.startsWith('node:')).map((spec) => packageOf(file, spec))));
  imported.delete('hubstate-testing');
  const { dependencies, peerDependencies } = manifest('packages/testing');
  expect([...imported].sort()).toEqual(Object.keys({ ...dependencies, ...peerDependencies }).sort());
  expect(peerDependencies).toEqual({ hubstate: expect.any(String) });
});

test('the tools reach the device library and the local cloud only by package name, never by path', () => {
  const tools = sources('packages/tools/src');
  const offenders = tools.filter((file) => importsOf(file).some((spec) => spec.startsWith('.') && packageOf(file, spec) !== 'hubstate-tools'));
  expect(offenders).toEqual([]);
  const imported = new Set(tools.flatMap((file) => importsOf(file).filter((spec) => !spec.startsWith('node:')).map((spec) => packageOf(file, spec))));
  imported.delete('hubstate-tools');
  const { dependencies, peerDependencies } = manifest('packages/tools');
  expect([...imported].filter((name) => !(name in { ...dependencies, ...peerDependencies }))).toEqual([]);
  // The device library is a peer: the tools drive the application's copy, never a second one.
  expect(peerDependencies).toEqual({ hubstate: expect.any(String) });
});
