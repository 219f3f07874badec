import { randomUUID } from 'node:crypto';

import { Job, type JobsOptions, Queue } from 'bullmq';

import type { ErrorRecord } from '../core/errors.ts';
import { parseFailedReason } from '../core/failed-reason.ts';
import {
  type AttemptRecord,
  deliveryStateSchema,
  type EnqueueRequest,
  type JobData,
  type JobResult,
  usedAttempts,
} from '../core/job.ts';
import {
  DEAD_LETTER_QUEUE,
  deadLetterJobId,
  DEFAULT_PREFIX,
  idempotentJobId,
  isPossibleJobId,
  serviceQueueName,
} from '../core/queue-layout.ts';
import { createRedisConnection, type RedisClient, waitUntilReady } from '../core/redis.ts';
import {
  checkReplicaSettings,
  DEFAULT_MIN_REPLICAS,
  DEFAULT_REPLICA_TIMEOUT_MS,
  waitForReplicas,
} from './replicas.ts';
import { DEFAULT_MAX_METADATA_BYTES, type ServiceCatalog, validateEnqueueRequest } from './validate.ts';

export interface ProducerOptions {
  /** A Redis URL, or a connection to share (producer role: `enableOfflineQueue: false` fails fast when Redis is down). */
  connection: string | RedisClient;
  /** Key prefix; default `FERRY_PREFIX`'s default, `ferry`. */
  prefix?: string;
  /** The services the producer may enqueue for; when given, unknown services and operations are refused at once. */
  services?: ServiceCatalog;
  /** Largest `metadata` in JSON bytes; default DEFAULT_MAX_METADATA_BYTES (16 KiB). */
  maxMetadataBytes?: number;
  /**
   * Replicas that must acknowledge each enqueue (Redis `WAIT`) before it resolves; default 0: no WAIT. When
   * fewer acknowledge within `replicaTimeoutMs`, the call rejects with ReplicaTimeoutError, though the job may
   * have been added: retry with the same idempotency key. WAIT blocks the connection it is sent on, so give a
   * producer with this set a connection of its own.
   */
  minReplicas?: number;
  /** How long an enqueue waits for `minReplicas` (1 to 30000 ms); default 1000. */
  replicaTimeoutMs?: number;
}

export interface EnqueueResult {
  id: string;
  service: string;
  operation: string;
  /** `false` when an idempotency key matched a job enqueued before: that job is returned, nothing is added. */
  created: boolean;
}

export type JobState =
  'waiting' | 'active' | 'delayed' | 'prioritized' | 'completed' | 'dead_lettered' | 'unknown';

export interface JobView {
  id: string;
  service: string;
  operation: string;
  state: JobState;
  /** Ferry attempts used so far. */
  attempts: number;
  history: AttemptRecord[];
  lastError: ErrorRecord | undefined;
  result: JobResult | undefined;
  /** Id in `{dead-letter}` when the job was dead-lettered. */
  deadLetterId: string | undefined;
  enqueuedAt: number;
  tenant: string | undefined;
  idempotencyKey: string | undefined;
  metadata: Record<string, unknown> | undefined;
}

/** `waitFor` gave up: the job is still running (or was never there). `job` is its last known view. */
export class WaitTimeoutError extends Error {
  readonly type = 'WaitTimeoutError';
  readonly job: JobView | undefined;
  constructor(message: string, job: JobView | undefined) {
    super(message);
    this.job = job;
  }
  override get name(): string {
    return this.type;
  }
}

/** A call on a Producer after `close()`. */
export class ProducerClosedError extends Error {
  readonly type = 'ProducerClosedError';
  override get name(): string {
    return this.type;
  }
}

const TERMINAL: ReadonlySet<JobState> = new Set(['completed', 'dead_lettered']);

/**
 * KEYS: wait, paused, delayed, prioritized (BullMQ's keys of the queue), the job's hash; ARGV[1] job id.
 * Takes the job out of the first of them that holds it: 1; the job exists but waits in none (active, done): 0;
 * no such job: -1. All keys share the queue's hash tag, so it runs on a Redis Cluster too.
 */
const TAKE_WAITING_JOB = `
if redis.call('EXISTS', KEYS[5]) == 0 then return -1 end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) > 0 then return 1 end
if redis.call('LREM', KEYS[2], 1, ARGV[1]) > 0 then return 1 end
if redis.call('ZREM', KEYS[3], ARGV[1]) > 0 then return 1 end
if redis.call('ZREM', KEYS[4], ARGV[1]) > 0 then return 1 end
return 0
`;

/** Enqueues integration jobs. Imports no worker, HTTP or breaker code: safe to embed in any service. */
export class Producer {
  readonly prefix: string;
  /** Largest `metadata` this producer accepts (JSON bytes). */
  readonly maxMetadataBytes: number;
  readonly #connection: RedisClient;
  readonly #ownsConnection: boolean;
  readonly #catalog: ServiceCatalog | undefined;
  readonly #queues = new Map<string, Queue<JobData, JobResult>>();
  readonly #minReplicas: number;
  readonly #replicaTimeoutMs: number;
  readonly #slots = new Map<string, number>();
  #closed = false;

