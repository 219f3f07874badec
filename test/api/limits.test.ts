/**
 * The API's resource and input limits (issue 13): job ids that name BullMQ's own keys, idempotency keys that
 * cannot go into a header, metadata and whole-job size caps, nesting depth. Real HTTP on a real redis-server.
 */
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Redis } from 'ioredis';
import { describe, expect, it, onTestFinished } from 'vitest';

import { exceedsJsonDepth } from '../../src/api/json-body.ts';
import { startPrivateRedis } from '../../src/cli/redis-server.ts';
import { readEnv } from '../../src/core/env.ts';
import { DEFAULT_API_BODY_LIMIT_BYTES, MAX_BATCH_JOBS } from '../../src/core/job.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { Producer } from '../../src/producer/index.ts';
import { startTestApi, type TestApi, TOKENS } from '../helpers/api.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();

const config = parseServicesConfig(
  {
    services: {
      svc: { baseUrl: 'http://127.0.0.1:9', operations: { op: { method: 'POST', path: '/' } } },
    },
  },
  { env: {} },
);

async function setup(
  options: { redisUrl?: string; requestTimeoutMs?: number } = {},
): Promise<{ api: TestApi; prefix: string }> {
  const prefix = uniquePrefix();
  const api = await startTestApi({
    redisUrl: options.redisUrl ?? redis.url,
    prefix,
    config,
    ...(options.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: options.requestTimeoutMs }),
  });
  return { api, prefix };
}

/** `{"a":{"a":…{"a":1}…}}`, `levels` objects deep. */
function nested(levels: number): string {
  return '{"a":'.repeat(levels) + '1' + '}'.repeat(levels);
}

describe('job ids that are BullMQ keys', () => {
  it('answer 404 on GET, DELETE and events, and touch no key', async () => {
    const { api, prefix } = await setup();
    // A waiting and a delayed job: the queue's `id`, `wait`, `delayed`, `meta`, `events` and `marker` exist.
    for (const body of [{}, { delayMs: 60_000 }]) {
      const response = await api.request('POST', '/v1/jobs', {
        token: TOKENS.admin,
        body: { service: 'svc', operation: 'op', ...body },
      });
      expect(response.status).toBe(202);
    }
    const keysBefore = (await redis.client.keys(`${prefix}:*`)).sort();
    for (const name of ['events', 'id', 'marker', 'delayed', 'wait', 'meta']) {
      expect(keysBefore).toContain(`${prefix}:{svc}:${name}`);
    }
    const ids = [
      'events',
      'id',
      'marker',
      'delayed',
      'wait',
      'meta',
      'paused',
      'active',
      'completed',
      'failed',
      'prioritized',
      'stalled',
      'stalled-check',
      'limiter',
      'repeat',
      'pc',
      'de',
      'waiting-children',
      'breaker',
      '1:logs',
    ];
    for (const id of ids) {
      for (const [method, path] of [
        ['GET', `/v1/jobs/svc/${encodeURIComponent(id)}`],
        ['DELETE', `/v1/jobs/svc/${encodeURIComponent(id)}`],
        ['GET', `/v1/jobs/svc/${encodeURIComponent(id)}/events`],
      ] as const) {
        const response = await api.request(method, path, { token: TOKENS.admin });
        expect({ id, method, path, status: response.status, type: response.body?.error?.type }).toEqual({
          id,
          method,
          path,
          status: 404,
          type: 'NotFoundError',
        });
      }
    }
    expect((await redis.client.keys(`${prefix}:*`)).sort()).toEqual(keysBefore);
    // Ids Ferry makes still answer.
    const job = await api.request('GET', '/v1/jobs/svc/1', { token: TOKENS.admin });
    expect(job.status).toBe(200);
  });
});

