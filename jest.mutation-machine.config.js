/**
 * Jest config for mutation runs of machines/device.machine.ts (StrykerJS), kept to the fast
 * machine tests so one run stays within ~30 min on 1 core:
 *   STRYKER_JEST_CONFIG=jest.mutation-machine.config.js STRYKER_REPORT=machine \
 *     npx stryker run --mutate machines/device.machine.ts --concurrency 1
 * The fast machine tests: device.machine.test.ts and machine-mutants.test.ts (fake actors on a
 * simulated clock, a few seconds): 525 mutants in ~6 min. Left out: model.test.ts (~3 min per run) and
 * hour-of-refusals.test.ts: its loop over a simulated hour never ends under the many mutants that
 * stop the clock from advancing, so each of those waits out Stryker's timeout (the run went from
 * 5 min to an estimated 70+).
 */
const base = require('./jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  roots: ['<rootDir>/test/machine'],
  testPathIgnorePatterns: ['/node_modules/', '<rootDir>/test/machine/model\\.test\\.ts$', '<rootDir>/test/machine/hour-of-refusals\\.test\\.ts$'],
};