  constructor(options: ProducerOptions) {
    this.prefix = options.prefix ?? DEFAULT_PREFIX;
    this.#catalog = options.services;
    this.maxMetadataBytes = options.maxMetadataBytes ?? DEFAULT_MAX_METADATA_BYTES;
    this.#minReplicas = options.minReplicas ?? DEFAULT_MIN_REPLICAS;
    this.#replicaTimeoutMs = options.replicaTimeoutMs ?? DEFAULT_REPLICA_TIMEOUT_MS;
    checkReplicaSettings(this.#minReplicas, this.#replicaTimeoutMs);
    if (typeof options.connection === 'string') {
      this.#connection = createRedisConnection({ url: options.connection }, 'producer', 'ferry-producer');
      this.#ownsConnection = true;
    } else {
      this.#connection = options.connection;
      this.#ownsConnection = false;
    }
  }

  /**
   * Validates and enqueues one job. Throws ValidationError (with `field`) for a bad request, and
   * ReplicaTimeoutError when `minReplicas` did not acknowledge it in time.
   */
  async enqueue(request: EnqueueRequest): Promise<EnqueueResult> {
    const valid = validateEnqueueRequest(request, this.#catalog, '', {
      maxMetadataBytes: this.maxMetadataBytes,
    });
    const [result] = await this.#add([valid]);
    return result!;
  }

  /** Validates every request first; adds none if any is bad (the error's field is `[i].…`). */
  async enqueueMany(requests: readonly EnqueueRequest[]): Promise<EnqueueResult[]> {
    const valid = requests.map((request, i) =>
      validateEnqueueRequest(request, this.#catalog, `[${i}].`, { maxMetadataBytes: this.maxMetadataBytes }),
    );
    return this.#add(valid);
  }

  async get(service: string, id: string): Promise<JobView | undefined> {
    this.#assertOpen();
    // `meta`, `events`, `1:logs`…: queue keys, not jobs (read as one, a key is a fake job or a WRONGTYPE error).
    if (!isPossibleJobId(id)) return undefined;
    await this.#ready();
    const queue = this.#queue(service);
    // State first, then the job: read the other way round, a job that completes in between would show as
    // completed with the data it had while active (no result yet).
    const rawState = await queue.getJobState(id);
    const job = await Job.fromId<JobData, JobResult>(queue, id);
    if (job === undefined) return undefined;
    const state: JobState =
      rawState === 'failed'
        ? 'dead_lettered'
        : rawState === 'waiting-children' || rawState === 'unknown'
          ? 'unknown'
          : rawState === 'waiting'
            ? 'waiting'
            : rawState;
    // The worker's bookkeeping, checked like the worker checks it: job data is anyone's to write.
    const parsed = deliveryStateSchema.safeParse(job.data?.ferry);
    const delivery = parsed.success ? parsed.data : undefined;
    const history = delivery?.attempts ?? [];
    const failedAttempts = usedAttempts(history);
    const result = state === 'completed' ? (job.returnvalue ?? undefined) : undefined;
    const last = [...history].reverse().find((a) => a.type !== undefined);
    const lastError: ErrorRecord | undefined =
      state === 'dead_lettered'
        ? (delivery?.final ?? parseFailedReason(job.failedReason, job.stalledCounter))
        : last?.type === undefined
          ? undefined
          : {
              type: last.type,
              message: last.message,
              ...(last.status === undefined ? {} : { status: last.status }),
            };
    return {
      id,
      service,
      operation: job.name,
      state,
      attempts: result?.attempts ?? failedAttempts,
      history,
      lastError,
      result,
      deadLetterId: state === 'dead_lettered' ? deadLetterJobId(service, id, job.timestamp) : undefined,
      enqueuedAt: job.timestamp,
      tenant: job.data?.tenant,
      idempotencyKey: job.data?.idempotencyKey,
      metadata: job.data?.metadata,
    };
  }

  /**
   * Resolves when the job completed or was dead-lettered; rejects after `timeoutMs` (default 30 s). Polls
   * with a growing interval: cheap for a client that waits on a few jobs.
   */
  async waitFor(service: string, id: string, options: { timeoutMs?: number } = {}): Promise<JobView> {
    const deadline = Date.now() + (options.timeoutMs ?? 30_000);
    let interval = 20;
    for (;;) {
      const view = await this.get(service, id);
      if (view !== undefined && TERMINAL.has(view.state)) return view;
      if (Date.now() >= deadline) {
        throw new WaitTimeoutError(
          `job ${service}/${id} did not finish within ${options.timeoutMs ?? 30_000} ms (state: ${view?.state ?? 'missing'})`,
          view,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, interval));
      interval = Math.min(interval * 2, 500);
    }
  }

  /**
   * Cancels a job no worker has taken: `cancelled`, `missing` (no such job), or `notCancellable` (a worker took
   * it, or it finished). The job is first taken out of the list or set it waits in by one atomic script, so a
   * worker cannot take it in between; only then is it removed. A check of its state followed by a removal
   * could remove a job that a worker took and completed in between.
   */
  async cancel(service: string, id: string): Promise<'cancelled' | 'missing' | 'notCancellable'> {
    this.#assertOpen();
    if (!isPossibleJobId(id)) return 'missing';
    await this.#ready();
    const queue = this.#queue(service);
    const keys = queue.keys;
    const taken = (await this.#connection.eval(
      TAKE_WAITING_JOB,
      5,
      keys.wait!,
      keys.paused!,
      keys.delayed!,
      keys.prioritized!,
      queue.toKey(id),
      id,
    )) as number;
    if (taken === -1) return 'missing';
    if (taken === 0) return 'notCancellable';
    await queue.remove(id);
    return 'cancelled';
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#queues.values()].map((queue) => queue.close()));
    if (this.#ownsConnection) this.#connection.disconnect();
  }

  async #add(requests: readonly EnqueueRequest[]): Promise<EnqueueResult[]> {
    this.#assertOpen();
    await this.#ready();
    const byService = new Map<string, { index: number; request: EnqueueRequest; enqueueId: string }[]>();
    requests.forEach((request, index) => {
      const list = byService.get(request.service) ?? [];
      list.push({ index, request, enqueueId: randomUUID() });
      byService.set(request.service, list);
    });
    const results: EnqueueResult[] = new Array<EnqueueResult>(requests.length);
    await Promise.all(
      [...byService].map(async ([service, items]) => {
        const queue = this.#queue(service);
        // One job: a plain add. addBulk opens a MULTI, and ioredis copies every BullMQ script command onto each
        // new pipeline: about 100 µs of CPU per call, more than the add itself (bench/README.md, Enqueue).
        const jobs =
          items.length === 1
            ? [
                await queue.add(
                  items[0]!.request.operation,
                  toJobData(items[0]!.request, items[0]!.enqueueId),
                  jobOptions(items[0]!.request),
                ),
              ]
            : await queue.addBulk(
                items.map(({ request, enqueueId }) => ({
                  name: request.operation,
                  data: toJobData(request, enqueueId),
                  opts: jobOptions(request),
                })),
              );
        // An add with an existing jobId returns that id but keeps the first job's data: compare the enqueue
        // id we wrote with the stored one to tell a repeat (DESIGN §8).
        const client = this.#connection;
        await Promise.all(
          items.map(async (item, i) => {
            const id = jobs[i]?.id ?? '';
            let created = true;
            if (item.request.idempotencyKey !== undefined) {
              const stored = await client.hget(queue.toKey(id), 'data');
              created = stored === null || (JSON.parse(stored) as JobData).enqueueId === item.enqueueId;
            }
            results[item.index] = { id, service, operation: item.request.operation, created };
          }),
        );
        // After every write of this queue's jobs (a repeat too: the first try may be the one that timed out),
        // on the connection that made them.
        await waitForReplicas(
          client,
          queue.keys.meta!,
          this.#minReplicas,
          this.#replicaTimeoutMs,
          this.#slots,
        );
      }),
    );
    return results;
  }

