/**
 * Fallback routing (issue 16 §3): while a service's breaker is open, a job of it is moved to its fallback
 * service's queue instead of holding the queue, when the fallback's breaker is not open.
 *
 * Exactly once. The route is decided, then persisted in the job (`ferry.routedTo`, as `ferry.final` is for a
 * dead letter), then the job is added to the fallback's queue under the job id of its effective idempotency key
 * K (`idempotentJobId(K)`), then the source job completes with `routedTo`. A run that dies anywhere after the
 * persist is re-run (stall, or the internal-error path of delivery.ts) with `routedTo` set: it adds again (a
 * no-op: BullMQ keeps the first job of an id) and completes, without asking either breaker again.
 *
 * The fallback's breaker is read from this process's breaker registry: the worker pool registers a breaker for
 * every fallback of a service it works on, served here or not. Such a breaker only follows the shared state in
 * Redis (one GET per sync interval, 500 ms by default; src/breakers/registry.ts): deciding a route costs no
 * Redis round trip, and its view is at most one sync interval old.
 */
import type { JobsOptions } from 'bullmq';

import type { ServiceBreaker } from '../breakers/index.ts';
import type { DeliveryEventListener } from '../core/delivery-events.ts';
import {
  type DeliveryState,
  type JobData,
  type JobOrigin,
  jobOriginSchema,
  type JobRef,
  type JobResult,
  usedAttempts,
} from '../core/job.ts';
import type { Logger } from '../core/logger.ts';
import { defaultIdempotencyKey, idempotentJobId } from '../core/queue-layout.ts';
import { type Keyring, sealJobData } from '../core/sealed-data.ts';
import type { ServiceConfig, ServicesConfig } from '../core/services/types.ts';
import { openSealedJob } from './sealed.ts';
import type { TargetQueues } from './target-queues.ts';

/** The job being routed, as BullMQ holds it. */
export interface RoutedJob {
  id: string;
  /** BullMQ job name = operation. */
  name: string;
  data: JobData;
  /** BullMQ `job.timestamp`: part of the default idempotency key. */
  createdAt: number;
  /** BullMQ priority (0: none); kept on the fallback's job. */
  priority: number;
}

export interface FallbackRouter {
  /**
   * The service a job of `service` named `operation` goes to now that `service`'s breaker is open: its
   * fallback, unless it has none, the fallback lacks the operation, the job came from that very service by a
   * route (a cycle the services-file check refuses, guarded here too), or the fallback's breaker is open.
   * No Redis call.
   */
  target(service: ServiceConfig, operation: string, data: JobData | undefined): string | undefined;
  /** Where the job lands on `fallback`'s queue: the job id of its effective idempotency key. */
  plan(service: ServiceConfig, fallback: string, job: RoutedJob): JobRef;
  /**
   * Adds the job to `routedTo.service`'s queue under `routedTo.jobId`, with the same input, tenant, metadata and
   * effective idempotency key, a fresh attempt count and `origin: fallback`. A repeat is a no-op.
   */
  move(service: ServiceConfig, job: RoutedJob, routedTo: JobRef): Promise<void>;
}

export interface FallbackRouterOptions {
  config: ServicesConfig;
  /** Where the moved jobs are added (the pool's, shared with follow-ups). */
  queues: TargetQueues;
  /** The breaker of a fallback service in this process (registered by the pool), or undefined. */
  breakerOf(service: string): ServiceBreaker | undefined;
  /** Opens a sealed job and seals it again for the fallback service and its job id there. */
  keyring?: Keyring | undefined;
}

export function createFallbackRouter(options: FallbackRouterOptions): FallbackRouter {
  const { config, queues } = options;
  return {
    target(service, operation, data) {
      const fallback = service.fallback;
      if (fallback === undefined) return undefined;
      if (config.services.get(fallback)?.operations.has(operation) !== true) return undefined;
      const origin = readOrigin(data);
      if (origin?.kind === 'fallback' && origin.source?.service === fallback) return undefined;
      const state = options.breakerOf(fallback)?.state();
      return state?.state === 'open' ? undefined : fallback;
    },
    plan(service, fallback, job) {
      return { service: fallback, jobId: idempotentJobId(effectiveIdempotencyKey(service, job)) };
    },
    async move(service, job, routedTo) {
      const source = readOrigin(job.data);
      // A sealed job is bound to its service: opened here and sealed again for the fallback's job.
      const sealed = job.data.sealed !== undefined;
      const content = sealed ? openSealedJob(service, options.keyring, job.data) : job.data;
      let data: JobData = { input: content.input ?? null };
      if (typeof job.data.tenant === 'string') data.tenant = job.data.tenant;
      data.idempotencyKey = effectiveIdempotencyKey(service, job);
      if (content.metadata !== undefined) data.metadata = content.metadata;
      data.origin = {
        kind: 'fallback',
        source: { service: service.name, jobId: job.id },
        depth: (source?.depth ?? 0) + 1,
      };
      const target = config.services.get(routedTo.service)?.operations.get(job.name);
      if ((sealed || target?.sensitive === true) && options.keyring !== undefined)
        data = sealJobData(
          options.keyring,
          { service: routedTo.service, tenant: data.tenant, jobId: routedTo.jobId },
          data,
        );
      const jobOptions: JobsOptions = { jobId: routedTo.jobId };
      if (job.priority > 0) jobOptions.priority = job.priority;
      await queues.of(routedTo.service).add(job.name, data, jobOptions);
    },
  };
}

