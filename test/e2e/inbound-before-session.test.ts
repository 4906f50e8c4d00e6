/**
 * Nothing the hub delivers right after a reconnect's CONNACK is lost. IoT Hub keeps the MQTT
 * session of a device that connects with clean=false (the Node SDK always does): its C2D and
 * method subscriptions survive the disconnect, so the queued C2D messages and the method calls
 * waiting for the device (connect timeout) arrive at once, before the device has subscribed
 * again, and before the machine has even entered Connected. mqtt.js acknowledges a C2D message
 * as soon as it is handed over: a message nobody listened for is gone for good.
 *
 * Real device (with and without a data directory), real SDK, the local cloud's persistent sessions.
 */
import { FAST_DPS_POLL_SEC, startLocalCloud, type EmulatedHub, type LocalCloud } from 'hubstate-cloud';
import type { Device } from '../../src/device';
import { startPnpDevice, type PnpDevice } from '../pnp/helpers';
import { waitFor } from './harness';

let cloud: LocalCloud;
let hub: EmulatedHub;
const devices: PnpDevice[] = [];

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'inbound-before-session', dps: { pollRetryAfterSec: FAST_DPS_POLL_SEC } });
  hub = cloud.hubs[0]!;
  hub.resumeInOneWrite(true);
});
afterAll(async () => {
  for (const d of devices) await d.device.stop();
  await cloud.stop();
});

interface Handled {
  alarms: string[];
  echoes: unknown[];
}

function withHandlers(handled: Handled) {
  return (device: Device) => {
    device.onCommand('setAlarm', ({ requestId }) => void handled.alarms.push(requestId ?? '(none)'));
    device.onCommand('echo', ({ payload }) => {
      handled.echoes.push(payload);
      return { payload };
    });
  };
}

async function synced(d: PnpDevice, count: number): Promise<void> {
  await waitFor(`${d.registrationId}: twin synchronised ${count} time(s)`, () => d.logLines.filter((l) => l.includes('twin synchronised')).length >= count);
}

for (const storage of ['with a data directory (command inbox)', 'without a data directory'] as const) {
  test(`${storage}: a C2D command and a method call queued while the device was away are each handled once after the reconnect`, async () => {
    const registrationId = storage.startsWith('with a') ? 'inbound-durable' : 'inbound-memory';
    const handled: Handled = { alarms: [], echoes: [] };
    const d = startPnpDevice(cloud, registrationId, withHandlers(handled), storage.startsWith('with a') ? {} : { dataDir: undefined });
    devices.push(d);
    await d.waitForState('Connected');
    await synced(d, 1); // subscribed to methods and C2D: the hub keeps both in the device's session

    // Away: the hub drops the connection and refuses it for a while.
    hub.refuse(3);
    expect(hub.disconnect(registrationId)).toBe(true);
    await waitFor('the device disconnected', () => !hub.isConnected(registrationId) && d.device.state() !== 'Connected');

    const c2d = hub.sendC2D(registrationId, JSON.stringify('07:30:00'), { messageId: `alarm-${registrationId}`, 'method-name': 'setAlarm' });
    expect(c2d.status).toBe('queued');
    const call = hub.invokeMethod(registrationId, 'echo', 'are you back?', { connectTimeoutSec: 30, responseTimeoutSec: 5 });

    hub.refuse(null);
    // Without listeners before open() both are lost: the C2D message acknowledged by mqtt.js and
    // never handled, the method request never answered (504 after its 5 s).
    const answer = await call;
    await synced(d, 2);
    await waitFor('the C2D message acknowledged', () => hub.device(registrationId)!.c2dPending === 0);
    expect({ alarms: handled.alarms, echoes: handled.echoes, answer }).toEqual({
      alarms: [c2d.messageId],
      echoes: ['are you back?'],
      answer: { status: 200, payload: 'are you back?' },
    });
    expect(d.device.state()).toBe('Connected');
  });
}
