/**
 * The `hubstate` command's dispatcher: `runCli(argv, io)` returns the exit code. A usage or
 * configuration mistake prints one line naming the field and returns 2 (no stack trace); every
 * flag, variable and config value is checked (numbers bounded, files bounded, paths created
 * safely) before anything starts. `io.dryRun` stops there (tests of bad input, in process).
 */
import { closeSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { type TransportMode, ConfigError } from 'hubstate';
import { resolveNetworkOptions, debugSecretsWarning, guardDebugOutput } from 'hubstate/internal';
import { intFlag, MAX_TIMER_MS, MAX_TIMER_SECONDS, numberFlag, parseFlags, shardFlag, UsageError } from './args';
import { ensureDirectory, openLogFile, prepareRunPaths } from './files';
import { runUsage } from './run-config';
import { installShutdown } from './shutdown';

/** Upper bounds of the commands' own counts (every number flag has one). */
export const LIMITS = { demoDevices: 1000, hubs: 100, fleetDevices: 100_000, dpsRate: 100_000 } as const;

export const USAGE = `usage: hubstate <command> [flags]

commands:
  demo       the local cloud + a device living through a scripted disaster (default)
             --duration <s> (60)  --forever  --devices <n> (1)  --interval <ms> (200)  --log <file>
             --ui [--port <n>]: a live page on 127.0.0.1 with the statechart and fault buttons
               (no scripted disaster, runs until Ctrl-C unless --duration; --script adds it)
             --inspect [--inspect-port <n>]: stream the device actor to the Stately inspector
             --transport mqtt|mqtt-ws|auto (mqtt)  --proxy http://host:port (HTTP CONNECT, with mqtt-ws/auto)
  run        a real device (IoT Central / DPS + IoT Hub), the example app (examples/), until SIGINT/SIGTERM
             --config <file.json>, flags or HUBSTATE_* variables (below)
  emulator   start the local cloud (DPS + hubs) standalone: writes its CA to a file and prints an
             environment block for unmodified Azure IoT SDK samples (NODE_EXTRA_CA_CERTS, PROVISIONING_*,
             IOTHUB_DEVICE_DPS_*) and \`hubstate run\` (HUBSTATE_*); runs until Ctrl-C
             --hubs <n> (2)  --registration-id <id> (adds the device's id and derived key)
             --ca-out <file> (default: ca.pem in a new temporary directory)  --refusal-code 3|5 (3)
             --issue-cert <id>: an X.509 device certificate of the enrollment group (CN = id), written
               as <id>.cert.pem / <id>.key.pem (0600) beside the CA file
  fleet      N devices in this process against a local cloud whose DPS takes R registrations/s:
             staggered first provisioning, fleet-formula jitter, progress bar and summary
             --devices <n> (100)  --dps-rate <r> (100)  --hubs <n> (2)  --naive  --log <file>
             a DPS of your own instead: --id-scope <scope> [--provisioning-host <host>]
               [--ca-file <pem>] [--prefix <id prefix> (fleet-)], group key in HUBSTATE_GROUP_KEY
             --shard <i>/<n>: run slice i (0 to n-1) of the --devices fleet: each device keeps its id
               and start slot, so n shards (pods) together behave like one fleet
  soak       the seeded chaos soak: a local cloud, N devices, faults, then the invariants
             (hubstate soak --help for its flags; 200 devices, 5 minutes by default)
  viz        regenerate the pictures in visualizations/ from the machine
  test-failover  model-based failover paths (hubstate-testing) replayed against a local cloud with your app
             --app <module.js> (required): exports createFailoverDevice(connection) (or a default
               function) returning your device, built with createDevice({ ...connection, ... });
               it may export invariants: [{ name, check(context) }] too
             --depth <n> (2, 1-4)  --refusal-codes 3,5 (3,5)  --seed <n> (1)  --x509  --websockets
             --long-faults: also a flapping hub, DPS outages, a disabled device (a path each)
             --clock real|simulated (real): simulated skips the device's backoff waits (the connection's clock)
             --only <text>: only the paths whose name contains it  --step-timeout <s> (30, 1-3600)
             prints the coverage, a line per path and each failure's report; exit 1 if a path fails

bounds: demo --duration 1-${MAX_TIMER_SECONDS} s, --devices 1-${LIMITS.demoDevices}, --interval 10-${MAX_TIMER_MS} ms;
  --hubs 1-${LIMITS.hubs}; fleet --devices 1-${LIMITS.fleetDevices}, --dps-rate 0.1-${LIMITS.dpsRate}; ports 0-65535;
  --config and --ca-file: regular files of at most 1 MiB.

SIGINT / SIGTERM: the device goes Disconnecting -> Stopped (at most 10 s, then exit anyway);
telemetry not yet delivered stays in the outbox.

DEBUG=mqtt-packet:* (or *) makes the MQTT stack trace its packets, SAS tokens included: hubstate
redacts them and warns at start, but treat such output as sensitive.
`;

export interface CliIo {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Validate and prepare (files, directories), then return 0 without starting anything. */
  dryRun?: boolean;
}

/** Runs one command; returns the exit code (2: a mistake in the input, named in one line). */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  try {
    return await dispatch(argv, io);
  } catch (error) {
    if (error instanceof UsageError || error instanceof ConfigError) {
      io.stderr.write(`hubstate: ${error.message}\n${error instanceof UsageError ? USAGE : ''}`);
      return 2;
    }
    io.stderr.write(`hubstate: ${(error as Error).stack ?? String(error)}\n`);
    return 1;
  }
}

