/**
 * Jest config for mutation runs of src/policy/backoff.ts on the policy tests only (StrykerJS):
 *   STRYKER_JEST_CONFIG=jest.mutation-policy.config.js STRYKER_REPORT=backoff \
 *     npx stryker run --mutate src/policy/backoff.ts --concurrency 1
 * backoff.ts is also executed by test/machine (jest.mutation.config.js); this config gives a
 * lower bound of its score in a fraction of the time.
 */
const base = require('./jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  roots: ['<rootDir>/test/policy'],
};
