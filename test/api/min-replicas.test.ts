/**
 * FERRY_ENQUEUE_MIN_REPLICAS (docs/api.md § Replica acknowledgement): an enqueue answers 2xx only after Redis
 * `WAIT` says enough replicas hold it; otherwise 503 with Retry-After, and the retry with the same
 * idempotency key returns the same job. On a real master and a real replica (`--replicaof`); the replica is
 * paused with SIGSTOP, as a hung or partitioned replica would be.
 */
import { readFile } from 'node:fs/promises';

import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';

import { readEnv } from '../../src/core/env.ts';
import { ValidationError } from '../../src/core/errors.ts';
import { idempotentJobId, serviceQueueName } from '../../src/core/queue-layout.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { Producer } from '../../src/producer/producer.ts';
import { isReplicaTimeoutError, replicaDecision, ReplicaTimeoutError } from '../../src/producer/replicas.ts';
import { startTestApi, type TestApi, TOKENS } from '../helpers/api.ts';
import { startRedis, uniquePrefix, waitForReplicaLink } from '../helpers/redis.ts';

const master = await startRedis();
const replica = await startRedis({ replicaOf: master });
await waitForReplicaLink(replica.client);
// Whatever a test does, the replica is never left paused (its stop would then wait for SIGKILL).
afterAll(() => void replica.process.kill('SIGCONT'));

const TIMEOUT_MS = 1_000;
// A loaded 2-core machine: the 503 must come after about the timeout, with room for scheduling.
const MARGIN_MS = 4_000;

const config = parseServicesConfig(
  {
    services: {
      svc: { baseUrl: 'http://127.0.0.1:9', operations: { create: { method: 'POST', path: '/things' } } },
    },
  },
  { env: {} },
);

async function api(minReplicas: number, timeoutMs = TIMEOUT_MS): Promise<TestApi & { prefix: string }> {
  const prefix = uniquePrefix();
  const started = await startTestApi({
    redisUrl: master.url,
    prefix,
    config,
    env: {
      FERRY_ENQUEUE_MIN_REPLICAS: String(minReplicas),
      FERRY_ENQUEUE_REPLICA_TIMEOUT_MS: String(timeoutMs),
    },
  });
  return Object.assign(started, { prefix });
}

/** Runs `body` with the replica paused; it is resumed and back in sync afterwards, whatever happened. */
async function withReplicaPaused<T>(body: () => Promise<T>): Promise<T> {
  replica.process.kill('SIGSTOP');
  try {
    return await body();
  } finally {
    replica.process.kill('SIGCONT');
    await waitForReplicaLink(replica.client);
  }
}

async function waitCalls(): Promise<number> {
  const stats = await master.client.info('commandstats');
  return Number(/^cmdstat_wait:calls=(\d+)/m.exec(stats)?.[1] ?? 0);
}

async function queueJobCount(prefix: string): Promise<number> {
  const queue = new Queue(serviceQueueName('svc'), { connection: master.client, prefix });
  try {
    const counts = await queue.getJobCounts('waiting', 'delayed', 'prioritized');
    return Object.values(counts).reduce((a, b) => a + b, 0);
  } finally {
    await queue.close();
  }
}

describe('replicaDecision', () => {
  it.each([
    { acked: 0, required: 0, expected: 'ok' },
    { acked: 3, required: 0, expected: 'ok' },
    { acked: 1, required: 1, expected: 'ok' },
    { acked: 2, required: 1, expected: 'ok' },
    { acked: 0, required: 1, expected: 'unavailable' },
    { acked: 1, required: 2, expected: 'unavailable' },
    { acked: '1', required: 1, expected: 'unavailable' },
    { acked: 1.5, required: 1, expected: 'unavailable' },
    { acked: null, required: 1, expected: 'unavailable' },
    { acked: Number.NaN, required: 1, expected: 'unavailable' },
  ])('$acked acknowledged of $required required: $expected', ({ acked, required, expected }) => {
    expect(replicaDecision(acked, required)).toBe(expected);
  });
});

