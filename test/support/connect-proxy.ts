/**
 * A small HTTP CONNECT proxy for tests (what a corporate proxy does for HTTPS): on 127.0.0.1 with an
 * ephemeral port, it opens a TCP tunnel per CONNECT and copies bytes both ways, never looking
 * inside (TLS stays end to end between the device and the service). It counts the tunnels per
 * target, can refuse CONNECT to given ports (403), and can require Basic credentials (407).
 */
import * as http from 'node:http';
import * as net from 'node:net';

export interface ConnectProxyOptions {
  /** CONNECT to these target ports is refused with 403 (e.g. 8883 on a network that allows only 443). */
  refusePorts?: number[];
  /** Required `Proxy-Authorization: Basic` user and password. */
  credentials?: { user: string; password: string };
  /** A `Date` header on the proxy's own refusals (a proxy whose clock is off). */
  refusalDate?: string;
}

export interface ConnectProxy {
  /** `http://127.0.0.1:PORT` (add credentials yourself when the proxy requires them). */
  readonly url: string;
  readonly port: number;
  /** Tunnels opened, by target `host:port`. */
  tunnels(): Map<string, number>;
  /** Tunnels opened in all. */
  tunnelCount(): number;
  /** CONNECT requests refused (blocked port or missing credentials). */
  refusedCount(): number;
  /** Tunnels open right now. */
  openTunnels(): number;
  close(): Promise<void>;
}

export async function startConnectProxy(options: ConnectProxyOptions = {}): Promise<ConnectProxy> {
  const refusePorts = new Set(options.refusePorts ?? []);
  const tunnels = new Map<string, number>();
  const sockets = new Set<net.Socket>();
  let refused = 0;
  let open = 0;
  const expectedAuth = options.credentials
    ? `Basic ${Buffer.from(`${options.credentials.user}:${options.credentials.password}`).toString('base64')}`
    : undefined;

  const server = http.createServer((_req, res) => res.writeHead(405, { 'Content-Length': '0' }).end());
  server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    sockets.add(client);
    client.once('close', () => sockets.delete(client));
    client.on('error', () => undefined);
    const target = req.url ?? '';
    const colon = target.lastIndexOf(':');
    const host = target.slice(0, colon);
    const port = Number(target.slice(colon + 1));
    const refuse = (status: string) => {
      refused++;
      const date = options.refusalDate === undefined ? '' : `Date: ${options.refusalDate}\r\n`;
      client.end(`HTTP/1.1 ${status}\r\n${date}Content-Length: 0\r\n\r\n`);
    };
    if (expectedAuth !== undefined && req.headers['proxy-authorization'] !== expectedAuth) return refuse('407 Proxy Authentication Required');
    if (colon <= 0 || !Number.isInteger(port) || refusePorts.has(port)) return refuse('403 Forbidden');
    const upstream = net.connect(port, host);
    sockets.add(upstream);
    upstream.once('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    upstream.once('connect', () => {
      tunnels.set(target, (tunnels.get(target) ?? 0) + 1);
      open++;
      upstream.once('close', () => open--);
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
      client.once('close', () => upstream.destroy());
      upstream.once('close', () => client.destroy());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    tunnels: () => new Map(tunnels),
    tunnelCount: () => [...tunnels.values()].reduce((a, b) => a + b, 0),
    refusedCount: () => refused,
    openTunnels: () => open,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
