/**
 * How this device reaches DPS and its hubs: MQTT on 8883, MQTT over WebSockets on 443
 * (`wss://host/$iothub/websocket`, through an HTTP CONNECT proxy when one is configured), or
 * `auto`: MQTT first, WebSockets for the rest of the session once MQTT proved unreachable.
 * The one place the transports are chosen: provision.ts, hub.ts and lookup.ts ask a
 * {@link NetworkPath} for theirs.
 *
 * What the SDK does and what is added here:
 * - `MqttWs` (hub and DPS) always says `wss://host:443/$iothub/websocket`; a host that names its
 *   own port (`localhost:PORT`, the local cloud) keeps that port instead.
 * - mqtt.js hands `wsOptions` to `ws`, which hands them to `tls.connect` (or to the proxy agent,
 *   which does the same through the tunnel): the shared TLS context of tls.ts goes there, so the
 *   hub's certificate and name are verified end to end with the same trust list as over MQTT.
 * - the proxy agent goes in at the mqtt.js provider, not through `setOptions({ mqtt: {
 *   webSocketAgent } })`: the hub client's `setOptions` replaces the MqttBase options wholesale,
 *   and the provider is the one place both transports (and every reconnect) pass through.
 */
import type * as http from 'node:http';
import type { HttpsProxyAgent } from 'https-proxy-agent';
import { Mqtt as HubMqtt } from 'azure-iot-device-mqtt';
import type { MqttBase } from 'azure-iot-mqtt-base';
import { Mqtt as ProvisioningMqtt } from 'azure-iot-provisioning-device-mqtt';
import { ConfigError } from '../errors';
import { classify, redactSecrets } from '../policy/classify';
import { sdkMqtt, sharedSecureContext, sharedTlsMqttProvider, type MqttProvider } from './tls';
import { hubWebSocketTransport, provisioningWebSocketTransport } from './sdk-internals';
import type { PartLogger } from '../logger';

export type TransportMode = 'mqtt' | 'mqtt-ws' | 'auto';
export const TRANSPORT_MODES: readonly TransportMode[] = ['mqtt', 'mqtt-ws', 'auto'];

/** Where IoT Hub and DPS serve MQTT over WebSockets (port 443 in Azure). */
export const WEBSOCKET_PATH = '/$iothub/websocket';

/** Validated network options. `proxy` holds credentials when the URL has them: never log it, use {@link redactProxyUrl}. */
export interface NetworkOptions {
  transport: TransportMode;
  proxy?: URL;
  /** Hosts that bypass the proxy (NO_PROXY syntax: `host`, `.suffix`, `host:port`, `*`). */
  noProxy: string[];
}

/** The environment variables read when no `proxy` option is given (the usual names). */
export interface ProxyEnvironment {
  HTTPS_PROXY?: string;
  https_proxy?: string;
  NO_PROXY?: string;
  no_proxy?: string;
}

/** A proxy URL fit for logs and errors: user and password replaced. */
export function redactProxyUrl(url: URL): string {
  const auth = url.username !== '' || url.password !== '' ? '[REDACTED]@' : '';
  return `${url.protocol}//${auth}${url.host}`;
}

function parseProxyUrl(value: unknown, field: string): URL {
  const expected = "an HTTP proxy URL such as 'http://proxy.example:3128' (http or https, no path)";
  if (typeof value !== 'string' || value.length === 0 || value.length > 2048) throw new ConfigError(field, expected);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(field, expected);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '' || (url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') {
    throw new ConfigError(field, expected);
  }
  return url;
}

function noProxyList(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((entry) => entry.trim().toLowerCase())
    .filter((entry) => entry !== '');
}

/**
 * Validates `transport` and `proxy` (`false`: direct, whatever the environment says); without a `proxy` option, HTTPS_PROXY / https_proxy and
 * NO_PROXY / no_proxy apply to the WebSocket transports (plain MQTT cannot use an HTTP proxy, so
 * with `transport: 'mqtt'` the environment's proxy is not used and an explicit `proxy` is refused).
 */
