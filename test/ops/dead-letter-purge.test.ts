/** Purge by filter and age (`ferry dlq purge`, `POST /v1/dead-letters/purge`). */
import { describe, expect, it } from 'vitest';

import { HOUR } from '../../src/core/time.ts';
import { purgeDeadLetters, type PurgeProgress } from '../../src/ops/dead-letter-purge.ts';
import { deadLetterKit, hourly, left, T } from '../dead-letter/support.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

describe('purgeDeadLetters', () => {
  it('deletes those older than olderThanMs and matching the filter; a dry run only counts them', async () => {
    const kit = deadLetterKit(redis);
    const ids = await hourly(kit, 10);
    const mail = await kit.write({ service: 'mail', operation: 'send', deadLetteredAt: T - 9 * HOUR });
    const deps = { connection: redis.client, prefix: kit.prefix };
    const options = { filter: { service: 'crm' }, olderThanMs: 7 * HOUR, now: () => T + HOUR };

    const dry = await purgeDeadLetters(deps, { ...options, dryRun: true });
    expect(dry).toMatchObject({ dryRun: true, matched: 4, deleted: 0, interrupted: false });
    expect(await left(kit)).toHaveLength(11);

    const progress: PurgeProgress[] = [];
    const report = await purgeDeadLetters(deps, { ...options, onProgress: (p) => progress.push(p) });
    expect(report).toMatchObject({ dryRun: false, matched: 4, deleted: 4, interrupted: false });
    expect(await left(kit)).toEqual([...ids.slice(0, 6), mail]);
    expect(progress.at(-1)).toMatchObject({ matched: 4, matchedIsTotal: true, done: 4, deleted: 4 });
  });

  it('stops between batches when the signal aborts; a re-run deletes the rest', async () => {
    const kit = deadLetterKit(redis);
    await hourly(kit, 1_200);
    const deps = { connection: redis.client, prefix: kit.prefix };
    const controller = new AbortController();
    const first = await purgeDeadLetters(deps, {
      signal: controller.signal,
      onProgress: () => controller.abort(),
    });
    expect(first).toMatchObject({ interrupted: true, deleted: 500 });
    expect(await purgeDeadLetters(deps, {})).toMatchObject({ interrupted: false, deleted: 700 });
    expect(await kit.reader.countByService()).toEqual(new Map());
  });

  it('refuses a bad filter or age', async () => {
    const deps = { connection: redis.client, prefix: 'unused' };
    await expect(purgeDeadLetters(deps, { olderThanMs: -1 })).rejects.toMatchObject({ field: 'olderThanMs' });
    await expect(purgeDeadLetters(deps, { filter: { service: 'Bad Name' } })).rejects.toMatchObject({
      field: 'service',
    });
  });
});
