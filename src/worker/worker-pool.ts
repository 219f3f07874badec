/**
 * One BullMQ Worker per service, each with its own undici pool and breaker. Only this module and the ones it
 * composes (service-runtime.ts, tracked-worker.ts, pool-shutdown.ts) know BullMQ's Worker; it installs no
 * signal handlers (cli/ does) and never exits the process.
 */

import { type BreakerRegistry, createBreakerRegistry, type ServiceBreaker } from '../breakers/index.ts';
import type { DeliveryEventMap, DeliveryEventName } from '../core/delivery-events.ts';
import { ConfigurationError } from '../core/errors.ts';
import type { Logger } from '../core/logger.ts';
import { serviceQueueName } from '../core/queue-layout.ts';
import { MINUTE, systemClock } from '../core/time.ts';
import { enforceRetention } from '../dead-letter/retention.ts';
import { DeadLetterWriter } from '../dead-letter/writer.ts';
import { Scrubber } from '../secrets/scrub.ts';
import { createFallbackRouter } from './fallback-route.ts';
import { FollowUps } from './follow-ups.ts';
import { releaseHoldsOnBreakerClose } from './hold-release.ts';
import { TokenCache } from './http/oauth2.ts';
import { observeProxyEnv } from './http/transport.ts';
import { WORKER_POOL_DEFAULTS, type WorkerPoolOptions } from './pool-options.ts';
import { closePool, type PoolCloseReport } from './pool-shutdown.ts';
import { releaseUnusedMaximum } from './queue-hold.ts';
import { SafeEmitter } from './safe-emitter.ts';
import { syncSchedules } from './schedules.ts';
import {
  breakerOptionsOf,
  createServiceRuntime,
  type PoolContext,
  type ServiceRuntime,
  sweepAll,
} from './service-runtime.ts';
import { TargetQueues } from './target-queues.ts';

export {
  DEFAULT_SHUTDOWN_GRACE_MS,
  DEFAULT_SHUTDOWN_HANDBACK_MS,
  WORKER_POOL_DEFAULTS,
  type WorkerPoolOptions,
} from './pool-options.ts';
export type { PoolCloseReport } from './pool-shutdown.ts';

const RATE_LIMIT_REAPPLY_MS = 5 * MINUTE;

export interface WorkerPool {
  readonly breakers: BreakerRegistry;
  /** The `{dead-letter}` queue writer (reads too: `get(deadLetterId)`). */
  readonly deadLetters: DeadLetterWriter;
  readonly services: readonly string[];
  /** Applies queue settings, sweeps failed sets once, then starts taking jobs. */
  start(): Promise<void>;
  /**
   * Stops taking jobs and waits for in-flight ones up to `deadlineMs` (default 5 s); past it, in-flight calls
   * are aborted and their jobs put back (recorded as interrupted, no attempt used), for up to `handbackMs`
   * (default 3 s) more. When Redis does not answer, nothing can be recorded: calls are aborted at once and
   * close() ends within about three seconds. Always resolves within `deadlineMs + handbackMs` plus half a
   * second, whatever Redis does. Both are measured on the pool's clock. Idempotent.
   */
  close(options?: { deadlineMs?: number; handbackMs?: number }): Promise<void>;
  /** close(), saying what it could not record (the CLI's exit code and log line come from it). */
  shutdown(options?: { deadlineMs?: number; handbackMs?: number }): Promise<PoolCloseReport>;
  /** Sweeps every service's failed set now (tests, ops). */
  sweep(): Promise<number>;
  on<E extends DeliveryEventName>(event: E, listener: (payload: DeliveryEventMap[E]) => void): WorkerPool;
  off<E extends DeliveryEventName>(event: E, listener: (payload: DeliveryEventMap[E]) => void): WorkerPool;
}

