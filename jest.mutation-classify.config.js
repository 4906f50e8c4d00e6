/**
 * Jest config for mutation runs of src/policy/classify.ts and render-table.ts (StrykerJS): only
 * the tests that execute them (per-test coverage of the full jest.mutation.config.js run: the
 * classify*, readme-table tests; no machine or backoff test does).
 *   STRYKER_JEST_CONFIG=jest.mutation-classify.config.js STRYKER_REPORT=classify \
 *     npx stryker run --mutate src/policy/classify.ts --concurrency 1
 */
const base = require('./jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  roots: ['<rootDir>/test/policy'],
  testMatch: ['**/classify*.test.ts', '**/readme-table.test.ts'],
};
