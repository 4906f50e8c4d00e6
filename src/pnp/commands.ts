/**
 * Commands: direct methods (a caller waits for the response) and IoT Central offline commands
 * (C2D messages with a `method-name` property; nobody waits). One registry, one dispatch:
 * - `component*command` naming for components;
 * - unknown → 404, payload not JSON / wrong type / too large → 400, handler threw → 500 (or the
 *   status of a CommandError), handler too slow → 504 at `timeoutMs` (its signal is aborted);
 * - a handler may answer 202 for a long-running command and finish the work afterwards;
 * - the built-in `Reprovision` answers 200, then asks the device to reprovision;
 * - with the `migration` option, the built-in `DeviceMove` of IoT Central's migration component
 *   (`migration*DeviceMove`, and the bare `DeviceMove` the migration tool sends from an IoT Hub
 *   source; see ./migration.ts) answers 200 and moves the device to another ID scope.
 * No SDK here: the session feature moves bytes between this and the transport.
 */
import { withDeadline, type Clock } from '../clock';
import { checkValue } from './schema';
import { CommandError, type CommandHandler, type CommandOptions, type CommandRequest } from './types';
import { jsonDepth } from '../json';
import { DEVICE_MOVE_COMMAND } from './migration';
import type { PartLogger } from '../logger';

/** IoT Hub's limit for a direct method payload (request and response). */
export const MAX_COMMAND_PAYLOAD_BYTES = 128 * 1024;
/**
 * Deepest command payload handed to a handler. IoT Hub sets none, but 128 KB of `[` is 130,000
 * levels: JSON.parse takes it, while JSON.stringify (the response, a log line) and any recursive
 * walk in the handler overflow the stack a few thousand levels down.
 */
export const MAX_COMMAND_PAYLOAD_DEPTH = 64;

/** The command that takes the device back to DPS (as the DPS guidance asks devices to accept). */
export const REPROVISION_COMMAND = 'Reprovision';

export interface CommandOutcome {
  status: number;
  payload: unknown;
  /** Run once the response has been sent (the built-in Reprovision). */
  after?: () => void;
}

interface Registration {
  name: string;
  component?: string;
  handler: CommandHandler;
  options: CommandOptions;
}

export interface CommandSettings {
  timeoutMs: number;
  clock: Clock;
  logger: PartLogger;
  reprovision(): void;
  /** The built-in `DeviceMove` (option `migration`): its component, and what runs it on a parsed payload. */
  deviceMove?: { component: string; move(payload: unknown): CommandOutcome };
}

const fail = (status: number, message: string): CommandOutcome => ({ status, payload: { message } });

export class Commands {
  private readonly registrations = new Map<string, Registration>();

  constructor(private readonly settings: CommandSettings) {}

