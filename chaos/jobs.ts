/**
 * Where accepted jobs ended, read the way any BullMQ tool would: completed, dead-lettered, or lost once the
 * scenario settled; and when the first job completed after a fault.
 */
import { Job, Queue } from 'bullmq';
import type { Redis } from 'ioredis';

import {
  DEAD_LETTER_QUEUE,
  deadLetterJobId,
  type DeadLetterRecord,
  type JobData,
  type JobResult,
  Producer,
  serviceQueueName,
} from '../src/index.ts';
import { type CallStats, callStats, type RecordedCall } from './downstream.ts';
import { type Lab, waitFor } from './lab.ts';
import { redisClient } from './redis.ts';

export interface AcceptedJob {
  service: string;
  id: string;
}

/** Adds `jobs` with the library's Producer (no API in between); the accepted ones. */
export async function enqueueDirectly(
  redisUrl: string,
  prefix: string,
  jobs: readonly { service: string; operation: string; input?: unknown }[],
): Promise<AcceptedJob[]> {
  const producer = new Producer({ connection: redisUrl, prefix });
  try {
    const added = await producer.enqueueMany(jobs);
    return added.map((job, i) => ({ service: jobs[i]!.service, id: job.id }));
  } finally {
    await producer.close();
  }
}

export type Outcome =
  | { state: 'completed'; finishedOn: number | undefined }
  | { state: 'dead-lettered'; type: string | undefined; finishedOn: number | undefined }
  | { state: 'pending'; detail: string };

export interface Accounting {
  enqueued: number;
  completed: number;
  deadLettered: number;
  lost: number;
  /** Dead letters by final error type. */
  deadLetterTypes: Record<string, number>;
  /** Each job's outcome, by `<service>/<id>`. */
  outcomes: Map<string, Outcome>;
  /** The first few lost jobs and the state they were left in. */
  lostSamples: string[];
}

/** Reads jobs and dead letters the way any BullMQ tool would. */
export class JobInspector {
  readonly #client: Redis;
  readonly #prefix: string;
  readonly #queues = new Map<string, Queue<JobData, JobResult>>();
  readonly #deadLetters: Queue<DeadLetterRecord>;

  constructor(lab: Lab, redisUrl: string, prefix: string) {
    this.#client = redisClient(lab, redisUrl);
    this.#prefix = prefix;
    this.#deadLetters = new Queue(DEAD_LETTER_QUEUE, { connection: this.#client, prefix });
    lab.defer(() => this.close());
  }

  async close(): Promise<void> {
    for (const queue of this.#queues.values()) await queue.close().catch(() => undefined);
    await this.#deadLetters.close().catch(() => undefined);
  }

  queue(service: string): Queue<JobData, JobResult> {
    let queue = this.#queues.get(service);
    if (queue === undefined) {
      queue = new Queue(serviceQueueName(service), { connection: this.#client, prefix: this.#prefix });
      this.#queues.set(service, queue);
    }
    return queue;
  }

  async outcome(job: AcceptedJob): Promise<Outcome> {
    const found = await Job.fromId<JobData, JobResult>(this.queue(job.service), job.id);
    if (found === undefined) return { state: 'pending', detail: 'missing' };
    const state = await found.getState();
    if (state === 'completed') return { state: 'completed', finishedOn: found.finishedOn };
    if (state === 'failed') {
      const dead = await Job.fromId<DeadLetterRecord>(
        this.#deadLetters,
        deadLetterJobId(job.service, job.id, found.timestamp),
      );
      if (dead !== undefined)
        return { state: 'dead-lettered', type: dead.data.finalError?.type, finishedOn: found.finishedOn };
      return { state: 'pending', detail: 'failed without a dead letter' };
    }
    return { state: 'pending', detail: state };
  }

  /**
   * Waits until every job has ended (completed, or failed with its dead letter) or `timeoutMs` passed;
   * whatever has not ended then is lost.
   */
  async settle(jobs: readonly AcceptedJob[], timeoutMs: number): Promise<Accounting> {
    const outcomes = new Map<string, Outcome>();
    const keyOf = (job: AcceptedJob): string => `${job.service}/${job.id}`;
    const unique = [...new Map(jobs.map((job) => [keyOf(job), job])).values()];
    await waitFor(
      async () => {
        const open = unique.filter(
          (job) =>
            outcomes.get(keyOf(job))?.state !== 'completed' &&
            outcomes.get(keyOf(job))?.state !== 'dead-lettered',
        );
        for (let i = 0; i < open.length; i += 200) {
          const batch = open.slice(i, i + 200);
          const read = await Promise.all(
            batch.map((job) =>
              this.outcome(job).catch((error: unknown): Outcome => ({
                state: 'pending',
                detail: `unreadable: ${String(error)}`,
              })),
            ),
          );
          batch.forEach((job, j) => outcomes.set(keyOf(job), read[j]!));
        }
        return unique.every((job) => outcomes.get(keyOf(job))?.state !== 'pending');
      },
      { timeoutMs, intervalMs: 250 },
    );
    const accounting: Accounting = {
      enqueued: unique.length,
      completed: 0,
      deadLettered: 0,
      lost: 0,
      deadLetterTypes: {},
      outcomes,
      lostSamples: [],
    };
    for (const job of unique) {
      const outcome = outcomes.get(keyOf(job)) ?? { state: 'pending', detail: 'never read' };
      if (outcome.state === 'completed') accounting.completed++;
      else if (outcome.state === 'dead-lettered') {
        accounting.deadLettered++;
        const type = outcome.type ?? 'unknown';
        accounting.deadLetterTypes[type] = (accounting.deadLetterTypes[type] ?? 0) + 1;
      } else {
        accounting.lost++;
        if (accounting.lostSamples.length < 3)
          accounting.lostSamples.push(`${keyOf(job)}: ${outcome.detail}`);
      }
    }
    return accounting;
  }
}

/** ms from `faultEndedAt` (epoch ms) to the first job that ended completed after it; null when none did. */
export function recoverMs(accounting: Accounting, faultEndedAt: number): number | null {
  let first: number | undefined;
  for (const outcome of accounting.outcomes.values()) {
    if (outcome.state !== 'completed' || outcome.finishedOn === undefined) continue;
    if (outcome.finishedOn >= faultEndedAt && (first === undefined || outcome.finishedOn < first))
      first = outcome.finishedOn;
  }
  return first === undefined ? null : first - faultEndedAt;
}

/** Settles `jobs` (see JobInspector.settle) and counts the downstream's calls for them. */
export async function settleAndCount(
  lab: Lab,
  options: { redisUrl: string; prefix: string; calls: readonly RecordedCall[]; timeoutMs: number },
  jobs: readonly AcceptedJob[],
): Promise<{ inspector: JobInspector; accounting: Accounting; calls: CallStats }> {
  const inspector = new JobInspector(lab, options.redisUrl, options.prefix);
  const accounting = await inspector.settle(jobs, options.timeoutMs);
  const calls = callStats(options.calls, new Set(jobs.map((job) => job.id)));
  return { inspector, accounting, calls };
}
