#!/usr/bin/env node
/**
 * The `hubstate` command: demo, run, emulator, fleet, viz (see cli.ts). Entry point only. The
 * `debug` module's output is guarded first (SAS tokens redacted), before any MQTT code loads.
 */
import { guardDebugOutput } from '../logger';
import { runCli } from './cli';

guardDebugOutput();

runCli(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd() }).then((code) => {
  process.exitCode = code;
  // The command is over: if a stray handle (a socket of the SDK, say) keeps the loop alive, exit anyway.
  setTimeout(() => process.exit(code), 2000).unref();
});
