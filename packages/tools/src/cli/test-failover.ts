/**
 * `hubstate test-failover --app ./dist/my-device.js`: hubstate-testing's model-based failover
 * paths for people who are not on jest. The app module exports its device factory as
 * `createFailoverDevice(connection)` (or as its default export): the same function the runner's
 * `device` option takes; it may export `invariants` (an array of { name, check }) too. Every path
 * runs against one local cloud; the command prints the fault model's coverage, one line per path
 * (PASS/FAIL, the path, the recovery time of each step) and each failing path's report, and
 * exits 1 if any path failed.
 */
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Device } from 'hubstate';
import { FAST_DPS_POLL_SEC, startLocalCloud } from 'hubstate-cloud';
import {
  faultModelCoverage,
  generateFailoverPaths,
  MAX_FAULT_DEPTH,
  runFailoverPath,
  type DeviceConnection,
  type FailoverPath,
  type FailoverReport,
  type Invariant,
  type RefusalCode,
} from 'hubstate-testing';
import { intFlag, parseFlags, UsageError } from './args';

export const TEST_FAILOVER_FLAGS = {
  app: { type: 'string' },
  depth: { type: 'string' },
  'refusal-codes': { type: 'string' },
  seed: { type: 'string' },
  x509: { type: 'boolean' },
  websockets: { type: 'boolean' },
  'long-faults': { type: 'boolean' },
  clock: { type: 'string' },
  only: { type: 'string' },
  'step-timeout': { type: 'string' },
} as const;

/** Bounds of the command's own numbers. */
const MAX_SEED = 1_000_000;
const MAX_STEP_TIMEOUT_SECONDS = 3600;

export interface TestFailoverOptions {
  app: string;
  depth: number;
  refusalCodes: RefusalCode[];
  seed: number;
  x509: boolean;
  websockets: boolean;
  longFaults: boolean;
  clock: 'real' | 'simulated';
  only?: string;
  stepTimeoutMs: number;
}

/** The flags checked (a mistake names its flag); the app module is not loaded yet. */
export function testFailoverOptions(argv: string[], cwd: string): TestFailoverOptions {
  const flags = parseFlags(argv, TEST_FAILOVER_FLAGS);
  if (typeof flags.app !== 'string' || flags.app === '') throw new UsageError('--app: expected the path of your device module (e.g. ./dist/my-device.js)');
  const app = resolve(cwd, flags.app);
  let isFile = false;
  try {
    isFile = statSync(app).isFile();
  } catch {
    isFile = false;
  }
  if (!isFile) throw new UsageError(`--app: ${flags.app} is not a file`);
  const codes = (flags['refusal-codes'] as string | undefined) ?? '3,5';
  if (!/^[35](,[35])?$/.test(codes)) throw new UsageError(`--refusal-codes: expected 3, 5 or 3,5, got '${codes.slice(0, 40)}'`);
  const clock = (flags.clock as string | undefined) ?? 'real';
  if (clock !== 'real' && clock !== 'simulated') throw new UsageError(`--clock: expected real or simulated, got '${clock.slice(0, 40)}'`);
  const only = flags.only as string | undefined;
  if (only !== undefined && (only === '' || only.length > 200)) throw new UsageError('--only: expected 1 to 200 characters of a path name');
  return {
    app,
    depth: intFlag(flags.depth as string | undefined, 'depth', 2, 1, MAX_FAULT_DEPTH),
    refusalCodes: [...new Set(codes.split(',').map(Number))] as RefusalCode[],
    seed: intFlag(flags.seed as string | undefined, 'seed', 1, 0, MAX_SEED),
    x509: flags.x509 === true,
    websockets: flags.websockets === true,
    longFaults: flags['long-faults'] === true,
    clock,
    ...(only !== undefined ? { only } : {}),
    stepTimeoutMs: intFlag(flags['step-timeout'] as string | undefined, 'step-timeout', 30, 1, MAX_STEP_TIMEOUT_SECONDS) * 1000,
  };
}

type DeviceFactory = (connection: DeviceConnection) => Device | Promise<Device>;

