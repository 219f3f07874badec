/**
 * Fair share between tenants (`tenantConcurrency: N`, issue 17 item 6): at most N calls in flight per tenant
 * of a service, across every worker process. A call holds a lease in Redis from before its secrets are read
 * until it ends (processor.ts steps 3 and 8); a job whose tenant holds N leases is deferred (no attempt used).
 *
 * Two keys in the service queue's slot (tenantLeaseKeys), so each script runs on one Redis Cluster node:
 * - `leases`  ZSET of `<tenant>\0<jobId>`, scored by the lease's expiry (epoch ms, Redis's own clock);
 * - `counts`  HASH tenant → leases held, what the take compares with N (and what an operator can read).
 * A lease outlives its attempt's timeout by LEASE_MARGIN_MS. A worker killed mid-call never gives its lease
 * back: the next take of any tenant of the service reclaims every expired lease first, so a dead worker blocks
 * its tenant for at most the lease's lifetime. Expiry and "now" are Redis's TIME, so worker clocks may differ.
 */
import { createHash } from 'node:crypto';

import type { Logger } from '../core/logger.ts';
import { NO_TENANT, tenantLeaseKeys } from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';
import { SECOND } from '../core/time.ts';

/**
 * What a lease outlives its attempt's timeout by: the attempt's secret reads and request building happen
 * after the take and before the call's deadline starts, and the give-back is one more round trip.
 */
export const LEASE_MARGIN_MS = 5 * SECOND;

/** Expired leases one take reclaims at most (the rest go on the next takes): a take stays a short script. */
const RECLAIM_BATCH = 100;

// KEYS[1] leases ZSET, KEYS[2] counts HASH. ARGV[1] tenant, ARGV[2] member (`tenant\0jobId`), ARGV[3] limit,
// ARGV[4] lease lifetime (ms). Returns 1 when the lease is held (taken now, or already this job's: a re-run of
// the same job after its worker was lost renews it rather than counting twice), 0 when the tenant is at its
// limit.
const TAKE_SCRIPT = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ${RECLAIM_BATCH})
for _, member in ipairs(expired) do
  redis.call('ZREM', KEYS[1], member)
  local cut = string.find(member, '\\0', 1, true)
  if cut then
    local owner = string.sub(member, 1, cut - 1)
    if redis.call('HINCRBY', KEYS[2], owner, -1) <= 0 then redis.call('HDEL', KEYS[2], owner) end
  end
end
local expiry = now + tonumber(ARGV[4])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('ZADD', KEYS[1], expiry, ARGV[2])
  return 1
end
if tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], expiry, ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 1
`;

// KEYS as above; ARGV[1] tenant, ARGV[2] member. Counts down only a lease still there: one a take reclaimed
// (it outlived its expiry) was counted down then.
const RELEASE_SCRIPT = `
if redis.call('ZREM', KEYS[1], ARGV[2]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
  return 1
end
return 0
`;

interface Script {
  readonly source: string;
  readonly sha: string;
}

const script = (source: string): Script =>
  Object.freeze({ source, sha: createHash('sha1').update(source).digest('hex') });

const TAKE = script(TAKE_SCRIPT);
const RELEASE = script(RELEASE_SCRIPT);

/** EVALSHA, loading the script with EVAL the first time a node has not seen it (each Cluster node on its own). */
async function run(
  client: RedisClient,
  { source, sha }: Script,
  keys: readonly [string, string],
  args: readonly (string | number)[],
): Promise<unknown> {
  try {
    return await client.evalsha(sha, 2, ...keys, ...args);
  } catch (error) {
    if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
    return client.eval(source, 2, ...keys, ...args);
  }
}

/** A lease held by one run; give it back once, when the call has ended. Never rejects. */
export interface TenantLease {
  release(): Promise<void>;
}

export interface TenantLeases {
  readonly limit: number;
  /**
   * A lease for `tenant` (undefined: the NO_TENANT bucket), or undefined when the tenant already holds `limit`
   * leases. It lasts `timeoutMs` + LEASE_MARGIN_MS unless given back. Rejects on a Redis error.
   */
  take(tenant: string | undefined, jobId: string, timeoutMs: number): Promise<TenantLease | undefined>;
}

export interface TenantLeasesOptions {
  connection: RedisClient;
  prefix: string;
  service: string;
  /** The service's `tenantConcurrency`. */
  limit: number;
  /** Told when a lease could not be given back (it then expires on its own). */
  logger?: Logger;
}

export function createTenantLeases(options: TenantLeasesOptions): TenantLeases {
  const { connection, limit, logger, service } = options;
  const { leases, counts } = tenantLeaseKeys(options.prefix, service);
  const keys = [leases, counts] as const;
  return {
    limit,
    async take(tenant, jobId, timeoutMs) {
      const owner = tenant ?? NO_TENANT;
      const member = `${owner}\0${jobId}`;
      const held = await run(connection, TAKE, keys, [owner, member, limit, timeoutMs + LEASE_MARGIN_MS]);
      if (held !== 1) return undefined;
      return {
        async release() {
          try {
            await run(connection, RELEASE, keys, [owner, member]);
          } catch (error) {
            logger?.warn(
              { service, jobId, tenant, err: error },
              'could not give back a tenant lease; it expires on its own',
            );
          }
        },
      };
    },
  };
}

/** A take that Redis failed: Ferry's own failure, never the job's (runAttempt lets it through). */
export class TenantLeaseError extends Error {
  override readonly name = 'TenantLeaseError';
}

/** Step 3 of runAttempt: the job's lease, undefined when its tenant is at the limit (the job is deferred). */
export async function takeTenantLease(
  leases: TenantLeases,
  tenant: string | undefined,
  jobId: string,
  timeoutMs: number,
): Promise<TenantLease | undefined> {
  try {
    return await leases.take(tenant, jobId, timeoutMs);
  } catch (error) {
    throw new TenantLeaseError(
      `could not take a tenant lease: ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
  }
}
