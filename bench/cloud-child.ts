/** The local cloud in a process of its own, driven over IPC by bench/cloud.ts. */
import { serveService } from 'hubstate-cloud';
import { commandsOf, infoOf, startCloud, type BenchCloudOptions } from './cloud';

const options = JSON.parse(process.argv[2] ?? '{}') as BenchCloudOptions;
serveService(async () => {
  const cloud = await startCloud(options);
  return { info: infoOf(cloud), commands: commandsOf(cloud), stop: () => cloud.stop() };
}).catch((error: unknown) => {
  process.stderr.write(`cloud child: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
// The parent went away: do not linger.
process.on('disconnect', () => process.exit(0));
