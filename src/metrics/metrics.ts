/**
 * Ferry's Prometheus metrics: one prom-client Registry per process (never the global default) and every Ferry
 * series, with its labels and buckets, in this file. docs/operations.md § Metrics lists them for operators.
 *
 * Two kinds of series:
 * - Delivery counters and the attempt-duration histogram, counted on the hot path by DeliveryTally from the
 *   worker pool's events (src/core/delivery-events.ts) and turned into series when scraped.
 * - Gauges read when scraped (scrape-reads.ts): queue depths, Redis reachability, and whatever the composition
 *   root injects (breaker states, dead letters per service). These reads are bounded (bounded-scrape.ts):
 *   /metrics answers within about `scrapeTimeoutMs` whatever Redis does.
 *
 * Label values come only from the services file (service and operation names), Ferry's error types and fixed
 * words: never from job input, job ids or job names, so no secret or producer-chosen value can reach the scrape
 * output, and the number of series is bounded by the services file. The one exception is
 * `ferry_tenant_in_flight`'s `tenant`: tenant names (TENANT_PATTERN, checked before a lease is taken), at most
 * `topTenants` of them per service, the rest summed under OTHER_TENANTS.
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';

import { ERROR_TYPES } from '../core/errors.ts';
import type { RedisClient } from '../core/redis.ts';
import type { ServicesConfig } from '../core/services/types.ts';
import { SECOND } from '../core/time.ts';
import type { ReadOutcome } from './bounded-scrape.ts';
import {
  type DeliveryEventSource,
  DeliveryTally,
  FOLLOW_UP_KINDS,
  FOLLOW_UP_REFUSALS,
  type OperationTally,
  type ServiceTally,
} from './delivery-tally.ts';
import { type BreakerStateName, createScrapeReads, QUEUE_STATES } from './scrape-reads.ts';
import { TalliedHistogram, type TalliedSeries } from './tallied-histogram.ts';

export { type BreakerStateName, QUEUE_STATES, type QueueState } from './scrape-reads.ts';

/**
 * Upper bounds of `ferry_attempt_duration_seconds`, in seconds: from a fast API on a LAN (5 ms) to the
 * longest timeouts operators set (the default attempt timeout is 10 s).
 */
export const ATTEMPT_DURATION_BUCKETS_SECONDS: readonly number[] = Object.freeze([
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
]);

/** Default `topTenants` (FERRY_METRICS_TOP_TENANTS): tenants with a series of their own per service. */
export const DEFAULT_TOP_TENANTS = 10;
/**
 * The `tenant` label of the tenants outside the top N in `ferry_tenant_in_flight`. `_` starts no tenant name
 * (TENANT_PATTERN), so no tenant's own series can be taken for it; jobs without a tenant are NO_TENANT.
 */
export const OTHER_TENANTS = '_other';

/** The series of `ferry_breaker_state` for each service. */
const BREAKER_STATES: readonly BreakerStateName[] = ['closed', 'open', 'halfOpen'];

export interface MetricsOptions {
  /** The loaded services file: its service and operation names are the label values. */
  config: ServicesConfig;
  /** Services to report on; default every service in `config` (a worker passes the ones it works on). */
  services?: readonly string[];
  /** Connection for the scrape-time reads (queue depths, PING). Not closed by `close()`. */
  connection: RedisClient;
  /** Redis key prefix (FERRY_PREFIX). */
  prefix: string;
  /**
   * Each service's breaker state now (a worker: its registry; the API: the shared state in Redis). Services
   * it leaves out get no `ferry_breaker_state` series. Without it, that metric is not exported.
   */
  breakerStates?: () => Promise<ReadonlyMap<string, BreakerStateName>>;
  /** Dead letters per service in `{dead-letter}`. Without it, `ferry_dead_letters` is not exported. */
  deadLetterCounts?: () => Promise<ReadonlyMap<string, number>>;
  /**
   * Tenants of a `tenantConcurrency` service with a `ferry_tenant_in_flight` series of their own (most calls in
   * flight first, then by name); the others are summed under OTHER_TENANTS. Default DEFAULT_TOP_TENANTS.
   */
  topTenants?: number;
  /** How long a scrape waits for Redis and the two readers above before answering without them. Default 1.5 s. */
  scrapeTimeoutMs?: number;
  /** Node.js and process metrics (prom-client's default set: CPU, memory, event loop lag, GC...). Default true. */
  processMetrics?: boolean;
}

export interface MetricsResponse {
  /** `text/plain; version=0.0.4; charset=utf-8` */
  contentType: string;
  body: string;
}

