/**
 * The local cloud's MQTT over WebSockets (packages/cloud/src/websocket.ts, endpoint.ts): the upgrade on
 * `/$iothub/websocket` with the `mqtt` subprotocol on each endpoint's port, refused otherwise;
 * kill() and the blackhole act on WebSocket clients as on MQTT ones (the same Gate); blockRawMqtt
 * refuses MQTT and keeps WebSockets. Driven with `ws` (the library the SDK's mqtt.js uses).
 */
import type { IncomingMessage } from 'node:http';
import * as tls from 'node:tls';
import { startLocalCloud, type LocalCloud } from '../src';
import { waitFor } from '../../../test/e2e/harness';

interface ClientWebSocket {
  readonly readyState: number;
  readonly protocol: string;
  once(event: 'open' | 'close', listener: () => void): void;
  once(event: 'unexpected-response', listener: (req: unknown, res: IncomingMessage) => void): void;
  once(event: 'error', listener: (error: Error) => void): void;
  close(): void;
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const WebSocket = require('ws') as { new (url: string, protocols: string[], options: { ca: string }): ClientWebSocket; OPEN: number };

let cloud: LocalCloud;
const sockets: ClientWebSocket[] = [];

beforeAll(async () => {
  cloud = await startLocalCloud({ hubs: 1, seed: 'emulator-websocket' });
});
afterEach(() => {
  for (const socket of sockets.splice(0)) socket.close();
});
afterAll(async () => {
  await cloud.stop();
});

function connect(host: string, path = '/$iothub/websocket', protocols = ['mqtt']): ClientWebSocket {
  const socket = new WebSocket(`wss://${host}${path}`, protocols, { ca: cloud.ca });
  socket.once('error', () => undefined); // refusals are read from 'unexpected-response'
  sockets.push(socket);
  return socket;
}

/** 'open' with the negotiated subprotocol, or the HTTP status of a refusal. */
function outcome(socket: ClientWebSocket): Promise<{ opened: string } | { status: number }> {
  return new Promise((resolve) => {
    socket.once('open', () => resolve({ opened: socket.protocol }));
    socket.once('unexpected-response', (_req, res) => resolve({ status: res.statusCode ?? 0 }));
  });
}

test.each([
  ['the hub', () => cloud.hubs[0]!.host],
  ['DPS', () => cloud.provisioningHost],
])('%s upgrades /$iothub/websocket with the mqtt subprotocol, on its MQTT port', async (_name, host) => {
  expect(await outcome(connect(host()))).toEqual({ opened: 'mqtt' });
});

test('the C SDK spelling MQTT is accepted and answered as offered', async () => {
  expect(await outcome(connect(cloud.hubs[0]!.host, '/$iothub/websocket', ['MQTT']))).toEqual({ opened: 'MQTT' });
});

test('another path is 404, no mqtt subprotocol is 400', async () => {
  expect(await outcome(connect(cloud.hubs[0]!.host, '/mqtt'))).toEqual({ status: 404 });
  expect(await outcome(connect(cloud.hubs[0]!.host, '/$iothub/websocket', ['amqp']))).toEqual({ status: 400 });
});

test('a plain HTTPS request to a hub is 404', async () => {
  const hub = cloud.hubs[0]!;
  const status = await new Promise<number>((resolve, reject) => {
    const socket = tls.connect({ host: 'localhost', port: hub.port, ca: cloud.ca, servername: 'localhost' }, () => {
      socket.write('GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    });
    let text = '';
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
    socket.on('end', () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0)));
    socket.on('error', reject);
  });
  expect(status).toBe(404);
});

test('kill() closes WebSocket connections like MQTT ones', async () => {
  const hub = cloud.hubs[0]!;
  const socket = connect(hub.host);
  await outcome(socket);
  const closed = new Promise<void>((resolve) => socket.once('close', resolve));
  await hub.kill();
  await closed;
  await hub.restart();
  expect(await outcome(connect(hub.host))).toEqual({ opened: 'mqtt' });
});

test('the blackhole mutes WebSocket connections: the socket stays open, silent', async () => {
  const hub = cloud.hubs[0]!;
  const socket = connect(hub.host);
  await outcome(socket);
  hub.blackhole(true);
  try {
    await waitFor('the WebSocket connection muted', () => hub.metrics().mutedConnections === 1);
    expect(socket.readyState).toBe(WebSocket.OPEN);
  } finally {
    hub.blackhole(false);
  }
});

test('blockRawMqtt refuses MQTT connections and keeps WebSockets', async () => {
  const hub = cloud.hubs[0]!;
  cloud.blockRawMqtt(true);
  try {
    const closedBeforeAnswer = await new Promise<boolean>((resolve) => {
      const socket = tls.connect({ host: 'localhost', port: hub.port, ca: cloud.ca, servername: 'localhost' }, () => {
        socket.write(Buffer.from([0x10, 0x00])); // the first bytes of an MQTT CONNECT
      });
      let answered = false;
      socket.on('data', () => (answered = true));
      socket.on('close', () => resolve(!answered));
      socket.on('error', () => undefined);
    });
    expect(closedBeforeAnswer).toBe(true);
    expect(await outcome(connect(hub.host))).toEqual({ opened: 'mqtt' });
  } finally {
    cloud.blockRawMqtt(false);
  }
});
