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

/** A telemetry message the hub can never accept (over 256 KiB, not serialisable, ...). */
export class MessageRejectedError extends HubstateError {
  constructor(
    readonly reason: 'too-large' | 'invalid-body' | 'outbox-full' | 'stopped',
    detail: string,
  ) {
    super(`telemetry rejected (${reason}): ${detail}`);
  }
}

/**
 * A durable store (the SQLite outbox) cannot be used: corrupt or not ours, locked by another
 * process, or an I/O failure. Names the file; hubstate never deletes or replaces it by itself.
 */
export class StorageError extends HubstateError {
  constructor(
    readonly reason: 'corrupt' | 'incompatible' | 'locked' | 'io',
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