/** The app module's factory (and invariants), or a UsageError naming what is missing. */
function loadApp(path: string): { factory: DeviceFactory; invariants: Invariant[] } {
  let loaded: Record<string, unknown>;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    loaded = require(path) as Record<string, unknown>;
  } catch (error) {
    throw new UsageError(`--app: ${path} could not be loaded: ${(error as Error).message.split('\n')[0]}`);
  }
  const factory = loaded.createFailoverDevice ?? (typeof loaded.default === 'function' ? loaded.default : undefined);
  if (typeof factory !== 'function') throw new UsageError(`--app: ${path} exports neither createFailoverDevice(connection) nor a default function`);
  const invariants = loaded.invariants ?? [];
  if (!Array.isArray(invariants) || invariants.some((i) => typeof i?.name !== 'string' || typeof i?.check !== 'function')) {
    throw new UsageError(`--app: ${path} exports invariants that are not an array of { name, check }`);
  }
  return { factory: factory as DeviceFactory, invariants: invariants as Invariant[] };
}

/** One line per path: PASS/FAIL, its name, each step's recovery (on the run's clock). */
export function pathLine(report: FailoverReport, wallMs: number): string {
  const recoveries = report.steps.map((s) => `${s.fault} ${s.recoveryMs} ms`).join(', ');
  const skipped = report.clock.mode === 'simulated' ? `, ${Math.round(report.clock.skippedMs / 1000)} s skipped` : '';
  return `${report.ok ? 'PASS' : 'FAIL'} ${report.path}${recoveries ? ` — recovered: ${recoveries}` : ''} (${(wallMs / 1000).toFixed(1)} s${skipped})`;
}

/** A failing path's report: what failed, each step's states, the messages lost, the device's last log lines. */
export function failureReport(report: FailoverReport): string {
  const lines = [`--- ${report.path} (registration ${report.registrationId})`, ...report.failures.map((f) => `  failure: ${f}`)];
  for (const step of report.steps) lines.push(`  step ${step.fault}: ${step.states.join(' → ')} (expected /${step.expected}/)${step.waits.length ? `; waits ${step.waits.join(', ')} ms` : ''}`);
  lines.push(`  telemetry: ${report.accepted} accepted, ${report.lost.length} lost, ${report.duplicates} duplicates`);
  if (report.logTail.length > 0) lines.push('  last log lines:', ...report.logTail.slice(-20).map((l) => `    ${l}`));
  return lines.join('\n');
}

export async function runTestFailover(options: TestFailoverOptions, out: NodeJS.WritableStream): Promise<number> {
  const { factory, invariants } = loadApp(options.app);
  let paths: FailoverPath[] = generateFailoverPaths({
    depth: options.depth,
    refusalCodes: options.refusalCodes,
    seed: options.seed,
    x509: options.x509,
    websockets: options.websockets,
    longFaults: options.longFaults,
  });
  if (options.only !== undefined) paths = paths.filter((p) => p.name.includes(options.only!));
  if (paths.length === 0) throw new UsageError(`--only: no path's name contains '${options.only}'`);
  out.write(`${faultModelCoverage().line}; ${paths.length} runs here (depth ${options.depth}, clock ${options.clock})\n`);
  const cloud = await startLocalCloud({ hubs: 2, dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  const failed: FailoverReport[] = [];
  try {
    for (const path of paths) {
      const started = Date.now();
      // Over WebSockets, raw MQTT is refused (8883 blocked): only the WebSocket path can work.
      cloud.blockRawMqtt(path.transport === 'mqtt-ws');
      const report = await runFailoverPath(path, { cloud, device: factory, invariants, clock: options.clock, stepTimeoutMs: options.stepTimeoutMs }).finally(() => cloud.blockRawMqtt(false));
      out.write(`${pathLine(report, Date.now() - started)}\n`);
      if (!report.ok) failed.push(report);
    }
  } finally {
    await cloud.stop();
  }
  for (const report of failed) out.write(`${failureReport(report)}\n`);
  out.write(`${paths.length - failed.length} of ${paths.length} paths passed${failed.length ? `; failed: ${failed.map((r) => r.path).join('; ')}` : ''}\n`);
  return failed.length > 0 ? 1 : 0;
}
