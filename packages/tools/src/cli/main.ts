#!/usr/bin/env node
/**
 * The `hubstate` command: demo, run, emulator, fleet, soak, test-failover, viz (see cli.ts). Entry point only. The
 * `debug` module's output is guarded first (SAS tokens redacted), before any MQTT code loads.
 */
import { ConfigError } from 'hubstate';
import { guardDebugOutput } from 'hubstate/internal';
import { UsageError } from './args';
import { runCli } from './cli';

guardDebugOutput();

// A mistake in the input found late (in a timer or a callback) is still one line and exit 2.
process.on('uncaughtException', (error) => {
  if (error instanceof UsageError || error instanceof ConfigError) {
    process.stderr.write(`hubstate: ${error.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`hubstate: ${error.stack ?? String(error)}\n`);
  process.exit(1);
});

runCli(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd() }).then((code) => {
  process.exitCode = code;
  // The command is over: if a stray handle (a socket of the SDK, say) keeps the loop alive, exit anyway.
  setTimeout(() => process.exit(code), 2000).unref();
});
