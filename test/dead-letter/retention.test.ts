/** Retention (age, count) enforced by the worker pool. Purge by filter and age: test/ops/dead-letter-purge.test.ts. */
import { describe, expect, it, onTestFinished } from 'vitest';

import { DAY, HOUR } from '../../src/core/time.ts';
import { enforceRetention } from '../../src/dead-letter/retention.ts';
import { DeadLetterWriter } from '../../src/dead-letter/writer.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';
import { aRecord, deadLetterKit, hourly, left, T } from './support.ts';

const redis = await startRedis();

describe('enforceRetention', () => {
  it('deletes dead letters older than maxAgeMs, and only those', async () => {
    const kit = deadLetterKit(redis);
    const ids = await hourly(kit, 10);
    const deps = { connection: redis.client, prefix: kit.prefix };
    expect(await enforceRetention(deps, { maxAgeMs: 4 * HOUR + 1, now: () => T })).toEqual({ deleted: 5 });
    expect(await left(kit)).toEqual(ids.slice(0, 5));
    expect(await enforceRetention(deps, { maxAgeMs: 4 * HOUR + 1, now: () => T })).toEqual({ deleted: 0 });
    expect(await kit.reader.countByService()).toEqual(new Map([['crm', 5]]));
  });

  it('keeps the newest maxCount, also when several processes enforce it at once', async () => {
    const kit = deadLetterKit(redis);
    const ids = await hourly(kit, 1_200);
    const deps = { connection: redis.client, prefix: kit.prefix };
    const results = await Promise.all([1, 2, 3].map(() => enforceRetention(deps, { maxCount: 100 })));
    // Each may count a delete another did at the same moment; none deletes past the limit.
    expect(results.reduce((sum, r) => sum + r.deleted, 0)).toBeGreaterThanOrEqual(1_100);
    expect(await left(kit)).toEqual(ids.slice(0, 100));
    expect(await redis.client.zcard(kit.keys.byTime)).toBe(100);
  });

  it('applies both limits, and neither when they are 0', async () => {
    const kit = deadLetterKit(redis);
    const ids = await hourly(kit, 10);
    const deps = { connection: redis.client, prefix: kit.prefix };
    expect(await enforceRetention(deps, { maxAgeMs: 0, maxCount: 0, now: () => T })).toEqual({ deleted: 0 });
    expect(await enforceRetention(deps, { maxAgeMs: 8 * HOUR + 1, maxCount: 3, now: () => T })).toEqual({
      deleted: 7,
    });
    expect(await left(kit)).toEqual(ids.slice(0, 3));
  });

  it('runs in the worker pool on every sweep, without anyone calling it', async () => {
    const downstream = await startDownstream();
    onTestFinished(() => downstream.close());
    const ferry = await createTestFerry(redis, {
      services: oneService(downstream.url),
      start: false,
      pool: { sweepIntervalMs: 200, deadLetterRetention: { maxAgeMs: 30 * DAY, maxCount: 0 } },
    });
    const own = new DeadLetterWriter({ connection: redis.client, prefix: ferry.prefix });
    onTestFinished(() => own.close());
    const old = (await own.write(aRecord({ service: 'svc', deadLetteredAt: Date.now() - 31 * DAY }))).id;
    const fresh = (await own.write(aRecord({ service: 'svc', deadLetteredAt: Date.now() - DAY }))).id;
    await ferry.start();
    const byTime = `${ferry.prefix}:{dead-letter}:ferry:by-time`;
    await expect.poll(() => redis.client.zscore(byTime, old), { timeout: 5_000 }).toBeNull();
    expect(await redis.client.zscore(byTime, fresh)).not.toBeNull();
  });
});
