/**
 * Devices created without a `logger` share one pino logger per process (a root logger per device
 * cost ~17 KB of heap each); each logs through its own child carrying its registrationId, with
 * keys still redacted.
 */
import { Writable } from 'node:stream';

const lines: Array<Record<string, unknown>> = [];
const roots: unknown[] = [];

jest.mock('pino', () => {
  const actual = jest.requireActual('pino');
  const capture = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const factory = (options: unknown) => {
    const logger = actual(options, capture);
    roots.push(logger);
    return logger;
  };
  return Object.assign(factory, actual);
});

import { createDevice } from '../../src/device';
import { defaultLogger } from '../../src/logger';

const groupKey = Buffer.alloc(32, 7).toString('base64');

test('one root logger for every device created without one, each device in its own child', () => {
  const devices = ['default-log-1', 'default-log-2', 'default-log-3'].map((registrationId) => createDevice({ idScope: '0ne00000001', registrationId, groupKey }));
  expect(roots).toHaveLength(1);
  const newKey = Buffer.alloc(32, 8).toString('base64');
  devices[0]!.updateCredentials({ groupKey: newKey });
  devices[2]!.updateCredentials({ groupKey: newKey });
  const updates = lines.filter((line) => String(line['msg']).startsWith('credentials updated'));
  expect(updates.map((line) => line['registrationId'])).toEqual(['default-log-1', 'default-log-3']);
  expect(JSON.stringify(lines)).not.toContain(newKey);
});

test('the shared logger redacts keys, in the devices\' children too', () => {
  defaultLogger().info({ groupKey: 'root-secret' }, 'root line');
  defaultLogger().child({ registrationId: 'child-log' }).warn({ options: { credential: 'child-secret' }, sas: 'sas-secret' }, 'child line');
  const text = JSON.stringify(lines.filter((line) => ['root line', 'child line'].includes(String(line['msg']))));
  expect(text).toContain('[redacted]');
  for (const secret of ['root-secret', 'child-secret', 'sas-secret']) expect(text).not.toContain(secret);
  expect(roots).toHaveLength(1);
});
