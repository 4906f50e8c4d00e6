/**
 * Plug and Play, as an application sees it: writable properties, reported properties and
 * commands (direct methods and IoT Central offline commands), with the conventions' exact shapes
 * (see shared/reference/resilience-policy.md, "Plug and Play conventions").
 */
import { HubstateError } from '../errors';

/** The DTDL primitive schemas a payload or a desired value can be checked against. */
export type PrimitiveSchema =
  | 'boolean'
  | 'integer'
  | 'long'
  | 'double'
  | 'float'
  | 'string'
  | 'date'
  | 'time'
  | 'dateTime'
  | 'duration'
  | 'object';

/** A check of an incoming value: a DTDL primitive, or a function returning why it is wrong. */
export type ValueCheck = PrimitiveSchema | ((value: unknown) => string | undefined);

// ---------------------------------------------------------------------------------------------
// Writable properties

export interface WritablePropertyOptions {
  /** Plug and Play component: the property lives in `{ "<component>": { "__t": "c", ... } }`. */
  component?: string;
  /** Checked before the handler runs; a wrong value is acknowledged with 400 and never applied. */
  schema?: ValueCheck;
  /**
   * The device's own value, reported once with `ac` 203 and `av` 0 when the twin has neither a
   * desired value nor an acknowledgement for this property.
   */
  default?: unknown;
}

export interface WritablePropertyContext {
  name: string;
  component?: string;
  /** The desired `$version` being answered (`av` of the acknowledgement). */
  version: number;
  /**
   * Aborted when the handler has not settled within `propertyHandlerTimeoutMs` (it was then
   * acknowledged 500; what it does afterwards is ignored).
   */
  signal: AbortSignal;
  /**
   * Acknowledge now with 202 ("accepted, in progress"); the final acknowledgement (200, 400 or
   * 500) follows when the handler settles.
   */
  inProgress(description?: string): void;
}

/** What a handler may return: nothing (the desired value was applied as is), or the value applied. */
export type WritablePropertyResult = void | undefined | { value?: unknown; description?: string };

export type WritablePropertyHandler = (
  value: unknown,
  context: WritablePropertyContext,
) => WritablePropertyResult | Promise<WritablePropertyResult>;

/**
 * Thrown by a writable-property handler to refuse a value: acknowledged with 400, the reported
 * `value` staying the actual one. Any other error is acknowledged with 500.
 */
export class PropertyRejectedError extends HubstateError {}

// ---------------------------------------------------------------------------------------------
// Reported properties

export interface ReportOptions {
  /** Plug and Play component: the patch goes inside `{ "<component>": { "__t": "c", ... } }`. */
  component?: string;
}

/** A reported-properties patch the hub could never take (not JSON, over 32 KB, bad names). */
export class PropertiesRejectedError extends HubstateError {
  constructor(
    readonly reason: 'invalid' | 'too-large' | 'stopped',
    detail: string,
  ) {
    super(`reported properties rejected (${reason}): ${detail}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Commands

export interface CommandOptions {
  /** Plug and Play component: the command is invoked as `<component>*<name>`. */
  component?: string;
  /** Checked before the handler runs; a wrong payload gets a 400 response. */
  schema?: ValueCheck;
}

export interface CommandRequest {
  /** The command name, without the component. */
  name: string;
  component?: string;
  /** The request payload, parsed from JSON (`undefined` when there was none). */
  payload: unknown;
  /** True for an IoT Central offline command (a C2D message with `method-name`): nobody waits for a response. */
  offline: boolean;
  /** Direct method request id, or the C2D message id of an offline command. */
  requestId?: string;
  /** Aborted when the response deadline passes (the caller has been answered 504). */
  signal: AbortSignal;
}

/** What a command handler returns: nothing (200, no payload) or a status and a payload. */
export type CommandResult = void | undefined | { status?: number; payload?: unknown };

export type CommandHandler = (request: CommandRequest) => CommandResult | Promise<CommandResult>;

/** Thrown by a command handler to answer with a given status (e.g. 400) and message. */
export class CommandError extends HubstateError {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}
