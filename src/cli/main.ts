#!/usr/bin/env node
/**
 * The `hubstate` command: demo, run, emulator, viz. Entry points only; the logic lives in the
 * library. A usage or configuration mistake prints one line naming the field and exits 2.
 */
import { resolve } from 'node:path';
import { ConfigError } from '../errors';
import { numberFlag, parseFlags, UsageError } from './args';

const USAGE = `usage: hubstate <command> [flags]

commands:
  demo       the local cloud + a device living through a scripted disaster (default)
             --duration <s> (60)  --forever  --devices <n> (1)  --interval <ms> (200)  --log <file>
  emulator   start the local cloud (DPS + hubs) standalone and print how to connect
             --hubs <n> (2)
  viz        regenerate the pictures in visualizations/ from the machine
`;

async function main(argv: string[]): Promise<number> {
  const [command = 'demo', ...rest] = argv;
  switch (command) {
    case 'demo': {
      const flags = parseFlags(rest, {
        duration: { type: 'string' },
        forever: { type: 'boolean' },
        devices: { type: 'string' },
        interval: { type: 'string' },
        log: { type: 'string' },
      });
      const { runDemo } = await import('./demo');
      const summary = await runDemo({
        durationSeconds: numberFlag(flags.duration as string | undefined, 'duration', 60, 1),
        forever: flags.forever === true,
        devices: Math.floor(numberFlag(flags.devices as string | undefined, 'devices', 1, 1)),
        intervalMs: numberFlag(flags.interval as string | undefined, 'interval', 200, 10),
        logFile: resolve((flags.log as string | undefined) ?? 'hubstate-demo.log'),
        out: process.stdout,
      });
      return summary.lost === 0 ? 0 : 1;
    }
    case 'emulator': {
      const flags = parseFlags(rest, { hubs: { type: 'string' } });
      const { runEmulator } = await import('./emulator');
      await runEmulator({ hubs: Math.floor(numberFlag(flags.hubs as string | undefined, 'hubs', 2, 1)), out: process.stdout });
      return 0;
    }
    case 'viz': {
      const { writeVisualizations } = await import('../viz/write');
      const written = await writeVisualizations(resolve('visualizations'));
      process.stdout.write(`${written.join('\n')}\n`);
      return 0;
    }
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return 0;
    default:
      throw new UsageError(`unknown command '${command}'`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof UsageError || error instanceof ConfigError) {
      process.stderr.write(`hubstate: ${error.message}\n${error instanceof UsageError ? USAGE : ''}`);
      process.exitCode = 2;
      return;
    }
    process.stderr.write(`hubstate: ${(error as Error).stack ?? String(error)}\n`);
    process.exitCode = 1;
  },
);
