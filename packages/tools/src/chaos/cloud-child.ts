/** The soak's local cloud in a process of its own (see cloud.ts), served over IPC. */
import { serveService } from 'hubstate-cloud';
import { guardDebugOutput } from 'hubstate/internal';
import { startSoakCloudService, type SoakCloudOptions } from './cloud';

// With DEBUG set, the broker's mqtt-packet traces the CONNECT packets: their passwords are SAS tokens.
guardDebugOutput();

const options = JSON.parse(process.argv[2] ?? '{}') as SoakCloudOptions;
serveService((emit) => startSoakCloudService(options, emit)).catch((error: unknown) => {
  process.stderr.write(`soak cloud: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
// The soak went away: do not linger.
process.on('disconnect', () => process.exit(0));
