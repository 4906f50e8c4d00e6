/**
 * The hub's trust list reaches each connection through the MQTT provider, not `client.setOptions`
 * (where the SDK would first try the ~217 KB PEM as a file name, on every connect).
 */
import { withTrustList } from '../../src/actors/hub';
import type { MqttProvider } from '../../src/actors/tls';

function recordingProvider(): MqttProvider & { seen: Array<Record<string, unknown>> } {
  const seen: Array<Record<string, unknown>> = [];
  return { seen, connect: (_uri, options) => seen.push(options) };
}

test('every connection gets the trust list; options that carry their own ca keep it; no ca, no wrapper', () => {
  const inner = recordingProvider();
  const provider = withTrustList(inner, 'PEM-LIST');
  provider.connect('mqtts://hub:8883', { clientId: 'd1' });
  provider.connect('mqtts://hub:8883', { clientId: 'd1', ca: 'OTHER' });
  expect(inner.seen).toEqual([
    { clientId: 'd1', ca: 'PEM-LIST' },
    { clientId: 'd1', ca: 'OTHER' },
  ]);
  expect(withTrustList(inner, undefined)).toBe(inner);
});
