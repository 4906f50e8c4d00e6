/**
 * `hubstate run` configuration: command-line flags, then HUBSTATE_* environment variables, then a
 * JSON file (`--config f.json`), then defaults. Every mistake is a ConfigError that names the
 * field as the user wrote it (`--max-hub-attempts`, `HUBSTATE_ID_SCOPE`, `f.json: idScope`) and
 * says what is expected. Values of keys never appear in a message.
 */
import { statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ConfigError, type DeviceOptions, PRESETS, type RetryPolicyInput } from 'hubstate';
import { MAX_TIMER_MS, MAX_TIMER_SECONDS } from './args';
import { readBoundedFile } from './files';

export { MAX_TIMER_MS, MAX_TIMER_SECONDS };
import { resolveOptions } from 'hubstate/internal';
import type { TransportMode } from 'hubstate';

type Kind = 'string' | 'secret' | 'path' | 'int' | 'number' | 'boolean';

interface FieldSpec {
  /** camelCase: the key in the JSON file. */
  key: string;
  kind: Kind;
  description: string;
  /** Numbers: the largest value accepted (every number has one). */
  max?: number;
  /** Numbers: the smallest value accepted (inclusive); absent: any value > 0. */
  min?: number;
}

/** IoT Hub's largest MQTT keepalive (29.45 minutes); MQTT's own limit is 65535. */
export const MAX_KEEPALIVE_SECONDS = 1767;

export const RUN_FIELDS = [
  { key: 'idScope', kind: 'string', description: 'DPS ID scope of the IoT Central app / DPS instance' },
  { key: 'registrationId', kind: 'string', description: 'registration (device) id' },
  { key: 'groupKey', kind: 'secret', description: 'enrollment group key (the device key is derived from it)' },
  { key: 'deviceKey', kind: 'secret', description: "this device's own key (better than the group key)" },
  { key: 'modelId', kind: 'string', description: 'DTMI; default the example app (dtmi:Sample:Failover;1), another: sample telemetry only' },
  { key: 'provisioningHost', kind: 'string', description: 'DPS endpoint (global.azure-devices-provisioning.net)' },
  { key: 'dataDir', kind: 'path', description: 'provisioning cache and durable outbox (./hubstate-data)' },
  { key: 'caFile', kind: 'path', description: 'extra trusted CA certificate, PEM file' },
  { key: 'transport', kind: 'string', description: 'mqtt (8883), mqtt-ws (WebSockets, 443) or auto (mqtt, else mqtt-ws) (mqtt)' },
  { key: 'proxy', kind: 'string', description: 'HTTP CONNECT proxy, http://[user:pass@]host:port, with mqtt-ws or auto (HTTPS_PROXY)' },
  { key: 'preset', kind: 'string', description: `policy preset: ${Object.keys(PRESETS).join(', ')}` },
  { key: 'maxHubAttempts', kind: 'int', max: 1_000_000, description: 'hub failures before going back to DPS (10), ≤ 1000000' },
  { key: 'hubRetryWindowMs', kind: 'number', max: MAX_TIMER_MS, description: 'or this long on a failing hub, ms (900000), ≤ 2147483647' },
  { key: 'minDelayMs', kind: 'number', max: MAX_TIMER_MS, description: 'backoff curve start, ms (1000), ≤ 2147483647' },
  { key: 'maxDelayMs', kind: 'number', max: MAX_TIMER_MS, description: 'backoff cap, ms (60000), ≤ 2147483647' },
  { key: 'firstRetryMaxMs', kind: 'number', max: MAX_TIMER_MS, description: 'first retry after a lost connection, ms (1000), ≤ 2147483647' },
  { key: 'keepaliveSeconds', kind: 'int', max: MAX_KEEPALIVE_SECONDS, description: "MQTT keepalive (30), ≤ 1767 (IoT Hub's maximum)" },
  { key: 'publishTimeoutSeconds', kind: 'int', max: MAX_TIMER_SECONDS, description: 'PUBACK timeout (a hub withholding PUBACKs is left), whole seconds 2-2147483 (30)' },
  { key: 'propertyHandlerTimeoutMs', kind: 'number', max: MAX_TIMER_MS, description: 'writable-property handler deadline (then acknowledged 500), ms (30000), ≤ 2147483647' },
  { key: 'intervalMs', kind: 'number', min: 10, max: MAX_TIMER_MS, description: 'telemetry period, ms (5000), 10-2147483647' },
  { key: 'duration', kind: 'number', max: MAX_TIMER_SECONDS, description: 'stop after this many seconds, ≤ 2147483 (runs until SIGINT/SIGTERM)' },
  { key: 'log', kind: 'path', description: 'pino log file (stdout)' },
  { key: 'logLevel', kind: 'string', description: 'pino level (info)' },
  { key: 'inspect', kind: 'boolean', description: 'stream the actor to the Stately inspector' },
  { key: 'inspectPort', kind: 'int', max: 65535, description: 'port of the local inspector page (ephemeral), 1-65535' },
] as const satisfies readonly FieldSpec[];

