/**
 * Closing the API cuts connections that never sent a request (Node 20's server.close() waits for them until
 * headersTimeout: issue 13, `ferry api` waited out its close deadline after an SSE client left), and only those:
 * a request under way is still answered.
 */
import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';

import Fastify, { type FastifyInstance } from 'fastify';
import { describe, expect, it } from 'vitest';

import { closeUnusedConnectionsOnClose } from '../../src/api/unused-connections.ts';
import { registerCleanup } from '../helpers/cleanup.ts';
import { withTimeout } from '../helpers/processes.ts';

async function startApp(
  route?: (app: FastifyInstance) => void,
): Promise<{ app: FastifyInstance; port: number; accepted(count: number): Promise<void> }> {
  const app = Fastify();
  closeUnusedConnectionsOnClose(app);
  route?.(app);
  let connections = 0;
  const waiters: (() => void)[] = [];
  app.server.on('connection', () => {
    connections += 1;
    for (const wake of waiters.splice(0)) wake();
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  registerCleanup(async () => void (await app.close()));
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return {
    app,
    port: address.port,
    async accepted(count) {
      while (connections < count) await new Promise<void>((resolve) => waiters.push(resolve));
    },
  };
}

function rawConnection(port: number): Socket {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  registerCleanup(async () => void socket.destroy());
  return socket;
}

describe('closeUnusedConnectionsOnClose', () => {
  it('closes the app at once while a client holds a connection it never used', async () => {
    const { app, port, accepted } = await startApp();
    const unused = rawConnection(port);
    await accepted(1);
    // Not events.once: it rejects on 'error', and a connection the server destroys may end in a reset.
    const closed = new Promise((resolve) => unused.once('close', resolve));
    // Without it, close() waits for Node's headersTimeout (60 s by default).
    await withTimeout(app.close(), 10_000, () => 'app.close() waited for a connection that sent nothing');
    await withTimeout(closed, 10_000, () => 'the unused connection was not closed');
    expect(unused.destroyed).toBe(true);
  });

  it('still answers a request under way when the app closes', async () => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let arrived!: () => void;
    const hasArrived = new Promise<void>((resolve) => (arrived = resolve));
    const { app, port } = await startApp((scope) => {
      scope.get('/slow', async () => {
        arrived();
        await released;
        return { ok: true };
      });
    });
    const answer = new Promise<{ status: number | undefined; body: string }>((resolve, reject) => {
      const request = httpRequest({ host: '127.0.0.1', port, path: '/slow', agent: false }, (response) => {
        let body = '';
        response.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
        response.on('end', () => resolve({ status: response.statusCode, body }));
      });
      request.once('error', reject);
      request.end();
    });
    await hasArrived;
    const closing = app.close();
    release();
    expect(await withTimeout(answer, 10_000, () => 'no answer')).toEqual({
      status: 200,
      body: '{"ok":true}',
    });
    await withTimeout(closing, 10_000, () => 'app.close() did not finish');
  });
});