  #assertOpen(): void {
    if (this.#closed) throw new ProducerClosedError('producer is closed');
  }

  #queue(service: string): Queue<JobData, JobResult> {
    this.#assertOpen();
    let queue = this.#queues.get(service);
    if (queue === undefined) {
      queue = new Queue<JobData, JobResult>(serviceQueueName(service), {
        connection: this.#connection,
        prefix: this.prefix,
      });
      // Connection errors reach the caller as rejected calls; without a listener BullMQ would also print each
      // failed reconnect to stderr.
      queue.on('error', ignoreError);
      this.#queues.set(service, queue);
    }
    return queue;
  }

  async #ready(): Promise<void> {
    if (this.#connection.status !== 'ready') await waitUntilReady(this.#connection, 5_000);
  }
}

function ignoreError(): void {}

function toJobData(request: EnqueueRequest, enqueueId: string): JobData {
  const data: JobData = { input: request.input ?? null, enqueueId };
  if (request.tenant !== undefined) data.tenant = request.tenant;
  if (request.idempotencyKey !== undefined) data.idempotencyKey = request.idempotencyKey;
  if (request.metadata !== undefined) data.metadata = request.metadata;
  return data;
}

function jobOptions(request: EnqueueRequest): JobsOptions {
  const options: JobsOptions = {};
  if (request.idempotencyKey !== undefined) options.jobId = idempotentJobId(request.idempotencyKey);
  if (request.delayMs !== undefined && request.delayMs > 0) options.delay = request.delayMs;
  if (request.priority !== undefined && request.priority > 0) options.priority = request.priority;
  return options;
}

/** The dead-letter queue's name, for tools that read it with plain BullMQ. */
export const deadLetterQueueName = DEAD_LETTER_QUEUE;
