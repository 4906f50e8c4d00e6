/**
 * A service (the local cloud, for the benchmarks and the soak) in a process of its own, driven
 * over the Node IPC channel: named commands with JSON arguments and results, and events from the
 * child to the parent.
 *
 * Why a process of its own: the devices' event loop and the cloud's then do not share one core,
 * and a memory measurement of the device side does not include what the cloud keeps.
 *
 * Ordering guarantee (the soak's delivery accounting relies on it): the child batches events and
 * sends every event emitted before a command's reply ahead of that reply, on the one ordered IPC
 * channel. So once a command resolves in the parent, every event the child emitted before it
 * handled the command has been delivered to the parent's listeners.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';

/** Each command of `T` as the parent sees it: async. */
export type Async<T> = { [K in keyof T]: T[K] extends (...args: infer A) => infer R ? (...args: A) => Promise<Awaited<R>> : never };

/** The same commands served in this process, with the interface a forked service has. */
export function asyncCommands<C extends object>(commands: C): Async<C> {
  const out: Record<string, (...args: unknown[]) => Promise<unknown>> = {};
  for (const [name, fn] of Object.entries(commands)) out[name] = async (...args: unknown[]) => (fn as (...a: unknown[]) => unknown)(...args);
  return out as unknown as Async<C>;
}


/** Child → parent. */
type ChildMessage =
  | { info: unknown }
  | { events: Array<[string, unknown]> }
  | { id: number; result: unknown }
  | { id: number; error: string };

/** Parent → child. */
interface CallMessage {
  id: number;
  cmd: string;
  args: unknown[];
}

/** The minimal channel both ends use: a child process, or `process` inside the child. */
export interface IpcChannel {
  send(message: unknown, callback?: (error: Error | null) => void): boolean;
  on(event: 'message', listener: (message: unknown) => void): unknown;
}

export interface ServedService<C extends object> {
  info: unknown;
  commands: C;
  stop(): Promise<void>;
}

/** Child side: what a service hands the serving loop; `emit` forwards an event to the parent. */
export type ServiceFactory<C extends object> = (emit: (event: string, payload: unknown) => void) => Promise<ServedService<C>>;

/**
 * Serve a service over `channel` (default: this process's IPC channel). The reserved command
 * `stop` stops the service and then the channel's process disconnects.
 */
export async function serveService<C extends object>(
  factory: ServiceFactory<C>,
  channel: IpcChannel & { disconnect?: () => void } = process as unknown as IpcChannel,
): Promise<void> {
  let buffer: Array<[string, unknown]> = [];
  let flushScheduled = false;
  const flush = () => {
    flushScheduled = false;
    if (buffer.length === 0) return;
    const events = buffer;
    buffer = [];
    channel.send({ events } satisfies ChildMessage);
  };
  const emit = (event: string, payload: unknown) => {
    buffer.push([event, payload]);
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flush);
    }
  };
  // Every reply goes after the events emitted before it (see the ordering guarantee above).
  const reply = (message: ChildMessage, callback?: () => void) => {
    flush();
    channel.send(message, callback ? () => callback() : undefined);
  };
  const service = await factory(emit);
  const commands = service.commands as unknown as Record<string, (...args: unknown[]) => unknown>;
  channel.on('message', (m) => {
    const { id, cmd, args } = m as CallMessage;
    if (cmd === 'stop') {
      void service.stop().then(
        () => reply({ id, result: null }, () => channel.disconnect?.()),
        (error: unknown) => reply({ id, error: (error as Error).message }, () => channel.disconnect?.()),
      );
      return;
    }
    const command = commands[cmd];
    Promise.resolve()
      .then(() => {
        if (!command) throw new Error(`unknown command '${cmd}'`);
        return command(...args);
      })
      .then(
        (result) => reply({ id, result: result === undefined ? null : result }),
        (error: unknown) => reply({ id, error: (error as Error).message }),
      );
  });
  reply({ info: service.info });
}

export interface ServiceClient<C extends object, I> {
  readonly info: I;
  readonly commands: Async<C>;
  /** Events the child emitted (`emit(event, payload)` there → `events.emit(event, payload)` here). */
  readonly events: EventEmitter;
  /** Stop the service and wait for the child to exit (a no-op once it has exited). */
  stop(): Promise<void>;
  readonly pid: number | undefined;
}

/** Parent side over any channel (tests pass an in-memory pair). */
export function connectService<C extends object, I>(
  channel: IpcChannel & { once(event: 'exit', listener: () => void): unknown },
): Promise<ServiceClient<C, I>> {
  let nextId = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  const events = new EventEmitter();
  let exited = false;
  let resolveInfo!: (info: I) => void;
  const info = new Promise<I>((resolve) => (resolveInfo = resolve));
  channel.on('message', (raw) => {
    const m = raw as ChildMessage;
    if ('info' in m) return resolveInfo(m.info as I);
    if ('events' in m) {
      for (const [event, payload] of m.events) events.emit(event, payload);
      return;
    }
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if ('error' in m) p.reject(new Error(m.error));
    else p.resolve(m.result);
  });
  const gone = new Promise<void>((resolve) =>
    channel.once('exit', () => {
      exited = true;
      for (const p of pending.values()) p.reject(new Error('service process exited'));
      pending.clear();
      resolve();
    }),
  );
  const call = (cmd: string, args: unknown[]) =>
    new Promise<unknown>((resolve, reject) => {
      if (exited) return reject(new Error('service process exited'));
      const id = nextId++;
      pending.set(id, { resolve, reject });
      channel.send({ id, cmd, args } satisfies CallMessage);
    });
  // Any property is a command: the child answers an unknown one with an error.
  // ('then' is not one, so the object is never mistaken for a promise.)
  const commands = new Proxy({}, { get: (_, name) => (typeof name === 'string' && name !== 'then' ? (...args: unknown[]) => call(name, args) : undefined) });
  return info.then(
    (i): ServiceClient<C, I> => ({
      info: i,
      commands: commands as unknown as Async<C>,
      events,
      pid: (channel as Partial<ChildProcess>).pid,
      stop: async () => {
        if (exited) return;
        await call('stop', []).catch(() => undefined);
        await gone;
      },
    }),
  );
}

/**
 * Fork `modulePath` (a compiled .js file that calls `serveService`) and connect to it. Rejects if
 * the child exits before it is ready.
 */
export async function forkService<C extends object, I>(
  modulePath: string,
  args: string[],
  execArgv: string[] = [],
): Promise<ServiceClient<C, I>> {
  const child: ChildProcess = fork(modulePath, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv });
  return Promise.race([
    connectService<C, I>(child as ChildProcess & IpcChannel),
    new Promise<never>((_, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`service process ${modulePath} exited early (${String(code)})`)));
    }),
  ]);
}
