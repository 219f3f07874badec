/**
 * One BullMQ Worker per service, each with its own undici pool and breaker. Only this module knows BullMQ's
 * Worker; it installs no signal handlers (cli/ does) and never exits the process.
 */

import { MetricsTime, Queue, Worker } from 'bullmq';

import { type BreakerRegistry, createBreakerRegistry } from '../breakers/index.ts';
import type { DeliveryEventMap, DeliveryEventName } from '../core/events.ts';
import type { JobData, JobResult } from '../core/job.ts';
import type { Logger } from '../core/logger.ts';
import { serviceQueueName } from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';
import type { ServiceConfig, ServicesConfig } from '../core/services/types.ts';
import { type Clock, DAY, MINUTE, SECOND, systemClock } from '../core/time.ts';
import { reconcileJob, sweepFailed } from '../dead-letter/reconciler.ts';
import { enforceRetention, type RetentionOptions } from '../dead-letter/retention.ts';
import { DeadLetterWriter } from '../dead-letter/writer.ts';
import type { SecretResolver } from '../secrets/resolver.ts';
import { Scrubber } from '../secrets/scrub.ts';
import { createDeliveryProcessor } from './delivery.ts';
import { TokenCache } from './http/oauth2.ts';
import { PoolSet } from './http/pools.ts';
import { createJobEventPublisher } from './job-event-publisher.ts';

export interface WorkerPoolOptions {
  config: ServicesConfig;
  /** Services to work on; default all in the config. */
  services?: readonly string[];
  /** Shared non-blocking connection (worker role: `maxRetriesPerRequest: null`); BullMQ duplicates it for blocking reads. */
  connection: RedisClient;
  prefix: string;
  secrets: SecretResolver;
  /**
   * Collects every secret value and token the pool hands out, and scrubs them from what it stores; share the
   * process's, so its log lines are scrubbed too. Default: the pool's own.
   */
  scrubber?: Scrubber;
  logger: Logger;
  clock?: Clock;
  random?: () => number;
  /** How long a job's lock lasts without renewal; a crashed worker's jobs are taken again after about this. Default 30 s. */
  lockDurationMs?: number;
  /** How often stalled jobs are looked for. Default 30 s. */
  stalledIntervalMs?: number;
  /** Stalls before BullMQ fails a job (the sweep then dead-letters it). Default 5: one crash must not dead-letter a job. */
  maxStalledCount?: number;
  /** How often failed sets are swept for jobs without a dead letter. Default 30 s. */
  sweepIntervalMs?: number;
  /** Dead-letter retention enforced on every sweep interval (dead-letter/retention.ts). Default: none. */
  deadLetterRetention?: Pick<RetentionOptions, 'maxAgeMs' | 'maxCount'>;
  /** How long completed jobs are kept (and so how long an idempotency key deduplicates). Default 24 h. */
  keepCompletedMs?: number;
  /** How long failed jobs stay on their service queue (their dead letter stays until purged). Default 7 days. */
  keepFailedMs?: number;
}

/** A rate-limit maximum for services without one: other processes honour a hold only when the queue has one (DESIGN §8). */
const UNLIMITED_RATE = { max: 1_000_000_000, perMs: SECOND };
const RATE_LIMIT_REAPPLY_MS = 5 * MINUTE;
/**
 * KEYS[1] a queue's limiter key. Deletes it only while it holds the queue (`queue.rateLimit` stores
 * Number.MAX_SAFE_INTEGER there): the same key counts the service's own rate limit, whose window a breaker
 * close must not reset.
 */
