/**
 * A handler's error text can be any size: the acknowledgement's description is cut to
 * MAX_ACK_DESCRIPTION_LENGTH so it always fits a twin, and a value that arrived meanwhile is
 * still applied. (A 40 KB message used to make both acknowledgement attempts fail: the run
 * rejected, nothing was acknowledged, and the newer value was never applied.)
 */
import pino from 'pino';
import { systemClock } from '../../src/clock';
import { MAX_ACK_DESCRIPTION_LENGTH, WritableProperties } from '../../src/pnp/properties';
import { ReportedQueue } from '../../src/pnp/reported';

test('a 40 KB error from the handler is acknowledged 500 with its text cut; the next desired value still runs', async () => {
  const silent = pino({ level: 'silent' });
  const reported = new ReportedQueue(silent);
  const properties = new WritableProperties(reported, silent, { clock: systemClock, handlerTimeoutMs: 5000 });
  const applied: unknown[] = [];
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  properties.register('mode', async (value) => {
    applied.push(value);
    if (value === 'a') {
      await gate;
      throw new Error('x'.repeat(40_000));
    }
    return undefined;
  });
  properties.reconcile({ desired: { $version: 1 }, reported: {} } as never);
  properties.applyPatch({ $version: 2, mode: 'a' });
  properties.applyPatch({ $version: 3, mode: 'b' }); // waits behind 'a'
  const beforeRelease = reported.take()?.patch['mode'];
  release();
  await properties.idle();
  expect(beforeRelease).toBeUndefined();
  expect(applied).toEqual(['a', 'b']);
  expect(reported.take()!.patch['mode']).toEqual({ value: 'b', ac: 200, av: 3, ad: 'completed' });
});

test('the 500 acknowledgement itself carries the cut text', async () => {
  const silent = pino({ level: 'silent' });
  const reported = new ReportedQueue(silent);
  const properties = new WritableProperties(reported, silent, { clock: systemClock, handlerTimeoutMs: 5000 });
  properties.register('mode', () => {
    throw new Error('y'.repeat(40_000));
  });
  properties.reconcile({ desired: { $version: 1 }, reported: {} } as never);
  properties.applyPatch({ $version: 2, mode: 'a' });
  await properties.idle();
  const ack = reported.take()!.patch['mode'] as { ac: number; av: number; ad: string };
  expect(ack).toMatchObject({ ac: 500, av: 2 });
  expect(ack.ad).toBe(`${'y'.repeat(MAX_ACK_DESCRIPTION_LENGTH)}…`);
});
