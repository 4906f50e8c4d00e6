// @ts-check
/**
 * Mutation testing of the pure policies and the statechart (issue 12 §9): `npm run mutation`.
 * One file only: `npm run mutation -- --mutate src/policy/backoff.ts`.
 *
 * Tests: jest.mutation.config.js, i.e. test/policy and test/machine WITHOUT test/machine/model.test.ts
 * (~3 min per run; Stryker runs the covering tests once per mutant, so it would take hours).
 * Report: reports/mutation/mutation.html; results and survivors: bench/results/mutation.md.
 */
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
const config = {
  packageManager: 'npm',
  testRunner: 'jest',
  jest: {
    projectType: 'custom',
    configFile: 'jest.mutation.config.js',
    enableFindRelatedTests: false,
  },
  // Each mutant runs only the tests that executed it in the initial (instrumented) run.
  coverageAnalysis: 'perTest',
  mutate: ['src/policy/*.ts', '!src/policy/index.ts', '!src/policy/types.ts', 'machines/**/*.ts'],
  // The machine is shared: 2 cores at most.
  concurrency: 2,
  timeoutMS: 10000,
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
  // Not needed by the mutated files or their tests: kept out of the sandbox copy.
  ignorePatterns: ['dist', 'bench', '.data', 'visualizations', 'examples'],
};
export default config;
