/**
 * Crash safety of `ferry worker` processes (DESIGN §4, §8): workers SIGKILLed in the middle of calls lose
 * nothing; every job ends completed or failed; every failed job has exactly one dead letter with a
 * consistent attempt history, none is duplicated and no completed job has one. That includes jobs BullMQ
 * fails itself (stalled more than maxStalledCount) without ever calling Ferry's processor: the failed-set
 * sweep dead-letters those.
 */
import { createServer, type IncomingMessage } from 'node:http';

import { Job, Queue } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import { storedDeliveryStateSchema, storedHistorySchema } from '../../src/core/stored-history.ts';
import { decodeStoredResult } from '../../src/core/stored-result.ts';
import {
  type AttemptRecord,
  DEAD_LETTER_QUEUE,
  deadLetterJobId,
  deadLetterJobName,
  type DeadLetterRecord,
  type DeliveryState,
  type JobData,
  type JobResult,
  Producer,
  serviceQueueName,
} from '../../src/index.ts';
import { type RecordedRequest, startDownstream } from '../helpers/downstream.ts';
import { listenOnFreePort } from '../helpers/listen.ts';
import {
  type FerryProcess,
  type LogEntry,
  startWorker,
  workerEnv,
  writeServicesFile,
} from '../helpers/processes.ts';
import { startRedis, type TestRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();

const SERVICE = 'svc';
const ATTEMPTS = 3;
type Kind = 'ok' | 'reject' | 'fail' | 'flaky';
const KINDS: readonly Kind[] = ['ok', 'ok', 'reject', 'fail', 'flaky', 'ok'];

/**
 * The downstream: 20-50 ms per call; `/ok` succeeds, `/reject` is a 422 (not retryable: dead-lettered after
 * one call), `/fail` a 500 every time (retryable: dead-lettered once the attempts run out), `/flaky` a 500 on
 * the first call for a job and a 200 after.
 */
const downstream = await startDownstream();
const flakySeen = new Set<string>();
downstream.script((request, index) => {
  const delayMs = 20 + (index % 4) * 10;
  const key = String(request.headers['idempotency-key']);
  if (request.url === '/ok') return { status: 200, body: { ok: true, key }, delayMs };
  if (request.url === '/reject') return { status: 422, body: { error: 'unprocessable' }, delayMs };
  if (request.url === '/fail') return { status: 500, body: { error: 'boom' }, delayMs };
  if (request.url === '/flaky') {
    if (flakySeen.has(key)) return { status: 200, body: { ok: true, key }, delayMs };
    flakySeen.add(key);
    return { status: 500, body: { error: 'first call fails' }, delayMs };
  }
  return { status: 404, delayMs };
});

function servicesFile(baseUrl: string, operations: Record<string, unknown>): unknown {
  return {
    services: {
      [SERVICE]: {
        baseUrl,
        timeoutMs: 60_000,
        concurrency: 4,
        retry: { attempts: ATTEMPTS, backoff: { delayMs: 20, maxDelayMs: 100 } },
        // Never open: this test is about crashes, not outages (an open breaker would hold the queue).
        breaker: { errorThresholdPercentage: 100, volumeThreshold: 1_000_000 },
        // Which job a call is for (the default Idempotency-Key is not the job id).
        headers: { 'X-Job-Id': '{{ job.id }}' },
        operations,
      },
    },
  };
}

function post(path: string): { method: 'POST'; path: string; body: string } {
  return { method: 'POST', path, body: '{{ input }}' };
}

interface Stored {
  id: string;
  state: string;
  name: string;
  /** The job data, Ferry's bookkeeping decoded (its history is stored compactly: core/stored-history.ts). */
  data: Omit<JobData, 'ferry'> & { ferry?: DeliveryState };
  result: JobResult | undefined;
  failedReason: string | undefined;
  stalledCounter: number;
  /** BullMQ's `timestamp`: part of the dead letter's id. */
  createdAt: number;
}

/** Reads the source jobs and every dead letter straight from Redis, the way any BullMQ tool would. */
class Inspector {
  readonly queue: Queue<JobData, JobResult>;
  readonly deadLetters: Queue<DeadLetterRecord>;
  readonly #client: TestRedis['client'];

  constructor(testRedis: TestRedis, prefix: string) {
    this.#client = testRedis.client;
    this.queue = new Queue(serviceQueueName(SERVICE), { connection: testRedis.client, prefix });
    this.deadLetters = new Queue(DEAD_LETTER_QUEUE, { connection: testRedis.client, prefix });
  }

  async close(): Promise<void> {
    await this.queue.close();
    await this.deadLetters.close();
  }

  async counts(): Promise<Record<string, number>> {
    return this.queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed');
  }

  async job(id: string): Promise<Stored> {
    const state = await this.queue.getJobState(id);
    const job = await Job.fromId<JobData, JobResult>(this.queue, id);
    if (job === undefined) throw new Error(`job ${id} is missing`);
    const { ferry, ...data } = job.data;
    return {
      id,
      state,
      name: job.name,
      data: ferry === undefined ? data : { ...data, ferry: storedDeliveryStateSchema.parse(ferry) },
      result: decodeStoredResult(job.returnvalue, job.data),
      failedReason: job.failedReason,
      stalledCounter: job.stalledCounter,
      createdAt: job.timestamp,
    };
  }

  /** Every dead-letter job hash under the prefix, found by key (not through a list that could miss one). */
  async deadLetterIds(): Promise<string[]> {
    const base = this.deadLetters.toKey('');
    const ids: string[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await this.#client.scan(cursor, 'MATCH', `${base}dl-*`, 'COUNT', 1000);
      cursor = next;
      for (const key of keys) {
        const id = key.slice(base.length);
        if (!id.includes(':')) ids.push(id);
      }
    } while (cursor !== '0');
    return ids.sort();
  }

  /** A dead letter, its history decoded (stored compactly: core/stored-history.ts). */
  async deadLetter(id: string): Promise<Job<DeadLetterRecord> | undefined> {
    const job = await Job.fromId<DeadLetterRecord>(this.deadLetters, id);
    if (job !== undefined) job.data.attempts = storedHistorySchema.parse(job.data.attempts);
    return job;
  }
}

async function inspector(prefix: string): Promise<Inspector> {
  const inspect = new Inspector(redis, prefix);
  onTestFinished(() => inspect.close());
  return inspect;
}

async function producer(prefix: string): Promise<Producer> {
  const created = new Producer({ connection: redis.url, prefix });
  onTestFinished(() => created.close());
  return created;
}

const isAttemptLog = (entry: LogEntry): boolean =>
  entry.msg === 'attempt completed' || entry.msg === 'attempt failed';

/** Waits until `worker` has finished at least `count` attempts of its own, so it is busy when killed. */
async function whenBusy(worker: FerryProcess, count: number): Promise<void> {
  await expect
    .poll(() => worker.countLogs(isAttemptLog), { timeout: 30_000, interval: 20 })
    .toBeGreaterThanOrEqual(count);
}

function callsByJob(requests: readonly RecordedRequest[]): Map<string, number> {
  const calls = new Map<string, number>();
  for (const request of requests) {
    const jobId = String(request.headers['x-job-id']);
    calls.set(jobId, (calls.get(jobId) ?? 0) + 1);
  }
  return calls;
}

/**
 * The history rules of DESIGN §4 and §8: failed attempts are numbered 1, 2, 3… in order and carry their
 * error; an interrupted run (a stall) repeats the number of the attempt it was about to make and uses none;
 * times never go backwards.
 */
function expectConsistentHistory(attempts: readonly AttemptRecord[], context: string): void {
  let failed = 0;
  let at = 0;
  for (const entry of attempts) {
    expect(entry.at, `${context}: attempt times go forward`).toBeGreaterThanOrEqual(at);
    at = entry.at;
    expect(['failed', 'interrupted'], `${context}: outcome`).toContain(entry.outcome);
    if (entry.outcome === 'failed') {
      failed++;
      expect(entry.attempt, `${context}: failed attempts are numbered in order`).toBe(failed);
      expect(entry.type, `${context}: a failed attempt has its error type`).toBeDefined();
    } else {
      expect(entry.attempt, `${context}: an interrupted run uses no attempt`).toBe(failed + 1);
    }
  }
}

describe('SIGKILL of worker processes', () => {
  it('loses no job: every job ends completed or dead-lettered exactly once, with a consistent history', async () => {
    const prefix = uniquePrefix();
    const file = await writeServicesFile(
      servicesFile(downstream.url, {
        ok: post('/ok'),
        reject: post('/reject'),
        fail: post('/fail'),
        flaky: post('/flaky'),
      }),
    );
    // maxStalledCount 5 (the default): a job that a kill interrupts is run again, never failed for it.
    const env = workerEnv({ redisUrl: redis.url, servicesFile: file, prefix });
    const inspect = await inspector(prefix);
    const enqueue = await producer(prefix);
    const kinds = new Map<string, Kind>();
    const enqueueWave = async (wave: number, count: number): Promise<void> => {
      const requests = Array.from({ length: count }, (_, i) => {
        const kind = KINDS[i % KINDS.length]!;
        return { service: SERVICE, operation: kind, input: { wave, i, kind } };
      });
      const results = await enqueue.enqueueMany(requests);
      results.forEach((result, i) => kinds.set(result.id, requests[i]!.operation));
    };

    const [victim, survivor] = await Promise.all([startWorker(env), startWorker(env)]);
    await enqueueWave(1, 200);
    await whenBusy(victim, 15);
    expect((await victim.kill9()).signal).toBe('SIGKILL');

    // Restart it, give it work, and kill it again mid-call.
    const restarted = await startWorker(env);
    await enqueueWave(2, 200);
    await whenBusy(restarted, 15);
    expect((await restarted.kill9()).signal).toBe('SIGKILL');

    // The survivor takes the killed workers' jobs again once their locks expire, and finishes everything.
    await expect
      .poll(
        async () => {
          const counts = await inspect.counts();
          return (counts.completed ?? 0) + (counts.failed ?? 0);
        },
        { timeout: 60_000, interval: 200 },
      )
      .toBe(400);
    expect(survivor.running, survivor.output()).toBe(true);

    const counts = await inspect.counts();
    expect(counts).toMatchObject({ waiting: 0, active: 0, delayed: 0, prioritized: 0 });
    const jobs = await Promise.all([...kinds.keys()].map((id) => inspect.job(id)));
    const failed = jobs.filter((job) => job.state === 'failed');
    const completed = jobs.filter((job) => job.state === 'completed');
    expect(failed.length + completed.length).toBe(400);

    // The kills really interrupted jobs mid-run: those jobs stalled and were run again.
    const stalled = jobs.filter((job) => job.stalledCounter > 0);
    expect(stalled.length, 'jobs interrupted by the kills').toBeGreaterThanOrEqual(2);
    expect(Math.max(...jobs.map((job) => job.stalledCounter))).toBeLessThanOrEqual(2);

    // Exactly one dead letter per failed job, none for a completed one, none duplicated.
    const deadLetterIds = await inspect.deadLetterIds();
    expect(deadLetterIds).toEqual(
      failed.map((job) => deadLetterJobId(SERVICE, job.id, job.createdAt)).sort(),
    );
    const waitList = await redis.client.lrange(inspect.deadLetters.toKey('wait'), 0, -1);
    expect([...waitList].sort()).toEqual(deadLetterIds);

    const calls = callsByJob(downstream.requests);
    for (const job of completed) {
      const kind = kinds.get(job.id)!;
      const context = `completed ${kind} job ${job.id}`;
      expect(['ok', 'flaky'], context).toContain(kind);
      expect(job.result?.status, context).toBe(200);
      const history = job.data.ferry?.attempts ?? [];
      expectConsistentHistory(history, context);
      const failedAttempts = history.filter((a) => a.outcome === 'failed').length;
      // An interrupted run used no attempt: an `ok` job always succeeds on attempt 1, however often it stalled.
      expect(job.result?.attempts, context).toBe(failedAttempts + 1);
      if (kind === 'ok') expect(job.result?.attempts, context).toBe(1);
      // Each run makes at most one call; only runs that a kill interrupted can add calls.
      const made = calls.get(job.id) ?? 0;
      expect(made, context).toBeGreaterThanOrEqual(failedAttempts + 1);
      expect(made, context).toBeLessThanOrEqual(failedAttempts + 1 + job.stalledCounter);
    }

    for (const job of failed) {
      const kind = kinds.get(job.id)!;
      const context = `failed ${kind} job ${job.id}`;
      expect(['reject', 'fail'], context).toContain(kind);
      const final = job.data.ferry?.final;
      expect(final, context).toMatchObject(
        kind === 'reject' ? { type: 'ClientError', status: 422 } : { type: 'ServerError', status: 500 },
      );
      expect(job.failedReason, context).toBe(`${final?.type}: ${final?.message}`);

      const dead = await inspect.deadLetter(deadLetterJobId(SERVICE, job.id, job.createdAt));
      expect(dead?.name, context).toBe(deadLetterJobName(SERVICE, kind));
      const record = dead!.data;
      expect(record, context).toMatchObject({
        service: SERVICE,
        operation: kind,
        sourceJobId: job.id,
        sourceQueue: serviceQueueName(SERVICE),
        input: job.data.input,
        finalError: final,
      });
      expectConsistentHistory(record.attempts, context);
      const failedAttempts = record.attempts.filter((a) => a.outcome === 'failed');
      const interrupted = record.attempts.filter((a) => a.outcome === 'interrupted');
      // 4xx: one call, not retried. 5xx: every attempt used, each with its error and (but the last) its wait.
      expect(failedAttempts.length, context).toBe(kind === 'reject' ? 1 : ATTEMPTS);
      for (const [i, attempt] of failedAttempts.entries()) {
        expect(attempt, context).toMatchObject(
          kind === 'reject' ? { type: 'ClientError', status: 422 } : { type: 'ServerError', status: 500 },
        );
        if (i < failedAttempts.length - 1) expect(attempt.retryDelayMs, context).toBeGreaterThanOrEqual(0);
        else expect(attempt.retryDelayMs, context).toBeUndefined();
      }
      expect(interrupted.length, context).toBeLessThanOrEqual(job.stalledCounter);
      // The dead letter holds the job's own history (plus, at most, stalls no later run got to record).
      const persisted = job.data.ferry?.attempts ?? [];
      expect(record.attempts.slice(0, persisted.length), context).toEqual(persisted);
      expect(
        record.attempts.slice(persisted.length).every((a) => a.outcome === 'interrupted'),
        context,
      ).toBe(true);
      const made = calls.get(job.id) ?? 0;
      expect(made, context).toBeGreaterThanOrEqual(failedAttempts.length);
      expect(made, context).toBeLessThanOrEqual(failedAttempts.length + job.stalledCounter);
    }

    // Every kind of outcome happened, so none of the loops above checked nothing.
    expect(new Set(completed.map((job) => kinds.get(job.id)))).toEqual(new Set(['ok', 'flaky']));
    expect(new Set(failed.map((job) => kinds.get(job.id)))).toEqual(new Set(['reject', 'fail']));
  }, 120_000);

  it('dead-letters a job BullMQ fails itself (stalled more than maxStalledCount) with TimeoutError', async () => {
    const prefix = uniquePrefix();
    const hanging = await startHangingService();
    const file = await writeServicesFile(servicesFile(hanging.url, { slow: post('/slow') }));
    // One stall is forgiven, the second fails the job inside BullMQ: the processor is never called for it.
    const env = workerEnv({
      redisUrl: redis.url,
      servicesFile: file,
      prefix,
      extra: { FERRY_MAX_STALLED_COUNT: '1' },
    });
    const inspect = await inspector(prefix);
    const enqueue = await producer(prefix);
    const { id } = await enqueue.enqueue({ service: SERVICE, operation: 'slow', input: { n: 1 } });

    // Each worker takes the job, calls the downstream (which never answers) and is killed mid-call.
    for (const run of [1, 2]) {
      const worker = await startWorker(env);
      await expect.poll(() => hanging.requests.length, { timeout: 30_000 }).toBe(run);
      await worker.kill9();
    }
    const last = await startWorker(env);
    await expect.poll(async () => (await inspect.job(id)).state, { timeout: 30_000 }).toBe('failed');
    const job = await inspect.job(id);
    expect(job.failedReason).toMatch(/stalled more than allowable limit/);
    expect(job.stalledCounter).toBe(2);
    // Ferry never decided this failure: there is no final error in the job's own data.
    expect(job.data.ferry?.final).toBeUndefined();

    await expect
      .poll(() => inspect.deadLetterIds(), { timeout: 30_000 })
      .toEqual([deadLetterJobId(SERVICE, id, job.createdAt)]);
    const dead = await inspect.deadLetter(deadLetterJobId(SERVICE, id, job.createdAt));
    expect(dead?.name).toBe(deadLetterJobName(SERVICE, 'slow'));
    expect(dead?.data).toMatchObject({
      service: SERVICE,
      operation: 'slow',
      sourceJobId: id,
      input: { n: 1 },
      finalError: { type: 'TimeoutError' },
    });
    expect(dead?.data.finalError.message).toMatch(/lost by a worker 2 times/);
    // Both lost runs are in the history, as interrupted runs that used no attempt.
    expect(dead?.data.attempts.map((a) => [a.attempt, a.outcome])).toEqual([
      [1, 'interrupted'],
      [1, 'interrupted'],
    ]);
    // The processor ran twice (two calls), and BullMQ failed the job without a third.
    expect(hanging.requests).toHaveLength(2);
    expect(hanging.requests.every((call) => call.jobId === id)).toBe(true);
    // The re-run after the stall sent the key of the first run.
    expect(hanging.requests[0]!.key).toMatch(/^ferry-/);
    expect(hanging.requests[1]!.key).toBe(hanging.requests[0]!.key);
    await expect
      .poll(() => last.countLogs((entry) => /dead-lettered a (failed )?job/.test(String(entry.msg))))
      .toBeGreaterThanOrEqual(1);
  }, 90_000);
});

/** A downstream that never answers; `requests` holds each call's Idempotency-Key and job id. */
async function startHangingService(): Promise<{
  url: string;
  requests: { key: string; jobId: string }[];
}> {
  const requests: { key: string; jobId: string }[] = [];
  const server = createServer((req: IncomingMessage) => {
    requests.push({ key: String(req.headers['idempotency-key']), jobId: String(req.headers['x-job-id']) });
    req.resume();
  });
  const { url } = await listenOnFreePort(server);
  return { url, requests };
}
