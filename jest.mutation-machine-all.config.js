/**
 * Jest config for a second mutation pass on machines/device.machine.ts: device.machine.test.ts and
 * hour-of-refusals.test.ts (model.test.ts stays out: ~3 min per run). Used only on the mutants the
 * fast pass (jest.mutation-machine.config.js) did not detect, through an incremental file that
 * keeps that pass's killed results:
 *   STRYKER_JEST_CONFIG=jest.mutation-machine-all.config.js STRYKER_REPORT=machine-all \
 *     npx stryker run --mutate machines/device.machine.ts --concurrency 1 \
 *     --incremental --incrementalFile <fast-pass report without its survivors>
 * Mutants that stop the simulated clock make hour-of-refusals loop until Stryker's timeout: they
 * count as detected (Timeout), which is right, but each costs ~15 s.
 */
const base = require('./jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  roots: ['<rootDir>/test/machine'],
  testPathIgnorePatterns: ['/node_modules/', '<rootDir>/test/machine/model\\.test\\.ts$'],
};
