/**
 * callDownstream against a real HTTP server on 127.0.0.1: every way a response can end settles the call once,
 * with the right answer, and every abort really stops the request (the server sees its connection close).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

import { describe, expect, it } from 'vitest';

import { type FerryError, isFerryError } from '../../src/core/errors.ts';
import { Scrubber } from '../../src/secrets/scrub.ts';
import { callDownstream, type CallOptions } from '../../src/worker/http/call.ts';
import { PoolSet } from '../../src/worker/http/pools.ts';
import type { OutboundRequest } from '../../src/worker/http/request.ts';
import { ERROR_BODY_MAX_BYTES } from '../../src/worker/http/response.ts';
import { registerCleanup } from '../helpers/cleanup.ts';
import { listenOnFreePort } from '../helpers/listen.ts';

type Handler = (request: IncomingMessage, response: ServerResponse) => void;

interface TestServer {
  url: string;
  /** Requests the server has received so far. */
  received: number;
  /** TCP connections the server has accepted so far. */
  connections: number;
  /** Resolves when the socket of the nth request (1-based) closes. */
  closed(nth: number): Promise<void>;
}

async function serve(handler: Handler): Promise<TestServer> {
  const sockets: Socket[] = [];
  const server = createServer((request, response) => {
    state.received++;
    sockets.push(request.socket);
    handler(request, response);
  });
  server.on('connection', () => state.connections++);
  const { url } = await listenOnFreePort(server);
  const state: TestServer = {
    url,
    received: 0,
    connections: 0,
    closed: async (nth) => {
      const socket = sockets[nth - 1];
      if (socket === undefined) throw new Error(`no request ${nth}`);
      // Not events.once: it rejects on 'error', and a client that tears its connection down may reset it
      // (ECONNRESET on the server's read, seen on a loaded machine); closed is closed either way.
      if (!socket.destroyed) await new Promise((resolve) => socket.once('close', resolve));
    },
  };
  return state;
}

function poolsFor(connections = 4): PoolSet {
  // The test servers listen on 127.0.0.1 and these pools have no literal origin: allow it explicitly.
  const egress = {
    service: 'svc',
    rules: { allowPrivate: true, allow: [] },
    literalOrigin: undefined,
    hostLabel: 'test',
  };
  const pools = new PoolSet({ connections, egress });
  registerCleanup(() => pools.close());
  return pools;
}

function post(url: string, body = '{"n":1}'): OutboundRequest {
  return {
    origin: url,
    path: '/things',
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  };
}

const options: CallOptions = {
  timeoutMs: 2_000,
  maxResponseBytes: 1_024,
  maxRetryAfterMs: 60_000,
  signal: undefined,
  now: Date.now,
  scrubber: new Scrubber(),
};

async function failure(promise: Promise<unknown>): Promise<FerryError> {
  const error: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!isFerryError(error)) throw new Error(`expected a FerryError, got ${String(error)}`);
  return error;
}

