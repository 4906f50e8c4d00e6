/**
 * One emulated service endpoint: an aedes broker behind a TLS listener on 127.0.0.1.
 *
 * Owns the transport-level faults shared by DPS and the hubs:
 * - kill()/restart(): listener closed and every socket destroyed, then listen again on the SAME port;
 * - blackhole: TCP/TLS is accepted but no MQTT packet is ever answered, and established
 *   connections go silent too (only the client's keepalive can notice).
 *
 * Optionally an HTTP handler shares the port (DPS serves its REST lookup next to MQTT; Azure uses
 * 443 and 8883 of one host, the local cloud has one port per service so a device needs no extra
 * setting): each TLS connection is routed by its first byte, 0x10 (MQTT CONNECT) to aedes,
 * an ASCII request line (`POST /...`) to a node `http.Server`. Both kinds pass through a Gate, so
 * kill() and the blackhole treat them alike (a lookup during a blackhole gets no answer).
 *
 * Every accepted socket gets `setNoDelay(true)` (Nagle + delayed ACK otherwise add 40-90 ms per
 * operation). Connections reach aedes through a small {@link Gate} so they can be silenced.
 */
import { Duplex } from 'node:stream';
import * as http from 'node:http';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { Aedes, AedesOptions, Client as AedesClient } from 'aedes';
import { loadAedes } from './aedes-loader';
import type { EmulatorLogger } from './logger';
import { createMqttWebSocketAcceptor } from './websocket';

/** The aedes hooks a service implements. */
export type EndpointHooks = Pick<
  AedesOptions,
  'preConnect' | 'authenticate' | 'authorizePublish' | 'authorizeSubscribe' | 'authorizeForward'
>;

/** Options of {@link MqttEndpoint.start}. */
export interface EndpointOptions {
  /** Name used in logs. */
  name: string;
  /** Server key and certificate (PEM). */
  tls: { key: string; cert: string };
  hooks: EndpointHooks;
  /** Called for every PUBACK a client sends (aedes reports no message id for clean sessions). */
  onPuback?: (client: AedesClient, messageId: number) => void;
  /** Serves HTTP requests arriving on the same TLS port (routed by their first byte). */
  http?: http.RequestListener;
  logger: EmulatorLogger;
}

interface PersistenceWithClear {
  outgoingClearMessageId(client: AedesClient, packet: { messageId?: number }): Promise<unknown>;
}

const noop = (): void => undefined;

/** Plain HTTP requests to an endpoint without an HTTP service (a hub): 404, as IoT Hub's MQTT port would not know them. */
const notFound: http.RequestListener = (_req, res) => {
  res.writeHead(404, { 'Content-Length': '0' }).end();
};

/** First byte of an MQTT CONNECT packet (type 1, flags 0). */
const MQTT_CONNECT_BYTE = 0x10;

/** A connection that sends nothing is dropped after this long (aedes' own connectTimeout). */
const FIRST_BYTES_TIMEOUT_MS = 30_000;

/** An HTTP/1.x request line starts with an upper-case method and a space (`POST /…`). */
function looksLikeHttpRequest(first: Buffer): boolean {
  const head = first.subarray(0, 8).toString('latin1');
  return /^[A-Z]{3,7} /.test(head);
}

/**
 * Duplex between a TLS socket and aedes. Transparent until {@link Gate.silence}: then aedes sees
 * the connection close while the socket stays open and every byte in either direction is dropped.
 */
class Gate extends Duplex {
  private silenced = false;

  private timeoutForwarded = false;

  /** `firstChunk`: bytes already read from the socket to decide where it goes. */
  constructor(
    readonly socket: tls.TLSSocket,
    firstChunk?: Buffer,
  ) {
    super({ allowHalfOpen: false });
    if (firstChunk) this.push(firstChunk);
    socket.on('data', (chunk: Buffer) => {
      if (this.silenced) return;
      if (!this.push(chunk)) socket.pause();
    });
    socket.once('end', () => {
      if (!this.silenced) this.push(null);
    });
    socket.once('close', () => {
      if (!this.silenced) this.destroy();
    });
    socket.on('error', noop); // 'close' follows; aedes learns about it through destroy()
  }

