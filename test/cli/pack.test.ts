/**
 * The package as a user gets it: `npm pack` (its prepack is a clean `npm run build`), the tarball
 * installed into a fresh folder, then `npx hubstate demo --duration 15` from there, the two entry
 * points (`hubstate`, `hubstate/emulator`) required and type-checked through `exports`.
 *
 * Slow (1–2 min: better-sqlite3 is compiled from source when no prebuilt binary is reachable).
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { ROOT } from './spawn';

jest.setTimeout(8 * 60_000);

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

describe('npm pack → npm install <tgz> → npx hubstate demo', () => {
  test('the packed package installs in a fresh folder and its demo loses nothing', async () => {
    const work = mkdtempSync(join(tmpdir(), 'hubstate-pack-'));
    const timings: string[] = [];

    // 1. pack (prepack: clean build into dist/)
    const pack = await run(npm, ['pack', '--json', '--pack-destination', work], ROOT, 3 * 60_000);
    expect({ code: pack.code, stderr: pack.code === 0 ? '' : pack.stderr }).toEqual({ code: 0, stderr: '' });
    timings.push(`pack ${pack.ms} ms`);
    const [info] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const files = info.files.map((f) => f.path);
    const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      bin: Record<string, string>;
      dependencies: Record<string, string>;
      exports: Record<string, { types: string; default: string }>;
    };
    // What bin, exports and the --ui page need is in the tarball; tests and sources are not.
    expect(files).toEqual(expect.arrayContaining([manifest.bin.hubstate, 'visualizations/device.svg', 'README.md', 'package.json']));
    for (const entry of Object.values(manifest.exports).filter((e) => typeof e === 'object')) {
      expect(files).toEqual(expect.arrayContaining([entry.types.replace('./', ''), entry.default.replace('./', '')]));
    }
    expect(files.filter((f) => f.startsWith('test/') || (f.endsWith('.ts') && !f.endsWith('.d.ts')))).toEqual([]);

    // 2. install into a fresh folder (npm ≥ 11 runs install scripts only for allowed packages)
    const app = join(work, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'hubstate-pack-smoke', version: '1.0.0', private: true, allowScripts: { 'better-sqlite3': true } }));
    const install = await run(npm, ['install', '--no-audit', '--no-fund', join(work, info.filename)], app, 5 * 60_000);
    expect({ code: install.code, stderr: install.code === 0 ? '' : install.stderr.slice(-3000) }).toEqual({ code: 0, stderr: '' });
    timings.push(`install ${install.ms} ms`);

    // Everything the installed code imports is a dependency (not a devDependency) or built in.
    const installed = join(app, 'node_modules', 'hubstate');
    const imported = new Set<string>();
    for (const file of filesUnder(join(installed, 'dist')).filter((f) => f.endsWith('.js'))) {
      const source = readFileSync(file, 'utf8');
      for (const m of source.matchAll(/(?:require\(|import\(|importEsm\()\s*["']([^"'.][^"']*)["']/g)) {
        const name = m[1].startsWith('@') ? m[1].split('/').slice(0, 2).join('/') : m[1].split('/')[0];
        if (!name.startsWith('node:') && !builtinModules.includes(name)) imported.add(`${name} (${relative(installed, file)})`);
      }
    }
    const missing = [...imported].filter((entry) => !(entry.split(' ')[0] in manifest.dependencies));
    expect(missing).toEqual([]);

    // 3. both entry points load, and their types resolve through `exports`
    const load = await run(
      process.execPath,
      ['-e', "const h = require('hubstate'); const e = require('hubstate/emulator'); console.log(typeof h.createDevice, typeof e.startLocalCloud)"],
      app,
      30_000,
    );
    expect(load.stdout.trim()).toBe('function function');
    writeFileSync(
      join(app, 'check.ts'),
      [
        "import { createDevice, type DeviceOptions } from 'hubstate';",
        "import { startLocalCloud } from 'hubstate/emulator';",
        "const options: DeviceOptions = { idScope: 'x', registrationId: 'y', deviceKey: 'z' };",
        'export const check = async () => { const cloud = await startLocalCloud({ hubs: 2 }); createDevice(options); await cloud.stop(); };',
        '',
      ].join('\n'),
    );
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const types = await run(process.execPath, [tsc, '--noEmit', '--strict', '--module', 'node16', '--moduleResolution', 'node16', '--skipLibCheck', 'check.ts'], app, 60_000);
    expect({ code: types.code, out: types.stdout }).toEqual({ code: 0, out: '' });

    // 4. the demo, from the installed package
    const demo = await run(npx, ['hubstate', 'demo', '--duration', '15'], app, 2 * 60_000);
    timings.push(`demo ${demo.ms} ms`);
    expect({ code: demo.code, tail: demo.stdout.slice(-1500), stderr: demo.stderr.slice(-1500) }).toEqual({
      code: 0,
      tail: expect.stringContaining('nothing lost.'),
      stderr: expect.any(String),
    });
    expect(demo.stdout).toMatch(/lost\s+0\n/);
    process.stdout.write(`pack test: ${timings.join(', ')}; tarball ${files.length} files\n`);
  });
});
