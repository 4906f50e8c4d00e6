/**
 * `transport` and `proxy` (issue 14): every bad value is a ConfigError naming the field (never a
 * TypeError, never silently accepted), a proxy's credentials never appear in an error or a log
 * line, the environment's HTTPS_PROXY / NO_PROXY apply only where a proxy can be used, and the
 * WebSocket URI keeps the SDK's port 443 unless the host names its own.
 */
import pino from 'pino';
import { ConfigError } from '../../src/errors';
import { bypassesProxy, NetworkPath, redactProxyUrl, resolveNetworkOptions, webSocketUri, type ProxyEnvironment } from '../../src/actors/transport';
import { redactSecrets } from '../../src/policy/classify';
import { resolveOptions, type DeviceOptions } from '../../src/options';

const deviceKey = Buffer.alloc(32, 9).toString('base64');
const valid: DeviceOptions = { idScope: '0ne00ABC123', registrationId: 'network-1', deviceKey };
const SECRET = 'pr0xy-pa55word';

function configErrorOf(run: () => unknown): ConfigError {
  let thrown: unknown;
  try {
    run();
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(ConfigError);
  expect((thrown as Error).message).not.toContain(SECRET);
  return thrown as ConfigError;
}

describe('transport', () => {
  test.each([['websocket'], ['MQTT'], ['amqp'], [''], [1], [true], [null], [{}]])('%j is refused', (transport) => {
    const error = configErrorOf(() => resolveOptions({ ...valid, transport: transport as never }));
    expect(error.field).toBe('transport');
    expect(error.expected).toBe("'mqtt', 'mqtt-ws' or 'auto'");
  });

  test.each(['mqtt', 'mqtt-ws', 'auto'] as const)('%s is accepted; the default is mqtt', (transport) => {
    expect(resolveOptions({ ...valid, transport }).network.transport).toBe(transport);
    expect(resolveNetworkOptions(undefined, undefined, {}).transport).toBe('mqtt');
  });

  test('a typo of the key names the nearest one', () => {
    const error = configErrorOf(() => resolveOptions({ ...valid, transprt: 'mqtt-ws' } as DeviceOptions));
    expect(error.field).toBe('transprt');
    expect(error.expected).toContain('transport');
  });
});

describe('proxy', () => {
  test.each([
    ['not a URL', 'proxy.example:3128'],
    ['a SOCKS proxy', 'socks5://proxy.example:1080'],
    ['a path', 'http://proxy.example:3128/path'],
    ['a query', 'http://proxy.example:3128/?a=1'],
    ['empty', ''],
    ['a number', 3128],
    ['credentials and a bad scheme', `ftp://user:${SECRET}@proxy.example:21`],
  ])('%s is refused', (_what, proxy) => {
    const error = configErrorOf(() => resolveOptions({ ...valid, transport: 'mqtt-ws', proxy: proxy as never }));
    expect(error.field).toBe('proxy');
  });

  test("with transport 'mqtt' (the default) it is a ConfigError: MQTT cannot go through an HTTP proxy", () => {
    for (const transport of [undefined, 'mqtt'] as const) {
      const error = configErrorOf(() => resolveOptions({ ...valid, transport, proxy: `http://user:${SECRET}@proxy.example:3128` }));
      expect(error.field).toBe('proxy');
      expect(error.expected).toContain("'mqtt-ws' or 'auto'");
    }
  });

  test.each(['mqtt-ws', 'auto'] as const)('accepted with %s, credentials included', (transport) => {
    const { network } = resolveOptions({ ...valid, transport, proxy: `http://user:${SECRET}@proxy.example:3128` });
    expect(network.proxy?.host).toBe('proxy.example:3128');
    expect(network.proxy?.password).toBe(SECRET);
  });
});

describe('HTTPS_PROXY and NO_PROXY', () => {
  const env: ProxyEnvironment = { HTTPS_PROXY: 'http://env-proxy:8080', NO_PROXY: 'localhost, .internal.example,10.0.0.1:443' };

  test("apply to 'mqtt-ws' and 'auto', not to 'mqtt' (which cannot use them)", () => {
    expect(resolveNetworkOptions('mqtt-ws', undefined, env).proxy?.host).toBe('env-proxy:8080');
    expect(resolveNetworkOptions('auto', undefined, { https_proxy: 'http://lower:1' }).proxy?.host).toBe('lower:1');
    expect(resolveNetworkOptions('mqtt', undefined, env).proxy).toBeUndefined();
  });

  test('the proxy option wins over the environment, and its NO_PROXY', () => {
    const resolved = resolveNetworkOptions('mqtt-ws', 'http://option-proxy:3128', env);
    expect(resolved.proxy?.host).toBe('option-proxy:3128');
    expect(resolved.noProxy).toEqual([]);
  });

  test('a bad HTTPS_PROXY is a ConfigError naming the variable', () => {
    const error = configErrorOf(() => resolveNetworkOptions('mqtt-ws', undefined, { HTTPS_PROXY: `socks://u:${SECRET}@x:1` }));
    expect(error.field).toBe('HTTPS_PROXY');
  });

  test('NO_PROXY: exact host, domain suffix, host:port, *', () => {
    const { noProxy } = resolveNetworkOptions('mqtt-ws', undefined, env);
    expect(bypassesProxy('localhost', 1234, noProxy)).toBe(true);
    expect(bypassesProxy('LOCALHOST', 1234, noProxy)).toBe(true);
    expect(bypassesProxy('hub.internal.example', 443, noProxy)).toBe(true);
    expect(bypassesProxy('internal.example', 443, noProxy)).toBe(true);
    expect(bypassesProxy('notinternal.example', 443, noProxy)).toBe(false);
    expect(bypassesProxy('10.0.0.1', 443, noProxy)).toBe(true);
    expect(bypassesProxy('10.0.0.1', 8443, noProxy)).toBe(false);
    expect(bypassesProxy('my-hub.azure-devices.net', 443, noProxy)).toBe(false);
    expect(bypassesProxy('anything', 1, ['*'])).toBe(true);
  });

  test('a NO_PROXY host gets no agent: the lookup goes direct', () => {
    const path = new NetworkPath(resolveNetworkOptions('mqtt-ws', undefined, env), pino({ level: 'silent' }));
    expect(path.httpsAgent('localhost', 443)).toBeUndefined();
    expect(path.httpsAgent('dps.example', 443)).toBeDefined();
    const direct = new NetworkPath(resolveNetworkOptions('mqtt', undefined, env), pino({ level: 'silent' }));
    expect(direct.httpsAgent('dps.example', 443)).toBeUndefined();
  });
});

describe('credentials never leave in clear', () => {
  test('redactProxyUrl hides user and password', () => {
    const url = new URL(`http://someone:${SECRET}@proxy.example:3128`);
    expect(redactProxyUrl(url)).toBe('http://[REDACTED]@proxy.example:3128');
    expect(redactProxyUrl(new URL('http://proxy.example:3128'))).toBe('http://proxy.example:3128');
  });

  test('redactSecrets removes URL credentials from any error text', () => {
    const text = `connect ECONNREFUSED while tunnelling through http://someone:${SECRET}@proxy.example:3128 to hub`;
    expect(redactSecrets(text)).not.toContain(SECRET);
    expect(redactSecrets(text)).not.toContain('someone');
    expect(redactSecrets(text)).toContain('proxy.example:3128');
  });

  test('the startup log line names the proxy without its credentials', () => {
    const lines: string[] = [];
    const logger = pino({ level: 'debug' }, { write: (line: string) => lines.push(line) });
    new NetworkPath(resolveNetworkOptions('mqtt-ws', `http://someone:${SECRET}@proxy.example:3128`, {}), logger);
    expect(lines.join('')).toContain('http://[REDACTED]@proxy.example:3128');
    expect(lines.join('')).not.toContain(SECRET);
  });
});

describe('WebSocket URI', () => {
  test("Azure hosts keep the SDK's wss://host:443/$iothub/websocket; a host with its own port keeps it", () => {
    expect(webSocketUri('my-hub.azure-devices.net')).toBe('wss://my-hub.azure-devices.net:443/$iothub/websocket');
    expect(webSocketUri('localhost:50123')).toBe('wss://localhost:50123/$iothub/websocket');
  });
});
