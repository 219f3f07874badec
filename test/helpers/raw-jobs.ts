/**
 * Jobs written and finished with BullMQ directly, as another worker (or a raw tool) would: the read side of
 * issue 16 (GET, SSE, Producer.waitFor's follow, the CLI) is tested against jobs that carry `origin` in their
 * data and `next` / `routedTo` in their return value, whoever wrote them. Closed when the test finishes.
 */
import { type Job, Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { onTestFinished } from 'vitest';

import type { JobData, JobResult } from '../../src/core/job.ts';
import { serviceQueueName } from '../../src/core/queue-layout.ts';
import { until } from './until.ts';

const TOKEN = 'raw-jobs-test-token';

export interface RawJobs {
  /** Adds a job to a service queue with the given data (and job id); returns its id. */
  add(service: string, operation: string, data: JobData, jobId?: string): Promise<string>;
  /** Takes the next job of a service queue, as a worker does (waits for one up to `timeoutMs`). */
  take(service: string, timeoutMs?: number): Promise<Job<JobData, JobResult>>;
  /** Completes a taken job with a JobResult (status 200, `{}` body) plus `extra`. */
  complete(job: Job<JobData, JobResult>, extra?: Partial<JobResult> & Record<string, unknown>): Promise<void>;
}

export function rawJobs(redisUrl: string, prefix: string): RawJobs {
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const queues = new Map<string, Queue<JobData, JobResult>>();
  const workers = new Map<string, Worker<JobData, JobResult>>();
  onTestFinished(async () => {
    await Promise.all([...workers.values(), ...queues.values()].map((closable) => closable.close()));
    connection.disconnect();
  });
  const queue = (service: string): Queue<JobData, JobResult> => {
    let found = queues.get(service);
    if (found === undefined) {
      found = new Queue<JobData, JobResult>(serviceQueueName(service), { connection, prefix });
      queues.set(service, found);
    }
    return found;
  };
  const worker = (service: string): Worker<JobData, JobResult> => {
    let found = workers.get(service);
    if (found === undefined) {
      found = new Worker<JobData, JobResult>(serviceQueueName(service), null, {
        connection,
        prefix,
        autorun: false,
      });
      workers.set(service, found);
    }
    return found;
  };
  return {
    async add(service, operation, data, jobId) {
      const job = await queue(service).add(operation, data, jobId === undefined ? {} : { jobId });
      return job.id!;
    },
    take(service, timeoutMs = 15_000) {
      return until(
        async () => (await worker(service).getNextJob(TOKEN, { block: false })) ?? undefined,
        timeoutMs,
        () => `a job on ${service}'s queue`,
        20,
      );
    },
    async complete(job, extra = {}) {
      const result = { status: 200, headers: {}, body: {}, durationMs: 1, attempts: 1, ...extra };
      await job.moveToCompleted(result as JobResult, TOKEN, false);
    },
  };
}
