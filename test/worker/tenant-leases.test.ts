/** The lease scripts of tenantConcurrency (src/worker/tenant-leases.ts) against a real Redis. */
import { describe, expect, it } from 'vitest';

import { NO_TENANT, tenantLeaseKeys } from '../../src/core/queue-layout.ts';
import { createTenantLeases, LEASE_MARGIN_MS } from '../../src/worker/tenant-leases.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();

function leasesOf(limit: number) {
  const prefix = uniquePrefix();
  const leases = createTenantLeases({ connection: redis.client, prefix, service: 'svc', limit });
  return { leases, keys: tenantLeaseKeys(prefix, 'svc') };
}

describe('tenant leases', () => {
  it('holds at most `limit` per tenant, counts them per tenant, and gives a slot back on release', async () => {
    const { leases, keys } = leasesOf(2);
    const a1 = await leases.take('A', '1', 1_000);
    const a2 = await leases.take('A', '2', 1_000);
    expect(a1).toBeDefined();
    expect(a2).toBeDefined();
    expect(await leases.take('A', '3', 1_000)).toBeUndefined();
    // Another tenant is not affected.
    expect(await leases.take('B', '4', 1_000)).toBeDefined();
    expect(await redis.client.hgetall(keys.counts)).toEqual({ A: '2', B: '1' });
    expect(await redis.client.zcard(keys.leases)).toBe(3);

    await a1!.release();
    // A second release of the same lease changes nothing.
    await a1!.release();
    expect(await redis.client.hgetall(keys.counts)).toEqual({ A: '1', B: '1' });
    expect(await leases.take('A', '3', 1_000)).toBeDefined();
    expect(await leases.take('A', '5', 1_000)).toBeUndefined();
  });

  it('puts jobs without a tenant in one shared bucket', async () => {
    const { leases, keys } = leasesOf(1);
    expect(await leases.take(undefined, '1', 1_000)).toBeDefined();
    expect(await leases.take(undefined, '2', 1_000)).toBeUndefined();
    expect(await redis.client.hgetall(keys.counts)).toEqual({ [NO_TENANT]: '1' });
  });

  it('renews the lease of a job that already holds one instead of counting it twice', async () => {
    const { leases, keys } = leasesOf(1);
    const first = await leases.take('A', 'same', 1_000);
    const before = Number(await redis.client.zscore(keys.leases, 'A\0same'));
    const again = await leases.take('A', 'same', 60_000);
    expect(first).toBeDefined();
    expect(again).toBeDefined();
    expect(await redis.client.hget(keys.counts, 'A')).toBe('1');
    expect(Number(await redis.client.zscore(keys.leases, 'A\0same'))).toBeGreaterThan(before);
  });

  it('lasts the attempt timeout plus the margin, on Redis time', async () => {
    const { leases, keys } = leasesOf(1);
    const [seconds] = await redis.client.time();
    await leases.take('A', '1', 2_000);
    const expiry = Number(await redis.client.zscore(keys.leases, 'A\0' + '1'));
    const now = Number(seconds) * 1000;
    expect(expiry).toBeGreaterThanOrEqual(now + 2_000 + LEASE_MARGIN_MS);
    expect(expiry).toBeLessThan(now + 2_000 + LEASE_MARGIN_MS + 60_000);
  });

  it("reclaims a lost worker's expired leases on the next take, of any tenant", async () => {
    const { leases, keys } = leasesOf(1);
    // What a worker killed mid-call leaves: leases whose expiry has passed, still counted.
    await redis.client.zadd(keys.leases, 1, 'A\0lost-1', 2, 'B\0lost-2');
    await redis.client.hset(keys.counts, 'A', 1, 'B', 1);
    expect(await leases.take('C', '1', 1_000)).toBeDefined();
    expect(await redis.client.hgetall(keys.counts)).toEqual({ C: '1' });
    expect(await leases.take('A', '2', 1_000)).toBeDefined();
    expect((await redis.client.zrange(keys.leases, '0', '-1')).sort()).toEqual(['A\x002', 'C\x001']);
  });

  it('does not count down a lease that expired and was reclaimed before its release', async () => {
    const { leases, keys } = leasesOf(1);
    const slow = await leases.take('A', 'slow', 1_000);
    // Its expiry passes (the call outlived timeout + margin); another take reclaims it and takes the slot.
    await redis.client.zadd(keys.leases, 1, 'A\0slow');
    expect(await leases.take('A', 'next', 1_000)).toBeDefined();
    await slow!.release();
    expect(await redis.client.hgetall(keys.counts)).toEqual({ A: '1' });
    expect(await leases.take('A', 'third', 1_000)).toBeUndefined();
  });

  it('gives a Redis error on a take to the caller, and never rejects on a release', async () => {
    const { leases, keys } = leasesOf(1);
    const lease = await leases.take('A', '1', 1_000);
    await redis.client.set(keys.counts, 'not a hash');
    await expect(leases.take('B', '2', 1_000)).rejects.toThrow(/WRONGTYPE/);
    await expect(lease!.release()).resolves.toBeUndefined();
  });
});
