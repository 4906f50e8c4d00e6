/**
 * One TLS context per trusted CA for every connection this process makes to DPS and the hubs.
 *
 * Node builds a new SecureContext (an OpenSSL SSL_CTX with its own parsed copy of the CA) for
 * each `tls.connect` that is not handed one, and frees it only when the GC collects the socket
 * (nodejs/node#66002). The SDK hands mqtt.js a `ca` string, so every connection of every device,
 * and every reconnect of a herd, pays an SSL_CTX: memory per connected device and CPU per
 * handshake. Here all connections with the same CA share one context.
 *
 * Verification is unchanged: the shared context carries the same CA (or the system roots when
 * none is given), mqtt.js still sets `rejectUnauthorized` and the server name, and `tls.connect`
 * still checks the chain and the host name for each connection.
 */
import { createRequire } from 'node:module';
import { createSecureContext, type SecureContext } from 'node:tls';

/** What MqttBase calls to open a connection: mqtt.js's `connect`. */
export interface MqttProvider {
  connect(uri: string, options: Record<string, unknown>): unknown;
}

const SYSTEM_ROOTS = '';
const contexts = new Map<string, SecureContext>();

/** The process-wide context for `ca` (PEM), or for the system roots when `ca` is undefined. */
export function sharedSecureContext(ca: string | undefined): SecureContext {
  const key = ca ?? SYSTEM_ROOTS;
  let context = contexts.get(key);
  if (!context) {
    context = createSecureContext(ca === undefined ? {} : { ca });
    contexts.set(key, context);
  }
  return context;
}

/** The mqtt.js the SDK itself would load (the one azure-iot-mqtt-base depends on). */
export function sdkMqtt(): MqttProvider {
  const fromMqttBase = createRequire(require.resolve('azure-iot-mqtt-base'));
  return fromMqttBase('mqtt') as MqttProvider;
}

let provider: MqttProvider | undefined;

/**
 * An mqtt.js provider for `new MqttBase(provider)`: the SDK's own mqtt.js, with the shared
 * context in place of a per-connection `ca`. Connections that bring a client certificate (it
 * belongs to one device) or a CA that is not one PEM string keep their own context.
 */
export function sharedTlsMqttProvider(): MqttProvider {
  if (provider) return provider;
  const mqtt = sdkMqtt();
  provider = {
    connect(uri, options) {
      const { ca, ...rest } = options;
      const own = options.cert !== undefined || options.key !== undefined || options.secureContext !== undefined || (ca !== undefined && typeof ca !== 'string');
      if (own) return mqtt.connect(uri, options);
      return mqtt.connect(uri, { ...rest, secureContext: sharedSecureContext(ca as string | undefined) });
    },
  };
  return provider;
}
