/**
 * An offline command survives a crash of the device during its handler. mqtt.js PUBACKs a C2D
 * message as soon as its 'message' event returns, so the hub forgets the command while the async
 * handler is still running; only the device's durable inbox (data directory) can run it again.
 *
 * A real device in a child process gets `setAlarm` (C2D with `method-name`) from the local cloud
 * owned by this test; its handler hangs; the hub has the PUBACK; the process is SIGKILLed. Started
 * again on the same data directory, the device runs that command id exactly once more, and a
 * redelivery of the same message id is not run again. A third start runs nothing.
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type LocalCloud } from 'hubstate-cloud';
import { childDevices, type ChildDevice } from './child-device';
import { newDataDir, waitFor } from './harness';

const REGISTRATION_ID = 'offline-crash';
const children = childDevices('command-crash-child.js');

let cloud: LocalCloud;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'offline-command-crash', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
});
afterAll(async () => {
  children.killLeftovers();
  await cloud.stop();
});

interface ChildRun extends ChildDevice {
  lines: string[];
  ran(messageId: string): number;
}

function startChild(dataDir: string, mode: 'hang' | 'normal'): ChildRun {
  const onLine = (line: string) => child.lines.push(line);
  const child: ChildRun = Object.assign(children.start({ cloud, registrationId: REGISTRATION_ID, dataDir, config: { mode }, stdin: 'pipe', onLine }), {
    lines: [],
    ran: (messageId: string) => child.lines.filter((line) => line.startsWith(`ran ${messageId} `)).length,
  });
  return child;
}

async function stopChild(child: ChildRun): Promise<void> {
  child.proc.stdin!.write('stop\n');
  expect(await child.exited).toEqual({ code: 0, signal: null });
}

test('SIGKILL while an offline command handler runs (already PUBACKed): the restarted device runs it exactly once more', async () => {
  const dataDir = newDataDir();
  const hub = cloud.hubs[0]!;
  const sendAlarm = (messageId: string, time: string) => hub.sendC2D(REGISTRATION_ID, JSON.stringify(time), { messageId, 'method-name': 'setAlarm' });

  // Run 1: the command arrives, its handler starts and hangs; the hub has our PUBACK (it has
  // forgotten the command: nothing will redeliver it); then the process dies.
  const first = startChild(dataDir, 'hang');
  await waitFor('run 1 connected and subscribed', () => first.lines.includes('synced'), 30_000);
  sendAlarm('alarm-1', '07:30:00');
  await waitFor('run 1: the handler running', () => first.ran('alarm-1') === 1);
  await waitFor('run 1: the C2D message acknowledged to the hub', () => hub.device(REGISTRATION_ID)!.c2dPending === 0);
  first.proc.kill('SIGKILL');
  expect((await first.exited).signal).toBe('SIGKILL');
  expect(first.lines).not.toContain('finished alarm-1');

  // Run 2: the inbox replays alarm-1 at start; a redelivery of the same message id is not run;
  // a new command after it is (C2D arrives in order, so once alarm-2 ran the duplicate was seen).
  const second = startChild(dataDir, 'normal');
  await waitFor('run 2: alarm-1 replayed and finished', () => second.lines.includes('finished alarm-1'), 30_000);
  await waitFor('run 2 connected and subscribed', () => second.lines.includes('synced'), 30_000);
  sendAlarm('alarm-1', '07:30:00');
  sendAlarm('alarm-2', '08:00:00');
  await waitFor('run 2: alarm-2 finished', () => second.lines.includes('finished alarm-2'));
  await waitFor('run 2: both C2D messages acknowledged', () => hub.device(REGISTRATION_ID)!.c2dPending === 0);
  await stopChild(second);
  expect(second.ran('alarm-1')).toBe(1);
  expect(second.ran('alarm-2')).toBe(1);
  expect(second.lines).toContain('ran alarm-1 "07:30:00"');

  // Run 3: nothing left to replay (replay runs at start, before Connected).
  const third = startChild(dataDir, 'normal');
  await waitFor('run 3 connected and subscribed', () => third.lines.includes('synced'), 30_000);
  await stopChild(third);
  expect(third.lines.filter((line) => line.startsWith('ran '))).toEqual([]);
  expect(first.stderr + second.stderr + third.stderr).toBe('');
});