describe('callDownstream', () => {
  it('joins a body sent in several chunks and gives lower-case headers', async () => {
    const server = await serve((_request, response) => {
      response.writeHead(201, { 'Content-Type': 'application/json', 'X-Request-Id': 'r-1' });
      response.write('{"a":');
      setTimeout(() => response.end('1}'), 20);
    });
    const response = await callDownstream(poolsFor(), post(server.url), options);
    expect(response.status).toBe(201);
    expect(response.raw.toString()).toBe('{"a":1}');
    expect(response.headers['x-request-id']).toBe('r-1');
  });

  it('sends the method, path, headers and body it was given', async () => {
    let seen: { method?: string; url?: string; type?: string; body: string } = { body: '' };
    const server = await serve((request, response) => {
      let body = '';
      request.on('data', (chunk: Buffer) => (body += chunk.toString()));
      request.on('end', () => {
        seen = { method: request.method, url: request.url, type: request.headers['content-type'], body };
        response.end();
      });
    });
    const response = await callDownstream(poolsFor(), post(server.url, '{"x":"é"}'), options);
    expect(response.raw.length).toBe(0);
    expect(seen).toEqual({ method: 'POST', url: '/things', type: 'application/json', body: '{"x":"é"}' });
  });

  it('refuses a declared length over the cap before reading, and closes the connection', async () => {
    const server = await serve((_request, response) => {
      response.writeHead(200, { 'Content-Length': '4096' });
      response.write('x'.repeat(10)); // and never the rest
    });
    const error = await failure(callDownstream(poolsFor(), post(server.url), options));
    expect(error.type).toBe('ResponseTooLargeError');
    expect(error.status).toBe(200);
    expect(error.message).toBe('response declared 4096 bytes, over the 1024-byte cap');
    await server.closed(1);
  });

  it('stops a body that grows past the cap, and closes the connection', async () => {
    const server = await serve((_request, response) => {
      response.writeHead(200);
      const chunk = 'x'.repeat(600);
      response.write(chunk);
      setTimeout(() => response.write(chunk), 10);
      // Never ended: without the cap the call would wait for its timeout.
    });
    const error = await failure(callDownstream(poolsFor(), post(server.url), options));
    expect(error.type).toBe('ResponseTooLargeError');
    expect(error.message).toBe('response exceeded the 1024-byte cap');
    await server.closed(1);
  });

  it('rejects with NetworkError when the connection closes mid-body', async () => {
    const server = await serve((_request, response) => {
      response.writeHead(200, { 'Content-Length': '100' });
      response.write('part');
      setTimeout(() => response.socket?.destroy(), 10);
    });
    const error = await failure(callDownstream(poolsFor(), post(server.url), options));
    expect(error.type).toBe('NetworkError');
  });

  it('classifies an error status by its status, with an excerpt of a body of any size', async () => {
    const page = `<h1>Bad gateway</h1>${'y'.repeat(3 * ERROR_BODY_MAX_BYTES)}`;
    const server = await serve((_request, response) => {
      response.writeHead(502, { 'Content-Type': 'text/html' });
      response.end(page);
    });
    const error = await failure(callDownstream(poolsFor(), post(server.url), options));
    expect(error.type).toBe('ServerError');
    expect(error.status).toBe(502);
    expect(error.message.startsWith('downstream answered 502: <h1>Bad gateway</h1>yyy')).toBe(true);
    expect(error.message.endsWith('…')).toBe(true);
  });

  it('keeps the connection after an error body of exactly the excerpt size', async () => {
    const server = await serve((_request, response) => {
      response.writeHead(500, { 'Content-Type': 'text/plain' });
      response.end('z'.repeat(ERROR_BODY_MAX_BYTES));
    });
    const pools = poolsFor(1);
    for (let i = 0; i < 2; i++) {
      const error = await failure(callDownstream(pools, post(server.url), options));
      expect(error.type).toBe('ServerError');
    }
    expect(server.connections).toBe(1);
  });

  it('reads Retry-After on a 429', async () => {
    const server = await serve((_request, response) => {
      response.writeHead(429, { 'Retry-After': '7' });
      response.end('slow down');
    });
    const error = await failure(callDownstream(poolsFor(), post(server.url), options));
    expect(error.type).toBe('RateLimitedError');
    expect(error.retryAfterMs).toBe(7_000);
    expect(error.message).toBe('downstream answered 429 Too Many Requests: slow down');
  });

  it('bounds a slow-drip body by the whole-attempt timeout, and closes the connection', async () => {
    const server = await serve((_request, response) => {
      response.writeHead(200);
      const drip = setInterval(() => response.write('.'), 20);
      response.on('close', () => clearInterval(drip));
    });
    const started = performance.now();
    const error = await failure(callDownstream(poolsFor(), post(server.url), { ...options, timeoutMs: 200 }));
    expect(error.type).toBe('TimeoutError');
    expect(error.message).toBe('attempt exceeded its timeout');
    // The drip never ends and resets undici's per-chunk body timeout, so only the whole-attempt deadline can end
    // the call; the bound only rules out undici's 30 s backstops, with room for a loaded machine.
    expect(performance.now() - started).toBeLessThan(10_000);
    await server.closed(1);
  });

  it('times out a call still waiting for a socket, and never sends it', async () => {
    let release: (() => void) | undefined;
    const server = await serve((_request, response) => {
      release ??= () => response.end('first');
      if (server.received > 1) response.end('second');
    });
    const pools = poolsFor(1);
    const first = callDownstream(pools, post(server.url), options);
    await expect.poll(() => server.received).toBe(1);
    // The only socket is busy: this call waits in the pool's queue until its own timeout.
    const error = await failure(callDownstream(pools, post(server.url), { ...options, timeoutMs: 100 }));
    expect(error.type).toBe('TimeoutError');
    release?.();
    expect((await first).raw.toString()).toBe('first');
    // The queued request was dropped when it reached the socket, and the socket kept: a later call is the
    // second request received, on the same connection.
    await callDownstream(pools, post(server.url), options);
    expect(server.received).toBe(2);
    expect(server.connections).toBe(1);
  });

  it('aborts calls in flight when the outer signal aborts, and closes their connections', async () => {
    const server = await serve(() => {
      // Never answers.
    });
    const shutdown = new AbortController();
    const pools = poolsFor();
    const calls = [1, 2].map(() =>
      failure(callDownstream(pools, post(server.url), { ...options, signal: shutdown.signal })),
    );
    await expect.poll(() => server.received).toBe(2);
    shutdown.abort('shutdown');
    for (const error of await Promise.all(calls)) {
      expect(error.type).toBe('TimeoutError');
      expect(error.message).toBe('attempt aborted (shutdown)');
    }
    await Promise.all([server.closed(1), server.closed(2)]);
  });

  it('does not send a call whose outer signal is already aborted', async () => {
    const server = await serve((_request, response) => response.end());
    const shutdown = new AbortController();
    shutdown.abort('shutdown');
    const pools = poolsFor();
    const error = await failure(
      callDownstream(pools, post(server.url), { ...options, signal: shutdown.signal }),
    );
    expect(error.message).toBe('attempt aborted (shutdown)');
    await callDownstream(pools, post(server.url), options);
    expect(server.received).toBe(1);
    // Not even a socket was taken for the aborted call.
    expect(server.connections).toBe(1);
  });

  it('settles calls in flight and queued when their pool closes', async () => {
    const server = await serve(() => {
      // Never answers.
    });
    const pools = poolsFor(1);
    const inFlight = failure(callDownstream(pools, post(server.url), options));
    const queued = failure(callDownstream(pools, post(server.url), options));
    await expect.poll(() => server.received).toBe(1);
    await pools.close();
    for (const error of await Promise.all([inFlight, queued])) expect(error.type).toBe('NetworkError');
  });

  it('rejects with NetworkError when nothing listens', async () => {
    const error = await failure(callDownstream(poolsFor(), post('http://127.0.0.1:1'), options));
    expect(error.type).toBe('NetworkError');
  });
});
