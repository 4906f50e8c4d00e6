#!/usr/bin/env node
/**
 * `npm run soak`: the chaos soak at fleet scale (200 devices, 5 minutes of faults by default).
 * Prints the seed first (replay with --seed), the schedule, progress, then the invariants table;
 * writes the JSON report; exits 1 when an invariant fails, 2 on a usage error.
 */
import { soakCommand } from './command';

soakCommand(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Sockets of stopped SDK clients may linger a moment; the verdict is already out.
    setTimeout(() => process.exit(code), 2000).unref();
  },
  (error: unknown) => {
    process.stderr.write(`soak: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
