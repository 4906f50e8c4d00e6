/**
 * The IPC service link (packages/cloud/src/ipc.ts) over an in-memory channel pair that delivers each
 * message on a later macrotask, as a real IPC channel does. The soak's delivery accounting
 * relies on its ordering guarantee: a command's reply arrives after every event emitted before
 * the command was handled.
 */
import { EventEmitter } from 'node:events';
import { connectService, serveService, type IpcChannel } from '../src/ipc';

type Channel = IpcChannel & { once(event: 'exit', listener: () => void): unknown; disconnect(): void };

/** Two ends of an ordered, asynchronous message channel; `disconnect` on the child end "exits" the parent's view. */
function channelPair(): { parent: Channel; child: Channel; sent: { toParent: number } } {
  const toParent = new EventEmitter();
  const toChild = new EventEmitter();
  const sent = { toParent: 0 };
  const end = (inbox: EventEmitter, outbox: EventEmitter, counts: boolean): Channel => ({
    send: (message, callback) => {
      if (counts) sent.toParent++;
      const copy = JSON.parse(JSON.stringify(message)) as unknown;
      setImmediate(() => {
        outbox.emit('message', copy);
        callback?.(null);
      });
      return true;
    },
    on: (event, listener) => inbox.on(event, listener),
    once: (event, listener) => inbox.once(event, listener),
    disconnect: () => setImmediate(() => toParent.emit('exit')),
  });
  return { parent: end(toParent, toChild, false), child: end(toChild, toParent, true), sent };
}

interface Counter {
  bump(times: number): number;
  fail(): never;
  slow(ms: number): Promise<string>;
}

async function start() {
  const { parent, child, sent } = channelPair();
  const stopped = { value: false };
  void serveService<Counter>(async (emit) => {
    let n = 0;
    return {
      info: { name: 'counter' },
      commands: {
        bump: (times) => {
          for (let i = 0; i < times; i++) emit('tick', ++n);
          return n;
        },
        fail: () => {
          throw new Error('no such thing');
        },
        slow: (ms) => new Promise((resolve) => setTimeout(() => resolve(`after ${ms}`), ms)),
      },
      stop: async () => {
        stopped.value = true;
      },
    };
  }, child);
  const client = await connectService<Counter, { name: string }>(parent);
  return { client, sent, stopped };
}

test('info, results and errors cross the channel; events are batched and arrive before the reply that follows them', async () => {
  const { client, sent } = await start();
  expect(client.info).toEqual({ name: 'counter' });
  const ticks: number[] = [];
  client.events.on('tick', (n: number) => ticks.push(n));
  const before = sent.toParent;
  const result = await client.commands.bump(500);
  // Every event emitted before the reply was delivered before the reply resolved.
  expect(result).toBe(500);
  expect(ticks).toEqual(Array.from({ length: 500 }, (_, i) => i + 1));
  // 500 events and the reply in 2 messages, not 501.
  expect(sent.toParent - before).toBe(2);
  await expect(client.commands.fail()).rejects.toThrow('no such thing');
  await expect((client.commands as unknown as Record<string, () => Promise<unknown>>).nope!()).rejects.toThrow("unknown command 'nope'");
  await client.stop();
});

test('stop stops the service, and calls after the exit are refused instead of hanging', async () => {
  const { client, stopped } = await start();
  const inFlight = client.commands.slow(500);
  await client.stop();
  expect(stopped.value).toBe(true);
  // Pending calls are rejected when the process goes away; later calls fail at once.
  await expect(inFlight).rejects.toThrow('service process exited');
  await expect(client.commands.bump(1)).rejects.toThrow('service process exited');
  await client.stop(); // idempotent
});
