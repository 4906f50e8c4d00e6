/**
 * Lets a plain `node` child process run the TypeScript sources directly (no build):
 * `node -r ./test/support/ts-register.js src/cli/main.ts demo`. Each .ts file is transpiled
 * to CommonJS with the project's compiler (no type check: `tsc --noEmit` does that). The three
 * packages' names lead to their sources, as tsconfig.json's `paths` and jest's moduleNameMapper do.
 */
'use strict';
const fs = require('node:fs');
const Module = require('node:module');
const path = require('node:path');
const ts = require('typescript');

const ROOT = path.join(__dirname, '..', '..');

const compilerOptions = {
  module: ts.ModuleKind.CommonJS,
  target: ts.ScriptTarget.ES2022,
  esModuleInterop: true,
  isolatedModules: true,
  resolveJsonModule: true,
  sourceMap: false,
  inlineSourceMap: true,
};

require.extensions['.ts'] = function compileTs(module, filename) {
  const source = fs.readFileSync(filename, 'utf8');
  const { outputText } = ts.transpileModule(source, { compilerOptions, fileName: filename });
  module._compile(outputText, filename);
};

/** Package name (or subpath) → source file, for the names tsconfig.json maps. */
function sourceOf(request) {
  if (request === 'hubstate') return path.join(ROOT, 'src', 'index.ts');
  if (request === 'hubstate/internal') return path.join(ROOT, 'src', 'internal.ts');
  if (request.startsWith('hubstate/examples/')) return path.join(ROOT, 'examples', `${request.slice('hubstate/examples/'.length)}.ts`);
  if (request === 'hubstate-cloud') return path.join(ROOT, 'packages', 'cloud', 'src', 'index.ts');
  if (request === 'hubstate-testing') return path.join(ROOT, 'packages', 'testing', 'src', 'index.ts');
  if (request.startsWith('hubstate-tools/')) {
    const base = path.join(ROOT, 'packages', 'tools', 'src', request.slice('hubstate-tools/'.length));
    return fs.existsSync(`${base}.ts`) ? `${base}.ts` : path.join(base, 'index.ts');
  }
  return undefined;
}

const resolveFilename = Module._resolveFilename;
Module._resolveFilename = function resolveToSource(request, ...rest) {
  return sourceOf(request) ?? resolveFilename.call(this, request, ...rest);
};
