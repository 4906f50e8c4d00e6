/** The soak's local cloud in a process of its own (see cloud.ts), served over IPC. */
import { serveService } from 'hubstate-cloud';
import { startSoakCloudService, type SoakCloudOptions } from './cloud';

const options = JSON.parse(process.argv[2] ?? '{}') as SoakCloudOptions;
serveService((emit) => startSoakCloudService(options, emit)).catch((error: unknown) => {
  process.stderr.write(`soak cloud: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
// The soak went away: do not linger.
process.on('disconnect', () => process.exit(0));
