/**
 * Writing dead letters, and what every writer shares: the record of a failed job (deadLetterFromJob) and the
 * source job's mark that its dead letter exists (markDeadLettered, isDeadLettered, markSourceOfDeadLetter).
 * The delivery path (worker/delivery.ts) and the failed-set sweep (reconciler.ts) both write through these.
 */
import { Job, Queue } from 'bullmq';

import { parseFailedReason } from '../core/failed-reason.ts';
import {
  type AttemptRecord,
  type DeadLetterRecord,
  type JobData,
  jobOriginSchema,
  type StoredDeadLetterRecord,
  usedAttempts,
} from '../core/job.ts';
import {
  DEAD_LETTER_QUEUE,
  DEAD_LETTERED_FIELD,
  deadLetterJobId,
  deadLetterJobName,
  defaultIdempotencyKey,
  serviceQueueName,
} from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';
import { storedDeliveryStateSchema, toStoredDeadLetter, withDecodedHistory } from '../core/stored-history.ts';
import { type DeadLetterKeys, deadLetterKeys, indexCommand } from './search-index.ts';

/**
 * Writes dead letters to `{dead-letter}`. The job id is fixed per source job (deadLetterJobId), so the worker,
 * the failed-set sweep and a re-run after a crash all write the same dead letter and none is ever duplicated. The queue is
 * paused: no worker consumes it; operators inspect, replay or purge it.
 */
export class DeadLetterWriter {
  /** The queue as stored: each dead letter's history encoded (core/stored-history.ts). */
  readonly queue: Queue<StoredDeadLetterRecord>;
  readonly #connection: RedisClient;
  readonly #keys: DeadLetterKeys;
  #paused: Promise<void> | undefined;

  constructor(options: { connection: RedisClient; prefix: string }) {
    this.#connection = options.connection;
    this.#keys = deadLetterKeys(options.prefix);
    this.queue = new Queue<StoredDeadLetterRecord>(DEAD_LETTER_QUEUE, {
      connection: options.connection,
      prefix: options.prefix,
    });
  }

  /** The raw connection, for reads BullMQ has no API for. */
  get connection(): RedisClient {
    return this.#connection;
  }

  /**
   * Adds the dead letter and its index entries (search-index.ts) in one MULTI, so no list or count ever sees
   * one without the other. BullMQ's `Job.addJob` takes a transaction for this (its FlowProducer adds a whole
   * flow the same way); the job is stored exactly as `queue.add` would store it. Writing a dead letter that
   * exists changes nothing: BullMQ keeps the first job, and the entries keep theirs. The record's history is
   * stored compactly (core/stored-history.ts); the index is built from the record itself.
   */
  async write(record: DeadLetterRecord): Promise<{ id: string }> {
    this.#paused ??= this.queue.pause();
    await this.#paused;
    const id = deadLetterJobId(record.service, record.sourceJobId, record.enqueuedAt);
    const name = deadLetterJobName(record.service, record.operation);
    // Kept until an operator replays or purges it.
    const options = { jobId: id, removeOnComplete: false, removeOnFail: false };
    const index = indexCommand(this.#keys, id, record, 'keep');
    const transaction = (await this.queue.getBackend().client).multi();
    const stored = toStoredDeadLetter(record);
    await new Job<StoredDeadLetterRecord>(this.queue, name, stored, options, id).addJob(transaction);
    transaction.runCommand('eval', index);
    const error = await transaction.exec().then(
      (results) =>
        results === null
          ? new Error(`dead letter ${id}: the transaction was aborted`)
          : (results.find(([failed]) => failed !== null)?.[0] ?? undefined),
      (failed: unknown) => failed,
    );
    if (error === undefined) return { id };
    if (!(error instanceof Error && error.message.startsWith('NOSCRIPT'))) throw error;
    // Redis no longer has BullMQ's script (SCRIPT FLUSH; Redis 8 and Valkey 8 evict EVAL-loaded scripts past
    // 500, redis/redis#13108). ioredis sends it again for a plain call but not inside MULTI, where nothing was
    // added then: two steps this once.
    // A crash between them leaves a dead letter out of the index until reindexDeadLetters runs.
    await this.queue.add(name, stored, options);
    await this.#connection.eval(...index);
    return { id };
  }

  async exists(id: string): Promise<boolean> {
    return (await this.#connection.exists(this.queue.toKey(id))) === 1;
  }

  /**
   * A dead letter by its id (`deadLetterJobId`, or a JobView's `deadLetterId`), its history decoded into
   * AttemptRecords (either stored version); data that is not Ferry's is left as it is.
   */
  async get(id: string): Promise<Job<DeadLetterRecord> | undefined> {
    const job = await this.queue.getJob(id);
    if (job === undefined) return undefined;
    job.data = withDecodedHistory(job.data);
    return job as unknown as Job<DeadLetterRecord>;
  }

  close(): Promise<void> {
    return this.queue.close();
  }
}

export function deadLetterFromJob(service: string, job: Job<JobData>, nowMs: number): DeadLetterRecord {
  const data = job.data ?? ({} as JobData);
  // Job data is anyone's to write: a malformed state is ignored (the failed reason still says what happened).
  const parsed = storedDeliveryStateSchema.safeParse(data.ferry);
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