describe('settings', () => {
  it('refuses env values that are not bounded integers', () => {
    for (const [name, value] of [
      ['FERRY_ENQUEUE_MIN_REPLICAS', '-1'],
      ['FERRY_ENQUEUE_MIN_REPLICAS', '1.5'],
      ['FERRY_ENQUEUE_MIN_REPLICAS', '101'],
      ['FERRY_ENQUEUE_MIN_REPLICAS', 'two'],
      ['FERRY_ENQUEUE_REPLICA_TIMEOUT_MS', '0'],
      ['FERRY_ENQUEUE_REPLICA_TIMEOUT_MS', '30001'],
      ['FERRY_ENQUEUE_REPLICA_TIMEOUT_MS', '1e3x'],
    ] as const) {
      expect(() => readEnv({ [name]: value }), `${name}=${value}`).toThrow(name);
    }
    const env = readEnv({});
    expect([env.FERRY_ENQUEUE_MIN_REPLICAS, env.FERRY_ENQUEUE_REPLICA_TIMEOUT_MS]).toEqual([0, 1000]);
    expect(readEnv({ FERRY_ENQUEUE_MIN_REPLICAS: '2' }).FERRY_ENQUEUE_MIN_REPLICAS).toBe(2);
  });

  it('refuses Producer options that are not bounded integers', () => {
    for (const options of [
      { minReplicas: -1 },
      { minReplicas: 0.5 },
      { replicaTimeoutMs: 0 },
      { replicaTimeoutMs: 60_000 },
    ]) {
      expect(() => new Producer({ connection: master.client, ...options })).toThrow(ValidationError);
    }
  });

  it('documents ReplicaTimeoutError among the producer errors of docs/errors.md', async () => {
    const text = await readFile(new URL('../../docs/errors.md', import.meta.url), 'utf8');
    const section = text.slice(text.indexOf('## Producer errors'));
    expect(section).toMatch(new RegExp(`^\\| \`${new ReplicaTimeoutError('x', 1, 0).type}\` +\\| `, 'm'));
  });
});

describe('FERRY_ENQUEUE_MIN_REPLICAS=1 through the API', () => {
  it('answers 202 once the replica holds the job', async () => {
    const ferry = await api(1);
    const before = await waitCalls();
    const response = await ferry.request('POST', '/v1/jobs', {
      token: TOKENS.writer,
      body: { service: 'svc', operation: 'create', input: { n: 1 } },
    });
    expect(response.status).toBe(202);
    // WAIT returned 1: the replica already has it, read straight after the answer.
    const key = `${ferry.prefix}:${serviceQueueName('svc')}:${response.body.id as string}`;
    expect(await replica.client.hget(key, 'name')).toBe('create');
    expect(await waitCalls()).toBeGreaterThan(before);
  });

  it('answers 503 with Retry-After while the replica is paused, and the retry returns the same job', async () => {
    // A longer timeout here: /readyz must be seen answering while the enqueue still waits, on a loaded machine.
    const timeoutMs = 2_500;
    const ferry = await api(1, timeoutMs);
    const job = { service: 'svc', operation: 'create', input: { n: 2 }, idempotencyKey: 'order-42' };
    const refused = await withReplicaPaused(async () => {
      const started = Date.now();
      let settled = false;
      const pending = ferry.request('POST', '/v1/jobs', { token: TOKENS.writer, body: job }).finally(() => {
        settled = true;
      });
      // WAIT blocks the connection it is sent on: the API's readiness probe must not queue behind it.
      await expect.poll(() => master.client.info('clients'), { timeout: 5_000 }).toMatch(/blocked_clients:1/);
      const ready = await ferry.request('GET', '/readyz');
      const readyWhilePending = !settled;
      const response = await pending;
      return { response, ready, readyWhilePending, answeredAt: Date.now(), started };
    });
    expect(refused.response.status).toBe(503);
    expect(refused.response.body.error.type).toBe('UnavailableError');
    expect(refused.response.body.error.message).toMatch(/0 of 1 required Redis replica/);
    expect(Number(refused.response.headers.get('retry-after'))).toBeGreaterThan(0);
    const elapsed = refused.answeredAt - refused.started;
    expect(elapsed).toBeGreaterThanOrEqual(timeoutMs - 50);
    expect(elapsed).toBeLessThan(timeoutMs + MARGIN_MS);
    expect(refused.ready.status).toBe(200);
    expect(refused.readyWhilePending).toBe(true);
    expect(ferry.logs.some((line) => line.includes('replicas did not acknowledge'))).toBe(true);

    // The job was written before WAIT: the retry with its key finds it and adds nothing.
    const retry = await ferry.request('POST', '/v1/jobs', { token: TOKENS.writer, body: job });
    expect(retry.status).toBe(200);
    expect(retry.body.id).toBe(idempotentJobId('order-42'));
    expect(retry.body.status).toBe('existing');
    expect(await queueJobCount(ferry.prefix)).toBe(1);
  });

  it('does the same for a batch', async () => {
    const ferry = await api(1);
    const jobs = [1, 2, 3].map((n) => ({
      service: 'svc',
      operation: 'create',
      input: { n },
      idempotencyKey: `batch-${n}`,
    }));
    const refused = await withReplicaPaused(async () => {
      const started = Date.now();
      const response = await ferry.request('POST', '/v1/jobs/batch', {
        token: TOKENS.writer,
        body: { jobs },
      });
      return { response, elapsed: Date.now() - started };
    });
    expect(refused.response.status).toBe(503);
    expect(refused.response.headers.get('retry-after')).not.toBeNull();
    expect(refused.elapsed).toBeLessThan(TIMEOUT_MS + MARGIN_MS);

    const retry = await ferry.request('POST', '/v1/jobs/batch', { token: TOKENS.writer, body: { jobs } });
    expect(retry.status).toBe(200);
    expect(retry.body.results).toEqual(
      [1, 2, 3].map((n, index) => ({ index, status: 200, id: idempotentJobId(`batch-${n}`) })),
    );
    expect(await queueJobCount(ferry.prefix)).toBe(3);
    // And with the replica in sync a new batch is accepted (202 per job) and already on the replica.
    const fresh = await ferry.request('POST', '/v1/jobs/batch', {
      token: TOKENS.writer,
      body: { jobs: [{ service: 'svc', operation: 'create', input: { n: 4 } }] },
    });
    expect(fresh.body.results[0].status).toBe(202);
    const key = `${ferry.prefix}:${serviceQueueName('svc')}:${fresh.body.results[0].id as string}`;
    expect(await replica.client.exists(key)).toBe(1);
  });
});

