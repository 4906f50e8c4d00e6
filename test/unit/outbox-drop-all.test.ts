/** MemoryOutbox.dropAll: what an in-memory outbox still holds when its device stops is reported, message by message. */
import { MemoryOutbox, type DroppedMessage } from '../../src/store/outbox';

const message = (messageId: string) => ({ messageId, body: '{}', properties: {}, createdAt: 0, bytes: 2 });

test('reports every live message once, in capture order, and leaves the outbox empty', () => {
  const outbox = new MemoryOutbox();
  const dropped: DroppedMessage[] = [];
  outbox.onDropped((d) => dropped.push(d));
  for (const id of ['a', 'b', 'c', 'd']) outbox.add(message(id));
  outbox.remove('b'); // delivered: not reported
  expect(outbox.dropAll('stopped')).toBe(3);
  expect(dropped).toEqual([
    { messageId: 'a', reason: 'stopped' },
    { messageId: 'c', reason: 'stopped' },
    { messageId: 'd', reason: 'stopped' },
  ]);
  expect(outbox.stats()).toEqual({ count: 0, bytes: 0 });
  expect(outbox.dropAll('stopped')).toBe(0);
});