export type RunFieldKey = (typeof RUN_FIELDS)[number]['key'];

const POLICY_KEYS = ['preset', 'maxHubAttempts', 'hubRetryWindowMs', 'minDelayMs', 'maxDelayMs', 'firstRetryMaxMs'] as const;
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
export const DEFAULT_DATA_DIR = 'hubstate-data';

/** `maxHubAttempts` → `--max-hub-attempts`. */
export const flagOf = (key: string) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
/** `maxHubAttempts` → `HUBSTATE_MAX_HUB_ATTEMPTS`. */
export const envOf = (key: string) => `HUBSTATE_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;

/** What `runDevice` needs: validated device options plus the command's own settings. */
export interface RunConfig {
  device: DeviceOptions;
  intervalMs: number;
  durationSeconds?: number;
  logFile?: string;
  logLevel: string;
  inspect: boolean;
  inspectPort: number;
  /** Human notes for stderr (e.g. a key given on the command line). */
  warnings: string[];
  /** How the user named the paths (for errors when they are created): '--log', 'HUBSTATE_DATA_DIR' ... */
  names: { log: string; dataDir: string };
}

type Raw = string | number | boolean;
interface Sourced {
  value: Raw;
  /** How the user named it: '--id-scope', 'HUBSTATE_ID_SCOPE' or 'dev.json: idScope'. */
  name: string;
  fromText: boolean;
}

/** Flags as parsed by parseFlags (kebab-case names), the environment, and the working directory. */
export function resolveRunConfig(
  flags: Record<string, string | boolean | undefined>,
  env: NodeJS.ProcessEnv = process.env,
  cwd = process.cwd(),
): RunConfig {
  const warnings: string[] = [];
  const configFromFlag = flags.config as string | undefined;
  const configPath = configFromFlag ?? (env.HUBSTATE_CONFIG === '' ? undefined : env.HUBSTATE_CONFIG);
  const configName = configFromFlag !== undefined ? '--config' : 'HUBSTATE_CONFIG';
  if (configPath === '') throw new ConfigError(configName, 'a path to a JSON file');
  const file = configPath === undefined ? {} : readConfigFile(resolve(cwd, configPath), configPath, configName, warnings);

  const values = new Map<RunFieldKey, Sourced>();
  for (const field of RUN_FIELDS) {
    const flagName = flagOf(field.key);
    const flag = flags[flagName.slice(2)];
    const fromEnv = env[envOf(field.key)];
    if (flag !== undefined) {
      values.set(field.key, { value: flag, name: flagName, fromText: typeof flag === 'string' });
      if (field.kind === 'secret' || (field.key === 'proxy' && typeof flag === 'string' && flag.includes('@'))) {
        warnings.push(`${flagName} on the command line is visible to other users (ps); prefer ${envOf(field.key)} or --config with mode 0600`);
      }
    } else if (fromEnv !== undefined && fromEnv !== '') {
      values.set(field.key, { value: fromEnv, name: envOf(field.key), fromText: true });
    } else if (file[field.key] !== undefined) {
      values.set(field.key, { value: file[field.key] as Raw, name: `${configPath}: ${field.key}`, fromText: false });
    }
  }

  const nameOf = (key: RunFieldKey) => values.get(key)?.name ?? `${flagOf(key)} (or ${envOf(key)}, or "${key}" in --config)`;
  const get = <T extends Raw>(key: RunFieldKey): T | undefined => {
    const entry = values.get(key);
    if (!entry) return undefined;
    const spec: FieldSpec = RUN_FIELDS.find((f) => f.key === key)!;
    return convert(entry, spec) as T;
  };

  const policy: RetryPolicyInput = {};
  for (const key of POLICY_KEYS) {
    const value = get<string | number>(key);
    if (value !== undefined) (policy as Record<string, unknown>)[key] = value;
  }
  let ca: string | undefined;
  const caFile = get<string>('caFile');
  if (caFile !== undefined) ca = readBoundedFile(resolve(cwd, caFile), nameOf('caFile'), 'a readable PEM file', caFile);
  const dataDir = resolve(cwd, get<string>('dataDir') ?? DEFAULT_DATA_DIR);
  checkPath(dataDir, nameOf('dataDir'), 'directory');

  const device: DeviceOptions = {
    idScope: get<string>('idScope') as string,
    registrationId: get<string>('registrationId') as string,
    groupKey: get<string>('groupKey'),
    deviceKey: get<string>('deviceKey'),
    modelId: get<string>('modelId'),
    provisioningHost: get<string>('provisioningHost'),
    transport: get<string>('transport') as TransportMode | undefined,
    proxy: get<string>('proxy'),
    ca,
    dataDir,
    keepaliveSeconds: get<number>('keepaliveSeconds'),
    publishTimeoutSeconds: get<number>('publishTimeoutSeconds'),
    propertyHandlerTimeoutMs: get<number>('propertyHandlerTimeoutMs'),
    policy: Object.keys(policy).length > 0 ? policy : undefined,
  };
  for (const key of Object.keys(device) as Array<keyof DeviceOptions>) if (device[key] === undefined) delete device[key];

  // The library validates (one place for the rules); its field names are mapped back to the user's.
  try {
    resolveOptions(device);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    throw new ConfigError(userField(error.field, nameOf), error.expected);
  }

  const logLevel = get<string>('logLevel') ?? 'info';
  if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError(nameOf('logLevel'), `one of ${LOG_LEVELS.join(', ')}`);
  // Numbers are bounded by their field specs (convert): intervalMs 10-2147483647, duration ≤ 2147483 s ...
  const intervalMs = get<number>('intervalMs') ?? 5000;
  const durationSeconds = get<number>('duration');
  const inspectPort = get<number>('inspectPort') ?? 0;
  const log = get<string>('log');
  if (log !== undefined) checkPath(resolve(cwd, log), nameOf('log'), 'file');

  return {
    device,
    intervalMs,
    durationSeconds,
    logFile: log === undefined ? undefined : resolve(cwd, log),
    logLevel,
    inspect: get<boolean>('inspect') ?? false,
    inspectPort,
    warnings,
    names: { log: nameOf('log'), dataDir: values.get('dataDir')?.name ?? `${flagOf('dataDir')} (default ./${DEFAULT_DATA_DIR})` },
  };
}

/**
 * A first look at a path the run will create (the real checks come when it is created, see
 * files.ts): a data directory that is a file, or a log file that is a directory, is a mistake
 * now, named after the field, not a stack trace later.
 */
function checkPath(path: string, field: string, want: 'file' | 'directory'): void {
  let stat;
  try {
    stat = statSync(path);
  } catch {
    stat = undefined;
  }
  if (stat) {
    if (want === 'directory' && !stat.isDirectory()) throw new ConfigError(field, `a directory, but ${path} is not one`);
    if (want === 'file' && stat.isDirectory()) throw new ConfigError(field, `a log file path, but ${path} is a directory`);
    return;
  }
  // Missing: its nearest existing ancestor must be a directory.
  for (let at = dirname(path); ; at = dirname(at)) {
    let parent;
    try {
      parent = statSync(at);
    } catch {
      if (dirname(at) === at) return;
      continue;
    }
    if (!parent.isDirectory()) throw new ConfigError(field, `a path under directories, but ${at} is not a directory`);
    return;
  }
}

function userField(field: string, nameOf: (key: RunFieldKey) => string): string {
  if (field === 'groupKey|deviceKey') return `${nameOf('groupKey')} | ${nameOf('deviceKey')}`;
  if (field === 'ca') return nameOf('caFile');
  if (field.startsWith('policy.')) {
    const key = field.slice('policy.'.length);
    if ((POLICY_KEYS as readonly string[]).includes(key)) return nameOf(key as RunFieldKey);
    return field;
  }
  if (RUN_FIELDS.some((f) => f.key === field)) return nameOf(field as RunFieldKey);
  return field;
}

/** Decimal notation only (no hex, no 'Infinity', no blanks): 30, 1.5, 2e3. */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

function convert(entry: Sourced, spec: FieldSpec): Raw {
  const { value, name } = entry;
  const kind = spec.kind;
  switch (kind) {
    case 'string':
    case 'secret':
    case 'path':
      if (typeof value !== 'string' || value.length === 0) throw new ConfigError(name, kind === 'path' ? 'a path' : 'a non-empty string');
      if (value.includes('\0')) throw new ConfigError(name, `${kind === 'path' ? 'a path' : 'a string'} without NUL characters`);
      return value;
    case 'boolean':
      if (typeof value === 'boolean') return value;
      if (value === 'true' || value === '1') return true;
      if (value === 'false' || value === '0') return false;
      throw new ConfigError(name, 'true or false');
    case 'int':
    case 'number': {
      const n = typeof value === 'number' ? value : entry.fromText && typeof value === 'string' && DECIMAL.test(value) ? Number(value) : NaN;
      const max = spec.max ?? MAX_TIMER_MS;
      const ok = Number.isFinite(n) && (spec.min === undefined ? n > 0 : n >= spec.min) && n <= max && (kind === 'number' || Number.isInteger(n));
      if (!ok) {
        const what = kind === 'int' ? 'a positive integer' : 'a positive number';
        const range = spec.min === undefined ? `≤ ${max}` : `from ${spec.min} to ${max}`;
        throw new ConfigError(name, `${what} ${range}, got ${shortJson(value)}`);
      }
      return n;
    }
  }
}

/** A value in a message: at most 40 characters of it. */
function shortJson(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

function readConfigFile(path: string, shown: string, field: string, warnings: string[]): Record<string, unknown> {
  const text = readBoundedFile(path, field, 'a readable JSON file', shown);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(field, `valid JSON in ${shown} (${(error as Error).message.slice(0, 120)})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(field, `a JSON object in ${shown}`);
  }
  const known = RUN_FIELDS.map((f) => f.key) as string[];
  for (const key of Object.keys(parsed)) {
    if (!known.includes(key)) throw new ConfigError(`${shown}: ${key.length > 60 ? `${key.slice(0, 57)}...` : key}`, `a known key (${known.join(', ')})`);
  }
  const object = parsed as Record<string, unknown>;
  if ((object.groupKey !== undefined || object.deviceKey !== undefined) && process.platform !== 'win32') {
    try {
      if ((statSync(path).mode & 0o077) !== 0) warnings.push(`${shown} holds a key and is readable by other users; chmod 600 it`);
    } catch {
      // already read once; a stat failure here changes nothing
    }
  }
  return object;
}

/** The `run` flags, for parseFlags. */
export const RUN_FLAG_OPTIONS: Record<string, { type: 'string' | 'boolean' }> = Object.fromEntries([
  ['config', { type: 'string' as const }],
  ...RUN_FIELDS.map((f) => [flagOf(f.key).slice(2), { type: f.kind === 'boolean' ? ('boolean' as const) : ('string' as const) }]),
]);

export function runUsage(): string {
  // Columns as wide as the longest flag and variable, so that a new field keeps them aligned.
  const flagWidth = Math.max(...RUN_FIELDS.map((f) => flagOf(f.key).length));
  const envWidth = Math.max(...RUN_FIELDS.map((f) => envOf(f.key).length));
  const rows = RUN_FIELDS.map((f) => `    ${flagOf(f.key).padEnd(flagWidth)} ${envOf(f.key).padEnd(envWidth)} ${f.description}`);
  return ['  run flags (flag, environment variable; a --config JSON file uses the camelCase names):', ...rows, ''].join('\n');
}