describe('idempotency keys a header cannot carry', () => {
  const bad = ['order\r\n42', 'order\n42', 'order\u000042', 'a\u0007b', 'a\u001fb', 'a\u007fb'];

  it('are refused at enqueue with 400 naming idempotencyKey (one job and a batch)', async () => {
    const { api, prefix } = await setup();
    for (const key of bad) {
      const one = await api.request('POST', '/v1/jobs', {
        token: TOKENS.admin,
        body: { service: 'svc', operation: 'op', idempotencyKey: key },
      });
      expect({ key, status: one.status, field: one.body?.error?.field }).toEqual({
        key,
        status: 400,
        field: 'idempotencyKey',
      });
      expect(one.body.error.type).toBe('ValidationError');
      const batch = await api.request('POST', '/v1/jobs/batch', {
        token: TOKENS.admin,
        body: { jobs: [{ service: 'svc', operation: 'op', idempotencyKey: key }] },
      });
      expect(batch.status).toBe(200);
      expect(batch.body.results[0]).toMatchObject({
        status: 400,
        error: { field: 'jobs[0].idempotencyKey' },
      });
    }
    expect(await redis.client.keys(`${prefix}:{svc}:idem-*`)).toEqual([]);
    expect(await redis.client.exists(`${prefix}:{svc}:wait`)).toBe(0);
    // A tab, spaces and non-ASCII text are fine in a header value.
    const good = await api.request('POST', '/v1/jobs', {
      token: TOKENS.admin,
      body: { service: 'svc', operation: 'op', idempotencyKey: 'order 42\tcafé' },
    });
    expect(good.status).toBe(202);
  });

  it('are refused by the Producer too', async () => {
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const producer = new Producer({ connection, prefix: uniquePrefix() });
    onTestFinished(async () => {
      await producer.close();
      connection.disconnect();
    });
    for (const key of bad) {
      await expect(
        producer.enqueue({ service: 'svc', operation: 'op', idempotencyKey: key }),
      ).rejects.toMatchObject({ type: 'ValidationError', field: 'idempotencyKey' });
    }
  });
});

describe('metadata and job size', () => {
  it('refuses metadata over 16 KiB with 413 naming metadata (API, batch item and Producer)', async () => {
    const { api } = await setup();
    const big = { note: 'x'.repeat(16 * 1024) };
    const one = await api.request('POST', '/v1/jobs', {
      token: TOKENS.admin,
      body: { service: 'svc', operation: 'op', metadata: big },
    });
    expect(one.status).toBe(413);
    expect(one.body.error).toMatchObject({ type: 'ValidationError', field: 'metadata' });
    expect(one.body.error.message).toContain('16384-byte limit');
    const batch = await api.request('POST', '/v1/jobs/batch', {
      token: TOKENS.admin,
      body: { jobs: [{ service: 'svc', operation: 'op', metadata: big }] },
    });
    expect(batch.body.results[0]).toMatchObject({ status: 413, error: { field: 'jobs[0].metadata' } });
    const fits = await api.request('POST', '/v1/jobs', {
      token: TOKENS.admin,
      body: { service: 'svc', operation: 'op', metadata: { note: 'x'.repeat(16 * 1024 - 20) } },
    });
    expect(fits.status).toBe(202);

    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const producer = new Producer({ connection, prefix: uniquePrefix() });
    onTestFinished(async () => {
      await producer.close();
      connection.disconnect();
    });
    await expect(producer.enqueue({ service: 'svc', operation: 'op', metadata: big })).rejects.toMatchObject({
      type: 'ValidationError',
      field: 'metadata',
    });
  });

  it('limits the body to one job on POST /v1/jobs and to a computed batch size', () => {
    // A batch of 1000 jobs of 4 KiB, plus one job at the default caps (256 KiB input, 16 KiB metadata) twice
    // over for escaped text, plus 2 KiB of other fields.
    expect(DEFAULT_API_BODY_LIMIT_BYTES).toBe(MAX_BATCH_JOBS * 4096 + 2 * (256 + 16) * 1024 + 2048);
    expect(readEnv({}).FERRY_API_BODY_LIMIT_BYTES).toBe(DEFAULT_API_BODY_LIMIT_BYTES);
    expect(DEFAULT_API_BODY_LIMIT_BYTES).toBeLessThan(5 * 1024 * 1024);
  });

  it("answers 413 for a single-job body over one job's worth, and takes a full batch", async () => {
    const { api } = await setup();
    // The largest service input is 256 KiB: one job may send at most 2 × (256 + 16) KiB + 2 KiB.
    const tooBig = await api.request('POST', '/v1/jobs', {
      token: TOKENS.admin,
      body: { service: 'svc', operation: 'op', input: 'x'.repeat(600 * 1024) },
    });
    expect(tooBig.status).toBe(413);
    expect(tooBig.body.error.type).toBe('PayloadTooLargeError');
    const jobs = Array.from({ length: MAX_BATCH_JOBS }, (_, i) => ({
      service: 'svc',
      operation: 'op',
      input: { i, pad: 'y'.repeat(3900) },
    }));
    const batch = await api.request('POST', '/v1/jobs/batch', { token: TOKENS.admin, body: { jobs } });
    expect(batch.status).toBe(200);
    expect(batch.body.accepted).toBe(MAX_BATCH_JOBS);
    const over = await api.request('POST', '/v1/jobs/batch', {
      token: TOKENS.admin,
      body: { jobs: [{ service: 'svc', operation: 'op', input: 'z'.repeat(DEFAULT_API_BODY_LIMIT_BYTES) }] },
    });
    expect(over.status).toBe(413);
  });
});

