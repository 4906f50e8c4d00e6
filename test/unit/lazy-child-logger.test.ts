/**
 * A device's loggers are made on their first line that passes the level: the same lines as a
 * chain of pino children, and no pino child at all while nothing is said.
 */
import pino from 'pino';
import { LazyChildLogger } from '../../src/logger';

function capture(level: string) {
  const lines: Array<Record<string, unknown>> = [];
  const root = pino({ level, base: undefined, timestamp: false }, { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { root, lines, childSpy: jest.spyOn(root, 'child') };
}

test('a lazy chain writes what a chain of pino children writes: every binding, in order, on each line', () => {
  const lazy = capture('info');
  const device = new LazyChildLogger(lazy.root, { registrationId: 'dev-1' });
  const session = device.child({ module: 'pnp' }).child({ epoch: 3 });
  session.warn({ status: 400 }, 'refused');
  device.info('connected');

  const eager = capture('info');
  const eagerDevice = eager.root.child({ registrationId: 'dev-1' });
  eagerDevice.child({ module: 'pnp' }).child({ epoch: 3 }).warn({ status: 400 }, 'refused');
  eagerDevice.info('connected');

  expect(lazy.lines).toEqual(eager.lines);
  expect(lazy.lines[0]).toMatchObject({ registrationId: 'dev-1', module: 'pnp', epoch: 3, status: 400, msg: 'refused' });
});

test('no pino child exists until a line passes the level; then each link is made once', () => {
  const { root, lines, childSpy } = capture('warn');
  const device = new LazyChildLogger(root, { registrationId: 'dev-2' });
  const pnp = device.child({ module: 'pnp' });
  const session = pnp.child({ epoch: 1 });
  session.debug('twin synchronised');
  session.info('not at warn');
  device.info('still nothing');
  expect(childSpy).not.toHaveBeenCalled();
  expect(lines).toEqual([]);

  session.warn('first warning');
  session.error('second line');
  pnp.warn('pnp line');
  // The device's, Plug and Play's and the session's child, each once (pino children inherit the spied method).
  expect(childSpy.mock.calls.map(([bindings]) => bindings)).toEqual([{ registrationId: 'dev-2' }, { module: 'pnp' }, { epoch: 1 }]);
  expect(lines.map((line) => [line['msg'], line['module'], line['epoch']])).toEqual([
    ['first warning', 'pnp', 1],
    ['second line', 'pnp', 1],
    ['pnp line', 'pnp', undefined],
  ]);
});

test('isLevelEnabled follows the level of the logger it was made from, also when that changes', () => {
  const { root } = capture('warn');
  const session = new LazyChildLogger(root, { registrationId: 'dev-3' }).child({ epoch: 1 });
  expect(session.isLevelEnabled('info')).toBe(false);
  expect(session.isLevelEnabled('error')).toBe(true);
  root.level = 'debug';
  expect(session.isLevelEnabled('debug')).toBe(true);
  session.debug('made now');
  root.level = 'error'; // a pino child follows its parent's level unless given one of its own
  expect(session.isLevelEnabled('warn')).toBe(false);
  expect(session.isLevelEnabled('error')).toBe(true);
});

test('a logger without isLevelEnabled (the option needs only child and four levels) gets every line, through its children', () => {
  const lines: Array<[string, Record<string, unknown>, string]> = [];
  const minimal = (bindings: Record<string, unknown>): Record<string, unknown> => ({
    child: (more: Record<string, unknown>) => minimal({ ...bindings, ...more }),
    debug: (fields: Record<string, unknown>, msg: string) => lines.push(['debug', { ...bindings, ...fields }, msg]),
    info: (fields: Record<string, unknown>, msg: string) => lines.push(['info', { ...bindings, ...fields }, msg]),
    warn: () => undefined,
    error: () => undefined,
  });
  const session = new LazyChildLogger(minimal({}) as never, { registrationId: 'dev-4' }).child({ epoch: 2 });
  session.debug({ n: 1 }, 'one');
  session.info({ n: 2 }, 'two');
  expect(lines).toEqual([
    ['debug', { registrationId: 'dev-4', epoch: 2, n: 1 }, 'one'],
    ['info', { registrationId: 'dev-4', epoch: 2, n: 2 }, 'two'],
  ]);
});
