import { MessageRejectedError } from '../../src/errors';
import { MemoryOutbox, type DroppedMessage } from '../../src/store/outbox';

const message = (id: string, bytes = 10) => ({ messageId: id, body: '{}', properties: {}, createdAt: 0, bytes });

describe('in-memory outbox', () => {
  test('keeps capture order; after() pages by sequence; remove() only on acknowledgement', () => {
    const outbox = new MemoryOutbox();
    for (const id of ['a', 'b', 'c', 'd']) outbox.add(message(id));
    expect(outbox.after(0, 2).map((m) => m.messageId)).toEqual(['a', 'b']);
    expect(outbox.after(2, 10).map((m) => m.messageId)).toEqual(['c', 'd']);
    expect(outbox.remove('b')).toBe(true);
    expect(outbox.remove('b')).toBe(false);
    expect(outbox.after(0, 10).map((m) => m.messageId)).toEqual(['a', 'c', 'd']);
    expect(outbox.stats()).toEqual({ count: 3, bytes: 30 });
  });

  test('full with reject-new: the new message is refused with a typed error, nothing is lost', () => {
    const outbox = new MemoryOutbox({ maxCount: 2, maxBytes: 1000, whenFull: 'reject-new' });
    outbox.add(message('a'));
    outbox.add(message('b'));
    expect(() => outbox.add(message('c'))).toThrow(MessageRejectedError);
    expect(outbox.after(0, 10).map((m) => m.messageId)).toEqual(['a', 'b']);
  });

  test('full with drop-oldest: the oldest goes, and a dropped event names it', () => {
    const outbox = new MemoryOutbox({ maxCount: 100, maxBytes: 25, whenFull: 'drop-oldest' });
    const dropped: DroppedMessage[] = [];
    outbox.onDropped((d) => dropped.push(d));
    outbox.add(message('a'));
    outbox.add(message('b'));
    outbox.add(message('c'));
    expect(dropped).toEqual([{ messageId: 'a', reason: 'outbox-full' }]);
    expect(outbox.after(0, 10).map((m) => m.messageId)).toEqual(['b', 'c']);
  });

  test('onAdded wakes the sender once per accepted message', () => {
    const outbox = new MemoryOutbox();
    let wakes = 0;
    const unsubscribe = outbox.onAdded(() => wakes++);
    outbox.add(message('a'));
    unsubscribe();
    outbox.add(message('b'));
    expect(wakes).toBe(1);
  });

  test('after() and drop-oldest stay exact under out-of-order acknowledgements (queue compaction included)', () => {
    const outbox = new MemoryOutbox({ maxCount: 3000, maxBytes: 1e9, whenFull: 'drop-oldest' });
    const live = new Map<string, number>();
    let rng = 7;
    const random = () => ((rng = (Math.imul(rng, 1103515245) + 12345) >>> 0) / 2 ** 32);
    for (let i = 0; i < 8000; i++) {
      const stored = outbox.add(message(`m${i}`));
      live.set(stored.messageId, stored.seq);
      if (live.size > 3000) live.delete(live.keys().next().value!); // drop-oldest
      // acknowledge a random one of the oldest few (PUBACKs arrive out of order within the window)
      if (random() < 0.7) {
        const window = [...live.keys()].slice(0, 16);
        const id = window[Math.floor(random() * window.length)]!;
        expect(outbox.remove(id)).toBe(true);
        live.delete(id);
      }
      if (i % 500 === 0) {
        const cursor = Math.floor(random() * i);
        const expected = [...live.entries()].filter(([, seq]) => seq > cursor).slice(0, 20).map(([id]) => id);
        expect(outbox.after(cursor, 20).map((m) => m.messageId)).toEqual(expected);
      }
    }
    expect(outbox.stats().count).toBe(live.size);
    expect(outbox.after(0, 5).map((m) => m.messageId)).toEqual([...live.keys()].slice(0, 5));
  });
});