/** Throws ConfigurationError for an unknown service. */
export function createWorkerPool(options: WorkerPoolOptions): WorkerPool {
  const names = options.services ?? [...options.config.services.keys()];
  for (const name of names) {
    if (!options.config.services.has(name))
      throw new ConfigurationError(`unknown service "${name}" (not in the services file)`, {
        field: 'services',
      });
  }
  const events = new SafeEmitter<DeliveryEventMap>((event, error) =>
    options.logger.error({ event, err: error }, 'delivery event listener threw'),
  );
  const shutdown = new AbortController();
  const { context, targetQueues } = createPoolContext(options, names, events, shutdown.signal);
  const runtimes = names.map((name) => createServiceRuntime(context, options.config.services.get(name)!));
  releaseHoldsOnBreakerClose(context.breakers, runtimes, options.connection, options.logger);
  const timers: NodeJS.Timeout[] = [];
  let closing: Promise<PoolCloseReport> | undefined;
  const pool: WorkerPool = {
    breakers: context.breakers,
    deadLetters: context.writer,
    services: names,
    async start() {
      try {
        await startPool(context, runtimes, timers, () => closing !== undefined);
      } catch (error) {
        // Shut down while starting: the shutdown closed the connection under the start's Redis calls, and it,
        // not the start, decides how the process ends.
        if (closing === undefined) throw error;
      }
    },
    async close(closeOptions) {
      await pool.shutdown(closeOptions);
    },
    shutdown({
      deadlineMs = WORKER_POOL_DEFAULTS.shutdownGraceMs,
      handbackMs = WORKER_POOL_DEFAULTS.shutdownHandbackMs,
    } = {}) {
      closing ??= (() => {
        for (const timer of timers) clearInterval(timer);
        const { connection, logger } = options;
        const { clock, tokens, writer, breakers } = context;
        return closePool(
          {
            runtimes,
            connection,
            logger,
            clock,
            abortInFlight: () => shutdown.abort('shutdown'),
            closeShared: () => [targetQueues.close(), tokens.close(), writer.close(), breakers.close()],
          },
          { deadlineMs, handbackMs },
        );
      })();
      return closing;
    },
    sweep: () => sweepAll(context, runtimes),
    on(event, listener) {
      events.on(event, listener);
      return pool;
    },
    off(event, listener) {
      events.off(event, listener);
      return pool;
    },
  };
  return pool;
}

/** What the pool's services share: its clock, scrubber, dead-letter writer, tokens, breakers and routing. */
function createPoolContext(
  options: WorkerPoolOptions,
  names: readonly string[],
  events: SafeEmitter<DeliveryEventMap>,
  shutdownSignal: AbortSignal,
): { context: PoolContext; targetQueues: TargetQueues } {
  const { connection, prefix, config, keyring } = options;
  const clock = options.clock ?? systemClock;
  const scrubber = options.scrubber ?? new Scrubber();
  const writer = new DeadLetterWriter({ connection, prefix });
  // One per pool: every service's oauth2 tokens, each handed to the scrubber as it arrives.
  if (options.proxyEnv !== undefined) observeProxyEnv(options.proxyEnv, scrubber);
  const tokens = new TokenCache({ observer: scrubber, clock, proxyEnv: options.proxyEnv });
  const breakers = createBreakerRegistry({
    redis: connection,
    keyFor: (name) => `${prefix}:${serviceQueueName(name)}:breaker`,
  });
  logBreakerEvents(breakers, options.logger);
  // Fallback routing (fallback-route.ts) reads each fallback's breaker from this registry: registered now, for
  // fallbacks this pool does not serve too, so their first read of the shared state is done before work starts.
  const fallbackBreakers = new Map<string, ServiceBreaker>();
  for (const name of names) {
    const fallback = config.services.get(config.services.get(name)!.fallback ?? '');
    if (fallback !== undefined && !fallbackBreakers.has(fallback.name))
      fallbackBreakers.set(fallback.name, breakers.get(fallback.name, breakerOptionsOf(fallback)));
  }
  // The queues fallback moves and follow-ups add to (any service's, also those this pool does not work on).
  const targetQueues = new TargetQueues({ connection, prefix });
  const fallbacks = createFallbackRouter({
    config,
    queues: targetQueues,
    breakerOf: (name) => fallbackBreakers.get(name),
    keyring,
  });
  const emit: PoolContext['emit'] = (event, payload) => events.emit(event, payload);
  const followUps = new FollowUps({
    config,
    queues: targetQueues,
    logger: options.logger,
    emit,
    ...(options.maxChainDepth === undefined ? {} : { maxChainDepth: options.maxChainDepth }),
    keyring,
  });
  const context: PoolContext = {
    options,
    clock,
    random: options.random ?? Math.random,
    lockDurationMs: options.lockDurationMs ?? WORKER_POOL_DEFAULTS.lockDurationMs,
    scrubber,
    writer,
    tokens,
    breakers,
    fallbacks,
    followUps,
    emit,
    shutdownSignal,
  };
  return { context, targetQueues };
}

