/** The logging surface the emulator needs; a pino.Logger satisfies it. */
export interface EmulatorLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

const noop = (): void => undefined;

/** A logger that discards everything (the default). */
export const silentLogger: EmulatorLogger = { debug: noop, info: noop, warn: noop, error: noop };

/** Adds fixed fields to every record without relying on `child()`. */
export function withFields(logger: EmulatorLogger, fields: Record<string, unknown>): EmulatorLogger {
  if (logger === silentLogger) return logger;
  return {
    debug: (o, m) => logger.debug({ ...fields, ...o }, m),
    info: (o, m) => logger.info({ ...fields, ...o }, m),
    warn: (o, m) => logger.warn({ ...fields, ...o }, m),
    error: (o, m) => logger.error({ ...fields, ...o }, m),
  };
}