const END_HOLD_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`;
/** After the shutdown deadline: how long cancelled jobs and closing connections get before we stop waiting. */
const FORCE_CLOSE_AFTER_MS = 5 * SECOND;

/** Resolves when `promise` settles (either way) or after `ms`, whichever comes first. */
async function settleWithin(promise: Promise<unknown>, ms: number): Promise<'settled' | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms);
  });
  try {
    return await Promise.race([promise.then(settled, settled), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function settled(): 'settled' {
  return 'settled';
}

function longestTimeoutMs(service: ServiceConfig): number {
  let longest = service.timeoutMs;
  for (const operation of service.operations.values()) longest = Math.max(longest, operation.timeoutMs);
  return longest;
}

interface ServiceRuntime {
  service: ServiceConfig;
  queue: Queue<JobData, JobResult>;
  worker: Worker<JobData, JobResult>;
  pools: PoolSet;
  lastSweepMs: number;
}

export interface WorkerPool {
  readonly breakers: BreakerRegistry;
  /** The `{dead-letter}` queue writer (reads too: `get(deadLetterId)`). */
  readonly deadLetters: DeadLetterWriter;
  readonly services: readonly string[];
  /** Applies queue settings, sweeps failed sets once, then starts taking jobs. */
  start(): Promise<void>;
  /**
   * Stops taking jobs and waits for in-flight ones up to `deadlineMs`; past it, in-flight calls are aborted
   * and their jobs put back (recorded as interrupted, no attempt used). Idempotent.
   */
  close(options?: { deadlineMs?: number }): Promise<void>;
  /** Sweeps every service's failed set now (tests, ops). */
  sweep(): Promise<number>;
  on<E extends DeliveryEventName>(event: E, listener: (payload: DeliveryEventMap[E]) => void): WorkerPool;
  off<E extends DeliveryEventName>(event: E, listener: (payload: DeliveryEventMap[E]) => void): WorkerPool;
}

export function createWorkerPool(options: WorkerPoolOptions): WorkerPool {
  const clock = options.clock ?? systemClock;
  const random = options.random ?? Math.random;
  const { logger, prefix, connection } = options;
  const lockDurationMs = options.lockDurationMs ?? 30 * SECOND;
  const names = options.services ?? [...options.config.services.keys()];
  for (const name of names) {
    if (!options.config.services.has(name))
      throw new Error(`unknown service "${name}" (not in the services file)`);
  }
  const scrubber = options.scrubber ?? new Scrubber();
  const writer = new DeadLetterWriter({ connection, prefix });
  // One per pool: every service's oauth2 tokens, each handed to the scrubber as it arrives.
  const tokens = new TokenCache({ observer: scrubber, clock });
  const breakers = createBreakerRegistry({
    redis: connection,
    keyFor: (name) => `${prefix}:${serviceQueueName(name)}:breaker`,
  });
  breakers.on('breaker:sync:error', (event) => {
    logger.error(
      { service: event.name, operation: event.operation, err: event.error },
      'breaker could not sync its state with Redis',
    );
  });
  breakers.on('breaker:state:changed', (change) => {
    logger.warn(
      { service: change.name, from: change.from.state, to: change.to.state, source: change.source },
      `breaker ${change.to.state}`,
    );
  });
  // A listener's bug must never reach delivery: a throw from here would be taken for a failure to record the
  // outcome, and the job would run again. Every listener runs; errors are logged.
  // Listener lists are replaced, never mutated, on on/off: emit walks the current one without copying it (an
  // EventEmitter's listeners() copies on every call, and metrics listen to every completed job).
  const listeners = new Map<DeliveryEventName, readonly ((payload: never) => void)[]>();
  const emit = <E extends DeliveryEventName>(event: E, payload: DeliveryEventMap[E]): void => {
    const list = listeners.get(event);
    if (list === undefined) return;
    for (const listener of list) {
      try {
        (listener as (payload: DeliveryEventMap[E]) => void)(payload);
      } catch (error) {
        logger.error({ event, err: error }, 'delivery event listener threw');
      }
    }
  };

  // Aborted when the shutdown deadline passes: every in-flight call of every service stops and its job is put
  // back. One signal for the pool rather than BullMQ's one per job (see DeliveryProcessor); calls follow it
  // through one listener per signal (see callDownstream).
  const shutdown = new AbortController();

  const runtimes: ServiceRuntime[] = names.map((name) => {
    const service = options.config.services.get(name)!;
    const queueName = serviceQueueName(name);
    const queue = new Queue<JobData, JobResult>(queueName, { connection, prefix });
    const pools = new PoolSet({ connections: service.concurrency });
    const processor = createDeliveryProcessor({
      service,
      breaker: breakers.get(name, {
        ...service.breaker,
        // The probe is one call: its lock must outlive the slowest operation, or a second process probes too.
        probeTimeoutMs: Math.max(30 * SECOND, longestTimeoutMs(service) + 5 * SECOND),
      }),
      secrets: options.secrets,
      scrubber,
      pools,
      tokens,
      clock,
      queue: queue as unknown as Queue<JobData>,
      writer,
      logger,
      emit,
      events: createJobEventPublisher({
        connection,
        keys: { events: queue.toKey('events'), meta: queue.toKey('meta') },
        logger,
      }),
      random,
      lockDurationMs,
      shutdownSignal: shutdown.signal,
    });
    const worker = new Worker<JobData, JobResult>(queueName, processor, {
      connection,
      prefix,
      autorun: false,
      concurrency: service.concurrency,
      lockDuration: lockDurationMs,
      stalledInterval: options.stalledIntervalMs ?? 30 * SECOND,
      maxStalledCount: options.maxStalledCount ?? 5,
      removeOnComplete: { age: Math.ceil((options.keepCompletedMs ?? DAY) / SECOND) },
      // Never `removeOnFail: true` (DESIGN §8): the sweep must find failed jobs to check their dead letters.
      removeOnFail: { age: Math.ceil((options.keepFailedMs ?? 7 * DAY) / SECOND) },
      // While a hold lasts (breaker open, Retry-After) each worker wakes every second and asks Redis again
      // (moveToActive takes no job while the queue's limiter key lives): one cheap call, and when an operator
      // closes the breaker (src/ops/breaker-control.ts deletes the limiter key) every worker resumes within
      // about a second instead of sleeping out the rest of the hold (issue 5).
      maximumRateLimitDelay: SECOND,
      // Completed and failed per minute, kept a week: `ferry status` shows the last hour (queue.getMetrics).
      metrics: { maxDataPoints: MetricsTime.ONE_WEEK },
    });
    worker.on('error', (error) => logger.error({ service: name, err: error }, 'worker error'));
    // A job that stalls too often is failed by BullMQ without calling the processor, so it never reaches our
    // dead-letter write. Check a stalled job's state at once (BullMQ 6.7 fails it when it is next fetched, and
    // that worker's 'failed' handler checks again) rather than waiting for the periodic sweep.
    worker.on('stalled', (jobId) => {
      logger.warn({ service: name, jobId }, 'job stalled');
      sweepOne(runtime, jobId).catch((error: unknown) =>
        logger.error({ service: name, jobId, err: error }, 'dead-letter sweep failed'),
      );
    });
    worker.on('failed', (job) => {
      // Anything else that failed outside the processor's own dead-letter write.
      if (job?.id !== undefined && job.data?.ferry?.final === undefined) {
        sweepOne(runtime, job.id).catch((error: unknown) =>
          logger.error({ service: name, jobId: job.id, err: error }, 'dead-letter sweep failed'),
        );
      }
    });
    const runtime: ServiceRuntime = { service, queue, worker, pools, lastSweepMs: 0 };
    return runtime;
  });

  // A breaker hold is tied to the breaker's record, not to a timer: when this process learns that the breaker
  // closed (the record is gone: `ferry breakers close`, a probe that succeeded, the record's expiry), it ends
  // the queue's hold at once. A worker that held the queue from a view older than the close (issue 13) thus
  // releases its own hold within one sync interval; delivery.ts re-checks right after applying a hold, for a
  // close learned while it was being applied, and holds in slices so a hold whose worker died ends anyway.
  breakers.on('breaker:state:changed', (change) => {
    if (change.to.state !== 'closed' || change.from.state === 'closed') return;
    const runtime = runtimes.find(({ service }) => service.name === change.name);
    if (runtime === undefined) return;
    connection
      .eval(END_HOLD_SCRIPT, 1, runtime.queue.toKey('limiter'), String(Number.MAX_SAFE_INTEGER))
      .catch((error: unknown) =>
        logger.error({ service: change.name, err: error }, 'could not end the hold of a closed breaker'),
      );
  });

  /** Writes the dead letter of one job if it is in the failed set without one. */
  async function sweepOne(runtime: ServiceRuntime, jobId: string): Promise<void> {
    const failedAt = await connection.zscore(runtime.queue.toKey('failed'), jobId);
    if (failedAt === null) return; // stalled and taken again, or not failed at all
    if (
      await reconcileJob(
        runtime.service.name,
        runtime.queue as unknown as Queue<JobData>,
        jobId,
        writer,
        clock.now(),
      )
    ) {
      logger.warn(
        { service: runtime.service.name, jobId },
        'dead-lettered a job BullMQ failed without running it',
      );
    }
  }

  async function sweepAll(): Promise<number> {
    let written = 0;
    for (const runtime of runtimes) {
      const startedAt = clock.now();
      // Overlap the previous window: a job can finish just as the last sweep read the set.
      const since = runtime.lastSweepMs === 0 ? 0 : runtime.lastSweepMs - MINUTE;
      const result = await sweepFailed(
        runtime.service.name,
        runtime.queue as unknown as Queue<JobData>,
        writer,
        since,
        clock.now(),
      );
      runtime.lastSweepMs = startedAt;
      for (const id of result.written)
        logger.warn(
          { service: runtime.service.name, jobId: id },
          'sweep dead-lettered a failed job that had no dead letter',
        );
      written += result.written.length;
    }
    return written;
  }

  async function applyRateLimits(): Promise<void> {
    for (const { service, queue } of runtimes) {
      const limit = service.rateLimit ?? UNLIMITED_RATE;
      await queue.setGlobalRateLimit(limit.max, limit.perMs);
    }
  }

  const timers: NodeJS.Timeout[] = [];
  let closing: Promise<void> | undefined;

  const pool: WorkerPool = {
    breakers,
    deadLetters: writer,
    services: names,
    async start() {
      await applyRateLimits();
      for (const { worker } of runtimes) {
        worker.run().catch((error: unknown) => logger.error({ err: error }, 'worker stopped with an error'));
      }
      // The first sweep reads the whole failed set (days of failures): in the background, not before work starts.
      sweepAll().catch((error: unknown) => logger.error({ err: error }, 'dead-letter sweep failed'));
      const every = (ms: number, task: () => Promise<unknown>, what: string): void => {
        const timer = setInterval(() => {
          task().catch((error: unknown) => logger.error({ err: error }, `${what} failed`));
        }, ms);
        timer.unref();
        timers.push(timer);
      };
      // Rate-limit settings live in Redis and are lost with its data: re-apply them (DESIGN §8).
      every(RATE_LIMIT_REAPPLY_MS, applyRateLimits, 'rate-limit re-apply');
      every(options.sweepIntervalMs ?? 30 * SECOND, sweepAll, 'dead-letter sweep');
      const retention = options.deadLetterRetention;
      if (retention !== undefined) {
        const enforce = () => enforceRetention({ connection, prefix }, { ...retention, now: clock.now });
        every(options.sweepIntervalMs ?? 30 * SECOND, enforce, 'dead-letter retention');
      }
      logger.info({ services: names, prefix }, 'worker pool started');
    },
    close({ deadlineMs = 30 * SECOND } = {}) {
      closing ??= (async () => {
        for (const timer of timers) clearInterval(timer);
        let graceEnds = Date.now() + FORCE_CLOSE_AFTER_MS + deadlineMs;
        const graceful = Promise.all(runtimes.map(({ worker }) => worker.close()));
        if ((await settleWithin(graceful, deadlineMs)) === 'settled') {
          await graceful; // a worker that failed to close fails close() too
        } else {
          logger.warn(
            { deadlineMs },
            'shutdown deadline passed; aborting in-flight calls and putting their jobs back',
          );
          shutdown.abort('shutdown');
          // An aborted job still records its interrupted run in Redis; if Redis does not answer, that never
          // returns, and neither would close(). Within one bounded grace period, force-close: the jobs' locks
          // expire and they run again elsewhere (at-least-once), nothing is lost.
          graceEnds = Date.now() + FORCE_CLOSE_AFTER_MS;
          if ((await settleWithin(graceful, (FORCE_CLOSE_AFTER_MS * 2) / 3)) === 'timeout') {
            logger.warn('in-flight jobs did not settle after being aborted; force-closing');
            await settleWithin(
              Promise.all(runtimes.map(({ worker }) => worker.close(true))),
              graceEnds - Date.now(),
            );
          }
        }
        const rest = Promise.all([
          ...runtimes.map(({ queue }) => queue.close()),
          ...runtimes.map(({ pools }) => pools.close()),
          tokens.close(),
          writer.close(),
          breakers.close(),
        ]);
        if ((await settleWithin(rest, Math.max(graceEnds - Date.now(), 500))) === 'timeout')
          logger.warn('queues and connections did not close in time; leaving them to the process exit');
        logger.info('worker pool closed');
      })();
      return closing;
    },
    sweep: sweepAll,
    on(event, listener) {
      listeners.set(event, [...(listeners.get(event) ?? []), listener]);
      return pool;
    },
    off(event, listener) {
      const list = listeners.get(event) ?? [];
      const index = list.indexOf(listener);
      if (index < 0) return pool;
      const rest = [...list.slice(0, index), ...list.slice(index + 1)];
      if (rest.length === 0) listeners.delete(event);
      else listeners.set(event, rest);
      return pool;
    },
  };
  return pool;
}
