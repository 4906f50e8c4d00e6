/**
 * DEBUG=https-proxy-agent traces the proxy's URL (`Creating new HttpsProxyAgent instance: …`):
 * the guarded `debug` output redacts a URL's user:password@ like the SAS tokens.
 */
import { createRequire } from 'node:module';
import pino from 'pino';
import { createDevice } from '../../src/device';
import { debugModules, redactSecrets } from '../../src/logger';

const SECRET = 'dbg-pr0xy-secret';

test('redactSecrets removes user:password@ from URLs', () => {
  expect(redactSecrets(`proxy http://someone:${SECRET}@proxy.example:3128 ok`)).toBe('proxy http://[redacted]@proxy.example:3128 ok');
  expect(redactSecrets('wss://localhost:443/$iothub/websocket')).toBe('wss://localhost:443/$iothub/websocket');
});

type DebugModule = ReturnType<typeof debugModules>[number] & ((namespace: string) => ((...args: unknown[]) => void) & { enabled: boolean });

/** What the `debug` module prints for a proxy URL with credentials (stderr captured). */
function traceProxyUrl(mod: DebugModule): string {
  const lines: string[] = [];
  const original = process.stderr.write.bind(process.stderr);
  const trace = mod('https-proxy-agent-test');
  trace.enabled = true;
  (process.stderr as unknown as { write: (s: string) => boolean }).write = (s: string) => (lines.push(String(s)), true);
  try {
    trace('Creating new HttpsProxyAgent instance: %o', `http://someone:${SECRET}@proxy.example:3128/`);
  } finally {
    (process.stderr as unknown as { write: typeof original }).write = original;
  }
  return lines.join('');
}

test("the debug module https-proxy-agent traces with is guarded once a device is created (not when the library loads), and its output is redacted", () => {
  const path = createRequire(require.resolve('https-proxy-agent')).resolve('debug');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require(path) as DebugModule;
  expect(traceProxyUrl(mod)).toContain(SECRET);
  createDevice({ idScope: '0ne00000000', registrationId: 'debug-guard', groupKey: Buffer.alloc(32, 1).toString('base64'), logger: pino({ level: 'silent' }) });
  expect(debugModules()).toContain(mod);
  const output = traceProxyUrl(mod);
  expect(output).toContain('proxy.example:3128');
  expect(output).not.toContain(SECRET);
});