  register(name: string, handler: CommandHandler, options: CommandOptions = {}): void {
    if (typeof name !== 'string' || name.length === 0 || /[*/?#]/.test(name)) throw new TypeError(`invalid command name '${name}'`);
    if (typeof handler !== 'function') throw new TypeError('the handler must be a function');
    if (options.component !== undefined && (typeof options.component !== 'string' || options.component === '' || /[*/?#.$ ]/.test(options.component))) {
      throw new TypeError(`invalid component name '${options.component}'`);
    }
    const fullName = options.component ? `${options.component}*${name}` : name;
    if (this.builtInDeviceMove(fullName)) throw new Error(`'${fullName}' is the built-in DeviceMove (option migration)`);
    if (this.registrations.has(fullName)) throw new Error(`a handler for command '${fullName}' is already registered`);
    this.registrations.set(fullName, { name, component: options.component, handler, options });
  }

  /** Run the command named `fullName` (`command` or `component*command`) on a raw payload. */
  async invoke(fullName: string, body: Buffer | undefined, meta: { offline: boolean; requestId?: string }): Promise<CommandOutcome> {
    const { logger } = this.settings;
    const registration = this.registrations.get(fullName);
    if (!registration) {
      if (fullName === REPROVISION_COMMAND) {
        logger.info({ offline: meta.offline }, 'Reprovision command: answering, then reprovisioning');
        return { status: 200, payload: { message: 'reprovisioning' }, after: () => this.settings.reprovision() };
      }
      const deviceMove = this.builtInDeviceMove(fullName);
      if (deviceMove) {
        const parsed = this.parsePayload(fullName, body, meta);
        return parsed.ok ? deviceMove.move(parsed.payload) : parsed.outcome;
      }
      logger.warn({ command: fullName, offline: meta.offline }, 'unknown command');
      return fail(404, `unknown command '${fullName}'`);
    }
    const parsed = this.parsePayload(fullName, body, meta);
    if (!parsed.ok) return parsed.outcome;
    const { payload } = parsed;
    const problem = checkValue(registration.options.schema, payload);
    if (problem !== undefined) return fail(400, `invalid payload: ${problem}`);
    return this.run(registration, fullName, payload, meta);
  }

  /** The built-in DeviceMove when it is on and `fullName` names it (`component*DeviceMove` or `DeviceMove`). */
  private builtInDeviceMove(fullName: string): CommandSettings['deviceMove'] {
    const deviceMove = this.settings.deviceMove;
    if (!deviceMove) return undefined;
    return fullName === `${deviceMove.component}*${DEVICE_MOVE_COMMAND}` || fullName === DEVICE_MOVE_COMMAND ? deviceMove : undefined;
  }

  /** The JSON payload, bounded in size and depth, or the 400 that refuses it. */
  private parsePayload(fullName: string, body: Buffer | undefined, meta: { offline: boolean }): { ok: true; payload: unknown } | { ok: false; outcome: CommandOutcome } {
    const { logger } = this.settings;
    const size = body?.length ?? 0;
    if (size > MAX_COMMAND_PAYLOAD_BYTES) return { ok: false, outcome: fail(400, `payload of ${size} bytes; at most ${MAX_COMMAND_PAYLOAD_BYTES}`) };
    let payload: unknown;
    if (size > 0) {
      try {
        payload = JSON.parse(body!.toString('utf8')) as unknown;
      } catch {
        logger.warn({ command: fullName, offline: meta.offline, bytes: size }, 'command payload is not JSON');
        return { ok: false, outcome: fail(400, 'the payload is not JSON') };
      }
    }
    if (jsonDepth(payload, MAX_COMMAND_PAYLOAD_DEPTH) > MAX_COMMAND_PAYLOAD_DEPTH) {
      logger.warn({ command: fullName, offline: meta.offline, bytes: size }, 'command payload nested too deep');
      return { ok: false, outcome: fail(400, `the payload is nested deeper than ${MAX_COMMAND_PAYLOAD_DEPTH} levels`) };
    }
    return { ok: true, payload };
  }

  private run(registration: Registration, fullName: string, payload: unknown, meta: { offline: boolean; requestId?: string }): Promise<CommandOutcome> {
    const { clock, logger, timeoutMs } = this.settings;
    const controller = new AbortController();
    const request: CommandRequest = {
      name: registration.name,
      ...(registration.component !== undefined ? { component: registration.component } : {}),
      payload,
      offline: meta.offline,
      ...(meta.requestId !== undefined ? { requestId: meta.requestId } : {}),
      signal: controller.signal,
    };
    const handled = Promise.resolve()
      .then(() => registration.handler(request))
      .then(
        (result) => this.toOutcome(fullName, result),
        (error: unknown) => {
          const message = error instanceof Error ? error.message : String(error);
          const status = error instanceof CommandError && validStatus(error.status) ? error.status : 500;
          if (status >= 500) logger.warn({ command: fullName, err: message }, 'command handler failed');
          return fail(status, message);
        },
      );
    // The same deadline helper as the twin calls and writable-property handlers; a late settle is ignored.
    const timedOut = new Error('command timed out');
    return withDeadline(clock, handled, timeoutMs, () => timedOut).catch((error: unknown) => {
      if (error !== timedOut) throw error;
      logger.warn({ command: fullName, timeoutMs }, 'command handler too slow; answered 504');
      controller.abort(timedOut);
      return fail(504, `command '${fullName}' did not complete within ${timeoutMs} ms`);
    });
  }

  private toOutcome(fullName: string, result: unknown): CommandOutcome {
    if (result === undefined || result === null) return { status: 200, payload: null };
    if (typeof result !== 'object') return fail(500, `command '${fullName}' returned a ${typeof result}; return { status?, payload? }`);
    const { status = 200, payload = null } = result as { status?: unknown; payload?: unknown };
    if (!validStatus(status)) return fail(500, `command '${fullName}' returned an invalid status`);
    let text: string | undefined;
    try {
      text = JSON.stringify(payload);
    } catch (error) {
      return fail(500, `the response is not JSON: ${(error as Error).message}`);
    }
    if (text === undefined) return { status, payload: null };
    if (Buffer.byteLength(text) > MAX_COMMAND_PAYLOAD_BYTES) return fail(500, `the response is over ${MAX_COMMAND_PAYLOAD_BYTES} bytes`);
    return { status, payload };
  }
}

function validStatus(status: unknown): status is number {
  return typeof status === 'number' && Number.isInteger(status) && status >= 200 && status <= 599;
}
