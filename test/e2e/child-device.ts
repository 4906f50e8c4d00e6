/**
 * A real device in a child process, for tests that must SIGKILL it: plain `node` runs a fixture of
 * test/fixtures (sources transpiled by test/support/ts-register.js, no build), which reads the
 * local cloud's facts from CHILD_DEVICE_ENV (see test/fixtures/child-device.js) and reports on
 * stdout one line per fact. What the lines mean is the test's business: each complete line goes
 * to its `onLine`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { LocalCloud } from 'hubstate-cloud';

/** The variable the fixture reads its JSON config from (test/fixtures/child-device.js). */
export const CHILD_DEVICE_ENV = 'HUBSTATE_CHILD_DEVICE';

export interface ChildDevice {
  proc: ChildProcess;
  /** Everything written to stderr so far. */
  readonly stderr: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface ChildDeviceStart {
  cloud: LocalCloud;
  registrationId: string;
  dataDir: string;
  /** Fixture-specific config, merged into the connection facts. */
  config?: Record<string, unknown>;
  /** 'pipe' when the test talks to the child (e.g. `stop`); default 'ignore'. */
  stdin?: 'pipe' | 'ignore';
  onLine(line: string): void;
}

/** Starts children of one fixture (a file name in test/fixtures) and remembers them for killLeftovers. */
export function childDevices(fixture: string) {
  const path = join(__dirname, '..', 'fixtures', fixture);
  const procs: ChildProcess[] = [];
  return {
    start(options: ChildDeviceStart): ChildDevice {
      const { cloud, registrationId } = options;
      const config = {
        idScope: cloud.idScope,
        registrationId,
        deviceKey: cloud.deviceKey(registrationId),
        provisioningHost: cloud.provisioningHost,
        ca: cloud.ca,
        dataDir: options.dataDir,
        ...options.config,
      };
      const proc = spawn(process.execPath, [path], {
        env: { ...process.env, [CHILD_DEVICE_ENV]: JSON.stringify(config) },
        stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'],
      });
      procs.push(proc);
      let stderr = '';
      // Lines only once complete: a chunk can end in the middle of one.
      let buffered = '';
      proc.stdout!.on('data', (chunk: Buffer) => {
        buffered += chunk.toString('utf8');
        const lines = buffered.split('\n');
        buffered = lines.pop()!;
        for (const line of lines) options.onLine(line);
      });
      proc.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
      return {
        proc,
        get stderr() {
          return stderr;
        },
        exited: new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal }))),
      };
    },
    /** For afterAll: a failed test can leave a child running, which would keep jest (and its data dir) alive. */
    killLeftovers(): void {
      for (const proc of procs) if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    },
  };
}
