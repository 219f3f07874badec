/**
 * Graceful shutdown of `ferry worker` (DESIGN §8: race worker.close() with a deadline, then abort): SIGTERM
 * lets in-flight calls finish and takes no new job; past FERRY_SHUTDOWN_TIMEOUT_MS the call is aborted and
 * the job is put back as an `interrupted` run that uses no attempt, for another worker to complete.
 */
import { createServer, type ServerResponse } from 'node:http';

import { Job, Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import { storedDeliveryStateSchema } from '../../src/core/stored-history.ts';
import { decodeStoredResult } from '../../src/core/stored-result.ts';
import {
  DEAD_LETTER_QUEUE,
  deadLetterJobId,
  type JobData,
  type JobResult,
  Producer,
  serviceQueueName,
} from '../../src/index.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { listenOnFreePort } from '../helpers/listen.ts';
import { startWorker, withTimeout, workerEnv, writeServicesFile } from '../helpers/processes.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();
const SERVICE = 'svc';

function servicesFile(baseUrl: string, concurrency: number): unknown {
  return {
    services: {
      [SERVICE]: {
        baseUrl,
        // Far longer than any call here: only the shutdown deadline may cut one short.
        timeoutMs: 60_000,
        concurrency,
        retry: { attempts: 3, backoff: { delayMs: 50, maxDelayMs: 200 } },
        // Which job a call is for (the default Idempotency-Key is not the job id).
        headers: { 'X-Job-Id': '{{ job.id }}' },
        operations: { create: { method: 'POST', path: '/things', body: '{{ input }}' } },
      },
    },
  };
}

interface Setup {
  prefix: string;
  env: Record<string, string | undefined>;
  producer: Producer;
  queue: Queue<JobData, JobResult>;
}

async function setup(baseUrl: string, concurrency: number, extra: Record<string, string>): Promise<Setup> {
  const prefix = uniquePrefix();
  const file = await writeServicesFile(servicesFile(baseUrl, concurrency));
  const env = workerEnv({ redisUrl: redis.url, servicesFile: file, prefix, extra });
  const producer = new Producer({ connection: redis.url, prefix });
  onTestFinished(() => producer.close());
  const queue = new Queue<JobData, JobResult>(serviceQueueName(SERVICE), {
    connection: redis.client,
    prefix,
  });
  onTestFinished(() => queue.close());
  return { prefix, env, producer, queue };
}

async function enqueue(producer: Producer, count: number, from: number): Promise<string[]> {
  const results = await producer.enqueueMany(
    Array.from({ length: count }, (_, i) => ({
      service: SERVICE,
      operation: 'create',
      input: { n: from + i },
    })),
  );
  return results.map((result) => result.id);
}

describe('SIGTERM to a worker process', () => {
  it('lets in-flight calls finish and store their results, takes no new job, and exits 0', async () => {
    const downstream = await startDownstream((request) => ({
      status: 201,
      body: { created: JSON.parse(request.body) as unknown },
      // Long enough that the signal always lands while all three calls are in flight.
      delayMs: 1_500,
    }));
    const deadlineMs = 15_000;
    const { env, producer, queue } = await setup(downstream.url, 3, {
      FERRY_SHUTDOWN_TIMEOUT_MS: String(deadlineMs),
    });
    const worker = await startWorker(env);
    const before = await enqueue(producer, 5, 0);
    // Three calls in flight (the concurrency), two jobs still waiting.
    await expect.poll(() => downstream.requests.length, { timeout: 15_000 }).toBe(3);
    const signalledAt = Date.now();
    worker.terminate();
    await worker.waitForLog((entry) => entry.msg === 'shutting down: finishing in-flight work');
    // Jobs that arrive while the worker drains are not taken either.
    const after = await enqueue(producer, 2, 5);

    const exit = await worker.waitForExit(deadlineMs + 5_000);
    expect(exit, worker.output()).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalledAt).toBeLessThan(deadlineMs);
    expect(worker.countLogs((entry) => /deadline passed/.test(String(entry.msg)))).toBe(0);
    expect(worker.countLogs((entry) => entry.msg === 'shut down cleanly')).toBe(1);

    // The three calls completed and their results were stored.
    const inFlight = downstream.requests.map((request) => String(request.headers['x-job-id']));
    expect(new Set(inFlight).size).toBe(3);
    for (const id of inFlight) {
      expect(await queue.getJobState(id)).toBe('completed');
      const job = await Job.fromId<JobData, JobResult>(queue, id);
      expect(decodeStoredResult(job?.returnvalue)).toMatchObject({
        status: 201,
        body: { created: job?.data.input },
        attempts: 1,
      });
      expect(job?.data.ferry).toBeUndefined();
    }
    // Nothing else was called, and the rest are untouched in waiting.
    expect(downstream.requests).toHaveLength(3);
    const untouched = [...before, ...after].filter((id) => !inFlight.includes(id));
    expect(untouched).toHaveLength(4);
    for (const id of untouched) {
      expect(await queue.getJobState(id)).toBe('waiting');
      const job = await Job.fromId<JobData, JobResult>(queue, id);
      expect(job?.stalledCounter).toBe(0);
      expect(job?.data.ferry).toBeUndefined();
    }

    // Not lost either: the next worker delivers them.
    const next = await startWorker(env);
    await expect
      .poll(async () => (await queue.getJobCounts('completed')).completed, { timeout: 30_000 })
      .toBe(7);
    expect(downstream.requests).toHaveLength(7);
    next.terminate();
    expect((await next.waitForExit()).code).toBe(0);
  }, 60_000);

  it('past the deadline aborts the call and puts the job back with an interrupted run that uses no attempt', async () => {
    const service = await startHoldingService();
    const { prefix, env, producer, queue } = await setup(service.url, 2, {
      FERRY_SHUTDOWN_TIMEOUT_MS: '300',
    });
    const worker = await startWorker(env);
    const { id } = await producer.enqueue({
      service: SERVICE,
      operation: 'create',
      input: { n: 1 },
      idempotencyKey: 'order-7',
    });
    await expect.poll(() => service.requests.length, { timeout: 15_000 }).toBe(1);
    worker.terminate();

    // The downstream sees its connection closed before it answered: the call was really aborted.
    await withTimeout(
      service.requests[0]!.closedUnanswered,
      10_000,
      () => 'timed out after 10000 ms waiting for the held call to be aborted',
    );
    const exit = await worker.waitForExit(15_000);
    expect(exit, worker.output()).toEqual({ code: 0, signal: null });
    expect(worker.countLogs((entry) => /deadline passed/.test(String(entry.msg)))).toBe(1);
    expect(worker.countLogs((entry) => entry.msg === 'attempt interrupted by shutdown')).toBe(1);

    // Not lost, not failed, not dead-lettered: back on the queue with an interrupted run and no attempt used.
    expect(['waiting', 'delayed']).toContain(await queue.getJobState(id));
    const job = await Job.fromId<JobData, JobResult>(queue, id);
    // Stored compactly (core/stored-history.ts): decoded as every reader decodes it.
    expect(storedDeliveryStateSchema.parse(job?.data.ferry).attempts).toEqual([
      expect.objectContaining({
        attempt: 1,
        outcome: 'interrupted',
        message: 'worker shut down during the call',
      }),
    ]);
    expect(job?.data.ferry?.final).toBeUndefined();
    expect(job?.stalledCounter).toBe(0);
    expect((await queue.getJobCounts('failed')).failed).toBe(0);
    const deadLetterKey = `${prefix}:${DEAD_LETTER_QUEUE}:${deadLetterJobId(SERVICE, id, job!.timestamp)}`;
    expect(await redis.client.exists(deadLetterKey)).toBe(0);

    // A new worker completes it, as attempt 1, with the same idempotency key.
    service.answerNow();
    const next = await startWorker(env);
    await expect.poll(() => queue.getJobState(id), { timeout: 30_000 }).toBe('completed');
    const done = await Job.fromId<JobData, JobResult>(queue, id);
    expect(decodeStoredResult(done?.returnvalue)).toMatchObject({ status: 200, attempts: 1 });
    expect(service.requests.map((request) => request.key)).toEqual(['order-7', 'order-7']);
    expect(await redis.client.exists(deadLetterKey)).toBe(0);
    next.terminate();
    expect((await next.waitForExit()).code).toBe(0);
  }, 60_000);
});

interface HeldRequest {
  key: string;
  /** Resolves when the client closes the connection before any answer. */
  closedUnanswered: Promise<void>;
}

/** A downstream that holds every call open (never answers) until `answerNow()`; then it answers 200. */
async function startHoldingService(): Promise<{ url: string; requests: HeldRequest[]; answerNow(): void }> {
  const requests: HeldRequest[] = [];
  let answering = false;
  const answer = (res: ServerResponse): void => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  };
  const server = createServer((req, res) => {
    req.resume();
    const closedUnanswered = new Promise<void>((resolve) => {
      res.once('close', () => {
        if (!res.writableEnded) resolve();
      });
    });
    requests.push({ key: String(req.headers['idempotency-key']), closedUnanswered });
    if (answering) answer(res);
  });
  const { url } = await listenOnFreePort(server);
  return {
    url,
    requests,
    answerNow() {
      answering = true;
    },
  };
}