/** `--transport` and `--proxy` of the demo, checked by the library's own rules (a mistake names the flag). */
function demoNetworkFlags(transport: string | boolean | undefined, proxy: string | boolean | undefined): { transport: TransportMode; proxy: string | false } {
  try {
    // The flags alone: the demo's cloud is on localhost, so without --proxy its devices go direct
    // (proxy: false), whatever HTTPS_PROXY says.
    const resolved = resolveNetworkOptions(transport, proxy, {});
    return { transport: resolved.transport, proxy: typeof proxy === 'string' ? proxy : false };
  } catch (error) {
    if (error instanceof ConfigError) throw new UsageError(`--${error.field}: expected ${error.expected}`);
    throw error;
  }
}

function warnAboutDebug(io: CliIo): void {
  const warning = debugSecretsWarning(io.env.DEBUG, guardDebugOutput() > 0);
  if (warning !== undefined) io.stderr.write(`hubstate: WARNING: ${warning}\n`);
}

async function dispatch(argv: string[], io: CliIo): Promise<number> {
  const [command = 'demo', ...rest] = argv;
  const at = (path: string) => resolve(io.cwd, path);
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
        transport: { type: 'string' },
        proxy: { type: 'string' },
      });
      const network = demoNetworkFlags(flags.transport, flags.proxy);
      const ui = flags.ui === true;
      if (!ui && flags.port !== undefined) throw new UsageError('--port: only with --ui');
      if (!flags.inspect && flags['inspect-port'] !== undefined) throw new UsageError('--inspect-port: only with --inspect');
      const port = (name: string) => intFlag(flags[name] as string | undefined, name, 0, 0, 65535);
      const durationSeconds = numberFlag(flags.duration as string | undefined, 'duration', 60, 1, MAX_TIMER_SECONDS);
      const devices = intFlag(flags.devices as string | undefined, 'devices', 1, 1, LIMITS.demoDevices);
      const intervalMs = numberFlag(flags.interval as string | undefined, 'interval', 200, 10, MAX_TIMER_MS);
      const uiPort = ui ? port('port') : undefined;
      const inspectPort = flags.inspect === true ? port('inspect-port') : undefined;
      const logFile = at(pathFlag(flags.log, 'log') ?? 'hubstate-demo.log');
      const logFd = openLogFile(logFile, '--log');
      if (io.dryRun) return dryRunDone(logFd);
      warnAboutDebug(io);
      const { runDemo } = require('./demo') as typeof import('./demo');
      const shutdown = installShutdown();
      try {
        const summary = await runDemo({
          durationSeconds,
          // With the UI the demo runs until Ctrl-C unless a duration is given.
          forever: flags.forever === true || (ui && flags.duration === undefined),
          devices,
          intervalMs,
          logFile,
          logFd,
          out: io.stdout,
          signal: shutdown.signal,
          script: !ui || flags.script === true,
          ui: ui ? { port: uiPort } : undefined,
          inspect: inspectPort !== undefined ? { port: inspectPort } : undefined,
          ...network,
        });
        return summary.lost > 0 || (summary.kept > 0 && !summary.interrupted) ? 1 : 0;
      } finally {
        shutdown.dispose();
      }
    }
    case 'run': {
      const { RUN_FLAG_OPTIONS, resolveRunConfig } = require('./run-config') as typeof import('./run-config');
      const config = resolveRunConfig(parseFlags(rest, RUN_FLAG_OPTIONS), io.env, io.cwd);
      const { logFd } = prepareRunPaths(config);
      if (io.dryRun) return dryRunDone(logFd);
      const { runDevice } = require('./run') as typeof import('./run');
      warnAboutDebug(io);
      const shutdown = installShutdown();
      try {
        return await runDevice(config, { err: io.stderr, signal: shutdown.signal, ...(logFd !== undefined ? { logFd } : {}) });
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
        'issue-cert': { type: 'string' },
      });
      const { emulatorFlags, runEmulator } = require('./emulator') as typeof import('./emulator');
      const options = emulatorFlags(flags);
      // The CA's directory, created one level at a time (a recursive mkdir spins on /proc/x/...).
      if (options.caOut !== undefined) ensureDirectory(dirname(options.caOut), '--ca-out');
      const hubs = intFlag(flags.hubs as string | undefined, 'hubs', 2, 1, LIMITS.hubs);
      if (io.dryRun) return 0;
      warnAboutDebug(io);
      await runEmulator({ ...options, hubs, out: io.stdout });
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
        shard: { type: 'string' },
      });
      const devices = intFlag(flags.devices as string | undefined, 'devices', 100, 1, LIMITS.fleetDevices);
      const shard = shardFlag(flags.shard as string | undefined, 'shard', devices);
      const dpsRatePerSec = numberFlag(flags['dps-rate'] as string | undefined, 'dps-rate', 100, 0.1, LIMITS.dpsRate);
      const hubs = intFlag(flags.hubs as string | undefined, 'hubs', 2, 1, LIMITS.hubs);
      const { fleetTarget } = require('./fleet-target') as typeof import('./fleet-target');
      const target = fleetTarget(flags, io.env, io.cwd, devices);
      if (target && flags.hubs !== undefined) throw new UsageError('--hubs: only for the local cloud (not with --id-scope)');
      const logFile = at(pathFlag(flags.log, 'log') ?? 'hubstate-fleet.log');
      const logFd = openLogFile(logFile, '--log');
      if (io.dryRun) return dryRunDone(logFd);
      warnAboutDebug(io);
      const { runFleetCommand } = require('../fleet/command') as typeof import('../fleet/command');
      const summary = await runFleetCommand({
        ...(target ? { target: target.cloud, prefix: target.prefix } : {}),
        devices,
        ...(shard ? { shard } : {}),
        dpsRatePerSec,
        hubs,
        naive: flags.naive === true,
        logFile,
        logFd,
        out: io.stdout,
      });
      return summary.allConnectedMs === null ? 1 : 0;
    }
    case 'soak': {
      const { soakCommand } = require('../chaos/command') as typeof import('../chaos/command');
      return soakCommand(rest, io.stdout, io.stderr, { dryRun: io.dryRun === true });
    }
    case 'test-failover': {
      const { runTestFailover, testFailoverOptions } = require('./test-failover') as typeof import('./test-failover');
      const options = testFailoverOptions(rest, io.cwd);
      if (io.dryRun) return 0;
      warnAboutDebug(io);
      return runTestFailover(options, io.stdout);
    }
    case 'viz': {
      parseFlags(rest, {});
      if (io.dryRun) return 0;
      const { writeVisualizations } = require('../viz/write') as typeof import('../viz/write');
      const written = await writeVisualizations(at('visualizations'));
      io.stdout.write(`${written.join('\n')}\n`);
      return 0;
    }
    case 'help':
    case '--help':
    case '-h':
      io.stdout.write(`${USAGE}\n${runUsage()}`);
      return 0;
    default:
      throw new UsageError(`unknown command '${command.length > 40 ? `${command.slice(0, 37)}...` : command}'`);
  }
}

function pathFlag(value: string | boolean | undefined, flag: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') throw new UsageError(`--${flag}: expected a file path, got ''`);
  return value;
}

function dryRunDone(fd: number | undefined): number {
  if (fd !== undefined) closeSync(fd);
  return 0;
}
