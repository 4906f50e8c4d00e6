/** Typed errors that hubstate raises to its users. Messages never contain keys or tokens. */

/** Base class so applications can catch everything hubstate raises with one `instanceof`. */
export class HubstateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** Invalid options: names the field and says what was expected. */
export class ConfigError extends HubstateError {
  constructor(
    readonly field: string,
    readonly expected: string,
  ) {
    super(`invalid option '${field}': expected ${expected}`);
  }
}

/**
 * A telemetry message the hub can never accept, refused at `sendTelemetry`:
 * - `too-large`: over IoT Hub's 256 KB, counting the body, the properties and the component;
 * - `properties-too-large`: the URL-encoded properties and component exceed MQTT's topic limit;
 * - `invalid-body`: not a JSON object; `invalid-component`: not a DTDL name;
 * - `invalid-property`: not a string, a reserved name (`$.`, `iothub-`, `dt-subject`), or not
 *   well-formed Unicode; `invalid-options`: the options are not an object of known keys;
 * - `outbox-full`, `stopped`: not a fault of the message.
 */
export class MessageRejectedError extends HubstateError {
  constructor(
    readonly reason:
      | 'too-large'
      | 'properties-too-large'
      | 'invalid-body'
      | 'invalid-component'
      | 'invalid-property'
      | 'invalid-options'
      | 'outbox-full'
      | 'stopped',
    detail: string,
  ) {
    super(`telemetry rejected (${reason}): ${detail}`);
  }
}

/**
 * A durable store (the SQLite outbox) cannot be used: corrupt or not ours, locked by another
 * process, an I/O failure, or `unsafe`: a symlink, not a regular file, or owned by someone else
 * (never followed, never opened). Names the file; hubstate never deletes or replaces it by itself.
 */
export class StorageError extends HubstateError {
  constructor(
    readonly reason: 'corrupt' | 'incompatible' | 'locked' | 'io' | 'unsafe',
    readonly path: string,
    detail: string,
    cause?: unknown,
  ) {
    super(`storage '${path}' (${reason}): ${detail}`);
    if (cause !== undefined) this.cause = cause;
  }
}

/**
 * A service (DPS or the hub) sent something malformed: junk JSON, missing fields, an unknown
 * status. The SDK would crash on it; we fail the operation with this instead (class transient).
 */
export class ServiceProtocolError extends HubstateError {
  constructor(
    readonly service: 'dps' | 'hub',
    detail: string,
  ) {
    super(`${service === 'dps' ? 'DPS' : 'the hub'} sent an invalid response: ${detail}`);
  }
}
