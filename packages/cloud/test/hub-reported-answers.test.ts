/**
 * Fault injection `answerNextReportedPatch`: the device's next reported PATCHes are answered with
 * the given status (IoT Hub's error body by default, or the body given, even an empty one) and
 * not applied; afterwards PATCHes are applied again.
 */
import { EmulatorError, startLocalCloud, type EmulatedHub, type LocalCloud } from '../src';
import { connectRaw, endRaw, nextMessage, subscribe } from './hub-raw-mqtt';

let cloud: LocalCloud;
let hub: EmulatedHub;

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'hub-reported-answers' });
  hub = cloud.hubs[0]!;
});
afterAll(async () => {
  await cloud?.stop();
});

test('the next PATCHes get the injected status and are not applied; the one after is applied (204)', async () => {
  const id = 'reported-answers';
  hub.addDevice(id, cloud.deviceKey(id));
  const { client } = await connectRaw(cloud, hub, id, { clean: true });
  await subscribe(client, '$iothub/twin/res/#', 0);
  const patch = async (rid: string, body: object) => {
    const answer = nextMessage(client, '$iothub/twin/res/');
    client.publish(`$iothub/twin/PATCH/properties/reported/?$rid=${rid}`, JSON.stringify(body));
    const { topic, payload } = await answer;
    return { status: Number(topic.split('/')[3]), body: payload.toString() };
  };

  hub.answerNextReportedPatch(id, 429, { count: 2 });
  const first = await patch('1', { battery: 1 });
  expect(first.status).toBe(429);
  expect(JSON.parse(first.body)).toMatchObject({ errorCode: 429001, message: 'Injected answer 429.' });
  expect((await patch('2', { battery: 2 })).status).toBe(429);
  expect(hub.getTwin(id).reported).toEqual({ $version: 1 });

  hub.answerNextReportedPatch(id, 503, { body: '' });
  expect(await patch('3', { battery: 3 })).toEqual({ status: 503, body: '' });

  expect((await patch('4', { battery: 4 })).status).toBe(204);
  expect(hub.getTwin(id).reported).toEqual({ battery: 4, $version: 2 });
  await endRaw(client, hub, id);
});

test('bounded arguments: an error status (300-599), a count from 1 to 1000, a known device', () => {
  const id = 'reported-answers-args';
  hub.addDevice(id, cloud.deviceKey(id));
  expect(() => hub.answerNextReportedPatch(id, 204)).toThrow(EmulatorError);
  expect(() => hub.answerNextReportedPatch(id, 429, { count: 0 })).toThrow(/count/);
  expect(() => hub.answerNextReportedPatch(id, 429, { count: 1001 })).toThrow(/count/);
  expect(() => hub.answerNextReportedPatch('nobody', 429)).toThrow(/does not exist/);
});