export interface Metrics {
  readonly registry: Registry;
  /**
   * The Prometheus text exposition, for GET /metrics. Answers within about `scrapeTimeoutMs` whatever Redis
   * does: what could not be read in time is left out and reported by `ferry_scrape_collector_success`.
   */
  render(): Promise<MetricsResponse>;
  /** Counts a worker pool's delivery events into the series until the returned function is called. */
  observeDeliveries(source: DeliveryEventSource): () => void;
  /** Stops observing and closes the queue handles used for depths (not the connection). Idempotent. */
  close(): Promise<void>;
}

const DEFAULT_SCRAPE_TIMEOUT_MS = 1.5 * SECOND;

export function createMetrics(options: MetricsOptions): Metrics {
  const names = options.services ?? [...options.config.services.keys()];
  const services = names.map((name) => {
    const service = options.config.services.get(name);
    if (service === undefined)
      throw new RangeError(`metrics: unknown service "${name}" (not in the services file)`);
    return service;
  });
  const known = new Set(names);
  const tenantServices = services.flatMap((service) =>
    service.tenantConcurrency === undefined ? [] : [service.name],
  );
  const topTenants = options.topTenants ?? DEFAULT_TOP_TENANTS;
  const registry = new Registry();
  const registers = [registry];
  if (options.processMetrics !== false) {
    collectDefaultMetrics({ register: registry });
    renameTotalGauges(registry);
  }

  const tally = new DeliveryTally(
    services.map((service) => ({
      name: service.name,
      operations: service.operations.keys(),
      fallback: service.fallback,
    })),
    ATTEMPT_DURATION_BUCKETS_SECONDS,
  );

  const reads = createScrapeReads({
    connection: options.connection,
    prefix: options.prefix,
    services: names,
    breakerStates: options.breakerStates,
    deadLetterCounts: options.deadLetterCounts,
    tenantServices,
    timeoutMs: options.scrapeTimeoutMs ?? DEFAULT_SCRAPE_TIMEOUT_MS,
  });
  const { scrape } = reads;

  const operationsOf = function* (service: ServiceTally): Generator<OperationTally> {
    yield* service.operations.values();
    if (service.unknownOperation !== undefined) yield service.unknownOperation;
  };

  new Counter({
    name: 'ferry_jobs_finished_total',
    help: 'Jobs this process finished, by outcome: completed, or dead_lettered (sent to the dead-letter queue).',
    labelNames: ['service', 'operation', 'outcome'],
    registers,
    collect() {
      this.reset();
      for (const service of tally.services()) {
        for (const op of operationsOf(service)) {
          const labels = { service: service.service, operation: op.operation };
          this.inc({ ...labels, outcome: 'completed' }, op.completedJobs);
          this.inc({ ...labels, outcome: 'dead_lettered' }, op.deadLetteredJobs);
        }
      }
    },
  });

  new Counter({
    name: 'ferry_attempts_total',
    help: 'Attempts (downstream calls) by outcome class: error_type="none" for a 2xx, else the Ferry error type.',
    labelNames: ['service', 'operation', 'error_type'],
    registers,
    collect() {
      this.reset();
      for (const service of tally.services()) {
        for (const op of operationsOf(service)) {
          const labels = { service: service.service, operation: op.operation };
          this.inc({ ...labels, error_type: 'none' }, op.succeededAttempts);
          ERROR_TYPES.forEach((type, i) => {
            const count = op.failedAttempts[i]!;
            if (count > 0) this.inc({ ...labels, error_type: type }, count);
          });
        }
      }
    },
  });

  new TalliedHistogram<'service' | 'operation' | 'outcome'>({
    name: 'ferry_attempt_duration_seconds',
    help: 'Duration of attempts (whole call: socket, connect, headers, body), by outcome: completed, or failed and retried.',
    labelNames: ['service', 'operation', 'outcome'],
    buckets: [...ATTEMPT_DURATION_BUCKETS_SECONDS],
    registers,
    series: function* () {
      for (const service of tally.services()) {
        for (const op of operationsOf(service)) {
          const labels = { service: service.service, operation: op.operation };
          if (op.completedDurations.count > 0)
            yield { labels: { ...labels, outcome: 'completed' }, tally: op.completedDurations };
          if (op.failedDurations.count > 0)
            yield { labels: { ...labels, outcome: 'failed' }, tally: op.failedDurations };
        }
      }
    } as () => Iterable<TalliedSeries<'service' | 'operation' | 'outcome'>>,
  });

  new Counter({
    name: 'ferry_service_holds_total',
    help: 'Whole-service holds this process started: circuitOpen (breaker open) or rateLimited (429/503 with Retry-After).',
    labelNames: ['service', 'reason'],
    registers,
    collect() {
      this.reset();
      for (const service of tally.services()) {
        this.inc({ service: service.service, reason: 'circuitOpen' }, service.circuitOpenHolds);
        this.inc({ service: service.service, reason: 'rateLimited' }, service.rateLimitedHolds);
      }
    },
  });

  new Counter({
    name: 'ferry_runs_interrupted_total',
    help: 'Job runs cut short without using an attempt: stalled (a worker was lost) or shutdown (aborted at the deadline).',
    labelNames: ['service', 'reason'],
    registers,
    collect() {
      this.reset();
      for (const service of tally.services()) {
        this.inc({ service: service.service, reason: 'stalled' }, service.stalledRuns);
        this.inc({ service: service.service, reason: 'shutdown' }, service.shutdownRuns);
      }
    },
  });

  new Counter({
    name: 'ferry_jobs_deferred_total',
    help: "Job runs this process deferred without a call or an attempt: reason tenantConcurrency (the job's tenant had the service's tenantConcurrency calls in flight).",
    labelNames: ['service', 'reason'],
    registers,
    collect() {
      this.reset();
      for (const service of tally.services())
        this.inc({ service: service.service, reason: 'tenantConcurrency' }, service.tenantDeferrals);
    },
  });

  new Counter({
    name: 'ferry_jobs_routed_total',
    help: "Jobs this process moved to the service's fallback service (its breaker open, the fallback's not); no call was made.",
    labelNames: ['service', 'fallback'],
    registers,
    collect() {
      this.reset();
      for (const service of tally.services()) {
        for (const [fallback, count] of service.routedJobs)
          this.inc({ service: service.service, fallback }, count);
      }
    },
  });

  new Counter({
    name: 'ferry_follow_ups_total',
    help: "Jobs this process enqueued as reactions to its service's jobs: kind onFailure (a dead letter's rule) or then (a completed job's next step).",
    labelNames: ['service', 'kind'],
    registers,
    collect() {
      this.reset();
      for (const service of tally.services()) {
        for (const kind of FOLLOW_UP_KINDS)
          this.inc({ service: service.service, kind }, service.followUps[kind]);
      }
    },
  });

  new Counter({
    name: 'ferry_follow_ups_refused_total',
    help: 'Reactions that matched but made no job: reason template (input could not be rendered), depth (chain depth limit) or origin (malformed data.origin).',
    labelNames: ['service', 'kind', 'reason'],
    registers,
    collect() {
      this.reset();
      for (const service of tally.services()) {
        for (const kind of FOLLOW_UP_KINDS) {
          for (const reason of FOLLOW_UP_REFUSALS)
            this.inc({ service: service.service, kind, reason }, service.followUpsRefused[kind][reason]);
        }
      }
    },
  });

  new Gauge({
    name: 'ferry_redis_up',
    help: `1 when Redis answered a PING within the scrape timeout, else 0.`,
    registers,
    async collect() {
      this.set((await scrape()).redis.ok ? 1 : 0);
    },
  });

  new Gauge({
    name: 'ferry_queue_jobs',
    help: "Jobs in a service's queue by BullMQ state, read at scrape time (absent when Redis did not answer in time).",
    labelNames: ['service', 'state'],
    registers,
    async collect() {
      const { queues: outcome } = await scrape();
      this.reset();
      if (!outcome.ok) return;
      for (const [service, { counts }] of outcome.value) {
        for (const state of QUEUE_STATES) this.set({ service, state }, counts[state] ?? 0);
      }
    },
  });

  new Gauge({
    name: 'ferry_queue_paused',
    help: "1 while a service's queue is paused (`ferry queues pause`), else 0.",
    labelNames: ['service'],
    registers,
    async collect() {
      const { queues: outcome } = await scrape();
      this.reset();
      if (!outcome.ok) return;
      for (const [service, { paused }] of outcome.value) this.set({ service }, paused ? 1 : 0);
    },
  });

  if (options.breakerStates !== undefined) {
    new Gauge({
      name: 'ferry_breaker_state',
      help: "Circuit breaker state per service: 1 on the current state's series, 0 on the others.",
      labelNames: ['service', 'state'],
      registers,
      async collect() {
        const { breakers: outcome } = await scrape();
        this.reset();
        if (!outcome.ok) return;
        for (const [service, current] of outcome.value) {
          if (!known.has(service)) continue;
          for (const state of BREAKER_STATES) this.set({ service, state }, state === current ? 1 : 0);
        }
      },
    });
  }

  if (options.deadLetterCounts !== undefined) {
    new Gauge({
      name: 'ferry_dead_letters',
      help: 'Dead letters in the {dead-letter} queue per service, read at scrape time.',
      labelNames: ['service'],
      registers,
      async collect() {
        const { deadLetters: outcome } = await scrape();
        this.reset();
        if (!outcome.ok) return;
        for (const [service, count] of outcome.value) if (known.has(service)) this.set({ service }, count);
      },
    });
  }

  if (tenantServices.length > 0) {
    new Gauge({
      name: 'ferry_tenant_in_flight',
      help: `Calls in flight per tenant of a service with tenantConcurrency, across all workers (live leases, read at scrape time): the top tenants by count, the rest summed as tenant="${OTHER_TENANTS}".`,
      labelNames: ['service', 'tenant'],
      registers,
      async collect() {
        const { tenants: outcome } = await scrape();
        this.reset();
        if (!outcome.ok) return;
        for (const service of tenantServices) {
          const { top, other } = topTenantsOf(outcome.value.get(service) ?? new Map(), topTenants);
          for (const [tenant, count] of top) this.set({ service, tenant }, count);
          this.set({ service, tenant: OTHER_TENANTS }, other);
        }
      },
    });
  }

  new Gauge({
    name: 'ferry_scrape_collector_success',
    help: 'Whether a scrape-time read answered within the scrape timeout (1) or failed or timed out (0): its series are left out then.',
    labelNames: ['collector'],
    registers,
    async collect() {
      const outcomes = await scrape();
      this.reset();
      const report = (collector: string, outcome: ReadOutcome<unknown>): void =>
        this.set({ collector }, outcome.ok ? 1 : 0);
      report('queues', outcomes.queues);
      if (options.breakerStates !== undefined) report('breakers', outcomes.breakers);
      if (options.deadLetterCounts !== undefined) report('dead_letters', outcomes.deadLetters);
      if (tenantServices.length > 0) report('tenants', outcomes.tenants);
    },
  });

  const detachers = new Set<() => void>();
  let closing: Promise<void> | undefined;

  return {
    registry,
    async render() {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
    observeDeliveries(source) {
      const detach = tally.observe(source);
      detachers.add(detach);
      return () => {
        detachers.delete(detach);
        detach();
      };
    },
    close() {
      closing ??= (async () => {
        for (const detach of detachers) detach();
        detachers.clear();
        await reads.close();
      })();
      return closing;
    },
  };
}

/**
 * The `limit` tenants with the most calls in flight (ties by name, so a scrape's choice is stable), and the sum
 * of the others' counts.
 */
export function topTenantsOf(
  counts: ReadonlyMap<string, number>,
  limit: number,
): { top: [string, number][]; other: number } {
  const sorted = [...counts].sort(([a, x], [b, y]) => y - x || (a < b ? -1 : a > b ? 1 : 0));
  let other = 0;
  for (const [, count] of sorted.slice(limit)) other += count;
  return { top: sorted.slice(0, limit), other };
}

/**
 * prom-client's default set has three gauges named `*_total` (nodejs_active_{handles,requests,resources}_total),
 * a suffix Prometheus reserves for counters: `promtool check metrics` fails on them, and OpenMetrics parsers
 * read them as counters. Each is re-registered under DEFAULT_GAUGE_RENAMES' name with the same help and value
 * (read from the original's collect), so nothing is lost; the per-type gauges (`nodejs_active_handles{type}`)
 * are untouched.
 */
export const DEFAULT_GAUGE_RENAMES: Readonly<Record<string, string>> = Object.freeze({
  nodejs_active_handles_total: 'nodejs_active_handles_all',
  nodejs_active_requests_total: 'nodejs_active_requests_all',
  nodejs_active_resources_total: 'nodejs_active_resources_all',
});

function renameTotalGauges(registry: Registry): void {
  for (const [from, to] of Object.entries(DEFAULT_GAUGE_RENAMES)) {
    const original = registry.getSingleMetric(from);
    // Absent on a Node.js without the API behind it (process.getActiveResourcesInfo).
    if (original === undefined) continue;
    registry.removeSingleMetric(from);
    new Gauge({
      name: to,
      help: (original as unknown as { help: string }).help,
      registers: [registry],
      async collect() {
        const { values } = await original.get();
        this.reset();
        for (const { labels, value } of values) this.set(labels as Record<string, string>, value);
      },
    });
  }
}
