/**
 * Lets a plain `node` child process run the TypeScript sources directly (no build):
 * `node -r ./test/support/ts-register.js src/cli/main.ts demo`. Each .ts file is transpiled
 * to CommonJS with the project's compiler (no type check: `tsc --noEmit` does that).
 */
'use strict';
const fs = require('node:fs');
const ts = require('typescript');

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
