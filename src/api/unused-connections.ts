/**
 * Closing the API must not wait for connections that never sent a request.
 *
 * Node's `server.close()` (which Fastify's close calls) ends idle keep-alive connections at once, but a
 * connection that was accepted and has sent nothing yet counts as a request under way: `closeIdleConnections()`
 * skips it (nodejs/node#63452, fixed in later Node lines, not in 20) and the close waits for the client or for
 * `headersTimeout` (30 s here). Clients open such connections all the time: undici's `fetch` opens a spare one
 * right after a request is aborted (an SSE client that leaves), and Chrome opens speculative ones
 * (fastify/fastify#5713). So `ferry api` waited out its whole close deadline (4 s) on SIGTERM after an SSE
 * client had come and gone, with Redis healthy.
 *
 * A connection that has received no byte is cut when the app closes (and one accepted while it closes, at once):
 * nothing is lost, as no request was started on it. One that has received part of a request is left to finish
 * it (Fastify answers 503 while closing) or to `headersTimeout`, within the API's close deadline.
 */
import type { Socket } from 'node:net';

import type { FastifyInstance } from 'fastify';

export function closeUnusedConnectionsOnClose(app: FastifyInstance): void {
  const sockets = new Set<Socket>();
  let closing = false;
  app.server.on('connection', (socket: Socket) => {
    if (closing) {
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  // preClose runs before Fastify calls server.close(): connections accepted in between are cut on arrival.
  app.addHook('preClose', async () => {
    closing = true;
    // bytesRead is the handle's own count: it holds also while the HTTP parser consumes the socket natively.
    for (const socket of sockets) if (socket.bytesRead === 0) socket.destroy();
  });
}
