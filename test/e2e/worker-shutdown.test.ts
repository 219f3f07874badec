/**
 * `ferry worker` and `ferry dev` on SIGTERM with calls in flight to a slow real downstream
 * (docs/operations.md § Shutdown): exit within 10 s whatever Redis does — up, SIGKILLed, SIGSTOPped (issue 13:
 * 30.5 s and exit 0 although results were never recorded). Exit 0 when every in-flight job was handed back,
 * 3 with a log line when results could not be recorded; once Redis is back those jobs run again and complete,
 * with the same Idempotency-Key at the downstream.
 */
import { createServer, type ServerResponse } from 'node:http';

import { Job, Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';

import { decodeStoredResult } from '../../src/core/stored-result.ts';
import { type JobData, type JobResult, Producer, serviceQueueName } from '../../src/index.ts';
import { registerCleanup } from '../helpers/cleanup.ts';
import { listenOnFreePort } from '../helpers/listen.ts';
import { spawnFerry, startWorker, tempDir, workerEnv, writeServicesFile } from '../helpers/processes.ts';
import { uniquePrefix } from '../helpers/redis.ts';
import { EXIT_BOUND_MS, killableRedis, type RedisState, terminateAndTime } from '../helpers/shutdown.ts';

const SERVICE = 'svc';

describe.each<RedisState>(['up', 'SIGKILLed', 'SIGSTOPped'])('SIGTERM while Redis is %s', (state) => {
  it(
    'ferry worker exits within 10 s; what it could not record runs again with the same Idempotency-Key',
    { timeout: 120_000 },
    async () => {
      const redis = await killableRedis();
      const downstream = await startHoldingDownstream();
      const prefix = uniquePrefix();
      const file = await holdingServicesFile(downstream.url);
      // The defaults of the shutdown budget (FERRY_SHUTDOWN_TIMEOUT_MS, FERRY_SHUTDOWN_HANDBACK_MS) are the
      // ones under test: nothing set.
      const env = workerEnv({
        redisUrl: redis.url,
        servicesFile: file,
        prefix,
        extra: { FERRY_SHUTDOWN_TIMEOUT_MS: undefined },
      });
      const keys = ['order-1', 'order-2', 'order-3'];
      const producer = new Producer({ connection: redis.url, prefix });
      const ids = (
        await producer.enqueueMany(
          keys.map((key, n) => ({
            service: SERVICE,
            operation: 'create',
            input: { n },
            idempotencyKey: key,
          })),
        )
      ).map((result) => result.id);
      await producer.close();

      const worker = await startWorker(env);
      // Three calls in flight that would not end on their own before the test does.
      await expect.poll(() => downstream.requests.length, { timeout: 15_000 }).toBe(3);
      await redis.put(state);

      const { ms, code } = await terminateAndTime(worker);
      expect(ms, worker.output()).toBeLessThan(EXIT_BOUND_MS);
      const unrecorded = worker.logs().filter((entry) => /not recorded/.test(String(entry.msg)));
      if (state === 'up') {
        // Aborted at the grace's end and handed back (interrupted, no attempt used): all recorded.
        expect(code, worker.output()).toBe(0);
        expect(worker.countLogs((entry) => /deadline passed/.test(String(entry.msg)))).toBe(1);
        expect(unrecorded).toEqual([]);
      } else {
        expect(code, worker.output()).toBe(3);
        expect(worker.countLogs((entry) => entry.msg === 'shut down cleanly')).toBe(0);
        expect(unrecorded.length, worker.output()).toBeGreaterThan(0);
        expect(unrecorded).toContainEqual(expect.objectContaining({ unrecorded: 3, redisReachable: false }));
      }

      // Redis comes back; a new worker, a downstream that answers now: every job completes, each called
      // again with its own Idempotency-Key.
      await redis.recover();
      downstream.answerNow();
      const client = new Redis(redis.url, { maxRetriesPerRequest: null });
      registerCleanup(async () => client.disconnect());
      const queue = new Queue<JobData, JobResult>(serviceQueueName(SERVICE), { connection: client, prefix });
      registerCleanup(() => queue.close());
      const next = await startWorker(env);
      await expect
        .poll(async () => Promise.all(ids.map((id) => queue.getJobState(id))), { timeout: 45_000 })
        .toEqual(['completed', 'completed', 'completed']);
      for (const id of ids) {
        const job = await Job.fromId<JobData, JobResult>(queue, id);
        expect(decodeStoredResult(job?.returnvalue)).toMatchObject({ status: 200 });
      }
      const calls = downstream.requests.map((request) => request.key);
      for (const key of keys) expect(calls.filter((k) => k === key).length).toBeGreaterThanOrEqual(2);
      expect(new Set(calls)).toEqual(new Set(keys));
      const stop = await terminateAndTime(next);
      expect(stop.code, next.output()).toBe(0);
    },
  );
});

describe.each<RedisState>(['up', 'SIGSTOPped'])('ferry dev, SIGTERM while Redis is %s', (state) => {
  it(
    'exits within 10 s: 0 when all was handed back, 3 when results were not recorded',
    { timeout: 90_000 },
    async () => {
      const redis = await killableRedis();
      const downstream = await startHoldingDownstream();
      const prefix = uniquePrefix();
      const file = await holdingServicesFile(downstream.url);
      // Its own directory: `ferry dev` keeps a secrets key under ./.ferry.
      const dev = spawnFerry(['dev', '--no-demo-jobs'], {
        cwd: await tempDir('ferry-dev'),
        env: {
          REDIS_URL: redis.url,
          FERRY_SERVICES: file,
          FERRY_PREFIX: prefix,
          PORT: '0',
          LOG_FORMAT: 'json',
        },
      });
      await dev.waitForLine(/Ferry dev is running/, { timeoutMs: 30_000 });
      const producer = new Producer({ connection: redis.url, prefix });
      await producer.enqueueMany(
        [1, 2, 3].map((n) => ({
          service: SERVICE,
          operation: 'create',
          input: { n },
          idempotencyKey: `dev-${n}`,
        })),
      );
      await producer.close();
      await expect.poll(() => downstream.requests.length, { timeout: 15_000 }).toBe(3);
      await redis.put(state);

      const { ms, code } = await terminateAndTime(dev);
      expect(ms, dev.output()).toBeLessThan(EXIT_BOUND_MS);
      expect(code, dev.output()).toBe(state === 'up' ? 0 : 3);
      expect(dev.countLogs((entry) => /not recorded/.test(String(entry.msg))) > 0).toBe(state !== 'up');
      await redis.recover();
    },
  );
});

interface HeldRequest {
  key: string;
}

/** A downstream that holds every call open until `answerNow()`; from then on it answers 200 at once. */
async function startHoldingDownstream(): Promise<{
  url: string;
  requests: HeldRequest[];
  answerNow(): void;
}> {
  const requests: HeldRequest[] = [];
  let answering = false;
  const answer = (res: ServerResponse): void => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  };
  const server = createServer((req, res) => {
    req.resume();
    requests.push({ key: String(req.headers['idempotency-key']) });
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

/** One service whose calls the holding downstream keeps open, three at a time, for up to a minute. */
function holdingServicesFile(baseUrl: string): Promise<string> {
  return writeServicesFile({
    services: {
      [SERVICE]: {
        baseUrl,
        timeoutMs: 60_000,
        concurrency: 3,
        operations: { create: { method: 'POST', path: '/things', body: '{{ input }}' } },
      },
    },
  });
}
