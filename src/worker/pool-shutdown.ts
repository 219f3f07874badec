/**
 * How a worker pool closes within its budget, whatever Redis does: stop taking jobs, let in-flight calls finish
 * for the grace, abort the rest and let them hand their jobs back, then close every connection, forcing what
 * does not close in time. The budget is measured on the pool's clock; what could not be recorded is reported.
 */

import { Deadline, forceCloseBull, settleWithin } from '../core/deadline.ts';
import type { Logger } from '../core/logger.ts';
import type { RedisClient } from '../core/redis.ts';
import { type Clock, SECOND } from '../core/time.ts';
import type { ServiceRuntime } from './service-runtime.ts';

/** Redis is taken for unreachable when a PING gets no answer within this. */
const PROBE_TIMEOUT_MS = SECOND;
const PROBE_INTERVAL_MS = 250;
/** Failed probes in a row that make Redis unreachable (see watchRedis). */
const LOST_AFTER_FAILED_PROBES = 2;
/** How often a wait for in-flight jobs reads the pool's clock again. */
const CLOCK_CHECK_MS = 250;
/**
 * Once Redis was found unreachable, how long aborted runs still get to hand their jobs back (a Redis that was
 * only slow answers within it); nothing else is waited for.
 */
const UNREACHABLE_HANDBACK_MS = SECOND;
/** What force-closing BullMQ's own connections and the rest may take: they only disconnect sockets. */
const FORCE_CLOSE_WAIT_MS = 500;
/** Job ids listed in the log line about unrecorded results (the count is always whole). */
const LOGGED_JOB_IDS = 20;

/** What close() could not finish. */
export interface PoolCloseReport {
  /**
   * Jobs taken by this pool whose outcome was not recorded in Redis when close() gave up (Redis unreachable, or
   * the hand-back took longer than allowed). Nothing is lost: each stays active in Redis until its lock expires,
   * then runs again (at-least-once, with the same Idempotency-Key).
   */
  unrecorded: { service: string; jobId: string }[];
  /** Whether Redis answered when close() ended. */
  redisReachable: boolean;
}

/** What closing a pool needs of it. */
export interface ClosingPool {
  readonly runtimes: readonly ServiceRuntime[];
  readonly connection: RedisClient;
  readonly logger: Logger;
  readonly clock: Clock;
  /** Aborts every in-flight call: each run then records itself as interrupted and puts its job back. */
  abortInFlight(): void;
  /** Starts closing what the services share (queues, token cache, dead-letter writer, breakers). */
  closeShared(): Promise<unknown>[];
}

/** A watch on whether Redis answers: `lost` resolves at the first sign it does not. */
interface RedisWatch {
  readonly reachable: boolean;
  /** Why the last probe before `lost` failed (a connection status, a PING error or timeout). */
  readonly why: string | undefined;
  readonly lost: Promise<void>;
  stop(): void;
}

export async function closePool(
  pool: ClosingPool,
  { deadlineMs, handbackMs }: { deadlineMs: number; handbackMs: number },
): Promise<PoolCloseReport> {
  const { runtimes, logger } = pool;
  const { clock } = pool;
  const end = new Deadline(deadlineMs + handbackMs, clock);
  const grace = new Deadline(deadlineMs, clock);
  // Stop taking jobs. Never awaited unbounded: BullMQ's close waits for its blocking connection's `end`,
  // which a connection that is reconnecting never emits (BullMQ #4585), so it hangs while Redis is down.
  const stopping = Promise.all(runtimes.map(({ worker }) => worker.close()));
  stopping.catch(() => undefined);
  const redis = watchRedis(pool.connection);
  const idle = (): Promise<unknown> => Promise.all(runtimes.map(({ worker }) => worker.whenIdle()));
  // Drained means BullMQ's workers have closed, and only then nothing is in flight: a worker's close resolves
  // once it takes no more jobs and has processed those it took. A job BullMQ took as the signal came (a delayed
  // retry falling due) reaches processJob a moment later; "nothing in flight" read before that was wrong, and
  // the shared breakers were closed under it (surface.test.ts under load: exit 3, "registry closed").
  const closedAndIdle = stopping.then(idle, idle);
  let waited = await waitForInFlight(closedAndIdle, grace, redis.lost);
  if (waited !== 'drained') {
    // (A grace of 0, as a failed start-up closes, with nothing in flight: nothing to say.)
    if (inFlightCount(runtimes) > 0 || waited === 'unreachable')
      logger.warn(
        {
          deadlineMs,
          inFlight: inFlightCount(runtimes),
          ...(redis.why === undefined ? {} : { why: redis.why }),
        },
        waited === 'unreachable'
          ? 'Redis is unreachable: no result can be recorded; aborting in-flight calls now'
          : 'shutdown deadline passed; aborting in-flight calls and putting their jobs back',
      );
    pool.abortInFlight();
    // Each aborted run records itself as interrupted and puts its job back (no attempt used): that needs
    // Redis. Without it there is nothing to wait for but a Redis that was only slow.
    // With Redis unreachable BullMQ's close may never resolve (BullMQ #4585): only our own runs are waited for.
    waited =
      waited === 'unreachable'
        ? await waitForInFlight(
            idle(),
            new Deadline(UNREACHABLE_HANDBACK_MS, clock),
            new Promise(() => undefined),
          )
        : await waitForInFlight(
            closedAndIdle,
            new Deadline(Math.min(handbackMs, end.left()), clock),
            redis.lost,
          );
  }
  const unrecorded = runtimes.flatMap(({ service, worker }) =>
    [...worker.inFlight].map((job) => ({ service: service.name, jobId: job.id ?? '' })),
  );
  await closeConnections(pool, { stopping, redis, end, unrecorded });
  const reachable = redis.reachable;
  redis.stop();
  if (unrecorded.length > 0) {
    logger.error(
      { unrecorded: unrecorded.length, jobs: unrecorded.slice(0, LOGGED_JOB_IDS), redisReachable: reachable },
      `results of ${unrecorded.length} in-flight job(s) were not recorded` +
        `${reachable ? '' : ' (Redis unreachable)'}; ` +
        'they will run again once their locks expire, with the same Idempotency-Key',
    );
  }
  logger.info('worker pool closed');
  return { unrecorded, redisReachable: reachable };
}

