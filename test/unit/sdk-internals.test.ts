/**
 * The SDK internals the device relies on (src/actors/sdk-internals.ts), checked on the real SDK
 * objects of the pinned versions: each test fails when the field or behaviour it pins moves. No
 * network: the mqtt.js client under MqttBase is a fake that answers CONNECT and withholds PUBACKs.
 * Last, the sources: no file under src/ or machines/ but sdk-internals.ts touches SDK privates.
 */
import { EventEmitter } from 'node:events';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { SharedAccessSignature } from 'azure-iot-common';
import { SharedAccessKeyAuthenticationProvider, X509AuthenticationProvider } from 'azure-iot-device';
import { Mqtt as HubMqtt, MqttWs as HubMqttWs } from 'azure-iot-device-mqtt';
import { MqttBase, type MqttBaseTransportConfig } from 'azure-iot-mqtt-base';
import { Mqtt as ProvisioningMqtt, MqttWs as ProvisioningMqttWs } from 'azure-iot-provisioning-device-mqtt';
import {
  hubWebSocketTransport,
  interceptMethodRequests,
  interceptMqttMessages,
  mqttClientOf,
  overrideSasSigning,
  provisioningFsmHandle,
  provisioningWebSocketTransport,
  setPublishCheckInterval,
} from '../../src/actors/sdk-internals';

const DEVICE_KEY = Buffer.from('0123456789abcdef0123456789abcdef').toString('base64');
const CONNECTION_STRING = `HostName=hub.example;DeviceId=device-1;SharedAccessKey=${DEVICE_KEY}`;

/** The mqtt.js client MqttBase would get: answers CONNECT, never acknowledges a publish. */
class FakeMqttJsClient extends EventEmitter {
  readonly endedWith: boolean[] = [];
  constructor(readonly uri: string) {
    super();
  }
  publish(_topic: string, _payload: unknown, _options: unknown, _done: (error?: Error) => void): void {}
  subscribe(_topic: string, _options: unknown, done: (error: Error | null, granted: unknown[]) => void): void {
    done(null, []);
  }
  end(force: boolean, done?: () => void): void {
    this.endedWith.push(force);
    done?.();
  }
}

function fakeMqttProvider() {
  const clients: FakeMqttJsClient[] = [];
  const provider = {
    connect(uri: string): FakeMqttJsClient {
      const client = new FakeMqttJsClient(uri);
      clients.push(client);
      process.nextTick(() => client.emit('connect', { cmd: 'connack', returnCode: 0 }));
      return client;
    },
  };
  return { provider, clients };
}

/** An MqttBase that records what a transport asks it to connect to, and refuses. */
class RecordingMqttBase extends MqttBase {
  readonly configs: MqttBaseTransportConfig[] = [];
  override connect(config: MqttBaseTransportConfig, done: (error?: Error) => void): void {
    this.configs.push(config);
    done(new Error('recorded, not connected'));
  }
}

const providers: SharedAccessKeyAuthenticationProvider[] = [];
function sasProvider(connectionString = CONNECTION_STRING): SharedAccessKeyAuthenticationProvider {
  const provider = SharedAccessKeyAuthenticationProvider.fromConnectionString(connectionString);
  providers.push(provider);
  return provider;
}
afterEach(() => {
  for (const provider of providers.splice(0)) provider.stop(); // the renewal timer
  jest.restoreAllMocks();
  jest.useRealTimers();
});

/** A hub transport connected (CONNACK) over the fake mqtt.js client. */
async function connectedHubTransport() {
  const { provider, clients } = fakeMqttProvider();
  const transport = new HubMqtt(sasProvider(), new MqttBase(provider));
  await new Promise<void>((resolve, reject) => transport.connect((error?: Error) => (error ? reject(error) : resolve())));
  return { transport, client: clients[0]! };
}

/** MqttBase hands mqtt.js messages on in a later tick. */
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

