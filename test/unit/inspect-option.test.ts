/** `inspect` option: an extra XState inspector sees the device actor's events and can never break it. */
import type { InspectionEvent } from 'xstate';
import { createDevice } from '../../src/device';
import { ConfigError } from '../../src/errors';
import { createLogger } from '../../src/logger';

const groupKey = Buffer.alloc(32, 7).toString('base64');
const base = { idScope: '0ne00ABC123', registrationId: 'sensor-1', groupKey, logger: createLogger({ level: 'silent' }) };

describe('DeviceOptions.inspect', () => {
  test('a function inspector receives the actor and its snapshots', async () => {
    const seen: InspectionEvent[] = [];
    const device = createDevice({ ...base, inspect: (event) => seen.push(event) });
    await device.stop(); // Idle --STOP--> Stopped, without any I/O
    expect(seen.some((e) => e.type === '@xstate.actor')).toBe(true);
    const values = seen.filter((e) => e.type === '@xstate.snapshot').map((e) => (e.snapshot as { value?: unknown }).value);
    expect(values).toContain('Stopped');
  });

  test('an observer inspector works, and one that throws does not break the device', async () => {
    let calls = 0;
    const device = createDevice({
      ...base,
      inspect: {
        next: () => {
          calls++;
          throw new Error('inspector bug');
        },
      },
    });
    await device.stop();
    expect(calls).toBeGreaterThan(0);
    expect(device.state()).toBe('Stopped');
  });

  test('anything else is a ConfigError naming the field', () => {
    expect(() => createDevice({ ...base, inspect: 42 as never })).toThrow(ConfigError);
    expect(() => createDevice({ ...base, inspect: 42 as never })).toThrow(/'inspect'/);
  });
});
