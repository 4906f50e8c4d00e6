/**
 * The three packages as users get them. `npm pack` of each (each prepack is a clean build), then:
 * - the device library (`hubstate`) installed ALONE in a fresh folder: what it costs (packages and
 *   disk, printed), everything its code imports is a declared dependency, its entry points load
 *   and its types resolve through `exports`;
 * - the local cloud (`hubstate-cloud`) installed alone in a second folder and started there, and a
 *   device from the first folder provisioning through it and delivering telemetry (checked by id
 *   on the cloud's side);
 * - the tools (`hubstate-tools`) added to the device's folder, and `npx hubstate demo` losing nothing.
 *
 * Slow (1–3 min: better-sqlite3 is compiled from source when no prebuilt binary is reachable).
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { ROOT } from './spawn';

// Three builds, a native compile (better-sqlite3) and three installs: minutes on a busy 2-core machine.
jest.setTimeout(14 * 60_000);

/** The parent's npm_* variables (when run by `npm test`) must not steer the nested npm runs. */
const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_')));
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const npx = process.platform === 'win32' ? 'npx.cmd' : 'npx';

function run(
  command: string,
  args: string[],
  cwd: string,
  timeoutMs: number,
): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(command, args, { cwd, env: cleanEnv, timeout: timeoutMs, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      // execFile's error.code is the exit code (a number), or a string such as 'ETIMEDOUT' / 'ENOENT'.
      const code: unknown = error ? (error as { code?: unknown }).code : 0;
      resolve({ code: typeof code === 'number' ? code : 1, stdout, stderr, ms: Date.now() - started });
    });
  });
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? filesUnder(path) : [path];
  });
}

/** Packages and bytes under a folder's node_modules (each package.json with a name and version counted once). */
function installedFootprint(dir: string): { packages: number; megabytes: number } {
  const files = filesUnder(join(dir, 'node_modules'));
  let packages = 0;
  for (const file of files.filter((f) => f.endsWith('/package.json'))) {
    try {
      const { name, version } = JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown; version?: unknown };
      if (typeof name === 'string' && typeof version === 'string' && file.endsWith(`node_modules/${name}/package.json`)) packages++;
    } catch {
      // a fixture or a broken manifest inside some package: not a package of its own
    }
  }
  const bytes = files.reduce((sum, f) => sum + statSync(f).size, 0);
  return { packages, megabytes: Math.round(bytes / 1e5) / 10 };
}

async function pack(workspace: string | undefined, work: string): Promise<{ tarball: string; files: string[]; ms: number }> {
  const args = ['pack', '--json', '--pack-destination', work, ...(workspace ? ['-w', workspace] : [])];
  const result = await run(npm, args, ROOT, 4 * 60_000);
  expect({ workspace, code: result.code, stderr: result.code === 0 ? '' : result.stderr.slice(-3000) }).toEqual({ workspace, code: 0, stderr: '' });
  const [info] = JSON.parse(result.stdout.slice(result.stdout.indexOf('['))) as Array<{ filename: string; files: Array<{ path: string }> }>;
  const files = info.files.map((f) => f.path);
  // Built code, manifest and README only: no tests, no TypeScript sources.
  expect(files.filter((f) => f.startsWith('test/') || (f.endsWith('.ts') && !f.endsWith('.d.ts')))).toEqual([]);
  return { tarball: join(work, info.filename), files, ms: result.ms };
}

