/**
 * The soak's secret scan with the MQTT stack's own tracing on, as `DEBUG=*` turns it on: every
 * `debug` namespace of this process is enabled and what it prints (after the logger's redaction,
 * see guardDebugOutput in ../logger.ts) goes to the scanner instead of stderr. mqtt-packet traces
 * each CONNECT, password (a SAS token) included: a redaction that misses one shows up as a hit.
 */
import { debugModules, guardDebugOutput } from 'hubstate/internal';
import type { SecretScanner } from './secrets';

/** The placeholders the redaction leaves: they carry the scanner's markers but no secret. */
const REDACTED = /SharedAccessSignature \[redacted\]|sig=\[redacted\]|SharedAccessKey=\[redacted\]|\[redacted bytes\]/gi;

export interface DebugTrace {
  /** Trace lines scanned so far, and how many were mqtt-packet's writes of a CONNECT. */
  counts(): { lines: number; bytes: number; connectWrites: number };
  /** Tracing off, stderr as it was. */
  stop(): void;
}

/** Turns every debug namespace on and sends its output to `scanner` (nothing printed) until stop(). */
export function traceDebugIntoScanner(scanner: SecretScanner): DebugTrace {
  guardDebugOutput();
  const modules = debugModules();
  const previous = modules.map((debug) => debug.disable());
  const write = process.stderr.write;
  let lines = 0;
  let bytes = 0;
  let connectWrites = 0;
  process.stderr.write = function scanned(chunk: string | Uint8Array, ...rest: unknown[]): boolean {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    lines++;
    bytes += text.length;
    if (/mqtt-packet:writeToStream generate: packet\.cmd: connect\b/.test(text)) connectWrites++;
    scanner.scan(text.replace(REDACTED, '[redacted]'), 'log');
    const callback = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    if (callback) process.nextTick(callback);
    return true;
  } as typeof process.stderr.write;
  for (const debug of modules) debug.enable('*');
  return {
    counts: () => ({ lines, bytes, connectWrites }),
    stop() {
      modules.forEach((debug, i) => {
        debug.disable();
        if (previous[i]) debug.enable(previous[i]!);
      });
      process.stderr.write = write;
    },
  };
}