  override _read(): void {
    if (!this.silenced) this.socket.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.silenced || this.socket.destroyed) return cb();
    if (this.socket.write(chunk)) cb();
    else this.socket.once('drain', () => cb());
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    if (this.silenced || this.socket.destroyed) return cb();
    this.socket.cork();
    let ok = true;
    for (const c of chunks) ok = this.socket.write(c.chunk);
    this.socket.uncork();
    if (ok) cb();
    else this.socket.once('drain', () => cb());
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.silenced) this.socket.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.silenced) this.socket.destroy();
    cb(err);
  }

  /**
   * Socket-style idle timeout, delegated to the TLS socket: node's http.Server closes idle
   * keep-alive connections through it (without it they would stay open forever).
   */
  setTimeout(ms: number, onTimeout?: () => void): this {
    this.socket.setTimeout(ms);
    if (!this.timeoutForwarded) {
      this.timeoutForwarded = true;
      this.socket.on('timeout', () => {
        if (!this.silenced) this.emit('timeout');
      });
    }
    if (onTimeout) this.once('timeout', onTimeout);
    return this;
  }

  /** The TLS socket already has Nagle off (onSecureConnection); `ws` calls this on upgrade. */
  setNoDelay(): this {
    return this;
  }

  /** Detach from its consumer (aedes or http, which see a close) and keep the socket open but mute. */
  silence(): void {
    if (this.silenced) return;
    this.silenced = true;
    this.socket.setTimeout(0);
    this.socket.resume(); // read and discard
    this.destroy();
  }
}

/** An aedes broker behind a TLS listener with transport faults. */
export class MqttEndpoint {
  private port = 0;
  private listening = false;
  private blackholed = false;
  private rawMqttBlocked = false;
  private closed = false;
  private readonly rawSockets = new Set<net.Socket>();
  private readonly gates = new Set<Gate>();
  private readonly mute = new Set<tls.TLSSocket>();

  private constructor(
    readonly name: string,
    readonly broker: Aedes,
    private readonly server: tls.Server,
    private readonly logger: EmulatorLogger,
    private readonly httpServer?: http.Server,
  ) {}

  /** Creates the broker and listens on 127.0.0.1 with an ephemeral port. */
  static async start(opts: EndpointOptions): Promise<MqttEndpoint> {
    const { Aedes } = loadAedes();
    const broker = await Aedes.createBroker({
      ...opts.hooks,
      // Device ids and registration ids can be long; MQTT 3.1.1 has no limit.
      maxClientsIdLength: 256,
      connectTimeout: 30_000,
    });
    if (opts.onPuback) {
      // The persistence layer is where aedes resolves a PUBACK's message id; observe it there.
      const onPuback = opts.onPuback;
      const persistence = (broker as unknown as { persistence: PersistenceWithClear }).persistence;
      const clear = persistence.outgoingClearMessageId.bind(persistence);
      persistence.outgoingClearMessageId = (client, packet) => {
        if (packet.messageId !== undefined) onPuback(client, packet.messageId);
        return clear(client, packet);
      };
    }
    broker.on('clientError', (client, err) => opts.logger.debug({ clientId: client.id, err: err.message }, 'client error'));
    broker.on('connectionError', (_client, err) => opts.logger.debug({ err: err.message }, 'connection error'));
    // A client certificate is asked for, never required: SAS devices connect without one, and the
    // service (DPS attestation, hub X.509 identity) judges the chain itself, as Azure does.
    const server = tls.createServer({ key: opts.tls.key, cert: opts.tls.cert, requestCert: true, rejectUnauthorized: false });
    // Never listens itself: connections are handed over by onSecureConnection. Every endpoint
    // serves MQTT over WebSockets (GET /$iothub/websocket, Upgrade), as IoT Hub and DPS do on 443.
    const httpServer = http.createServer(opts.http ?? notFound);
    httpServer.on('clientError', (err, socket) => {
      opts.logger.debug({ err: err.message }, 'HTTP client error');
      socket.destroy();
    });
    httpServer.on('upgrade', createMqttWebSocketAcceptor((stream) => broker.handle(stream)));
    const ep = new MqttEndpoint(opts.name, broker, server, opts.logger, httpServer);
    server.on('connection', (socket: net.Socket) => ep.onConnection(socket));
    server.on('secureConnection', (socket: tls.TLSSocket) => ep.onSecureConnection(socket));
    server.on('tlsClientError', (err) => opts.logger.debug({ err: err.message }, 'TLS handshake failed'));
    server.on('error', (err) => opts.logger.warn({ err: err.message }, 'listener error'));
    await ep.listen();
    return ep;
  }

  /** `localhost:PORT`, the host string devices use. */
  get host(): string {
    return `localhost:${this.port}`;
  }

  get listenPort(): number {
    return this.port;
  }

  /** True while the listener accepts connections. */
  get isListening(): boolean {
    return this.listening;
  }

  get isBlackholed(): boolean {
    return this.blackholed;
  }

  /** Connections held open but mute because of a blackhole. */
  get mutedSockets(): number {
    return this.mute.size;
  }

  /** Number of open TCP connections (including muted ones). */
  get openSockets(): number {
    return this.rawSockets.size;
  }

  private onConnection(socket: net.Socket): void {
    socket.setNoDelay(true);
    this.rawSockets.add(socket);
    socket.on('error', noop);
    socket.once('close', () => this.rawSockets.delete(socket));
  }