describe('nesting depth', () => {
  it('counts only brackets outside strings', () => {
    expect(exceedsJsonDepth(nested(64), 64)).toBe(false);
    expect(exceedsJsonDepth(nested(65), 64)).toBe(true);
    expect(exceedsJsonDepth(`{"a":"${'['.repeat(1000)}"}`, 64)).toBe(false);
    expect(exceedsJsonDepth(`{"a":"\\\\","b":"\\"${'['.repeat(100)}"}`, 64)).toBe(false);
    expect(exceedsJsonDepth('[]'.repeat(10_000), 2)).toBe(false);
    expect(exceedsJsonDepth('[[[', 2)).toBe(true);
  });

  it('answers 400 naming the limit for a body nested 10,000 levels, and takes 60', async () => {
    const { api } = await setup();
    const deep = `{"service":"svc","operation":"op","input":${nested(10_000)}}`;
    for (const path of ['/v1/jobs', '/v1/jobs/batch']) {
      const body = path === '/v1/jobs' ? deep : `{"jobs":[${deep}]}`;
      const response = await api.request('POST', path, { token: TOKENS.admin, body });
      expect({ path, status: response.status }).toEqual({ path, status: 400 });
      expect(response.body.error).toMatchObject({ type: 'ValidationError', field: 'body' });
      expect(response.body.error.message).toContain('64 levels');
    }
    const ok = await api.request('POST', '/v1/jobs', {
      token: TOKENS.admin,
      body: `{"service":"svc","operation":"op","input":${nested(60)}}`,
    });
    expect(ok.status).toBe(202);
    // secure-json-parse's protections are still there.
    const proto = await api.request('POST', '/v1/jobs', {
      token: TOKENS.admin,
      body: '{"service":"svc","operation":"op","input":{"__proto__":{"polluted":true}}}',
    });
    expect(proto.status).toBe(400);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('Redis refusing writes (out of memory, noeviction)', () => {
  it('answers 503 + Retry-After to another tenant and fails /readyz; both recover once memory is freed', async () => {
    const dir = join(tmpdir(), `ferry-test-redis-oom-${randomUUID()}`);
    const server = await startPrivateRedis({ dir, appendfsync: 'no' });
    const admin = new Redis(server.url, { maxRetriesPerRequest: 1 });
    admin.on('error', () => undefined);
    onTestFinished(async () => {
      admin.disconnect();
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    });
    const { api } = await setup({ redisUrl: server.url });
    const small = { service: 'svc', operation: 'op', tenant: 'acme', input: { n: 1 } };
    expect((await api.request('POST', '/v1/jobs', { token: TOKENS.acme, body: small })).status).toBe(202);
    expect((await api.request('GET', '/readyz', { token: TOKENS.admin })).status).toBe(200);

    // Another tenant fills Redis (here directly: the API's own limits now keep one tenant's jobs small).
    const used = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))![1]);
    await admin.config('SET', 'maxmemory', String(used + 4 * 1024 * 1024));
    // Filled until Redis refuses a write...
    let stored = 0;
    let refusal = '';
    while (refusal === '' && stored < 1000) {
      await admin.set(`filler:${stored++}`, 'f'.repeat(256 * 1024)).catch((error: Error) => {
        refusal = error.message;
      });
    }
    // ...which leaves it just under the limit (a value's own query buffer counted when it was refused), where
    // small writes still pass. Scripts that already started (BullMQ's, the workers' results and events) write
    // past the limit: Redis ends up over it, which lowering maxmemory under what is used reproduces.
    const full = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))![1]);
    await admin.config('SET', 'maxmemory', String(full - 512 * 1024));
    expect(refusal).toMatch(/^OOM /);

    const refused = await api.request('POST', '/v1/jobs', { token: TOKENS.acme, body: small });
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('5');
    expect(refused.body.error.type).toBe('UnavailableError');
    const batch = await api.request('POST', '/v1/jobs/batch', {
      token: TOKENS.acme,
      body: { jobs: [small] },
    });
    expect(batch.status).toBe(503);
    expect(batch.headers.get('retry-after')).toBe('5');
    const ready = await api.request('GET', '/readyz', { token: TOKENS.admin });
    expect(ready.status).toBe(503);
    expect(ready.headers.get('retry-after')).toBe('5');
    expect(ready.body).toMatchObject({ status: 'unavailable', redis: 'refusingWrites' });
    expect(api.logs.some((line) => line.includes('request failed'))).toBe(false);

    for (let i = 0; i < stored; i++) await admin.del(`filler:${i}`);
    expect((await api.request('POST', '/v1/jobs', { token: TOKENS.acme, body: small })).status).toBe(202);
    const again = await api.request('GET', '/readyz', { token: TOKENS.admin });
    expect(again.status).toBe(200);
    expect(again.body.redis).toBe('up');
  });
});

