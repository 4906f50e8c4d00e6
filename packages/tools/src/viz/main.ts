/** `npm run viz`: regenerate visualizations/ (or the directory given as the first argument) from the machine. */
import { writeVisualizations } from './write';

writeVisualizations(process.argv[2] ?? 'visualizations').then(
  (written) => process.stdout.write(`${written.join('\n')}\n`),
  (error: unknown) => {
    process.stderr.write(`viz: ${(error as Error).stack ?? String(error)}\n`);
    process.exitCode = 1;
  },
);