export function resolveNetworkOptions(transport: unknown, proxy: unknown, env: ProxyEnvironment): NetworkOptions {
  const mode = transport === undefined ? 'mqtt' : transport;
  if (typeof mode !== 'string' || !(TRANSPORT_MODES as readonly string[]).includes(mode)) {
    throw new ConfigError('transport', "'mqtt', 'mqtt-ws' or 'auto'");
  }
  const resolved: NetworkOptions = { transport: mode as TransportMode, noProxy: noProxyList(env.NO_PROXY ?? env.no_proxy) };
  if (proxy === false) {
    // Explicitly direct: the environment's proxy is not used either.
    resolved.noProxy = [];
  } else if (proxy !== undefined) {
    const url = parseProxyUrl(proxy, 'proxy');
    if (mode === 'mqtt') throw new ConfigError('proxy', "transport 'mqtt-ws' or 'auto' with it (MQTT on 8883 cannot go through an HTTP proxy)");
    resolved.proxy = url;
    resolved.noProxy = [];
  } else if (mode !== 'mqtt') {
    const fromEnv = env.HTTPS_PROXY ?? env.https_proxy;
    if (fromEnv !== undefined && fromEnv !== '') resolved.proxy = parseProxyUrl(fromEnv, env.HTTPS_PROXY !== undefined ? 'HTTPS_PROXY' : 'https_proxy');
  }
  return resolved;
}

/** `host` or `host:port` split, the port defaulting to `defaultPort`. */
export function splitHostPort(host: string, defaultPort: number): { hostname: string; port: number } {
  const colon = host.lastIndexOf(':');
  if (colon > 0 && /^\d+$/.test(host.slice(colon + 1))) return { hostname: host.slice(0, colon), port: Number(host.slice(colon + 1)) };
  return { hostname: host, port: defaultPort };
}

/** NO_PROXY matching as curl and most tools do it: exact host, domain suffix, optional port, `*`. */
export function bypassesProxy(hostname: string, port: number, noProxy: readonly string[]): boolean {
  const host = hostname.toLowerCase();
  return noProxy.some((entry) => {
    if (entry === '*') return true;
    const { hostname: name, port: entryPort } = splitHostPort(entry, 0);
    if (entryPort !== 0 && entryPort !== port) return false;
    const bare = name.startsWith('.') ? name.slice(1) : name;
    return host === bare || host.endsWith(`.${bare}`);
  });
}

/** `wss://host:443/$iothub/websocket` as the SDK builds it, or with the host's own port when it names one. */
export function webSocketUri(host: string): string {
  return /:\d+$/.test(host) ? `wss://${host}${WEBSOCKET_PATH}` : `wss://${host}:443${WEBSOCKET_PATH}`;
}

/** MQTT on the MQTT port could not be reached (no CONNACK ever came back): `auto` switches to WebSockets. */
export class MqttUnreachableError extends Error {
  constructor(message: string, cause: unknown) {
    super(message, { cause });
    this.name = 'MqttUnreachableError';
  }
}

/**
 * The proxy's own host name did not resolve. Through a tunnel the device never resolves the hub's
 * name, so this is not "the hub is gone" (which would put the assignment in doubt): it is the
 * network, retried as such.
 */
export class ProxyUnreachableError extends Error {
  // No `cause`: the classifier would find the DNS error in it and read it as the hub's name.
  constructor(message: string) {
    super(message);
    this.name = 'ProxyUnreachableError';
  }
}

/** The messages of an error and of what it wraps (the SDK keeps the socket's error as transportError). */
function messagesOf(error: unknown, depth = 0): string[] {
  if (typeof error !== 'object' || error === null || depth > 4) return [];
  const { message, transportError, cause } = error as { message?: unknown; transportError?: unknown; cause?: unknown };
  return [typeof message === 'string' ? message : '', ...messagesOf(transportError, depth + 1), ...messagesOf(cause, depth + 1)];
}

