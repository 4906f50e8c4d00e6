/**
 * The device library's JavaScript as it ships: one file, dist/hubstate.js, bundled by esbuild from
 * the TypeScript sources (tsc writes only the declarations, tsconfig.build.json). One file instead
 * of ~45 takes our code's load from ~18 to ~11 ms on the bench's host (Node resolves, reads and
 * wraps each module file on its own), and one copy of every module serves all three entry points:
 * - `hubstate`: dist/hubstate.js;
 * - `hubstate/internal`: dist/internal.js reads it from the bundle (a non-enumerable export named
 *   'hubstate/internal', the tools' surface);
 * - `hubstate/examples/failover-device`: its own small bundle that requires dist/hubstate.js.
 * Dependencies stay external (installed by npm, loaded where they are). The lazy `require()`s in
 * the sources (SQLite outbox, pino, proxy agent ...) stay lazy: esbuild runs such a module's body
 * on its first require.
 */
import { build } from 'esbuild';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

// The paths below are the package's, wherever this runs from.
process.chdir(dirname(fileURLToPath(import.meta.url)));

const INTERNAL_KEY = 'hubstate/internal';
const common = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  packages: 'external',
  // Line numbers of the TypeScript sources (node --enable-source-maps), without shipping the sources.
  sourcemap: true,
  sourcesContent: false,
  // No keepNames (it costs ~2 ms of load): a class keeps its name through the bundle's `var X =
  // class` (the error classes' `name` is `new.target.name`; the pack test checks them), and a
  // function renamed for a clash (describe2) is named so only in stack traces.
  logLevel: 'warning',
  // tsc's CommonJS files each began so; the modules are strict as ES modules, the file was not.
  banner: { js: '"use strict";' },
};

await build({
  ...common,
  stdin: {
    // ES module syntax, so esbuild hoists the modules into one scope (a CommonJS entry would wrap
    // each in a function). The string-named export is not in the declarations: only
    // dist/internal.js reads it.
    contents: `export * from './src/index.ts';\nexport * as '${INTERNAL_KEY}' from './src/internal.ts';`,
    resolveDir: '.',
    sourcefile: 'hubstate-entry.js',
    loader: 'js',
  },
  outfile: 'dist/hubstate.js',
});

/**
 * esbuild's output, made to behave as tsc's did, each edit checked so that an esbuild upgrade
 * that changes its output fails the build instead of shipping half of it.
 */
function replaceOnce(text, from, to) {
  const at = text.indexOf(from);
  if (at < 0 || text.indexOf(from, at + 1) >= 0) throw new Error(`bundle.mjs: expected exactly one '${from}' in esbuild's output`);
  return text.slice(0, at) + to + text.slice(at + from.length);
}

/**
 * Exports configurable, as tsc's were: `jest.spyOn(require('hubstate'), 'createDevice')` works.
 * (__export defines a module's exports, __copyProps copies them onto module.exports.)
 */
function configurableExports(text) {
  const exported = replaceOnce(text, '__defProp(target, name, { get: all[name], enumerable: true });', '__defProp(target, name, { get: all[name], enumerable: true, configurable: true });');
  return replaceOnce(
    exported,
    '__defProp(to, key, { get: () => from[key], enumerable: !(desc = __getOwnPropDesc(from, key)) || desc.enumerable });',
    '__defProp(to, key, { get: () => from[key], enumerable: !(desc = __getOwnPropDesc(from, key)) || desc.enumerable, configurable: true });',
  );
}

function rewrite(path, edit) {
  writeFileSync(path, edit(readFileSync(path, 'utf8')));
}

const bundlePath = 'dist/hubstate.js';
rewrite(bundlePath, (text) => {
  // The 'hubstate/internal' export left out of the public surface (`Object.keys`, ESM's `import *`).
  const hidden = replaceOnce(configurableExports(text), `\n  "${INTERNAL_KEY}": null,`, '');
  return replaceOnce(hidden, '\n//# sourceMappingURL=', `\nObject.defineProperty(module.exports, '${INTERNAL_KEY}', { enumerable: false });\n//# sourceMappingURL=`);
});

// Node's ESM loader finds a CommonJS module's export names by reading its text (cjs-module-lexer):
// dist/internal.js lists them (quoted: any name parses), as esbuild's annotation does in the bundle.
const internalNames = Object.keys(createRequire(import.meta.url)(`./${bundlePath}`)[INTERNAL_KEY]);
writeFileSync(
  'dist/internal.js',
  [
    "'use strict';",
    "// hubstate/internal: the bundle's own copy (bundle.mjs), so both entry points share every module.",
    `module.exports = require('./hubstate.js')['${INTERNAL_KEY}'];`,
    '// The export names, for ESM import (read, never run).',
    `0 && (module.exports = { ${internalNames.map((name) => `${JSON.stringify(name)}: null`).join(', ')} });`,
    '',
  ].join('\n'),
);

await build({
  ...common,
  entryPoints: ['examples/failover-device.ts'],
  outfile: 'dist/examples/failover-device.js',
  plugins: [
    {
      name: 'library-from-the-bundle',
      setup(pluginBuild) {
        // The example imports the library as '../src': at run time that is the bundle. A deeper
        // import would put a second copy of library modules in the example (instanceof fails).
        pluginBuild.onResolve({ filter: /^\.\.\/src$/ }, () => ({ path: '../hubstate.js', external: true }));
        pluginBuild.onResolve({ filter: /^\.\.\/(src|machines)\// }, (args) => ({
          errors: [{ text: `${args.path}: the example imports the library as '../src' only (bundle.mjs)` }],
        }));
      },
    },
  ],
});
rewrite('dist/examples/failover-device.js', configurableExports);
// Its DTDL model ships beside it, as tsc's build wrote it (the README's real-app steps upload it).
copyFileSync('examples/dtmi-sample-failover-1.json', 'dist/examples/dtmi-sample-failover-1.json');
