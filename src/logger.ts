import pino, { type Logger } from 'pino';

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

export function createLogger(options: { level?: string; destination?: pino.DestinationStream } = {}): Logger {
  return pino(
    { level: options.level ?? 'info', redact: { paths: REDACTED_PATHS, censor: '[redacted]' }, base: undefined },
    options.destination,
  );
}