describe('FERRY_ENQUEUE_MIN_REPLICAS=0 (the default)', () => {
  it('sends no WAIT, and a paused replica does not hold up an enqueue', async () => {
    const ferry = await api(0);
    const before = await waitCalls();
    const answered = await withReplicaPaused(async () => {
      const started = Date.now();
      const response = await ferry.request('POST', '/v1/jobs', {
        token: TOKENS.writer,
        body: { service: 'svc', operation: 'create', input: { n: 5 } },
      });
      return { response, elapsed: Date.now() - started };
    });
    expect(answered.response.status).toBe(202);
    const batch = await ferry.request('POST', '/v1/jobs/batch', {
      token: TOKENS.writer,
      body: { jobs: [{ service: 'svc', operation: 'create', input: { n: 6 } }] },
    });
    expect(batch.body.accepted).toBe(1);
    expect(await waitCalls()).toBe(before);
  });
});

describe('Producer minReplicas', () => {
  it('rejects with ReplicaTimeoutError while the replica is paused, and resolves once it is back', async () => {
    const connection = new Redis(master.url, { maxRetriesPerRequest: 1 });
    const prefix = uniquePrefix();
    const producer = new Producer({ connection, prefix, minReplicas: 1, replicaTimeoutMs: TIMEOUT_MS });
    try {
      const request = { service: 'svc', operation: 'create', idempotencyKey: 'p-1' };
      const error = await withReplicaPaused(() =>
        producer.enqueue(request).then(
          () => undefined,
          (e) => e,
        ),
      );
      expect(error).toBeInstanceOf(ReplicaTimeoutError);
      expect(isReplicaTimeoutError(error)).toBe(true);
      expect(error).toMatchObject({ type: 'ReplicaTimeoutError', required: 1, acknowledged: 0 });
      const many = await withReplicaPaused(() =>
        producer.enqueueMany([request]).then(
          () => undefined,
          (e) => e,
        ),
      );
      expect(isReplicaTimeoutError(many)).toBe(true);
      const retried = await producer.enqueue(request);
      expect(retried).toMatchObject({ id: idempotentJobId('p-1'), created: false });
      // Two replicas required, one exists: never acknowledged.
      const greedy = new Producer({ connection, prefix, minReplicas: 2, replicaTimeoutMs: 200 });
      await expect(greedy.enqueue({ service: 'svc', operation: 'create' })).rejects.toThrow(
        /1 of 2 required/,
      );
      await greedy.close();
    } finally {
      await producer.close();
      connection.disconnect();
    }
  });
});
