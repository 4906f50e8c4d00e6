/**
 * Every place the device reaches into the Azure SDK's private fields or undocumented behaviour,
 * in one module. Each function names what it needs, says why, and the SDK version and file it was
 * pinned against (package.json pins them exactly); test/unit/sdk-internals.test.ts builds the real
 * SDK objects and fails when one of these moves. No other file under src/ or machines/ touches an
 * SDK object's private members (that test checks it too).
 */
import { MqttWs as HubMqttWs, type Mqtt as HubMqtt } from 'azure-iot-device-mqtt';
import type { MqttBase } from 'azure-iot-mqtt-base';
import { MqttWs as ProvisioningMqttWs, type Mqtt as ProvisioningMqtt } from 'azure-iot-provisioning-device-mqtt';
import type { RegistrationRequest } from 'azure-iot-provisioning-device';

/** An EventEmitter's `emit`, as the SDK objects have it. */
export type Emit = (event: string | symbol, ...args: unknown[]) => boolean;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

/**
 * The PUBACK deadlines of an MqttBase are checked every 10 s, a field with no API: a publish
 * deadline shorter than that would be noticed late. Sets it; false (the SDK's 10 s stays) when
 * the field is not where it was.
 * Pinned: azure-iot-mqtt-base 1.13.3, mqtt_base.js: `MqttBase._onTheWirePublishes`
 * (OnTheWireMessageContainer) `.timerCheckInMilliseconds`, read at each (re)arming of its timer.
 */
export function setPublishCheckInterval(base: MqttBase, intervalMs: number): boolean {
  const container = (base as unknown as { _onTheWirePublishes?: unknown })._onTheWirePublishes;
  if (!isObject(container) || typeof container.timerCheckInMilliseconds !== 'number') return false;
  container.timerCheckInMilliseconds = intervalMs;
  return true;
}

/** What `mqttClientOf` hands back: the one mqtt.js call the device needs. */
export interface MqttJsClient {
  end(force: boolean): unknown;
}

/**
 * The mqtt.js client under a hub transport, or undefined (never connected, or not where it was).
 * The SDK has no forced close and `close()` can hang on un-acked publishes: ending this client is
 * the only way to drop the socket of a discarded client.
 * Pinned: azure-iot-device-mqtt 1.16.4, mqtt.js: `Mqtt._mqtt` (its MqttBase); azure-iot-mqtt-base
 * 1.13.3, mqtt_base.js: `MqttBase._mqttClient` (set by `_connectClient`).
 */
export function mqttClientOf(transport: HubMqtt): MqttJsClient | undefined {
  const base = (transport as unknown as { _mqtt?: unknown })._mqtt;
  const client = isObject(base) ? base._mqttClient : undefined;
  return isObject(client) && typeof client.end === 'function' ? (client as unknown as MqttJsClient) : undefined;
}

/**
 * Intercepts every MQTT message of a hub transport before the SDK's own handlers (C2D, methods,
 * twin) see it: they parse it with no try/catch, so junk from the hub would be an uncaught
 * exception. `intercept` gets the topic, the payload and `deliver` (hands the message on to the
 * SDK); its return value is emit's. Returns the undo, or undefined when the transport has no
 * MqttBase where it was (then nothing is intercepted).
 * Pinned: azure-iot-device-mqtt 1.16.4, mqtt.js: `Mqtt._mqtt` (its MqttBase), whose 'message'
 * event (topic, payload) feeds `_dispatchMqttMessage` and the MqttTwinClient.
 */
export function interceptMqttMessages(
  transport: HubMqtt,
  intercept: (topic: unknown, payload: unknown, deliver: () => boolean) => boolean,
): (() => void) | undefined {
  const base = (transport as unknown as { _mqtt?: unknown })._mqtt;
  if (!isObject(base) || typeof base.emit !== 'function') return undefined;
  const mqttBase = base as unknown as { emit: Emit };
  const originalEmit = mqttBase.emit;
  mqttBase.emit = function (this: unknown, event: string | symbol, ...args: unknown[]): boolean {
    if (event !== 'message') return originalEmit.call(this, event, ...args);
    return intercept(args[0], args[1], () => originalEmit.call(this, event, ...args));
  };
  return () => {
    mqttBase.emit = originalEmit;
  };
}

/**
 * Takes every direct method request of a hub transport, whatever its name: the SDK only offers a
 * listener per known name, and an unknown command must get its 404 rather than the caller's
 * timeout. The requests do not reach the transport's own listeners. Returns the undo.
 * Pinned: azure-iot-device-mqtt 1.16.4, mqtt.js: `_onDeviceMethod` emits `method_<name>` on the
 * transport with the parsed MethodMessage (what its @private `onDeviceMethod` listens to).
 */