/** What applyRoute needs from the delivery processor. */
export interface RouteContext {
  service: ServiceConfig;
  router: FallbackRouter | undefined;
  logger: Logger;
  emit: DeliveryEventListener;
  /** Writes the job's Ferry state while this run holds the job's lock (throws when it lost it). */
  persist(): Promise<void>;
  /** Throws when this run lost the job's lock. */
  assertOwned(): Promise<void>;
}

/**
 * Routes `job` to `routedTo`: persists the route in `state` (unless a previous run did), adds the job to the
 * fallback's queue (a repeat adds nothing), and returns the result the source job completes with. Logs one
 * line and emits `job:fallback:routed`. No call was made and no attempt used.
 */
export async function applyRoute(
  job: RoutedJob,
  state: DeliveryState,
  routedTo: JobRef,
  base: { service: string; operation: string; jobId: string; tenant: string | undefined },
  context: RouteContext,
): Promise<JobResult> {
  const { router } = context;
  if (router === undefined) throw new Error(`job ${job.id} was routed, but this worker cannot route`);
  if (state.routedTo === undefined) {
    state.routedTo = routedTo;
    await context.persist();
  } else {
    await context.assertOwned();
  }
  await router.move(context.service, job, routedTo);
  const result = routedResult(job.data, usedAttempts(state.attempts), routedTo);
  context.logger.info(
    { ...base, fallback: routedTo.service, routedJobId: routedTo.jobId },
    'breaker open: job routed to its fallback service',
  );
  context.emit('job:fallback:routed', { ...base, fallback: routedTo.service, routedTo, result });
  return result;
}

/**
 * Why a route persisted in the job's state (`ferry.routedTo`) is not this job's, or undefined when it is. Job
 * data is anyone's to write: a raw producer could name, as its "persisted route", any queue (a service of
 * another team, one not in the services file) and any job id (squatting another job's idempotent id), and the
 * worker would add the job there on the producer's behalf. A real route is only ever the service's fallback,
 * under the job id plan() gives, and both are fixed by the services file and the job: recomputed and compared.
 * (A route persisted before its services file dropped or changed the fallback is refused the same way.)
 */
export function persistedRouteProblem(
  service: ServiceConfig,
  job: RoutedJob,
  routedTo: JobRef,
): string | undefined {
  if (service.fallback === undefined || routedTo.service !== service.fallback)
    return `.routedTo: names ${service.fallback === undefined ? 'a route, but this service has no fallback' : "a service that is not this service's fallback"}`;
  if (routedTo.jobId !== idempotentJobId(effectiveIdempotencyKey(service, job)))
    return ".routedTo: names a job id that is not this job's on its fallback";
  return undefined;
}

/**
 * The Idempotency-Key the source service would have sent (processor.ts): the producer's key, or the default one
 * made from the job. The fallback's job carries it as its own key, so the fallback sees the same header.
 */
export function effectiveIdempotencyKey(service: ServiceConfig, job: RoutedJob): string {
  const key = job.data.idempotencyKey;
  return typeof key === 'string'
    ? key
    : defaultIdempotencyKey(service.name, job.id, job.createdAt, job.data.enqueueId);
}

/**
 * What a routed job completes with. No call was made: `status` 0, no headers, `body` null, `durationMs` 0;
 * `attempts` is the attempts the job used before its route (failed ones, 0 for most). The outcome of the call is
 * the fallback job's, named by `routedTo`.
 */
export function routedResult(data: JobData | undefined, attempts: number, routedTo: JobRef): JobResult {
  const result: JobResult = { status: 0, headers: {}, body: null, durationMs: 0, attempts };
  if (data?.metadata !== undefined) result.metadata = data.metadata;
  result.routedTo = { service: routedTo.service, jobId: routedTo.jobId };
  return result;
}

/** The job's origin, checked (job data is anyone's to write); undefined when absent or malformed. */
function readOrigin(data: JobData | undefined): JobOrigin | undefined {
  const raw: unknown = data?.origin;
  if (raw === undefined) return undefined;
  const parsed = jobOriginSchema.safeParse(raw);
  return parsed.success ? parsed.data : undefined;
}
