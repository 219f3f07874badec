/**
 * The failed-set sweep. BullMQ fails a job that stalled more than `maxStalledCount` times *without calling
 * the processor* (DESIGN §8), and a worker can be killed between writing a dead letter's prerequisites and
 * the move to failed. So the processor's dead-letter write is not enough on its own: this sweep finds failed
 * jobs without a dead letter and writes one, idempotently (same job id as the processor would use).
 */
import { Job, type Queue } from 'bullmq';

import { parseFailedReason } from '../core/failed-reason.ts';
import {
  type AttemptRecord,
  type DeadLetterRecord,
  deliveryStateSchema,
  type JobData,
  jobOriginSchema,
  usedAttempts,
} from '../core/job.ts';
import {
  DEAD_LETTERED_FIELD,
  deadLetterJobId,
  defaultIdempotencyKey,
  serviceQueueName,
} from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';
import type { DeadLetterWriter } from './writer.ts';

export interface SweepResult {
  checked: number;
  written: string[];
}

export function deadLetterFromJob(service: string, job: Job<JobData>, nowMs: number): DeadLetterRecord {
  const data = job.data ?? ({} as JobData);
  // Job data is anyone's to write: a malformed state is ignored (the failed reason still says what happened).
  const parsed = deliveryStateSchema.safeParse(data.ferry);
  const state = parsed.success ? parsed.data : undefined;
  const recorded = state?.attempts ?? [];
  const record: DeadLetterRecord = {
    service,
    operation: job.name,
    input: data.input ?? null,
    sourceJobId: job.id ?? '',
    sourceQueue: job.queueName,
    attempts: [...recorded, ...unrecordedStalls(job, recorded, state?.stallsSeen ?? 0, nowMs)],
    finalError: state?.final ?? parseFailedReason(job.failedReason, job.stalledCounter),
    deadLetteredAt: nowMs,
    enqueuedAt: job.timestamp,
  };
  if (data.tenant !== undefined) record.tenant = data.tenant;
  // The key the downstream was sent, also when the job had none of its own (processor.ts): a replay sends it
  // again. (Job data is anyone's to write: a key that is not a string was never sent.)
  record.idempotencyKey =
    typeof data.idempotencyKey === 'string'
      ? data.idempotencyKey
      : defaultIdempotencyKey(service, record.sourceJobId, job.timestamp, data.enqueueId);
  if (data.metadata !== undefined) record.metadata = data.metadata;
  // A sealed job's envelope, kept as it is (its input is `[sealed]`): a replay copies it, `dlq show --reveal`
  // opens it.
  if (typeof data.sealed === 'string') record.sealed = data.sealed;
  // Where Ferry's own job came from (a reaction, a route, a schedule); a malformed one is left out.
  if (data.origin !== undefined) {
    const origin = jobOriginSchema.safeParse(data.origin);
    if (origin.success) record.origin = origin.data;
  }
  return record;
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
 * Stalls BullMQ counted that no run of Ferry recorded. The worker records a stall as an `interrupted` run at
 * the start of the run that follows it (DESIGN §8); when BullMQ fails a job for stalling too often, that run
 * never comes, and without this the dead letter of a job that was run (and may have called the downstream)
 * several times would show no attempt at all.
 */
function unrecordedStalls(
  job: Job<JobData>,
  recorded: readonly AttemptRecord[],
  seen: number,
  nowMs: number,
): AttemptRecord[] {
  const stalls = job.stalledCounter ?? 0;
  if (stalls <= seen) return [];
  const attempt = usedAttempts(recorded) + 1;
  // When the stalls happened is not recorded; the job failed (finishedOn) just after the last one was seen.
  const at = job.finishedOn ?? nowMs;
  return Array.from({ length: stalls - seen }, () => ({
    attempt,
    outcome: 'interrupted' as const,
    at,
    durationMs: 0,
    message: 'the worker running this job was lost (crash or stall) before the run finished',
  }));
}

/** Records on the source job that its dead letter exists (see DEAD_LETTERED_FIELD). */
export async function markDeadLettered(
  writer: DeadLetterWriter,
  queue: Pick<Queue, 'toKey'>,
  jobId: string,
  deadLetterId: string,
): Promise<void> {
  // HSET on a job that was removed meanwhile would create a stray hash: only mark one that still exists.
  await writer.connection.eval(MARK_IF_EXISTS, 1, queue.toKey(jobId), DEAD_LETTERED_FIELD, deadLetterId);
}

/** Whether the source job carries the mark of markDeadLettered (its dead letter was written, maybe purged since). */
export async function isDeadLettered(
  writer: DeadLetterWriter,
  queue: Pick<Queue, 'toKey'>,
  jobId: string,
): Promise<boolean> {
  return (await writer.connection.hget(queue.toKey(jobId), DEAD_LETTERED_FIELD)) !== null;
}

/**
 * Marks the source job of a Ferry dead letter (`dl-<service>.<job id>.<created>`) as markDeadLettered would,
 * if that very job (same creation time) still exists unmarked. For whoever deletes a dead letter: a worker
 * that died between writing it and marking its job writes it again on the re-run (as does the sweep), which
 * would bring back a dead letter that was replayed (replaying it twice) or purged.
 */
export async function markSourceOfDeadLetter(
  client: RedisClient,
  prefix: string,
  deadLetterId: string,
): Promise<void> {
  const parts = /^dl-([a-z0-9][a-z0-9_-]{0,63})\.(.+)\.(\d+)$/.exec(deadLetterId);
  if (parts === null) return;
  const [, service, jobId, createdAt] = parts as unknown as [string, string, string, string];
  const key = `${prefix}:${serviceQueueName(service)}:${jobId}`;
  await client.eval(MARK_SOURCE, 1, key, DEAD_LETTERED_FIELD, deadLetterId, createdAt);
}

const MARK_SOURCE = `
if redis.call('HGET', KEYS[1], 'timestamp') ~= ARGV[3] then return 0 end
return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])`;

const MARK_IF_EXISTS = `if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end return 0`;

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
