import { measureMemory, type MemoryMode } from './memory';

// argv: mode, N, [snapshot directory or ''], [arrivals per second]
measureMemory(process.argv[2] as MemoryMode, Number(process.argv[3]), 'child-process', process.argv[4] || undefined, process.argv[5] ? Number(process.argv[5]) : undefined).then(
  (sample) => {
    process.stdout.write(`${JSON.stringify(sample)}\n`);
    process.exit(0);
  },
  (error: unknown) => {
    process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
