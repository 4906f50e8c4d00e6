/**
 * The provisioning SDK's transport answers an MqttBase 'error' with a `disconnect` that has no
 * callback; in its disconnected state (directly, or when a deferred call is replayed) that throws
 * "callback is not a function" from an event handler: an uncaught exception. Both paths were hit
 * by the chaos soak; guardTransportErrors must turn them into an ordinary transport 'error'.
 */
import { MqttBase } from 'azure-iot-mqtt-base';
import { Mqtt as ProvisioningMqtt } from 'azure-iot-provisioning-device-mqtt';
import pino from 'pino';
import { guardTransportErrors } from '../../src/actors/provision';

type Fsm = { state: string; transition(state: string, ...args: unknown[]): void };

function setup(guarded: boolean) {
  const base = new MqttBase();
  const before = new Set(base.listeners('error'));
  const transport = new ProvisioningMqtt(base);
  const sdkHandlers = base.listeners('error').filter((h) => !before.has(h)) as Array<(error: Error) => void>;
  const seen: Error[] = [];
  transport.on('error', (error: Error) => seen.push(error));
  if (guarded) guardTransportErrors(base, sdkHandlers, transport, (error) => seen.push(error), pino({ level: 'silent' }));
  const fsm = (transport as unknown as { _fsm: Fsm })._fsm;
  return { base, transport, fsm, seen };
}

/** The transport disconnecting, with the base's disconnect held until `release()`. */
function holdDisconnecting(base: MqttBase, fsm: Fsm): () => void {
  let held: ((error?: Error) => void) | undefined;
  (base as unknown as { disconnect(cb: (error?: Error) => void): void }).disconnect = (cb) => {
    held = cb;
  };
  fsm.transition('disconnecting', null, () => undefined);
  expect(fsm.state).toBe('disconnecting');
  return () => held!();
}

describe('the SDK defect, unguarded (documents why the guard exists)', () => {
  test('an error while the transport is disconnected throws', () => {
    const { base, fsm } = setup(false);
    expect(fsm.state).toBe('disconnected');
    expect(() => base.emit('error', new Error('connection closed'))).toThrow(/callback is not a function/);
  });

  test('an error while it is disconnecting is deferred, and throws when it is replayed', () => {
    const { base, fsm } = setup(false);
    const release = holdDisconnecting(base, fsm);
    expect(() => base.emit('error', new Error('connection closed'))).not.toThrow();
    expect(release).toThrow(/callback is not a function/);
  });
});

describe('guardTransportErrors', () => {
  test('disconnected: no throw, the error reaches the transport listeners', () => {
    const { base, seen } = setup(true);
    const error = new Error('connection closed');
    expect(() => base.emit('error', error)).not.toThrow();
    expect(seen).toEqual([error]);
  });

  test('disconnecting: the deferred replay does not throw and delivers the error', () => {
    const { base, fsm, seen } = setup(true);
    const release = holdDisconnecting(base, fsm);
    const error = new Error('connection closed');
    base.emit('error', error);
    expect(release).not.toThrow();
    expect(fsm.state).toBe('disconnected');
    expect(seen).toContain(error);
  });
});
