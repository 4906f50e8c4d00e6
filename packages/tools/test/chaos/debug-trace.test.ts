/**
 * The soak's DEBUG=* mode: every namespace on, its output scanned (not printed), the logger's
 * redaction in between; a secret that reaches stderr some other way is still a hit.
 */
import { traceDebugIntoScanner } from '../../src/chaos/debug-trace';
import { SecretScanner } from '../../src/chaos/secrets';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const createDebug = require('debug') as ((namespace: string) => (...args: unknown[]) => void) & { enabled(namespace: string): boolean };

const KEY = 'c2VjcmV0LWtleS1mb3ItdGhlLXRyYWNlLXRlc3QtMDEyMzQ1Njc4OQ==';

test('a SAS token traced by mqtt-packet is redacted before the scanner sees it; the CONNECT is counted', () => {
  const scanner = new SecretScanner([{ kind: 'device key', label: 'device key of d', value: KEY }]);
  const trace = traceDebugIntoScanner(scanner);
  try {
    const traceWrites = createDebug('mqtt-packet:writeToStream');
    traceWrites('generate: packet.cmd: %s', 'connect');
    traceWrites('writeString: %s', 'SharedAccessSignature sr=hub%2Fdevices%2Fd&sig=abcdef%3D&se=1');
    traceWrites('connect: packet: %o', { password: Buffer.from('SharedAccessSignature sr=x&sig=y') });
  } finally {
    trace.stop();
  }
  expect(trace.counts()).toMatchObject({ lines: 3, connectWrites: 1 });
  expect(scanner.report().total).toBe(0);
  expect(createDebug.enabled('mqtt-packet:writeToStream')).toBe(false); // tracing off again
});

test('anything else on stderr while tracing is scanned too: an unredacted key or signature is a hit', () => {
  const scanner = new SecretScanner([{ kind: 'device key', label: 'device key of d', value: KEY }]);
  const trace = traceDebugIntoScanner(scanner);
  try {
    process.stderr.write(`key ${KEY}\n`);
    process.stderr.write('token sig=abcdef\n');
  } finally {
    trace.stop();
  }
  const report = scanner.report();
  expect(report.hits['device key']).toBe(1);
  expect(report.total).toBeGreaterThanOrEqual(2);
});
