/**
 * The device library's JavaScript as it ships: one file, dist/hubstate.js, bundled by esbuild from
 * the TypeScript sources (tsc writes only the declarations, tsconfig.build.json). One file instead
 * of ~45 halves the time our code takes to load (Node resolves, reads and wraps each module file
 * on its own), and one copy of every module serves all three entry points:
 * - `hubstate`: dist/hubstate.js;
 * - `hubstate/internal`: dist/internal.js reads it from the bundle (an export named
 *   'hubstate/internal', the tools' surface);
 * - `hubstate/examples/failover-device`: its own small bundle that requires dist/hubstate.js.
 * Dependencies stay external (installed by npm, loaded where they are). The lazy `require()`s in
 * the sources (SQLite outbox, pino, proxy agent ...) stay lazy: esbuild runs such a module's body
 * on its first require.
 */
import { build } from 'esbuild';
import { writeFileSync } from 'node:fs';

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

writeFileSync(
  'dist/internal.js',
  `'use strict';\n// hubstate/internal: the bundle's own copy (bundle.mjs), so both entry points share every module.\nmodule.exports = require('./hubstate.js')['${INTERNAL_KEY}'];\n`,
);

await build({
  ...common,
  entryPoints: ['examples/failover-device.ts'],
  outfile: 'dist/examples/failover-device.js',
  plugins: [
    {
      name: 'library-from-the-bundle',
      setup(pluginBuild) {
        // The example imports the library as '../src': at run time that is the bundle.
        pluginBuild.onResolve({ filter: /^\.\.\/src$/ }, () => ({ path: '../hubstate.js', external: true }));
      },
    },
  ],
});
