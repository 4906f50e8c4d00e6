#!/usr/bin/env node
/**
 * The `hubstate` command: demo, run, emulator, viz. Entry points only; the logic lives in the
 * library. A usage or configuration mistake prints one line naming the field and exits 2.
 */
import { resolve } from 'node:path';
import { ConfigError } from '../errors';
import { numberFlag, parseFlags, UsageError } from './args';
import { runUsage } from './run-config';
import { installShutdown } from './shutdown';

const USAGE = `usage: hubstate <command> [flags]

commands:
  demo       the local cloud + a device living through a scripted disaster (default)
             --duration <s> (60)  --forever  --devices <n> (1)  --interval <ms> (200)  --log <file>
             --ui [--port <n>]: a live page on 127.0.0.1 with the statechart and fault buttons
               (no scripted disaster, runs until Ctrl-C unless --duration; --script adds it)
             --inspect [--inspect-port <n>]: stream the device actor to the Stately inspector
  run        a real device (IoT Central / DPS + IoT Hub), the example app (examples/), until SIGINT/SIGTERM
             --config <file.json>, flags or HUBSTATE_* variables (below)
  emulator   start the local cloud (DPS + hubs) standalone: writes its CA to a file and prints an
             environment block for unmodified Azure IoT SDK samples (NODE_EXTRA_CA_CERTS, PROVISIONING_*,
             IOTHUB_DEVICE_DPS_*) and \`hubstate run\` (HUBSTATE_*); runs until Ctrl-C
             --hubs <n> (2)  --registration-id <id> (adds the device's id and derived key)
             --ca-out <file> (default: ca.pem in a new temporary directory)  --refusal-code 3|5 (3)
  fleet      N devices in this process against a local cloud whose DPS takes R registrations/s:
             staggered first provisioning, fleet-formula jitter, progress bar and summary
             --devices <n> (100)  --dps-rate <r> (100)  --hubs <n> (2)  --naive  --log <file>
             a DPS of your own instead: --id-scope <scope> [--provisioning-host <host>]
               [--ca-file <pem>] [--prefix <id prefix> (fleet-)], group key in HUBSTATE_GROUP_KEY
  viz        regenerate the pictures in visualizations/ from the machine

SIGINT / SIGTERM: the device goes Disconnecting -> Stopped (at most 10 s, then exit anyway);
telemetry not yet delivered stays in the outbox.
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
        ui: { type: 'boolean' },
        port: { type: 'string' },
        script: { type: 'boolean' },
        inspect: { type: 'boolean' },
        'inspect-port': { type: 'string' },
      });
      const ui = flags.ui === true;
      if (!ui && flags.port !== undefined) throw new UsageError('--port: only with --ui');
      if (!flags.inspect && flags['inspect-port'] !== undefined) throw new UsageError('--inspect-port: only with --inspect');
      const port = (name: string) => {
        const value = Math.floor(numberFlag(flags[name] as string | undefined, name, 0, 0));
        if (value > 65535) throw new UsageError(`--${name}: expected a TCP port (0-65535), got '${String(flags[name])}'`);
        return value;
      };
      const { runDemo } = await import('./demo');
      const shutdown = installShutdown();
      try {
        const summary = await runDemo({
          durationSeconds: numberFlag(flags.duration as string | undefined, 'duration', 60, 1),
          // With the UI the demo runs until Ctrl-C unless a duration is given.
          forever: flags.forever === true || (ui && flags.duration === undefined),
          devices: Math.floor(numberFlag(flags.devices as string | undefined, 'devices', 1, 1)),
          intervalMs: numberFlag(flags.interval as string | undefined, 'interval', 200, 10),
          logFile: resolve((flags.log as string | undefined) ?? 'hubstate-demo.log'),
          out: process.stdout,
          signal: shutdown.signal,
          script: !ui || flags.script === true,
          ui: ui ? { port: port('port') } : undefined,
          inspect: flags.inspect === true ? { port: port('inspect-port') } : undefined,
        });
        return summary.lost > 0 || (summary.kept > 0 && !summary.interrupted) ? 1 : 0;
      } finally {
        shutdown.dispose();
      }
    }
    case 'run': {
      const { RUN_FLAG_OPTIONS, resolveRunConfig } = await import('./run-config');
      const config = resolveRunConfig(parseFlags(rest, RUN_FLAG_OPTIONS));
      const { runDevice } = await import('./run');
      const shutdown = installShutdown();
      try {
        return await runDevice(config, { err: process.stderr, signal: shutdown.signal });
      } finally {
        shutdown.dispose();
      }
    }
    case 'emulator': {
      const flags = parseFlags(rest, {
        hubs: { type: 'string' },
        'registration-id': { type: 'string' },
        'ca-out': { type: 'string' },
        'refusal-code': { type: 'string' },
      });
      const { emulatorFlags, runEmulator } = await import('./emulator');
      const options = emulatorFlags(flags);
      await runEmulator({ ...options, hubs: Math.floor(numberFlag(flags.hubs as string | undefined, 'hubs', 2, 1)), out: process.stdout });
      return 0;
    }
    case 'fleet': {
      const flags = parseFlags(rest, {
        devices: { type: 'string' },
        'dps-rate': { type: 'string' },
        hubs: { type: 'string' },
        naive: { type: 'boolean' },
        log: { type: 'string' },
        'id-scope': { type: 'string' },
        'provisioning-host': { type: 'string' },
        'ca-file': { type: 'string' },
        prefix: { type: 'string' },
      });
      const { fleetTarget } = await import('./fleet-target');
      const target = fleetTarget(flags, process.env);
      if (target && flags.hubs !== undefined) throw new UsageError('--hubs: only for the local cloud (not with --id-scope)');
      const { runFleetCommand } = await import('../fleet/command');
      const summary = await runFleetCommand({
        ...(target ? { target: target.cloud, prefix: target.prefix } : {}),
        devices: Math.floor(numberFlag(flags.devices as string | undefined, 'devices', 100, 1)),
        dpsRatePerSec: numberFlag(flags['dps-rate'] as string | undefined, 'dps-rate', 100, 0.1),
        hubs: Math.floor(numberFlag(flags.hubs as string | undefined, 'hubs', 2, 1)),
        naive: flags.naive === true,
        logFile: resolve((flags.log as string | undefined) ?? 'hubstate-fleet.log'),
        out: process.stdout,
      });
      return summary.allConnectedMs === null ? 1 : 0;
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
      process.stdout.write(`${USAGE}\n${runUsage()}`);
      return 0;
    default:
      throw new UsageError(`unknown command '${command}'`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // The command is over: if a stray handle (a socket of the SDK, say) keeps the loop alive, exit anyway.
    setTimeout(() => process.exit(code), 2000).unref();
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
