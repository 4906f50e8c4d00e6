/**
 * The PUBACK timeout reaches the pinned SDK: `setTimeout` is its API, the check interval is a
 * field of its on-the-wire container. If an SDK upgrade moves that field, this fails (the device
 * would silently fall back to a 10 s check).
 */
import { publishCheckIntervalMs, sdkMqttBase } from '../../src/actors/hub';

function container(seconds: number) {
  return (sdkMqttBase(seconds) as unknown as { _onTheWirePublishes: { _timeoutInSeconds: number; timerCheckInMilliseconds: number } })._onTheWirePublishes;
}

test('the deadline and the check interval are set on the SDK MqttBase the transport will use', () => {
  expect(container(2)).toMatchObject({ _timeoutInSeconds: 2, timerCheckInMilliseconds: 1000 });
  expect(container(7)).toMatchObject({ _timeoutInSeconds: 7, timerCheckInMilliseconds: 3500 });
  // The default keeps the SDK's own behaviour: 30 s, checked every 10 s.
  expect(container(30)).toMatchObject({ _timeoutInSeconds: 30, timerCheckInMilliseconds: 10_000 });
  expect(publishCheckIntervalMs(600)).toBe(10_000);
});
