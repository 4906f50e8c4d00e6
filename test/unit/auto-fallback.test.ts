/**
 * transport 'auto': which failures of an MQTT connection that never got a CONNACK switch the device
 * to WebSockets. Only a port that refused, reset or stayed silent looks like a blocked 8883; no DNS
 * answer or no route would fail over WebSockets as well, and switching for them would keep a
 * device that booted before its network on WebSockets for good.
 */
import pino from 'pino';
import { NetworkPath, resolveNetworkOptions } from '../../src/actors/transport';
import { classify } from '../../src/policy/classify';

const silent = pino({ level: 'silent' });
const socketError = (code: string, message: string) => Object.assign(new Error(message), { code });

/** A NetworkPath in 'auto' that has just tried raw MQTT on a closed local port (no CONNACK). */
function afterUnansweredMqtt(): NetworkPath {
  const path = new NetworkPath({ transport: 'auto', noProxy: [] }, silent);
  const client = path.mqttProvider().connect('mqtts://127.0.0.1:9', { reconnectPeriod: 0, connectTimeout: 1000 }) as { on(e: string, f: () => void): void; end(force: boolean): void };
  client.on('error', () => undefined);
  client.end(true);
  return path;
}

test.each([
  ['no DNS answer', socketError('ENOTFOUND', 'getaddrinfo ENOTFOUND dps.example'), 'dps'],
  ['DNS not ready', socketError('EAI_AGAIN', 'getaddrinfo EAI_AGAIN dps.example'), 'dps'],
  ['no route', socketError('ENETUNREACH', 'connect ENETUNREACH 10.0.0.1:8883'), 'hub-connect'],
  ['out of file descriptors', socketError('EMFILE', 'connect EMFILE'), 'hub-connect'],
] as const)('%s: stays on MQTT, the failure is classified as itself', (_what, error, phase) => {
  const path = afterUnansweredMqtt();
  expect(path.explainConnectFailure(error, phase)).toBe(error);
  expect(path.webSockets).toBe(false);
});

test.each([
  ['refused', socketError('ECONNREFUSED', 'connect ECONNREFUSED 10.0.0.1:8883')],
  ['was reset', socketError('ECONNRESET', 'read ECONNRESET')],
  ['stayed silent', socketError('ETIMEDOUT', 'connect ETIMEDOUT 10.0.0.1:8883')],
])('a port that %s: WebSockets from now on, as a classified failure of its own', (_what, error) => {
  const path = afterUnansweredMqtt();
  const explained = path.explainConnectFailure(error, 'dps') as Error;
  expect(explained).not.toBe(error);
  expect(explained.name).toBe('MqttUnreachableError');
  expect(path.webSockets).toBe(true);
});

describe('through a proxy', () => {
  const throughProxy = () => new NetworkPath(resolveNetworkOptions('mqtt-ws', 'http://proxy.corp.example:3128', {}), silent);

  test("the proxy's own name not resolving is the network, not the hub gone (no assignment in doubt)", () => {
    const sdkError = Object.assign(new Error('Unable to establish a connection'), {
      name: 'NotConnectedError',
      transportError: socketError('ENOTFOUND', 'getaddrinfo ENOTFOUND proxy.corp.example'),
    });
    const explained = throughProxy().explainConnectFailure(sdkError, 'hub-connect') as Error;
    expect(explained.name).toBe('ProxyUnreachableError');
    const failure = classify(explained, 'hub-connect');
    expect(failure.errorClass).toBe('transient');
    expect(failure.assignmentInDoubt).toBeUndefined();
    // Before: the same error, as it was, read as the hub's name gone.
    expect(classify(sdkError, 'hub-connect')).toMatchObject({ rule: 'hub-dns-not-found' });
  });

  test("another name not resolving is left to the classifier", () => {
    const error = socketError('ENOTFOUND', 'getaddrinfo ENOTFOUND other.example');
    expect(throughProxy().explainConnectFailure(error, 'hub-connect')).toBe(error);
  });
});
