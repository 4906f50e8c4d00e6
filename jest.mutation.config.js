/**
 * Jest config for `npm run mutation` (StrykerJS): the project's config, restricted to the fast
 * tests of the mutated files (src/policy/, machines/). Left out on purpose, because Stryker runs
 * the covering tests once per mutant:
 * - test/machine/model.test.ts: ~3 minutes per run;
 * - test/machine/hour-of-refusals.test.ts: its loop over a simulated hour never ends under the many
 *   machine mutants that stop the clock from advancing, so each waits out Stryker's timeout (a
 *   machine run went from 5 min to an estimated 70+).
 * Per-file runs with narrower configs: see stryker.config.mjs and bench/results/mutation.md.
 */
const base = require('./jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  roots: ['<rootDir>/test/policy', '<rootDir>/test/machine'],
  testPathIgnorePatterns: ['/node_modules/', '<rootDir>/test/machine/model\\.test\\.ts$', '<rootDir>/test/machine/hour-of-refusals\\.test\\.ts$'],
};
