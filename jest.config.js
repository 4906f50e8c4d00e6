/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': 'ts-jest' },
  testTimeout: 60000,
  // Two workers on the 2-core CI machine (Jest's default there is one): most files wait on
  // sockets and timers, not the CPU, so a second worker overlaps them (the pack test's npm
  // install, the CLI child processes) instead of queueing them.
  maxWorkers: 2,
  setupFilesAfterEnv: ['<rootDir>/test/support/sdk-os-probe.ts'],
};