/** What a device reports when `auto` leaves MQTT for WebSockets (event `transport`). */
export interface TransportFallback {
  from: 'mqtt';
  to: 'mqtt-ws';
  /** The endpoint that could not be reached over MQTT (`host` or `host:port`). */
  endpoint: string;
  /** The error that showed it, secret-free (name: message). */
  reason: string;
}

interface MqttClientEvents {
  on(event: 'packetreceive', listener: (packet: { cmd?: string }) => void): unknown;
}

/** One raw MQTT connection of `auto` mode, watched for its CONNACK. */
interface RawMqttAttempt {
  endpoint: string;
  answered: boolean;
}

/**
 * The transports of ONE device. In `auto`, it remembers for the device's lifetime whether it has
 * left MQTT for WebSockets, and which endpoints' MQTT has answered (a later failure of one of
 * those is the service's, not the network's: no fallback).
 */
export class NetworkPath {
  private useWebSockets: boolean;
  /** Endpoints whose MQTT port answered (a CONNACK, accepting or refusing): reachable, never a reason to leave MQTT. Made in `auto` only. */
  private mqttAnswered: Set<string> | undefined;
  private lastRawMqtt: RawMqttAttempt | undefined;
  private proxyAgent: HttpsProxyAgent<string> | undefined;
  private readonly provider: MqttProvider;

  constructor(
    readonly options: NetworkOptions,
    private readonly logger: PartLogger,
    private readonly onFallback?: (fallback: TransportFallback) => void,
  ) {
    this.useWebSockets = options.transport === 'mqtt-ws';
    this.provider = { connect: (uri, connectOptions) => this.connect(uri, connectOptions) };
    if (options.proxy) this.logger.info({ proxy: redactProxyUrl(options.proxy), transport: options.transport }, 'MQTT over WebSockets and the DPS lookup go through an HTTP proxy');
  }

  /** True when the next connection uses MQTT over WebSockets. */
  get webSockets(): boolean {
    return this.useWebSockets;
  }

  /** The mqtt.js provider for `new MqttBase(provider)`: shared TLS context, proxy, CONNACK watch. */
  mqttProvider(): MqttProvider {
    return this.provider;
  }

  /** The hub transport over `base` for the next connection (over WebSockets: the SDK's MqttWs at {@link webSocketUri}). */
  hubTransport(authenticationProvider: ConstructorParameters<typeof HubMqtt>[0], base: MqttBase): HubMqtt {
    return this.useWebSockets ? hubWebSocketTransport(authenticationProvider, base, webSocketUri) : new HubMqtt(authenticationProvider, base);
  }

  /** The DPS transport over `base` for the next registration (over WebSockets: at {@link webSocketUri}). */
  provisioningTransport(base: MqttBase): ProvisioningMqtt {
    return this.useWebSockets ? provisioningWebSocketTransport(base, webSocketUri) : new ProvisioningMqtt(base);
  }

  /** The agent of an HTTPS request to `hostname:port` (the DPS lookup): the proxy's, or none (direct). */
  httpsAgent(hostname: string, port: number): http.Agent | undefined {
    if (this.options.transport === 'mqtt') return undefined;
    return this.proxyAgentFor(hostname, port);
  }

  private proxyAgentFor(hostname: string, port: number): HttpsProxyAgent<string> | undefined {
    const { proxy, noProxy } = this.options;
    if (!proxy || bypassesProxy(hostname, port, noProxy)) return undefined;
    // keepAlive off: one tunnel per connection, closed with it (like a direct connection).
    // Loaded with the first proxied connection: a device without a proxy never needs it.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    this.proxyAgent ??= new (require('https-proxy-agent') as typeof import('https-proxy-agent')).HttpsProxyAgent(proxy.href, { keepAlive: false });
    return this.proxyAgent;
  }