  private onSecureConnection(socket: tls.TLSSocket): void {
    socket.setNoDelay(true);
    if (this.blackholed) {
      this.muteSocket(socket);
      return;
    }
    if (!this.httpServer) {
      this.broker.handle(this.gate(socket));
      return;
    }
    // Peek at the first bytes to tell MQTT from HTTP; the chunk is handed on through the Gate.
    socket.on('error', noop); // a reset before the first byte; 'close' follows
    socket.setTimeout(FIRST_BYTES_TIMEOUT_MS, () => socket.destroy());
    socket.once('data', (first: Buffer) => {
      socket.pause();
      socket.setTimeout(0);
      this.route(socket, first);
    });
  }

  private route(socket: tls.TLSSocket, first: Buffer): void {
    if (this.blackholed) {
      this.muteSocket(socket);
    } else if (first[0] === MQTT_CONNECT_BYTE && this.rawMqttBlocked) {
      // "8883 blocked": the connection dies before any MQTT answer (as behind a firewall that
      // lets only HTTPS through; here TLS was accepted first, the port being shared with WSS).
      this.logger.debug({ name: this.name }, 'raw MQTT blocked: connection closed');
      socket.destroy();
    } else if (first[0] === MQTT_CONNECT_BYTE) {
      this.broker.handle(this.gate(socket, first));
    } else if (this.httpServer && looksLikeHttpRequest(first)) {
      this.httpServer.emit('connection', this.gate(socket, first));
    } else {
      this.logger.debug({ firstByte: first[0] }, 'neither MQTT nor HTTP: connection dropped');
      socket.destroy();
    }
  }

  private gate(socket: tls.TLSSocket, first?: Buffer): Gate {
    const gate = new Gate(socket, first);
    this.gates.add(gate);
    gate.once('close', () => this.gates.delete(gate));
    gate.on('error', noop);
    return gate;
  }

  private muteSocket(socket: tls.TLSSocket): void {
    socket.on('error', noop);
    socket.resume();
    this.mute.add(socket);
    socket.once('close', () => this.mute.delete(socket));
  }

  private async listen(): Promise<void> {
    if (this.listening || this.closed) return;
    const port = this.port;
    for (let attempt = 0; ; attempt++) {
      try {
        await new Promise<void>((resolve, reject) => {
          const onError = (err: Error): void => reject(err);
          this.server.once('error', onError);
          this.server.listen({ port, host: '127.0.0.1', exclusive: true }, () => {
            this.server.removeListener('error', onError);
            resolve();
          });
        });
        break;
      } catch (err) {
        // Re-listening on a fixed port can race a lingering socket; retry briefly.
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || port === 0 || attempt >= 40) throw err;
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    this.port = (this.server.address() as net.AddressInfo).port;
    this.listening = true;
    this.logger.debug({ port: this.port }, 'listening');
  }

  /** Closes the listener and destroys every connection. The port is kept for {@link restart}. */
  async kill(): Promise<void> {
    if (!this.listening) {
      this.destroyAll();
      return;
    }
    this.listening = false;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.destroyAll();
    await closed;
    this.logger.debug({ port: this.port }, 'killed');
  }

  /** Listens again on the same port after {@link kill}. */
  async restart(): Promise<void> {
    await this.listen();
  }

  /**
   * Blocks or unblocks MQTT on this endpoint (Azure's 8883) while MQTT over WebSockets on the same
   * port keeps working: each new raw MQTT connection is reset after its first bytes. Established
   * connections are left alone (a firewall rule change does not cut them either).
   */
  setRawMqttBlocked(on: boolean): void {
    this.rawMqttBlocked = on;
  }

  get isRawMqttBlocked(): boolean {
    return this.rawMqttBlocked;
  }

  /** Starts or ends a blackhole. Ending it resets the muted connections (as a rebooted middlebox would). */
  setBlackhole(on: boolean): void {
    if (on === this.blackholed) return;
    this.blackholed = on;
    if (on) {
      for (const gate of [...this.gates]) {
        this.gates.delete(gate);
        this.muteSocket(gate.socket);
        gate.silence();
      }
    } else {
      for (const s of [...this.mute]) s.destroy();
    }
  }

  private destroyAll(): void {
    for (const gate of [...this.gates]) gate.destroy();
    for (const s of [...this.mute]) s.destroy();
    for (const s of [...this.rawSockets]) s.destroy();
  }

  /** Kills the endpoint and closes the broker. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.kill();
    this.closed = true;
    // The http.Server never listened: closing it only releases its idle-connection bookkeeping.
    this.httpServer?.closeAllConnections();
    await new Promise<void>((resolve) => this.broker.close(() => resolve()));
  }
}
