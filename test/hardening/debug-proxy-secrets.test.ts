/**
 * DEBUG=https-proxy-agent traces the proxy's URL (`Creating new HttpsProxyAgent instance: …`):
 * the guarded `debug` output redacts a URL's user:password@ like the SAS tokens.
 */
import { createRequire } from 'node:module';
import { debugModules, redactSecrets } from '../../src/logger';

const SECRET = 'dbg-pr0xy-secret';

test('redactSecrets removes user:password@ from URLs', () => {
  expect(redactSecrets(`proxy http://someone:${SECRET}@proxy.example:3128 ok`)).toBe('proxy http://[redacted]@proxy.example:3128 ok');
  expect(redactSecrets('wss://localhost:443/$iothub/websocket')).toBe('wss://localhost:443/$iothub/websocket');
});

test("the debug module https-proxy-agent traces with is one of the guarded copies, and its output is redacted", () => {
  const path = createRequire(require.resolve('https-proxy-agent')).resolve('debug');
  const guarded = debugModules();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require(path) as (typeof guarded)[number] & ((namespace: string) => ((...args: unknown[]) => void) & { enabled: boolean; log: (...args: unknown[]) => void });
  expect(guarded).toContain(mod);
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
  expect(lines.join('')).toContain('proxy.example:3128');
  expect(lines.join('')).not.toContain(SECRET);
});