  private connect(uri: string, options: Record<string, unknown>): unknown {
    if (uri.startsWith('wss://')) return this.connectWebSocket(uri, options);
    const client = sharedTlsMqttProvider().connect(uri, options);
    const endpoint = uri.replace(/^mqtts?:\/\//, '');
    if (this.options.transport === 'auto' && !this.mqttAnswered?.has(endpoint)) {
      const attempt: RawMqttAttempt = { endpoint, answered: false };
      this.lastRawMqtt = attempt;
      (client as MqttClientEvents).on('packetreceive', (packet) => {
        if (packet.cmd !== 'connack') return;
        attempt.answered = true;
        (this.mqttAnswered ??= new Set()).add(endpoint);
      });
    }
    return client;
  }

  /** mqtt.js gives `wsOptions` to `ws`, which gives them to tls.connect (or to the proxy agent's tunnel). */
  private connectWebSocket(uri: string, options: Record<string, unknown>): unknown {
    const { hostname, port } = splitHostPort(new URL(uri).host, 443);
    const agent = this.proxyAgentFor(hostname, port);
    const { ca, ...rest } = options;
    const wsOptions: Record<string, unknown> = { ...(rest.wsOptions as Record<string, unknown> | undefined) };
    // Same rule as sharedTlsMqttProvider: a client certificate or an odd CA keeps its own context.
    const own = options.cert !== undefined || options.key !== undefined || options.secureContext !== undefined || (ca !== undefined && typeof ca !== 'string');
    if (!own) wsOptions.secureContext = sharedSecureContext(ca as string | undefined);
    if (agent) wsOptions.agent = agent;
    return sdkMqtt().connect(uri, own ? { ...options, wsOptions } : { ...rest, wsOptions });
  }

  /**
   * Called with a failed DPS registration's or hub connection's error before it is classified.
   * In `auto`, when the last MQTT connection never got a CONNACK (refused, reset, timed out: the
   * network, not the service) from an endpoint whose MQTT never answered, the device switches to
   * WebSockets from now on, says so (log line and `transport` event), and the failure becomes a
   * MqttUnreachableError (its own classification row) so the transition shows why.
   */
  explainConnectFailure(error: unknown, phase: 'dps' | 'hub-connect'): unknown {
    const proxyHost = this.options.proxy?.hostname;
    if (proxyHost && this.useWebSockets && messagesOf(error).some((m) => /\b(?:ENOTFOUND|EAI_AGAIN)\b/.test(m) && m.includes(proxyHost))) {
      return new ProxyUnreachableError(`the proxy's host name ${proxyHost} did not resolve`);
    }
    const attempt = this.lastRawMqtt;
    this.lastRawMqtt = undefined;
    if (this.options.transport !== 'auto' || this.useWebSockets || !attempt || attempt.answered || this.mqttAnswered?.has(attempt.endpoint)) return error;
    // Only a port that refused, reset or stayed silent looks like a blocked 8883. No DNS answer, no
    // route, no file descriptors or a TLS verdict would fail over WebSockets just the same, and
    // switching for them would keep a device booted before its network on WebSockets for good.
    if (!BLOCKED_PORT_RULES.has(classify(error, phase).rule)) return error;
    this.useWebSockets = true;
    const cause = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    const fallback: TransportFallback = { from: 'mqtt', to: 'mqtt-ws', endpoint: attempt.endpoint, reason: redactSecrets(cause).slice(0, 300) };
    this.logger.warn(
      { ...fallback, proxy: this.options.proxy ? redactProxyUrl(this.options.proxy) : null },
      'MQTT could not be reached (no CONNACK); MQTT over WebSockets from now on',
    );
    this.onFallback?.(fallback);
    return new MqttUnreachableError(`MQTT on ${attempt.endpoint} could not be reached (${fallback.reason}); switching to MQTT over WebSockets`, error);
  }
}

/** Classification rules of a connection that a firewall blocking the MQTT port produces. */
const BLOCKED_PORT_RULES: ReadonlySet<string> = new Set(['socket-refused', 'socket-reset', 'socket-timeout', 'timeout', 'first-connection-failed', 'connection-lost']);

/** The path of code that builds actors without one: plain MQTT, no proxy. */
export function directMqttPath(logger: PartLogger): NetworkPath {
  return new NetworkPath({ transport: 'mqtt', noProxy: [] }, logger);
}
