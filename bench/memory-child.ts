import { measureMemory, type MemoryMode } from './memory';

measureMemory(process.argv[2] as MemoryMode, Number(process.argv[3]), 'child-process').then(
  (sample) => {
    process.stdout.write(`${JSON.stringify(sample)}\n`);
    process.exit(0);
  },
  (error: unknown) => {
    process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
