import { createRequire } from 'node:module';
import { formatWithOptions } from 'node:util';
import type pino from 'pino';
import type { Bindings, Level, LogFn, Logger } from 'pino';

/**
 * Paths that could ever carry a secret. Nothing in hubstate logs them on purpose; redaction is
 * the second line of defence, and a test greps everything a full run logs for the key.
 */
export const REDACTED_PATHS = [
  'groupKey',
  'deviceKey',
  'sharedAccessKey',
  'connectionString',
  'sas',
  'password',
  '*.groupKey',
  '*.deviceKey',
  '*.sharedAccessKey',
  '*.connectionString',
  '*.sas',
  '*.password',
  'options.credential',
];

/**
 * The default logger. pino is loaded on the first call, not with the library: an application
 * that passes its own `logger` to every device never loads it.
 */
export function createLogger(options: { level?: string; destination?: pino.DestinationStream } = {}): Logger {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pinoFactory = require('pino') as typeof pino;
  return pinoFactory(
    { level: options.level ?? 'info', redact: { paths: REDACTED_PATHS, censor: '[redacted]' }, base: undefined },
    options.destination,
  );
}

let processLogger: Logger | undefined;

/**
 * The logger of every device created without one: one per process, made on first use. A root
 * pino logger per device cost about 17 KB of heap each (its own redaction functions and stdout
 * stream), more than the rest of an idle device; each device logs through its own child.
 */
export function defaultLogger(): Logger {
  return (processLogger ??= createLogger());
}

/**
 * What the library's parts use of a logger: four levels and `child` (the `logger` option's
 * contract), and `isLevelEnabled` where it has one. A pino Logger is one; so is a LazyChildLogger.
 */
export interface PartLogger {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  child(bindings: Bindings): PartLogger;
  isLevelEnabled?(level: Level): boolean;
}

/**
 * A child logger made on its first line that passes the level. A pino child is ~450 B of heap,
 * hidden classes of its own included (its prototype is its parent, so a device's children share
 * none with another device's). Each device has three (its own, Plug and Play's, the session's);
 * a device at level `warn` or `silent`, as a fleet runs, makes them only when it has something to say.
 * Until then the level is the parent's: a `child()` that sets a level of its own (pino's `onChild`)
 * applies from the first line that passes the parent's.
 */
export class LazyChildLogger implements PartLogger {
  #made: PartLogger | undefined;
  declare debug: LogFn;
  declare info: LogFn;
  declare warn: LogFn;
  declare error: LogFn;

  constructor(
    private readonly parent: PartLogger,
    private readonly bindings: Bindings,
  ) {}

