/**
 * Reading and setting breakers from outside a worker (the CLI, the API), through the breakers' own shared
 * record in Redis (src/breakers/shared-state.ts), never through opossum: every worker's registry reads that
 * record every 500 ms, so an open or a close here reaches every worker process within about a second.
 *
 * How holds behave (DESIGN §4): a worker that takes a job while the breaker is open does not call the
 * service; it puts the job back and holds the whole queue (`queue.rateLimit`) until the open period ends,
 * without using one of the job's attempts. Holds are bounded by the service's `retry.maxHoldMs` (1 h by
 * default) per job: a job held longer than that uses an attempt each time it is taken (and, once out of
 * attempts, is dead-lettered), so a service that never comes back still ends in the dead-letter queue. For a
 * maintenance window longer than maxHoldMs, pause the queue (`ferry queues pause`) as well.
 */
import { breakerDefaults, clearSharedState, readSharedState, writeSharedOpen } from '../breakers/index.ts';
import { ValidationError } from '../core/errors.ts';
import { breakerKey } from '../core/queue-layout.ts';
import type { ServiceConfig } from '../core/services/types.ts';
import { SECOND } from '../core/time.ts';
import { type OpsDeps, requireService, withQueues } from './deps.ts';

/** A breaker as every worker sees it. */
export interface BreakerView {
  service: string;
  state: 'closed' | 'open' | 'halfOpen';
  /** Epoch ms the open period started (open and half-open only). */
  openedAt?: number;
  /** Epoch ms until which calls are refused; after it one probe call decides (open and half-open only). */
  openUntil?: number;
  /** Opened by an operator (`openBreaker`); no automatic probe closes it before `openUntil`. */
  manual?: boolean;
  /** The operator's reason, when given. */
  reason?: string;
  /**
   * How long workers still wait before taking this service's jobs (breaker hold, 429/503 Retry-After, or
   * the rate limit reached); 0 = not held. An open breaker holds the queue in slices of at most 10 s, each
   * ended by a worker asking the breaker again, so this is the current slice's rest, not the open period's.
   */
  heldForMs: number;
}

export interface OpenBreakerOptions {
  /** How long it stays open, in ms (> 0). Default: the service's retry.maxHoldMs (1 h by default). */
  forMs?: number;
  /** Why, shown by `ferry breakers list` and the API (at most 200 characters). */
  reason?: string;
}

export interface OpenBreakerResult extends BreakerView {
  /** True when `forMs` is longer than retry.maxHoldMs: jobs taken after maxHoldMs will use attempts. */
  exceedsMaxHold: boolean;
  maxHoldMs: number;
}

/** Every service's breaker (or `services`'), in the services file's order. One GET and one Lua call each. */
export async function listBreakers(deps: OpsDeps, services?: readonly string[]): Promise<BreakerView[]> {
  const names = services ?? [...deps.config.services.keys()];
  for (const name of names) requireService(deps.config, name);
  const now = (deps.now ?? Date.now)();
  return withQueues(deps, names, (queues) =>
    Promise.all(
      names.map(async (service) => {
        const [shared, heldForMs] = await Promise.all([
          readSharedState(deps.connection, breakerKey(deps.prefix, service)),
          queues.get(service)!.getRateLimitTtl(),
        ]);
        const view: BreakerView = { service, state: 'closed', heldForMs: Math.max(heldForMs, 0) };
        if (shared !== null) {
          const { record } = shared;
          view.state = record.untilMs > now ? 'open' : 'halfOpen';
          view.openedAt = record.openedAtMs;
          view.openUntil = record.untilMs;
          if (record.manual === true) view.manual = true;
          if (record.reason !== undefined) view.reason = record.reason;
        }
        return view;
      }),
    ),
  );
}

/**
 * Opens `service`'s breaker in every worker for `forMs` (a maintenance window): within about a second no
 * worker calls it, and no automatic probe closes it before `forMs` has passed (a trip cannot shorten or
 * replace it); then one probe call decides, as after any open. `closeBreaker` ends it earlier.
 */
export async function openBreaker(
  deps: OpsDeps,
  service: string,
  options: OpenBreakerOptions = {},
): Promise<OpenBreakerResult> {
  const config = requireService(deps.config, service);
  const forMs = options.forMs ?? config.retry.maxHoldMs;
  if (!(Number.isSafeInteger(forMs) && forMs > 0)) {
    throw new ValidationError(`for: must be a whole number of ms > 0 (got ${forMs})`, { field: 'for' });
  }
  if (options.reason !== undefined && options.reason.length > 200) {
    throw new ValidationError('reason: at most 200 characters', { field: 'reason' });
  }
  const nowMs = (deps.now ?? Date.now)();
  await writeSharedOpen(
    deps.connection,
    breakerKey(deps.prefix, service),
    {
      untilMs: nowMs + forMs,
      openedAtMs: nowMs,
      manual: true,
      ...(options.reason === undefined ? {} : { reason: options.reason }),
    },
    forMs + sharedStateMarginMs(config),
    'replace',
  );
  const [view] = await listBreakers(deps, [service]);
  return { ...view!, exceedsMaxHold: forMs > config.retry.maxHoldMs, maxHoldMs: config.retry.maxHoldMs };
}

/**
 * Closes `service`'s breaker in every worker, and ends the queue's hold, so every worker takes its jobs again
 * within about a second (they re-check a hold every second). A worker that had not yet seen the close may hold
 * the queue again from its stale view; it ends that hold itself as soon as its breaker reads the record gone
 * (every 500 ms; src/worker/hold-release.ts), so no settle time is waited for here. A 429/503 Retry-After hold
 * ends too; the next such answer holds again.
 */
export async function closeBreaker(deps: OpsDeps, service: string): Promise<BreakerView> {
  requireService(deps.config, service);
  await clearSharedState(deps.connection, breakerKey(deps.prefix, service));
  await withQueues(deps, [service], async (queues) => {
    // Always: a queue held by a Retry-After alone (breaker closed) resumes too, as the doc above says.
    await queues.get(service)!.removeRateLimitKey();
  });
  const [view] = await listBreakers(deps, [service]);
  return view!;
}

/**
 * How long the shared record outlives its open period: as the worker's breakers compute it
 * (src/breakers/options.ts sharedStateTtlMs, with the probe timeout src/worker/service-runtime.ts gives them),
 * so every worker still sees the half-open state after the window.
 */
function sharedStateMarginMs(service: ServiceConfig): number {
  let longest = service.timeoutMs;
  for (const operation of service.operations.values()) longest = Math.max(longest, operation.timeoutMs);
  const probeTimeoutMs = Math.max(30 * SECOND, longest + 5 * SECOND);
  return Math.max(breakerDefaults.sharedStateMarginMs, 3 * probeTimeoutMs);
}
