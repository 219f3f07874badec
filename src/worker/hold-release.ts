/**
 * A breaker hold is tied to the breaker's record, not to a timer: when this process learns that the breaker
 * closed (the record is gone: `ferry breakers close`, a probe that succeeded, the record's expiry), it ends
 * the queue's hold at once. A worker that held the queue from a view older than the close (issue 13) thus
 * releases its own hold within one sync interval; delivery.ts re-checks right after applying a hold, for a
 * close learned while it was being applied, and holds in slices so a hold whose worker died ends anyway.
 */

import type { Queue } from 'bullmq';

import type { BreakerRegistry } from '../breakers/index.ts';
import type { Logger } from '../core/logger.ts';
import type { RedisClient } from '../core/redis.ts';
import type { ServiceConfig } from '../core/services/types.ts';

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

/** Ends the holds of `services` (their queues) whenever a breaker of `breakers` closes. */
export function releaseHoldsOnBreakerClose(
  breakers: BreakerRegistry,
  services: readonly { service: ServiceConfig; queue: Pick<Queue, 'toKey'> }[],
  connection: RedisClient,
  logger: Logger,
): void {
  breakers.on('breaker:state:changed', (change) => {
    if (change.to.state !== 'closed' || change.from.state === 'closed') return;
    // The closed service's own hold, and the holds of services whose breaker is open and which fall back to it
    // (held because both were open): their jobs can be routed again now, not only once the hold's slice ends.
    const open = new Set(
      breakers.list().flatMap(({ name, state }) => (state.state === 'closed' ? [] : [name])),
    );
    for (const { service, queue } of services) {
      if (service.name !== change.name && !(service.fallback === change.name && open.has(service.name)))
        continue;
      connection
        .eval(END_HOLD_SCRIPT, 1, queue.toKey('limiter'), String(Number.MAX_SAFE_INTEGER))
        .catch((error: unknown) =>
          logger.error({ service: service.name, err: error }, 'could not end the hold of a closed breaker'),
        );
    }
  });
}
