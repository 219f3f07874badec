/** Each §4 outcome class, produced by a real HTTP server (or a real network failure) and seen on the dead letter. */
import { describe, expect, it } from 'vitest';

import { freePort } from '../../src/cli/redis-server.ts';
import type { ErrorType } from '../../src/core/errors.ts';
import { startDownstream, type Step } from '../helpers/downstream.ts';
import { createTestFerry, oneService } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();
const downstream = await startDownstream();

/** attempts 2, tiny backoff: a retryable class is called twice, a non-retryable one once. */
const fast = {
  retry: { attempts: 2, backoff: { delayMs: 10, maxDelayMs: 20 } },
  timeoutMs: 300,
  maxResponseBytes: 1024,
};

describe('outcome classes against a real server', () => {
  it.each<[string, ErrorType, number, Step]>([
    ['500', 'ServerError', 2, { status: 500, body: 'oops' }],
    ['502', 'ServerError', 2, { status: 502 }],
    ['429 without Retry-After', 'RateLimitedError', 2, { status: 429 }],
    ['401', 'AuthenticationError', 1, { status: 401 }],
    ['403', 'AuthenticationError', 1, { status: 403 }],
    ['400', 'ClientError', 1, { status: 400, body: { error: 'bad email' } }],
    ['404', 'ClientError', 1, { status: 404 }],
    ['408 is retried', 'ClientError', 2, { status: 408 }],
    ['slow headers', 'TimeoutError', 2, { status: 200, delayMs: 1_000 }],
    ['slow drip body', 'TimeoutError', 2, { status: 200, dripMs: 50 }],
    ['connection reset', 'NetworkError', 2, { reset: true }],
    ['body over the cap', 'ResponseTooLargeError', 1, { status: 200, bodyBytes: 4096 }],
    // Refused before reading: this path once killed the worker process (undici's destroyed body emitted an
    // unhandled 'error').
    [
      'declared length over the cap',
      'ResponseTooLargeError',
      1,
      { status: 200, bodyBytes: 4096, headers: { 'content-length': '4096' } },
    ],
    // A big error page is classified by its status, not by its size.
    ['502 with a body over the cap', 'ServerError', 2, { status: 502, bodyBytes: 8192 }],
    [
      '503 declaring a body over the cap',
      'ServerError',
      2,
      { status: 503, bodyBytes: 8192, headers: { 'content-length': '8192' } },
    ],
  ])('%s → %s after %i call(s)', async (_name, type, calls, step) => {
    downstream.script(() => step);
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url, fast) });
    const before = downstream.requests.length;
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: { n: 1 } });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.state).toBe('dead_lettered');
    expect(view.lastError?.type).toBe(type);
    expect(downstream.requests.length - before).toBe(calls);
    const dead = await ferry.pool.deadLetters.get(view.deadLetterId!);
    expect(dead?.data.finalError.type).toBe(type);
    expect(dead?.data.attempts.filter((a) => a.outcome === 'failed')).toHaveLength(calls);
  });

  it('a refused connection is a NetworkError', async () => {
    const port = await freePort();
    const ferry = await createTestFerry(redis, { services: oneService(`http://127.0.0.1:${port}`, fast) });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    expect(view.lastError?.type).toBe('NetworkError');
    expect(view.history.map((a) => a.outcome)).toEqual(['failed', 'failed']);
  });

  it('the whole-attempt timeout really aborts the request', async () => {
    let closedEarly = false;
    downstream.script(() => ({ status: 200, delayMs: 2_000 }));
    const ferry = await createTestFerry(redis, {
      services: oneService(downstream.url, {
        ...fast,
        retry: { attempts: 1, backoff: { delayMs: 10, maxDelayMs: 10 } },
      }),
    });
    const started = Date.now();
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 10_000 });
    closedEarly = Date.now() - started < 1_500;
    expect(view.lastError?.type).toBe('TimeoutError');
    expect(closedEarly).toBe(true);
    expect(view.history[0]?.durationMs).toBeLessThan(1_000);
  });

  it('an unknown secret is a ConfigurationError, dead-lettered without a call', async () => {
    const ferry = await createTestFerry(redis, {
      services: oneService(downstream.url, {
        ...fast,
        auth: { type: 'bearer', token: '{{ secrets.missing_key }}' },
      }),
    });
    const before = downstream.requests.length;
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'create', input: {} });
    const view = await ferry.producer.waitFor('svc', job.id);
    expect(view.lastError).toMatchObject({
      type: 'ConfigurationError',
      message: expect.stringContaining('missing_key'),
    });
    expect(downstream.requests.length).toBe(before);
  });

  it('a path placeholder missing from the input is a ValidationError naming the field', async () => {
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url, fast) });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'get', input: { notId: 1 } });
    const view = await ferry.producer.waitFor('svc', job.id);
    expect(view.lastError?.type).toBe('ValidationError');
    expect(view.lastError?.message).toContain('input.id');
  });
});