function logBreakerEvents(breakers: BreakerRegistry, logger: Logger): void {
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
}

/** Applies queue settings, syncs schedules, starts the workers, then sweeps and re-applies in the background. */
async function startPool(
  context: PoolContext,
  runtimes: readonly ServiceRuntime[],
  timers: NodeJS.Timeout[],
  closing: () => boolean,
): Promise<void> {
  const { connection, prefix, config, logger } = context.options;
  const applyRateLimits = async (): Promise<void> => {
    for (const { service, queue } of runtimes) {
      if (service.rateLimit !== undefined)
        await queue.setGlobalRateLimit(service.rateLimit.max, service.rateLimit.perMs);
      // Without one, the queue carries a maximum only while a hold may run (queue-hold.ts): a job taken then
      // pays no rate-limit bookkeeping. One left by an ended hold (or by an earlier version) goes here.
      else await releaseUnusedMaximum(connection, queue);
    }
  };
  await applyRateLimits();
  const queues = new Map(runtimes.map(({ service, queue }) => [service.name, queue]));
  if (closing()) return;
  const schedules = await syncSchedules({ connection, prefix, config, queues, logger });
  if (config.schedules.size > 0 || schedules.removed.length > 0)
    logger.info({ schedules }, 'schedules synced with the services file');
  // Shut down while starting: no worker may take a job, and no timer outlives the pool.
  if (closing()) return;
  for (const { worker } of runtimes) {
    worker.run().catch((error: unknown) => logger.error({ err: error }, 'worker stopped with an error'));
  }
  const sweep = (): Promise<number> => sweepAll(context, runtimes);
  // The first sweep reads the whole failed set (days of failures): in the background, not before work starts.
  sweep().catch((error: unknown) => logger.error({ err: error }, 'dead-letter sweep failed'));
  const every = (ms: number, task: () => Promise<unknown>, what: string): void => {
    const timer = setInterval(() => {
      task().catch((error: unknown) => logger.error({ err: error }, `${what} failed`));
    }, ms);
    timer.unref();
    timers.push(timer);
  };
  // Rate-limit settings live in Redis and are lost with its data: re-apply them (DESIGN §8).
  every(RATE_LIMIT_REAPPLY_MS, applyRateLimits, 'rate-limit re-apply');
  const sweepIntervalMs = context.options.sweepIntervalMs ?? WORKER_POOL_DEFAULTS.sweepIntervalMs;
  every(sweepIntervalMs, sweep, 'dead-letter sweep');
  const retention = context.options.deadLetterRetention;
  if (retention !== undefined) {
    const enforce = () => enforceRetention({ connection, prefix }, { ...retention, now: context.clock.now });
    every(sweepIntervalMs, enforce, 'dead-letter retention');
  }
  logger.info({ services: serviceNames(runtimes), prefix }, 'worker pool started');
}

function serviceNames(runtimes: readonly ServiceRuntime[]): string[] {
  return runtimes.map(({ service }) => service.name);
}
