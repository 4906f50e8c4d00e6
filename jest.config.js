/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  // The device library's tests, the example device's own, then the packages' own.
  roots: ['<rootDir>/test', '<rootDir>/examples', '<rootDir>/packages/cloud/test', '<rootDir>/packages/testing/test', '<rootDir>/packages/tools/test'],
  testMatch: ['**/*.test.ts'],
  // Jest's module registry is CommonJS: tests are compiled to it (an `import()` becomes a require;
  // a real one needs --experimental-vm-modules). `tsc --noEmit` type-checks with nodenext.
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: { module: 'commonjs', moduleResolution: 'node10', ignoreDeprecations: '6.0' } }] },
  // The packages import each other by name; tests run them from their sources (as tsconfig.json's paths).
  moduleNameMapper: {
    '^hubstate$': '<rootDir>/src/index.ts',
    '^hubstate/internal$': '<rootDir>/src/internal.ts',
    '^hubstate/examples/(.*)$': '<rootDir>/examples/$1',
    '^hubstate-cloud$': '<rootDir>/packages/cloud/src/index.ts',
    '^hubstate-testing$': '<rootDir>/packages/testing/src/index.ts',
    '^hubstate-tools/(.*)$': '<rootDir>/packages/tools/src/$1',
  },
  testTimeout: 60000,
  // Two workers on the 2-core CI machine (Jest's default there is one): most files wait on
  // sockets and timers, not the CPU, so a second worker overlaps them (the pack test's npm
  // install, the CLI child processes) instead of queueing them.
  maxWorkers: 2,
  setupFilesAfterEnv: ['<rootDir>/test/support/sdk-os-probe.ts'],
};
