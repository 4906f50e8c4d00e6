/**
 * Jest config for `npm run mutation` (StrykerJS): the project's config, restricted to the fast
 * tests of the mutated files (src/policy/, machines/). test/machine/model.test.ts is left out on
 * purpose: it takes ~3 minutes per run, and Stryker runs the covering tests once per mutant.
 */
const base = require('./jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  roots: ['<rootDir>/test/policy', '<rootDir>/test/machine'],
  testPathIgnorePatterns: ['/node_modules/', '<rootDir>/test/machine/model\\.test\\.ts$'],
};