function connect(base: MqttBase): Promise<void> {
  const config: MqttBaseTransportConfig = { uri: 'mqtts://hub.example', clientId: 'device-1', username: 'hub.example/device-1', sharedAccessSignature: 'sas' };
  return new Promise((resolve, reject) => base.connect(config, (error?: Error) => (error ? reject(error) : resolve())));
}

describe('setPublishCheckInterval (azure-iot-mqtt-base 1.13.3)', () => {
  const START = 1_700_000_000_000;

  /** When a publish whose PUBACK never comes fails, with a 1 s deadline and the given check interval. */
  async function publishFailsWithin(checkIntervalMs: number | undefined, waitMs: number): Promise<Error | undefined> {
    jest.useFakeTimers({ now: START, doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
    const base = new MqttBase(fakeMqttProvider().provider);
    base.setTimeout(1);
    if (checkIntervalMs !== undefined) expect(setPublishCheckInterval(base, checkIntervalMs)).toBe(true);
    await connect(base);
    let failure: Error | undefined;
    base.publish('devices/device-1/messages/events/', 'x', { qos: 1 }, (error?: Error) => (failure = error));
    jest.advanceTimersByTime(waitMs);
    return failure;
  }

  test('a withheld PUBACK is failed at the interval set, not at the SDK 10 s check', async () => {
    expect((await publishFailsWithin(500, 2500))?.name).toBe('TimeoutError');
  });

  test('without it, the same publish is still waiting after 2.5 s (the SDK checks every 10 s)', async () => {
    expect(await publishFailsWithin(undefined, 2500)).toBeUndefined();
  });

  test('an MqttBase without the field: false, nothing set, nothing thrown', () => {
    expect(setPublishCheckInterval({} as MqttBase, 500)).toBe(false);
    const moved = { _onTheWirePublishes: { checkEvery: 10_000 } };
    expect(setPublishCheckInterval(moved as unknown as MqttBase, 500)).toBe(false);
    expect(moved._onTheWirePublishes).toEqual({ checkEvery: 10_000 });
  });
});

describe('mqttClientOf (azure-iot-device-mqtt 1.16.4, azure-iot-mqtt-base 1.13.3)', () => {
  test('finds the mqtt.js client under a connected hub transport, and a forced end reaches it', async () => {
    const { transport, client } = await connectedHubTransport();
    expect(mqttClientOf(transport)).toBe(client);
    mqttClientOf(transport)!.end(true);
    expect(client.endedWith).toEqual([true]);
  });

  test('undefined before the transport connected, and for a transport without the field', () => {
    expect(mqttClientOf(new HubMqtt(sasProvider(), new MqttBase(fakeMqttProvider().provider)))).toBeUndefined();
    expect(mqttClientOf({} as HubMqtt)).toBeUndefined();
    expect(mqttClientOf({ _mqtt: { _mqttClient: {} } } as unknown as HubMqtt)).toBeUndefined();
  });
});

describe('interceptMqttMessages (azure-iot-device-mqtt 1.16.4)', () => {
  const C2D_TOPIC = 'devices/device-1/messages/devicebound/%24.mid=m-1&method-name=reboot';

  test("sees each MQTT message before the SDK's handlers, which get it only when it is delivered", async () => {
    const { transport, client } = await connectedHubTransport();
    const c2d: unknown[] = [];
    transport.on('message', (message: { data: unknown }) => c2d.push(message.data));
    const seen: Array<[unknown, unknown]> = [];
    let deliverNext = false;
    const undo = interceptMqttMessages(transport, (topic, payload, deliver) => {
      seen.push([topic, payload]);
      return deliverNext ? deliver() : true;
    });
    expect(undo).toBeInstanceOf(Function);

    client.emit('message', C2D_TOPIC, Buffer.from('held'), {});
    await nextTurn();
    expect(seen).toEqual([[C2D_TOPIC, Buffer.from('held')]]);
    expect(c2d).toEqual([]);

    deliverNext = true;
    client.emit('message', C2D_TOPIC, Buffer.from('delivered'), {});
    await nextTurn();
    expect(c2d).toEqual([Buffer.from('delivered')]);

    undo!();
    client.emit('message', C2D_TOPIC, Buffer.from('after'), {});
    await nextTurn();
    expect(seen).toHaveLength(2);
    expect(c2d).toEqual([Buffer.from('delivered'), Buffer.from('after')]);
  });

  test('undefined, and nothing changed, for a transport without an MqttBase where it was', () => {
    expect(interceptMqttMessages({} as HubMqtt, () => true)).toBeUndefined();
  });
});

describe('interceptMethodRequests (azure-iot-device-mqtt 1.16.4)', () => {
  test('takes every method request the SDK parses, whatever its name; the undo gives them back', async () => {
    const { transport, client } = await connectedHubTransport();
    const listened: unknown[] = [];
    transport.on('method_reboot', (request: unknown) => listened.push(request));
    const other: unknown[] = [];
    transport.on('connected', () => other.push('connected'));
    const taken: Array<{ methods?: { methodName?: string }; requestId?: string; body?: Buffer }> = [];
    const undo = interceptMethodRequests(transport, (request) => taken.push(request as (typeof taken)[number]));

    client.emit('message', '$iothub/methods/POST/reboot/?$rid=42', Buffer.from('{"delay":1}'), {});
    client.emit('message', '$iothub/methods/POST/unknown-name/?$rid=43', Buffer.from('null'), {});
    await nextTurn();
    expect(taken.map((request) => [request.methods?.methodName, request.requestId, request.body?.toString()])).toEqual([
      ['reboot', '42', '{"delay":1}'],
      ['unknown-name', '43', 'null'],
    ]);
    expect(listened).toEqual([]);
    transport.emit('connected'); // other events still reach the listeners
    expect(other).toEqual(['connected']);

    undo();
    client.emit('message', '$iothub/methods/POST/reboot/?$rid=44', Buffer.from('{}'), {});
    await nextTurn();
    expect(taken).toHaveLength(2);
    expect(listened).toHaveLength(1);
  });
});

describe('overrideSasSigning (azure-iot-device 1.18.4)', () => {
  const NOW_MS = 1_700_000_000_000;
  const SHIFT_SECONDS = 7200;

  async function tokenOf(provider: SharedAccessKeyAuthenticationProvider): Promise<string> {
    const credentials = await provider.getDeviceCredentials();
    return String(credentials.sharedAccessSignature);
  }

  test("the provider's tokens are signed by the override: its expiry, a valid signature", async () => {
    jest.spyOn(Date, 'now').mockReturnValue(NOW_MS);
    const provider = sasProvider();
    expect(typeof (provider as unknown as { _sign: unknown })._sign).toBe('function');
    expect((provider as unknown as { _sign: (...args: unknown[]) => void })._sign).toHaveLength(3);
    const signedExpiries: number[] = [];
    expect(
      overrideSasSigning(provider, (sign) => (resourceUri, expiry, callback) => {
        signedExpiries.push(expiry);
        sign(resourceUri, expiry + SHIFT_SECONDS, callback);
      }),
    ).toBe(true);

    const deviceExpiry = NOW_MS / 1000 + 3600; // the SDK default lifetime, device clock
    const token = await tokenOf(provider);
    expect(signedExpiries).toEqual([deviceExpiry]);
    const expected = SharedAccessSignature.create('hub.example%2Fdevices%2Fdevice-1', undefined as unknown as string, DEVICE_KEY, deviceExpiry + SHIFT_SECONDS).toString();
    expect(token).toBe(expected);
    // The control: without the override the same provider signs the device-clock expiry.
    expect(await tokenOf(sasProvider())).toContain(`se=${deviceExpiry}`);
  });

  test('false, nothing added, for a provider that signs nothing (X.509) or anything else', () => {
    const x509 = X509AuthenticationProvider.fromX509Options('device-1', 'hub.example', { cert: 'cert', key: 'key' });
    expect(overrideSasSigning(x509, (sign) => sign)).toBe(false);
    expect('_sign' in x509).toBe(false);
    expect(overrideSasSigning(undefined, (sign) => sign)).toBe(false);
    expect(overrideSasSigning({}, (sign) => sign)).toBe(false);
  });
});

describe('provisioningFsmHandle (azure-iot-provisioning-device-mqtt 1.8.1)', () => {
  test("finds the transport's state machine input: a 'disconnect' with a callback answers it", () => {
    const transport = new ProvisioningMqtt(new MqttBase());
    const handle = provisioningFsmHandle(transport);
    expect(handle).toBeInstanceOf(Function);
    const answered: unknown[] = [];
    const error = new Error('connection closed');
    handle!('disconnect', error, (err?: Error) => answered.push(err));
    expect(answered).toEqual([error]);
  });

  test('undefined for a transport without it', () => {
    expect(provisioningFsmHandle({} as ProvisioningMqtt)).toBeUndefined();
    expect(provisioningFsmHandle({ _fsm: {} } as unknown as ProvisioningMqtt)).toBeUndefined();
  });
});

describe('hubWebSocketTransport (azure-iot-device-mqtt 1.16.4)', () => {
  async function connectUri(connectionString: string, uriOf: (host: string) => string): Promise<{ uri: string | undefined; transport: HubMqtt }> {
    const base = new RecordingMqttBase();
    const transport = hubWebSocketTransport(sasProvider(connectionString), base, uriOf);
    await new Promise<void>((resolve) => transport.connect(() => resolve()));
    return { uri: base.configs[0]?.uri, transport };
  }

  test("the SDK's MqttWs, connecting to uriOf(host) instead of port 443", async () => {
    const { uri, transport } = await connectUri(CONNECTION_STRING, (host) => `wss://${host}:8443/custom`);
    expect(transport).toBeInstanceOf(HubMqttWs);
    expect(uri).toBe('wss://hub.example:8443/custom');
  });

  test('a gateway host name is the host, as in the SDK', async () => {
    const { uri } = await connectUri(`${CONNECTION_STRING};GatewayHostName=gateway.example`, (host) => `wss://${host}/x`);
    expect(uri).toBe('wss://gateway.example/x');
  });
});

describe('provisioningWebSocketTransport (azure-iot-provisioning-device-mqtt 1.8.1)', () => {
  test("the SDK's MqttWs, connecting to uriOf(provisioningHost) instead of port 443", async () => {
    const base = new RecordingMqttBase();
    const transport = provisioningWebSocketTransport(base, (host) => `wss://${host}/custom`);
    expect(transport).toBeInstanceOf(ProvisioningMqttWs);
    transport.setSharedAccessSignature('sas');
    await new Promise<void>((resolve) =>
      transport.registrationRequest({ registrationId: 'device-1', provisioningHost: 'dps.example:9443', idScope: '0ne00000000' }, () => resolve()),
    );
    expect(base.configs.map((config) => config.uri)).toEqual(['wss://dps.example:9443/custom']);
  });
});

describe('no other source reaches into the SDK', () => {
  const root = join(__dirname, '../..');
  const PINNED_PACKAGES = [
    'azure-iot-common',
    'azure-iot-device',
    'azure-iot-device-mqtt',
    'azure-iot-mqtt-base',
    'azure-iot-provisioning-device',
    'azure-iot-provisioning-device-mqtt',
  ];

  function files(dir: string, ending: string): string[] {
    return readdirSync(join(root, dir)).flatMap((name) => {
      const path = join(dir, name);
      return statSync(join(root, path)).isDirectory() ? files(path, ending) : path.endsWith(ending) ? [path] : [];
    });
  }

  /** Every underscore-named member the pinned SDK packages declare (private, protected or @private). */
  function sdkPrivateNames(): Set<string> {
    const names = new Set<string>();
    for (const pkg of PINNED_PACKAGES) {
      for (const file of files(`node_modules/${pkg}/dist`, '.d.ts')) {
        for (const match of readFileSync(join(root, file), 'utf8').matchAll(/^\s+(?:(?:private|protected|static|readonly)\s+)*(_[A-Za-z]\w*)/gm)) names.add(match[1]!);
      }
    }
    return names;
  }

  const privateNames = sdkPrivateNames();
  // Internals the .d.ts files do not declare: a field of the SDK's on-the-wire container and the
  // transport's per-method event names.
  const undeclared = ['timerCheckInMilliseconds', 'method_'];
  const names = [...privateNames, ...undeclared].sort((a, b) => b.length - a.length).join('|');
  const touches = [
    new RegExp(`\\.\\s*(?:${names})\\b`), // member access
    new RegExp(`\\[\\s*['"\`](?:${names})`), // bracket access, or an event name built from one
    new RegExp(`['"\`](?:method_)`), // the per-method event names
    new RegExp(`\\b(?:override|protected|private|public)\\s+(?:${names})\\b`), // a subclass overriding one
    new RegExp(`[{;,]\\s*(?:${names})\\??\\s*[:,}=]`), // a key of a type, a literal or a destructuring
    /\.emit\s*=[^=]/, // replacing an SDK object's emit
  ];

  function withoutComments(source: string): string {
    return source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:\\'"`])\/\/.*$/gm, '$1');
  }

  function touchesIn(source: string): string[] {
    return withoutComments(source)
      .split('\n')
      .filter((line) => touches.some((pattern) => pattern.test(line)))
      .map((line) => line.trim());
  }

  test('the private names are read from the pinned SDK (the scan is not empty)', () => {
    for (const name of ['_mqtt', '_mqttClient', '_fsm', '_sign', '_onTheWirePublishes', '_getBaseTransportConfig', '_getConnectionUri', '_transport', '_twin']) {
      expect(privateNames).toContain(name);
    }
  });

  test('the scan finds the touches this module replaced', () => {
    const before = [
      "const internals = entry.transport as unknown as { _mqtt?: { _mqttClient?: { end(force: boolean): void } } };",
      'internals._mqtt?._mqttClient?.end(true);',
      "const fsm = (transport as unknown as { _fsm?: { handle?: Handle } })._fsm;",
      'signer._sign = (resourceUri, expiry, callback) => sign(resourceUri, expiry, callback);',
      'container.timerCheckInMilliseconds = publishCheckIntervalMs(publishTimeoutSeconds);',
      'protected override _getConnectionUri(request: RegistrationRequest): string {',
      "if (typeof event === 'string' && event.startsWith('method_')) {",
      'mqttBase.emit = function (this: unknown, event: string | symbol, ...args: unknown[]): boolean {',
      "const client = (device as any)['_transport'];",
    ];
    for (const line of before) expect(touchesIn(line)).toEqual([line]);
    expect(touchesIn('// the SDK keeps it at transport._mqtt._mqttClient')).toEqual([]);
    expect(touchesIn("const uri = 'wss://host/$iothub/websocket'; // see _getBaseTransportConfig")).toEqual([]);
  });

  test('only src/actors/sdk-internals.ts touches SDK privates under src/ and machines/', () => {
    const offenders = [...files('src', '.ts'), ...files('machines', '.ts')]
      .filter((file) => file !== join('src', 'actors', 'sdk-internals.ts'))
      .flatMap((file) => touchesIn(readFileSync(join(root, file), 'utf8')).map((line) => `${file}: ${line}`));
    expect(offenders).toEqual([]);
  });
});
