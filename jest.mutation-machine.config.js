/**
 * Jest config for mutation runs of machines/device.machine.ts (StrykerJS), kept to the fast
 * machine tests so one run stays within ~30 min on 1 core:
 *   STRYKER_JEST_CONFIG=jest.mutation-machine.config.js STRYKER_REPORT=machine \
 *     npx stryker run --mutate machines/device.machine.ts --concurrency 1
 * The fast machine tests: device.machine.test.ts and machine-mutants.test.ts (fake actors on a
 * simulated clock, a few seconds): 525 mutants in ~6 min. Left out: model.test.ts (~3 min per run),
 * hour-of-refusals.test.ts and day-of-faults.test.ts: their loops over a simulated hour or day never
 * end under the many mutants that stop the clock from advancing, so each of those waits out
 * Stryker's timeout (the run went from 5 min to an estimated 70+).
 */
const base = require('./jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  roots: ['<rootDir>/test/machine'],
  // Only the two fast files: the others loop over simulated hours or days, which many mutants
  // stop from advancing, so each waits out Stryker's timeout (1h10m estimated with them).
  testMatch: ['<rootDir>/test/machine/device.machine.test.ts', '<rootDir>/test/machine/machine-mutants.test.ts'],
};
