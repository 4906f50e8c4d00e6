import { PendingWork } from '../../src/pending-work';

function deferred() {
  let resolve!: () => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

test('settled() waits for every tracked piece of work, including work tracked while waiting, and for failures alike', async () => {
  const pending = new PendingWork();
  await pending.settled(); // nothing tracked: at once
  const first = deferred();
  const second = deferred();
  const late = deferred();
  pending.track(first.promise);
  pending.track(second.promise.catch(() => undefined));
  expect(pending.size).toBe(2);
  let done = false;
  const waiting = pending.settled().then(() => (done = true));
  first.resolve();
  await first.promise;
  pending.track(late.promise);
  second.reject(new Error('handler failed'));
  await new Promise((resolve) => setImmediate(resolve));
  expect(done).toBe(false);
  late.resolve();
  await waiting;
  expect(done).toBe(true);
  expect(pending.size).toBe(0);
});
