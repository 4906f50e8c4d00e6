/**
 * Crash recovery of a whole device, not just its store: a real device in a child process sends
 * telemetry to the local cloud owned by this test, and is killed with SIGKILL while messages are
 * queued and in flight (the hub withholds its PUBACKs). Started again on the same data directory,
 * it must deliver every message it had accepted: checked by id at the cloud, zero lost, duplicates
 * counted and reported (a duplicate keeps its message id, so downstream can drop it).
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { childDevices, type ChildDevice } from './child-device';
import { deliveryReport, newDataDir, waitFor } from './harness';

const REGISTRATION_ID = 'crash-device';
const children = childDevices('device-crash-child.js');

let cloud: LocalCloud;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'outbox-crash', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});
afterAll(async () => {
  children.killLeftovers();
  await cloud.stop();
});

interface ChildRun extends ChildDevice {
  accepted: string[];
  states: string[];
  outbox: number;
  lines: string[];
}

function startChild(dataDir: string, run: number, extra: { max?: number } = {}): ChildRun {
  const onLine = (line: string) => {
    const [kind, value] = line.split(' ');
    if (kind === 'accepted') child.accepted.push(value);
    else if (kind === 'outbox') child.outbox = Number(value);
    else if (kind === 'state') child.states.push(value);
    else child.lines.push(line);
  };
  const child: ChildRun = Object.assign(children.start({ cloud, registrationId: REGISTRATION_ID, dataDir, config: { run, ...extra }, onLine }), {
    accepted: [],
    states: [],
    outbox: 0,
    lines: [],
  });
  return child;
}

async function kill(child: ChildRun): Promise<void> {
  child.proc.kill('SIGKILL');
  const { signal } = await child.exited;
  expect(signal).toBe('SIGKILL');
}

test('SIGKILL twice with messages queued and in flight, restart on the same data dir: every accepted message arrives', async () => {
  const dataDir = newDataDir();
  const hub = cloud.hubs[0];
  const SEND_WINDOW = 16; // the device default: at most this many awaiting PUBACK

  // Run 1: healthy traffic, then PUBACKs withheld while the hub still stores the messages
  // (an acknowledgement lost after storing: the resend is a duplicate with the same id).
  const first = startChild(dataDir, 1);
  await waitFor('run 1 connected and delivering', () => first.states.includes('Connected') && cloud.telemetry().length >= 30, 30_000);
  hub.withholdPubacks(true, { store: true });
  const withheldAt = first.accepted.length;
  await waitFor('run 1: a queue behind the in-flight window', () => first.outbox >= SEND_WINDOW + 40 && first.accepted.length > withheldAt + 40);
  await kill(first);

  // Run 2: same data dir, PUBACKs withheld and messages NOT stored (lost in transit): only the
  // outbox can save them. It resends the tail of run 1 and queues more, then dies too.
  hub.withholdPubacks(true, { store: false });
  const second = startChild(dataDir, 2);
  await waitFor('run 2 connected', () => second.states.includes('Connected'), 30_000);
  expect(second.states[0]).toBe('Connecting'); // straight to the cached hub, no DPS
  await waitFor('run 2: more queued on top of run 1', () => second.accepted.length >= 40 && second.outbox >= first.outbox + 30);
  await kill(second);

  // Run 3: a healthy hub; 20 more messages, then the device drains its outbox and stops.
  hub.withholdPubacks(false);
  const third = startChild(dataDir, 3, { max: 20 });
  await waitFor('run 3 drained and stopped', () => third.lines.includes('stopped'), 30_000);
  expect(await third.exited).toEqual({ code: 0, signal: null });

  const accepted = [...first.accepted, ...second.accepted, ...third.accepted];
  expect(new Set(accepted).size).toBe(accepted.length);
  const report = deliveryReport(cloud, accepted);
  console.log(
    `crash test: ${accepted.length} accepted (run 1: ${first.accepted.length}, run 2: ${second.accepted.length}, run 3: ${third.accepted.length}); ` +
      `outbox at the kills ${first.outbox} and ${second.outbox}; lost ${report.lost.length}; duplicates ${report.duplicates}`,
  );
  expect(report.lost).toEqual([]);
  expect(report.duplicates).toBeGreaterThan(0); // run 1's stored-but-unacknowledged messages came again
  expect(first.stderr + second.stderr + third.stderr).toBe('');
});