export function interceptMethodRequests(transport: HubMqtt, onRequest: (request: unknown) => void): () => void {
  const originalEmit = transport.emit;
  transport.emit = function (this: HubMqtt, event: string | symbol, ...args: unknown[]): boolean {
    if (typeof event === 'string' && event.startsWith('method_')) {
      onRequest(args[0]);
      return true;
    }
    return originalEmit.call(this, event, ...args);
  } as typeof transport.emit;
  return () => {
    transport.emit = originalEmit;
  };
}

/** How SharedAccessKeyAuthenticationProvider signs a token (the signature, or an error, to `callback`). */
export type SasSign = (resourceUri: string, expiry: number, callback: (error: Error | null, signature?: string) => void) => void;

/**
 * Replaces how an authentication provider signs its SAS tokens with `override(original)`: the
 * SDK computes a token's expiry from the device clock and has no option for another time source.
 * Returns false, changing nothing, for a provider that signs nothing (X.509) or whose signing
 * method is not where it was.
 * Pinned: azure-iot-device 1.18.4, sak_authentication_provider.js:
 * `SharedAccessKeyAuthenticationProvider._sign(resourceUri, expiry, callback)` (protected), called
 * by `_renewToken` with the expiry (epoch seconds) it also keeps to schedule the next renewal.
 */
export function overrideSasSigning(provider: unknown, override: (original: SasSign) => SasSign): boolean {
  if (!isObject(provider) || typeof provider._sign !== 'function') return false;
  const original = (provider._sign as SasSign).bind(provider);
  provider._sign = override(original);
  return true;
}

/** A machina state machine's `handle`: an input, with its arguments, to the current state. */
export type FsmHandle = (event: string, ...args: unknown[]) => void;

/**
 * The state machine input of a provisioning transport, bound, or undefined when it is not where
 * it was. The transport answers an MqttBase 'error' with `_fsm.handle('disconnect', err)` and no
 * callback, which throws from an event handler; the workaround makes the same call with one.
 * Pinned: azure-iot-provisioning-device-mqtt 1.8.1, mqtt.js: `Mqtt._fsm` (machina Fsm), its
 * `disconnect` input `(err, callback)` and the constructor's `errorHandler`.
 */
export function provisioningFsmHandle(transport: ProvisioningMqtt): FsmHandle | undefined {
  const fsm = (transport as unknown as { _fsm?: unknown })._fsm;
  if (!isObject(fsm) || typeof fsm.handle !== 'function') return undefined;
  return (fsm.handle as FsmHandle).bind(fsm);
}

/**
 * The hub's MQTT-over-WebSockets transport with its URI from `uriOf(host)` (the SDK always says
 * port 443; a host that names its own port must keep it). No option sets it.
 * Pinned: azure-iot-device-mqtt 1.16.4, mqtt_ws.js: `MqttWs._getBaseTransportConfig(credentials)`
 * (protected) sets `uri` from `credentials.gatewayHostName || credentials.host`.
 */
class HubWebSocketTransport extends HubMqttWs {
  constructor(
    authenticationProvider: ConstructorParameters<typeof HubMqttWs>[0],
    base: MqttBase,
    private readonly uriOf: (host: string) => string,
  ) {
    super(authenticationProvider, base);
  }

  protected override _getBaseTransportConfig(credentials: Parameters<HubMqttWs['_getBaseTransportConfig']>[0]) {
    const config = super._getBaseTransportConfig(credentials);
    config.uri = this.uriOf(credentials.gatewayHostName || credentials.host);
    return config;
  }
}

export function hubWebSocketTransport(authenticationProvider: ConstructorParameters<typeof HubMqttWs>[0], base: MqttBase, uriOf: (host: string) => string): HubMqtt {
  return new HubWebSocketTransport(authenticationProvider, base, uriOf);
}

/**
 * The provisioning MQTT-over-WebSockets transport with its URI from `uriOf(provisioningHost)`
 * (same reason as {@link hubWebSocketTransport}).
 * Pinned: azure-iot-provisioning-device-mqtt 1.8.1, mqtt_ws.js: `MqttWs._getConnectionUri(request)`
 * (protected), read by `Mqtt._connect`.
 */
class ProvisioningWebSocketTransport extends ProvisioningMqttWs {
  constructor(
    base: MqttBase,
    private readonly uriOf: (host: string) => string,
  ) {
    super(base);
  }

  protected override _getConnectionUri(request: RegistrationRequest): string {
    return this.uriOf(request.provisioningHost);
  }
}

export function provisioningWebSocketTransport(base: MqttBase, uriOf: (host: string) => string): ProvisioningMqtt {
  return new ProvisioningWebSocketTransport(base, uriOf);
}