/** BullMQ's connections: closed gracefully while Redis answers and time is left, else force-closed. */
async function closeConnections(
  pool: ClosingPool,
  state: { stopping: Promise<unknown>; redis: RedisWatch; end: Deadline; unrecorded: readonly unknown[] },
): Promise<void> {
  const { runtimes } = pool;
  const { redis, end } = state;
  // This waits for Redis only while it answers (the watch goes on): the moment it is found unreachable there
  // is nothing left to wait for.
  const whileReachable = (promise: Promise<unknown>): Promise<unknown> => Promise.race([promise, redis.lost]);
  const graceful =
    redis.reachable && state.unrecorded.length === 0
      ? await settleWithin(whileReachable(state.stopping), end.left(FORCE_CLOSE_WAIT_MS))
      : 'timeout';
  const forced = graceful === 'timeout' || !redis.reachable;
  const rest = Promise.all([
    ...(forced ? runtimes.map(({ worker }) => forceCloseBull(worker, FORCE_CLOSE_WAIT_MS)) : []),
    ...runtimes.map(({ queue }) => queue.close()),
    ...runtimes.map(({ pools }) => pools.close()),
    ...pool.closeShared(),
  ]);
  // Forced, everything left shares one short wait: the whole close stays within its budget plus that.
  const restWait = forced ? FORCE_CLOSE_WAIT_MS : end.left(FORCE_CLOSE_WAIT_MS);
  if ((await settleWithin(whileReachable(rest), restWait)) === 'timeout' || !redis.reachable)
    pool.logger.warn('queues and connections did not close in time; leaving them to the process exit');
}

function inFlightCount(runtimes: readonly ServiceRuntime[]): number {
  return runtimes.reduce((n, { worker }) => n + worker.inFlight.size, 0);
}

/**
 * Until `drained` resolves, `until` passed on the pool's clock, or Redis was found unreachable, whichever comes
 * first. The clock is read again every CLOCK_CHECK_MS: it, not a timer set once, ends the wait.
 */
async function waitForInFlight(
  drained: Promise<unknown>,
  until: Deadline,
  lost: Promise<void>,
): Promise<'drained' | 'timeout' | 'unreachable'> {
  const idle = drained.then(() => 'drained' as const);
  const unreachable = lost.then(() => 'unreachable' as const);
  for (let left = until.left(); left > 0; left = until.left()) {
    let timer: NodeJS.Timeout | undefined;
    try {
      const waited = await Promise.race([
        idle,
        unreachable,
        new Promise<'tick'>((resolve) => {
          timer = setTimeout(() => resolve('tick'), Math.min(left, CLOCK_CHECK_MS));
        }),
      ]);
      if (waited !== 'tick') return waited;
    } finally {
      clearTimeout(timer);
    }
  }
  return 'timeout';
}

/**
 * Watches whether Redis answers while the pool closes: a connection that is not ready (Redis gone) or a PING
 * unanswered within PROBE_TIMEOUT_MS (Redis paused or hung) fails a probe, and LOST_AFTER_FAILED_PROBES failed
 * in a row are unreachable; `lost` resolves then, with the last reason in `why`. One failed probe is not
 * enough: a Cluster client refreshing its slot map, or a process starved of CPU (its timer fires before the
 * PING's answer is read), fails one and then answers, and aborting calls for that put work back for nothing.
 */
function watchRedis(connection: RedisClient): RedisWatch {
  let stopped = false;
  let reachable = true;
  let why: string | undefined;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  const probe = async (): Promise<string | undefined> => {
    if (connection.status !== 'ready') return `connection ${connection.status}`;
    let timeout: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        connection.ping().then(
          () => undefined,
          (error: unknown) => `PING failed: ${error instanceof Error ? error.message : String(error)}`,
        ),
        new Promise<string>((resolve) => {
          // Past the timer, one turn of the event loop for an answer that already arrived to be read.
          timeout = setTimeout(
            () => setImmediate(() => resolve(`no answer to PING within ${PROBE_TIMEOUT_MS} ms`)),
            PROBE_TIMEOUT_MS,
          );
        }),
      ]);
    } finally {
      clearTimeout(timeout);
    }
  };
  const lost = new Promise<void>((resolve) => {
    void (async () => {
      let failed = 0;
      while (!stopped) {
        const failure = await probe();
        failed = failure === undefined ? 0 : failed + 1;
        if (failed >= LOST_AFTER_FAILED_PROBES && !stopped) {
          reachable = false;
          why = failure;
          resolve();
          return;
        }
        await new Promise<void>((next) => {
          wake = next;
          timer = setTimeout(next, PROBE_INTERVAL_MS);
        });
      }
      // Stopped: `lost` never resolves; a watcher that is not watching has lost nothing.
    })();
  });
  return {
    get reachable() {
      return reachable;
    },
    get why() {
      return why;
    },
    lost,
    stop() {
      stopped = true;
      clearTimeout(timer);
      wake?.();
    },
  };
}
