/**
 * The failed-set sweep. BullMQ fails a job that stalled more than `maxStalledCount` times *without calling
 * the processor* (DESIGN §8), and a worker can be killed between writing a dead letter's prerequisites and
 * the move to failed. So the processor's dead-letter write is not enough on its own: this sweep finds failed
 * jobs without a dead letter and writes one, idempotently (same job id as the processor would use).
 *
 * Only the sweep lives here; what the delivery path shares with it (the record of a failed job, the source
 * job's dead-letter mark) is beside the writer (writer.ts).
 */
import { Job, type Queue } from 'bullmq';

import type { DeadLetterRecord, JobData } from '../core/job.ts';
import { DEAD_LETTERED_FIELD, deadLetterJobId } from '../core/queue-layout.ts';
import { deadLetterFromJob, type DeadLetterWriter, markDeadLettered } from './writer.ts';

export interface SweepResult {
  checked: number;
  written: string[];
}

/**
 * What a dead letter fires (the onFailure follow-up, worker/follow-ups.ts), for the writers here. `plan` writes
 * the follow-up (or why there is none) into the record before it is written, and returns the add to run after
 * the write and before the mark; the add is idempotent (the follow-up's job id is fixed by the dead letter).
 */
export interface DeadLetterReaction {
  plan(
    record: DeadLetterRecord,
    deadLetterId: string,
    data: JobData | undefined,
  ): (() => Promise<void>) | undefined;
}

/**
 * Writes a dead letter for one failed job unless it has one (or had one that was purged or replayed).
 * Idempotent; true when it wrote one.
 */
export async function reconcileJob(
  service: string,
  queue: Queue<JobData>,
  jobId: string,
  writer: DeadLetterWriter,
  nowMs: number,
  reaction?: DeadLetterReaction,
): Promise<boolean> {
  const createdAt = await unmarkedCreatedAt(writer, queue, jobId);
  if (createdAt === undefined) return false;
  return writeMissing(service, queue, jobId, createdAt, writer, nowMs, reaction);
}

/**
 * The source job's creation time when it still exists and carries no dead-letter mark; undefined when it is
 * gone or already marked (nothing to write).
 */
async function unmarkedCreatedAt(
  writer: DeadLetterWriter,
  queue: Pick<Queue, 'toKey'>,
  jobId: string,
): Promise<number | undefined> {
  const [createdAt, marked] = await writer.connection.hmget(
    queue.toKey(jobId),
    'timestamp',
    DEAD_LETTERED_FIELD,
  );
  return createdAt === null || createdAt === undefined || marked !== null ? undefined : Number(createdAt);
}

/** For an existing, unmarked failed job: writes its dead letter unless one exists, then marks it. */
async function writeMissing(
  service: string,
  queue: Queue<JobData>,
  jobId: string,
  createdAt: number,
  writer: DeadLetterWriter,
  nowMs: number,
  reaction: DeadLetterReaction | undefined,
): Promise<boolean> {
  const id = deadLetterJobId(service, jobId, createdAt);
  // Written before a crash stopped the worker from marking it: mark it now, once its follow-up is surely added
  // (the worker adds it between the write and the mark).
  const existed = await writer.exists(id);
  if (!existed || reaction !== undefined) {
    const job = await Job.fromId<JobData>(queue, jobId);
    if (job === undefined) return false;
    const record = deadLetterFromJob(service, job, nowMs);
    const addFollowUp = reaction?.plan(record, id, job.data);
    if (!existed) await writer.write(record);
    if (addFollowUp !== undefined) await addFollowUp();
  }
  await markDeadLettered(writer, queue, jobId, id);
  return !existed;
}

/**
 * Checks failed jobs that finished at or after `sinceMs` (the failed set is scored by finish time), so a
 * periodic sweep reads only what is new; `sinceMs = 0` checks the whole set (at start-up).
 */
export async function sweepFailed(
  service: string,
  queue: Queue<JobData>,
  writer: DeadLetterWriter,
  sinceMs: number,
  nowMs: number,
  reaction?: DeadLetterReaction,
): Promise<SweepResult> {
  const client = writer.connection;
  const result: SweepResult = { checked: 0, written: [] };
  const pageSize = 500;
  for (let offset = 0; ; offset += pageSize) {
    const ids = await client.zrangebyscore(queue.toKey('failed'), sinceMs, '+inf', 'LIMIT', offset, pageSize);
    // The page's marks (nearly all set) read together, pipelined, not one round trip per job.
    const createdAts = await Promise.all(ids.map((id) => unmarkedCreatedAt(writer, queue, id)));
    for (const [i, id] of ids.entries()) {
      result.checked++;
      const createdAt = createdAts[i];
      if (createdAt === undefined) continue;
      if (await writeMissing(service, queue, id, createdAt, writer, nowMs, reaction)) result.written.push(id);
    }
    if (ids.length < pageSize) return result;
  }
}