describe('slow clients', () => {
  const TIMEOUT_MS = 1_000;
  /** The limit plus a generous margin for a loaded machine; Node's defaults cut at 60 s and 30-90 s. */
  const BOUND_MS = TIMEOUT_MS + 5_000;

  /** Opens a socket, writes `head`, then `drip` every 100 ms until the server closes it: how long it took. */
  async function cutAfter(url: string, head: string, drip: string): Promise<number> {
    const { hostname, port } = new URL(url);
    const socket: Socket = connect(Number(port), hostname);
    socket.on('error', () => undefined);
    socket.resume();
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    const started = Date.now();
    socket.write(head);
    const timer = setInterval(() => {
      if (!socket.destroyed && socket.writable) socket.write(drip);
    }, 100);
    try {
      await new Promise<void>((resolve) => socket.once('close', () => resolve()));
      return Date.now() - started;
    } finally {
      clearInterval(timer);
      socket.destroy();
    }
  }

  it('cuts a client dripping headers, and one dripping a body, within requestTimeout', async () => {
    const { api } = await setup({ requestTimeoutMs: TIMEOUT_MS });
    const headersMs = await cutAfter(
      api.url,
      'POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n',
      'X-Drip: 1\r\n',
    );
    expect(headersMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 100);
    expect(headersMs).toBeLessThan(BOUND_MS);
    const bodyMs = await cutAfter(
      api.url,
      'POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
        `Authorization: Bearer ${TOKENS.admin}\r\n` +
        'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"service":"svc",',
      ' ',
    );
    expect(bodyMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 100);
    expect(bodyMs).toBeLessThan(BOUND_MS);
    // A client that is not slow is served.
    expect((await api.request('GET', '/healthz')).status).toBe(200);
  });
});

describe('answers given before the body was read', () => {
  /** Writes the whole request at once, then reads: what a client that streams a large upload sees. */
  function rawPost(api: TestApi, path: string, contentType: string, size: number): Promise<string> {
    const { port } = new URL(api.url);
    const body = JSON.stringify({ service: 'svc', operation: 'op', input: { huge: 'A'.repeat(size) } });
    return new Promise((resolve) => {
      const socket: Socket = connect(Number(port), '127.0.0.1');
      const chunks: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.on('error', (error: NodeJS.ErrnoException) => resolve(`error ${error.code ?? error.message}`));
      socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
      socket.write(
        `POST ${path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TOKENS.admin}\r\n` +
          `content-type: ${contentType}\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n`,
      );
      socket.end(body);
    });
  }

  it('reach a client still sending a body over the limit or of the wrong type, not a reset', async () => {
    const { api } = await setup();
    // Over the one-job limit (refused from content-length alone) and a type no parser takes, 8 times each.
    for (let round = 0; round < 8; round++) {
      const tooLarge = await rawPost(api, '/v1/jobs', 'application/json', 4_000_000);
      expect(tooLarge).toMatch(/^HTTP\/1\.1 413 /);
      const wrongType = await rawPost(api, '/v1/jobs', 'text/csv', 4_000_000);
      expect(wrongType).toMatch(/^HTTP\/1\.1 415 /);
    }
  });
});
