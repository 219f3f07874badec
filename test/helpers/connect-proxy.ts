/**
 * A forward proxy for tests: a node http server that answers CONNECT by opening a TCP tunnel to the target,
 * counting tunnels and the targets asked for; optionally requiring `Proxy-Authorization: Basic …`.
 */
import { createServer, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';

import { registerCleanup } from './cleanup.ts';
import { listenOnFreePort } from './listen.ts';

export interface ConnectProxy {
  /** `http://127.0.0.1:<port>` (no credentials). */
  url: string;
  port: number;
  /** Tunnels opened (CONNECTs answered 200). */
  readonly tunnels: number;
  /** Every CONNECT target asked for (`host:port`), refused ones too. */
  readonly targets: readonly string[];
  /** Proxy-Authorization values received. */
  readonly authorizations: readonly string[];
  close(): Promise<void>;
}

export async function startConnectProxy(
  options: { user?: string; password?: string } = {},
): Promise<ConnectProxy> {
  let tunnels = 0;
  const targets: string[] = [];
  const authorizations: string[] = [];
  const sockets = new Set<Socket>();
  const expected =
    options.user === undefined
      ? undefined
      : `Basic ${Buffer.from(`${options.user}:${options.password ?? ''}`).toString('base64')}`;
  const server = createServer((_request, response) => {
    response.writeHead(405).end('CONNECT only');
  });
  server.on('connect', (request: IncomingMessage, client: Socket, head: Buffer) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => undefined);
    const target = request.url ?? '';
    targets.push(target);
    const auth = request.headers['proxy-authorization'];
    if (auth !== undefined) authorizations.push(auth);
    if (expected !== undefined && auth !== expected) {
      client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n');
      return;
    }
    const match = /^\[?(.+?)\]?:(\d+)$/.exec(target);
    if (match === null) {
      client.end('HTTP/1.1 400 Bad Request\r\n\r\n');
      return;
    }
    const upstream = connect(Number(match[2]), match[1]!, () => {
      tunnels++;
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
  });
  const listening = await listenOnFreePort(server);
  const close = async (): Promise<void> => {
    for (const socket of sockets) socket.destroy();
    await listening.close();
  };
  registerCleanup(close);
  return {
    url: listening.url,
    port: Number(new URL(listening.url).port),
    get tunnels() {
      return tunnels;
    },
    targets,
    authorizations,
    close,
  };
}