/** Every bare module the installed package's code requires is one of its dependencies, or built in. */
function undeclaredImports(installed: string, declared: Record<string, string>): string[] {
  const imported = new Set<string>();
  for (const file of filesUnder(join(installed, 'dist')).filter((f) => f.endsWith('.js'))) {
    const source = readFileSync(file, 'utf8');
    for (const m of source.matchAll(/(?:require\(|import\(|importEsm\()\s*["']([^"'.][^"']*)["']/g)) {
      const name = m[1].startsWith('@') ? m[1].split('/').slice(0, 2).join('/') : m[1].split('/')[0];
      if (!name.startsWith('node:') && !builtinModules.includes(name)) imported.add(`${name} (${relative(installed, file)})`);
    }
  }
  return [...imported].filter((entry) => !(entry.split(' ')[0] in declared));
}

const manifestOf = (dir: string) =>
  JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
    bin?: Record<string, string>;
    dependencies: Record<string, string>;
    peerDependencies?: Record<string, string>;
    exports: Record<string, string | { types: string; default: string }>;
  };

/** Starts the installed local cloud in its own folder; resolves with what a device needs, printed as one JSON line. */
function startInstalledCloud(folder: string): Promise<{ info: { idScope: string; provisioningHost: string; ca: string; key: string }; stdout: () => string; stop: () => Promise<void> }> {
  const script = [
    "const { startLocalCloud, FAST_DPS_POLL_SEC } = require('hubstate-cloud');",
    'startLocalCloud({ hubs: 2, dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } }).then((cloud) => {',
    "  cloud.events.on('telemetry', (record) => console.log('received ' + record.messageId));",
    "  console.log('INFO ' + JSON.stringify({ idScope: cloud.idScope, provisioningHost: cloud.provisioningHost, ca: cloud.ca, key: cloud.deviceKey('pack-device') }));",
    "  process.on('SIGTERM', () => cloud.stop().then(() => process.exit(0)));",
    '});',
  ].join('\n');
  const child = spawn(process.execPath, ['-e', script], { cwd: folder, env: cleanEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the installed cloud did not start\n${out}\n${err}`)), 60_000);
    child.on('exit', (code) => reject(new Error(`the installed cloud exited (${code})\n${out}\n${err}`)));
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const line = /^INFO (.*)$/m.exec(out);
      if (!line) return;
      clearTimeout(timer);
      resolve({
        info: JSON.parse(line[1]) as { idScope: string; provisioningHost: string; ca: string; key: string },
        stdout: () => out,
        stop: () => new Promise<void>((done) => (child.exitCode !== null ? done() : (child.once('exit', () => done()), child.kill('SIGTERM')))),
      });
    });
  });
}

describe('npm pack of the three packages → each installed as a user would', () => {
  test('the device library installs alone, runs against the cloud package, and the tools\' demo loses nothing', async () => {
    const work = mkdtempSync(join(tmpdir(), 'hubstate-pack-'));
    const timings: string[] = [];

    // 1. pack: the device library first (the others' builds read its declarations)
    const device = await pack(undefined, work);
    const cloudPackage = await pack('packages/cloud', work);
    const testing = await pack('packages/testing', work);
    const tools = await pack('packages/tools', work);
    timings.push(`pack ${device.ms + cloudPackage.ms + testing.ms + tools.ms} ms`);
    const deviceManifest = manifestOf(ROOT);
    expect(device.files).toEqual(expect.arrayContaining(['visualizations/device.svg', 'README.md', 'package.json', 'dist/examples/dtmi-sample-failover-1.json']));
    for (const entry of Object.values(deviceManifest.exports).filter((e) => typeof e === 'object')) {
      expect(device.files).toEqual(expect.arrayContaining([entry.types.replace('./', ''), entry.default.replace('./', '')]));
    }
    expect(cloudPackage.files).toEqual(expect.arrayContaining(['README.md', 'dist/index.js', 'dist/index.d.ts']));
    expect(testing.files).toEqual(expect.arrayContaining(['dist/index.js', 'dist/index.d.ts']));
    expect(tools.files).toEqual(expect.arrayContaining([manifestOf(join(ROOT, 'packages', 'tools')).bin!.hubstate]));

    // 2. the device library alone in a fresh folder (npm ≥ 11 runs install scripts only for allowed packages)
    const app = join(work, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'hubstate-pack-smoke', version: '1.0.0', private: true, allowScripts: { 'better-sqlite3': true } }));
    const install = await run(npm, ['install', '--no-audit', '--no-fund', device.tarball], app, 8 * 60_000);
    expect({ code: install.code, stderr: install.code === 0 ? '' : install.stderr.slice(-3000) }).toEqual({ code: 0, stderr: '' });
    timings.push(`device install ${install.ms} ms`);
    const footprint = installedFootprint(app);
    // Nothing of the local cloud or the tools comes with the device library.
    for (const name of ['aedes', 'selfsigned', '@statelyai/inspect', '@hpcc-js/wasm-graphviz', 'hubstate-cloud', 'hubstate-tools']) {
      expect({ name, present: existsSync(join(app, 'node_modules', name)) }).toEqual({ name, present: false });
    }
    // (its optional peer, @opentelemetry/api, is declared too: required only when metrics are asked for)
    expect(undeclaredImports(join(app, 'node_modules', 'hubstate'), { ...deviceManifest.dependencies, ...deviceManifest.peerDependencies })).toEqual([]);
    // The three entry points load one bundle (bundle.mjs): one copy of every module. It behaves as
    // tsc's files did: strict functions, each error class named as exported (an error's name is
    // its class's), exports a test can spy on, and no export beyond the declared ones.
    const loadScript = [
      "const h = require('hubstate');",
      "const internal = require('hubstate/internal');",
      "const example = require('hubstate/examples/failover-device');",
      'const entries = [typeof h.createDevice, typeof internal.resolveOptions, typeof example.MODEL_ID];',
      "const files = Object.keys(require.cache).filter((f) => f.includes('node_modules/hubstate/')).map((f) => f.split('node_modules/hubstate/')[1]).sort();",
      'const errorClasses = Object.entries(h).filter(([, value]) => typeof value === "function" && value.prototype instanceof Error);',
      'const misnamed = errorClasses.filter(([name, value]) => value.name !== name).map(([name]) => name);',
      'const sloppy = Object.entries(h).filter(([, f]) => typeof f === "function" && Object.getOwnPropertyNames(f).includes("caller")).map(([name]) => name);',
      'const fixed = [h, internal, example].flatMap((m) => Object.keys(m).filter((name) => !Object.getOwnPropertyDescriptor(m, name).configurable));',
      "console.log(JSON.stringify({ entries, files, errorClasses: errorClasses.map(([name]) => name), misnamed, sloppy, fixed, internalKeyListed: Object.keys(h).includes('hubstate/internal') }));",
    ].join('\n');
    const load = await run(process.execPath, ['-e', loadScript], app, 30_000);
    expect({ stderr: load.stderr, ...(JSON.parse(load.stdout.trim() || '{}') as object) }).toEqual({
      stderr: '',
      entries: ['function', 'function', 'string'],
      files: ['dist/examples/failover-device.js', 'dist/hubstate.js', 'dist/internal.js'],
      errorClasses: expect.arrayContaining(['HubstateError', 'ConfigError', 'MessageRejectedError', 'CommandError', 'PropertyRejectedError']),
      misnamed: [],
      sloppy: [],
      fixed: [],
      internalKeyListed: false,
    });
    // ES modules import the same names (Node reads a CommonJS module's export names from its text).
    const esm = await run(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        [
          "import * as h from 'hubstate';",
          "import { createDevice } from 'hubstate';",
          "import { resolveOptions, openSqliteOutbox } from 'hubstate/internal';",
          "import { MODEL_ID } from 'hubstate/examples/failover-device';",
          "console.log(JSON.stringify({ imported: [typeof createDevice, typeof resolveOptions, typeof openSqliteOutbox, typeof MODEL_ID], names: Object.keys(h).filter((n) => n !== 'default') }));",
        ].join('\n'),
      ],
      app,
      30_000,
    );
    const publicNames = await run(process.execPath, ['-e', "console.log(JSON.stringify(Object.keys(require('hubstate'))))"], app, 30_000);
    expect({ stderr: esm.stderr, ...(JSON.parse(esm.stdout.trim() || '{}') as object) }).toEqual({
      stderr: '',
      imported: ['function', 'function', 'function', 'string'],
      names: expect.arrayContaining(JSON.parse(publicNames.stdout) as string[]),
    });
    expect((JSON.parse(esm.stdout) as { names: string[] }).names).not.toContain('hubstate/internal');
    writeFileSync(
      join(app, 'check.ts'),
      [
        "import { createDevice, type DeviceOptions } from 'hubstate';",
        "const options: DeviceOptions = { idScope: 'x', registrationId: 'y', deviceKey: 'z' };",
        'export const check = () => createDevice(options);',
        '',
      ].join('\n'),
    );
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const types = await run(process.execPath, [tsc, '--noEmit', '--strict', '--module', 'node16', '--moduleResolution', 'node16', '--skipLibCheck', 'check.ts'], app, 60_000);
    expect({ code: types.code, out: types.stdout }).toEqual({ code: 0, out: '' });

    // 3. the local cloud alone in its own folder, started there; a device from the first folder delivers through it
    const cloudFolder = join(work, 'cloud');
    mkdirSync(cloudFolder);
    writeFileSync(join(cloudFolder, 'package.json'), JSON.stringify({ name: 'hubstate-cloud-smoke', version: '1.0.0', private: true }));
    const cloudInstall = await run(npm, ['install', '--no-audit', '--no-fund', cloudPackage.tarball], cloudFolder, 5 * 60_000);
    expect({ code: cloudInstall.code, stderr: cloudInstall.code === 0 ? '' : cloudInstall.stderr.slice(-3000) }).toEqual({ code: 0, stderr: '' });
    expect(existsSync(join(cloudFolder, 'node_modules', 'hubstate'))).toBe(false);
    expect(undeclaredImports(join(cloudFolder, 'node_modules', 'hubstate-cloud'), manifestOf(join(ROOT, 'packages', 'cloud')).dependencies)).toEqual([]);
    const cloud = await startInstalledCloud(cloudFolder);
    try {
      const deviceScript = [
        "const { createDevice } = require('hubstate');",
        'const info = JSON.parse(process.argv[1]);',
        "const device = createDevice({ idScope: info.idScope, registrationId: 'pack-device', deviceKey: info.key, provisioningHost: info.provisioningHost, ca: info.ca });",
        // sendTelemetry resolves once the message is in the outbox; 'delivered' is the hub's PUBACK.
        'const delivered = new Set();',
        "device.on('delivered', (id) => delivered.add(id));",
        'device.start();',
        'Promise.all([1, 2, 3].map((n) => device.sendTelemetry({ n })))',
        '  .then((sent) => new Promise((resolve) => { const ids = sent.map((s) => s.messageId); const check = () => (ids.every((id) => delivered.has(id)) ? resolve(ids) : setTimeout(check, 50)); check(); }))',
        "  .then((ids) => { console.log('acknowledged ' + ids.join(' ')); return device.stop(); })",
        '  .then(() => process.exit(0), (error) => { console.error(error); process.exit(1); });',
      ].join('\n');
      const delivered = await run(process.execPath, ['-e', deviceScript, JSON.stringify(cloud.info)], app, 60_000);
      const line = /^acknowledged (\S+) (\S+) (\S+)$/m.exec(delivered.stdout);
      expect({ code: delivered.code, line: line?.[0], stderr: delivered.code === 0 ? '' : delivered.stderr.slice(-2000) }).toEqual({
        code: 0,
        line: expect.any(String),
        stderr: '',
      });
      // Every message the device saw acknowledged is at the cloud, by id.
      const acknowledged = line!.slice(1);
      expect(new Set(acknowledged).size).toBe(3);
      // (the cloud's lines come through a pipe: wait a moment for them rather than read once)
      const arrived = () => acknowledged.filter((id) => cloud.stdout().includes(`received ${id}\n`));
      for (let waited = 0; arrived().length < acknowledged.length && waited < 5_000; waited += 100) await new Promise((r) => setTimeout(r, 100));
      expect(arrived()).toEqual(acknowledged);
    } finally {
      await cloud.stop();
    }

    // 4. the tools added next to the device library (with the cloud and the toolkit, their dependencies); the demo loses nothing
    const toolsInstall = await run(npm, ['install', '--no-audit', '--no-fund', cloudPackage.tarball, testing.tarball, tools.tarball], app, 5 * 60_000);
    expect({ code: toolsInstall.code, stderr: toolsInstall.code === 0 ? '' : toolsInstall.stderr.slice(-3000) }).toEqual({ code: 0, stderr: '' });
    const demo = await run(npx, ['hubstate', 'demo', '--duration', '15'], app, 2 * 60_000);
    timings.push(`demo ${demo.ms} ms`);
    expect({ code: demo.code, tail: demo.stdout.slice(-1500), stderr: demo.stderr.slice(-1500) }).toEqual({
      code: 0,
      tail: expect.stringContaining('nothing lost.'),
      stderr: expect.any(String),
    });
    expect(demo.stdout).toMatch(/lost\s+0\n/);
    process.stdout.write(
      `pack test: ${timings.join(', ')}; device library alone: ${footprint.packages} packages, ${footprint.megabytes} MB in node_modules; tarballs ${device.files.length}/${cloudPackage.files.length}/${testing.files.length}/${tools.files.length} files\n`,
    );
  });
});
