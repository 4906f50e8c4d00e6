/**
 * MQTT over WebSockets for the local cloud's endpoints, as IoT Hub and DPS serve it: an HTTP
 * `GET /$iothub/websocket` with `Upgrade: websocket` and the `mqtt` subprotocol, on the same TLS
 * listener as MQTT (Azure serves it on 443 next to 8883; the local cloud has one port per
 * endpoint). The WebSocket's byte stream is handed to aedes like a raw MQTT connection.
 *
 * `ws` (the library mqtt.js itself uses on the device side) ships no types; the few calls used
 * here are typed below.
 */
import type * as http from 'node:http';
import type { Duplex } from 'node:stream';
import { tlsSocketOf } from './x509';

/** The path the SDK's MqttWs transports connect to (azure-iot-device-mqtt and -provisioning-device-mqtt). */
export const WEBSOCKET_PATH = '/$iothub/websocket';
/** The subprotocol mqtt.js asks for with MQTT 3.1.1 (what the Node SDK uses; the C SDK says `MQTT`). */
export const MQTT_SUBPROTOCOL = 'mqtt';

/** The offered subprotocol that means MQTT (compared case-insensitively: the SDKs differ), as offered. */
function mqttProtocolOf(protocols: readonly string[]): string | undefined {
  return protocols.find((p) => p.toLowerCase() === MQTT_SUBPROTOCOL);
}

interface ServerWebSocket {
  readonly protocol: string;
}

interface WebSocketServer {
  handleUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer, done: (ws: ServerWebSocket) => void): void;
}

interface WsModule {
  Server: new (options: { noServer: true; perMessageDeflate: false; handleProtocols(protocols: string[]): string | false }) => WebSocketServer;
  createWebSocketStream(ws: ServerWebSocket): Duplex;
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
const ws = require('ws') as WsModule;

/** The subprotocols a client offered (`Sec-WebSocket-Protocol: mqtt, ...`). */
function offeredProtocols(req: http.IncomingMessage): string[] {
  const header = req.headers['sec-websocket-protocol'];
  return typeof header === 'string' ? header.split(',').map((p) => p.trim()) : [];
}

/** Why an upgrade request is refused (HTTP status and text), or undefined when it is acceptable. */
export function upgradeRefusal(req: http.IncomingMessage): { status: number; text: string } | undefined {
  const path = (req.url ?? '').split('?')[0];
  if (path !== WEBSOCKET_PATH) return { status: 404, text: 'Not Found' };
  if (mqttProtocolOf(offeredProtocols(req)) === undefined) return { status: 400, text: 'Bad Request' };
  return undefined;
}

/**
 * Accepts MQTT-over-WebSocket upgrades and hands each connection's stream to `onStream` (aedes).
 * A refused upgrade gets its HTTP status and the connection is closed.
 */
export function createMqttWebSocketAcceptor(onStream: (stream: Duplex) => void) {
  const server = new ws.Server({
    noServer: true,
    // The SDK's mqtt.js offers permessage-deflate; IoT Hub answers without it, so does the local cloud.
    perMessageDeflate: false,
    handleProtocols: (protocols) => mqttProtocolOf(protocols) ?? false,
  });
  return (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    const refusal = upgradeRefusal(req);
    if (refusal) {
      socket.end(`HTTP/1.1 ${refusal.status} ${refusal.text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      return;
    }
    server.handleUpgrade(req, socket, head, (webSocket) => {
      // The TLS socket stays reachable from the stream, as it is from the Gate of a raw MQTT
      // connection: an X.509 device's client certificate is read from it (tlsSocketOf).
      const stream = Object.assign(ws.createWebSocketStream(webSocket), { socket: tlsSocketOf(socket) });
      onStream(stream);
    });
  };
}