  /** The pino child, made now if it was not (and its parents with it). */
  made(): PartLogger {
    return (this.#made ??= (this.parent instanceof LazyChildLogger ? this.parent.made() : this.parent).child(this.bindings));
  }

  child(bindings: Bindings): LazyChildLogger {
    return new LazyChildLogger(this, bindings);
  }

  /** A logger without `isLevelEnabled` (the option does not require it) gets every line, as it did. */
  isLevelEnabled(level: Level): boolean {
    const from = this.#made ?? this.parent;
    return from.isLevelEnabled ? from.isLevelEnabled(level) : true;
  }
}

for (const level of ['debug', 'info', 'warn', 'error'] as const) {
  LazyChildLogger.prototype[level] = function logThroughChild(this: LazyChildLogger, ...args: unknown[]): void {
    if (this.isLevelEnabled(level)) (this.made()[level] as (...line: unknown[]) => void)(...args);
  } as LogFn;
}

/*
 * The `debug` module (DEBUG=...) is how the MQTT stack traces itself, and mqtt-packet's
 * `writeString` writes the CONNECT password — a SAS token valid for an hour, for DPS and for
 * the hub — in clear. Redaction at the only place every namespace passes through: the module's
 * `log` (the formatted line) and its `%o`/`%O` formatters (a password Buffer). Installed when
 * this module loads (the library and the CLI import it before any MQTT client exists).
 */

const SECRET_PATTERNS: Array<[RegExp, string]> = [
  [/SharedAccessSignature\s+[^\s'"`,;)}\]]+/g, 'SharedAccessSignature [redacted]'],
  [/\bsig=[^&\s'"`,;)}\]]+/gi, 'sig=[redacted]'],
  [/\bSharedAccessKey=[^;\s'"`,)}\]]+/gi, 'SharedAccessKey=[redacted]'],
  // A proxy URL's user:password@ (https-proxy-agent traces its proxy's href).
  [/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/@'"`]+@/gi, '$1[redacted]@'],
];

/** The text with SAS tokens, `sig=` values and connection-string keys replaced by `[redacted]`. */
export function redactSecrets(text: string): string {
  let out = text;
  for (const [pattern, replacement] of SECRET_PATTERNS) out = out.replace(pattern, replacement);
  return out;
}

export interface DebugModule {
  log: (...args: unknown[]) => unknown;
  enable(namespaces: string): void;
  disable(): string;
  formatters: Record<string, ((this: unknown, value: unknown) => string) | undefined>;
  inspectOpts?: object;
  [GUARD]?: true;
}
const GUARD = Symbol.for('hubstate.debug-redaction');

/** Where `debug` is loaded from: ours, and the copies the MQTT stack (client and local broker) uses. */
const DEBUG_CHAINS = [
  ['debug'],
  ['azure-iot-mqtt-base', 'mqtt', 'mqtt-packet', 'debug'],
  ['azure-iot-mqtt-base', 'mqtt', 'debug'],
  ['azure-iot-device-mqtt', 'debug'],
  ['azure-iot-provisioning-device-mqtt', 'debug'],
  ['aedes', 'mqtt-packet', 'debug'],
  ['https-proxy-agent', 'debug'],
];

function resolveChain(chain: string[]): string | undefined {
  let from = __filename;
  try {
    for (const name of chain) from = createRequire(from).resolve(name);
    return from;
  } catch {
    return undefined;
  }
}

const looksSecret = (bytes: Uint8Array): boolean => /SharedAccess|sig=/.test(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1'));

/** Every copy of the `debug` module the MQTT stack (client and local broker) loads, each once. */
export function debugModules(): DebugModule[] {
  const seen = new Set<string>();
  const modules: DebugModule[] = [];
  for (const chain of DEBUG_CHAINS) {
    const path = resolveChain(chain);
    if (path === undefined || seen.has(path)) continue;
    seen.add(path);
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const mod = require(path) as DebugModule;
      if (typeof mod?.log === 'function' && typeof mod.formatters === 'object') modules.push(mod);
    } catch {
      // not installed (e.g. a bundler removed it): nothing to guard
    }
  }
  return modules;
}

/**
 * Makes every `debug` module copy the MQTT stack uses redact SAS tokens. Idempotent; returns how
 * many copies are guarded (0: none found, e.g. a bundler removed them). Each device calls it as
 * it is created (once per process); an application that connects with the SDK or an MQTT
 * client before its first device calls it itself.
 */
export function guardDebugOutput(): number {
  let guarded = 0;
  for (const mod of debugModules()) {
    if (!mod[GUARD]) {
      const log = mod.log;
      mod.log = function redactedLog(this: unknown, ...args: unknown[]) {
        return log.call(this, redactSecrets(formatWithOptions(mod.inspectOpts ?? {}, ...args)));
      };
      for (const key of ['o', 'O']) {
        const format = mod.formatters[key];
        if (typeof format !== 'function') continue;
        mod.formatters[key] = function redactedFormat(this: unknown, value: unknown) {
          const safe = value instanceof Uint8Array && looksSecret(value) ? '[redacted bytes]' : value;
          return redactSecrets(format.call(this, safe));
        };
      }
      mod[GUARD] = true;
    }
    guarded++;
  }
  return guarded;
}

let debugOutputGuarded = false;

/**
 * `guardDebugOutput`, once per process, as the first device is created: the MQTT stack traces
 * only for a device's connections, and loading the library is spared the module lookups.
 */
export function guardDebugOutputOnce(): void {
  if (debugOutputGuarded) return;
  guardDebugOutput();
  debugOutputGuarded = true;
}

/** `debug` namespaces whose output carries the SAS tokens (before redaction). */
export const SECRET_DEBUG_NAMESPACES = ['mqtt-packet:writeToStream', 'mqtt-packet:parser', 'mqttjs:client', 'aedes'];

/** Whether a DEBUG value (the `debug` module's syntax: `a:*,-b`, spaces or commas) enables `namespace`. */
export function debugEnables(debugValue: string, namespace: string): boolean {
  const toRegExp = (pattern: string) => new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*?')}$`);
  let enabled = false;
  for (const part of debugValue.split(/[\s,]+/).filter(Boolean)) {
    if (part.startsWith('-')) {
      if (toRegExp(part.slice(1)).test(namespace)) return false;
    } else if (toRegExp(part).test(namespace)) {
      enabled = true;
    }
  }
  return enabled;
}

/** The warning to print at start when DEBUG turns on output that carries SAS tokens (else undefined). */
export function debugSecretsWarning(debugValue: string | undefined, guarded: boolean): string | undefined {
  if (debugValue === undefined || debugValue.trim() === '') return undefined;
  const hits = SECRET_DEBUG_NAMESPACES.filter((ns) => debugEnables(debugValue, ns));
  if (hits.length === 0) return undefined;
  const what = `DEBUG=${debugValue.length > 60 ? `${debugValue.slice(0, 57)}...` : debugValue} turns on ${hits.join(', ')}: MQTT traces that carry the SAS tokens (DPS and hub, each valid for 1 h)`;
  return guarded
    ? `${what}. hubstate redacts the tokens in that output, but the rest (device ids, hosts, payloads) is still sensitive: do not share it, and do not set DEBUG in production`
    : `${what}, and hubstate could not find the debug module to redact them: THE TOKENS WILL BE PRINTED. Unset DEBUG`;
}
