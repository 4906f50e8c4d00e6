// @ts-check
/**
 * Mutation testing of the pure policies and the statechart (issue 12 §9): `npm run mutation`.
 * One file only: `npm run mutation -- --mutate src/policy/backoff.ts`.
 *
 * Tests: jest.mutation.config.js, i.e. test/policy and test/machine WITHOUT model.test.ts (~3 min
 * per run) and hour-of-refusals.test.ts (loops until the timeout under many machine mutants).
 * Per-file runs use a narrower jest config (STRYKER_JEST_CONFIG) and report name (STRYKER_REPORT):
 *   STRYKER_JEST_CONFIG=jest.mutation-classify.config.js STRYKER_REPORT=classify \
 *     npx stryker run --mutate src/policy/classify.ts --concurrency 1
 *   STRYKER_JEST_CONFIG=jest.mutation-policy.config.js STRYKER_REPORT=backoff \
 *     npx stryker run --mutate src/policy/backoff.ts,src/policy/render-table.ts --concurrency 1
 *   STRYKER_JEST_CONFIG=jest.mutation-machine.config.js STRYKER_REPORT=machine \
 *     npx stryker run --mutate machines/device.machine.ts --concurrency 1
 * Report: reports/mutation/<STRYKER_REPORT or "mutation">.html/.json; results and survivors:
 * bench/results/mutation.md.
 */
const jestConfig = process.env.STRYKER_JEST_CONFIG || 'jest.mutation.config.js';
const report = process.env.STRYKER_REPORT || 'mutation';
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
const config = {
  packageManager: 'npm',
  testRunner: 'jest',
  jest: {
    projectType: 'custom',
    configFile: jestConfig,
    enableFindRelatedTests: false,
  },
  // Each mutant runs only the tests that executed it in the initial (instrumented) run.
  coverageAnalysis: 'perTest',
  mutate: ['src/policy/*.ts', '!src/policy/index.ts', '!src/policy/types.ts', 'machines/**/*.ts'],
  // The machine is shared (2 cores): one test runner.
  concurrency: 1,
  timeoutMS: 10000,
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: `reports/mutation/${report}.html` },
  jsonReporter: { fileName: `reports/mutation/${report}.json` },
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
  // Not needed by the mutated files or their tests: kept out of the sandbox copy.
  ignorePatterns: ['dist', 'bench', '.data', 'visualizations', 'examples'],
};
export default config;
