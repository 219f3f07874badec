/** Rebuilding the dead-letter index from the queue: what bypassed the writer is found, what is gone is dropped. */
import { describe, expect, it } from 'vitest';

import { reindexDeadLetters } from '../../src/ops/dead-letter-reindex.ts';
import { aRecord, deadLetterKit, T } from '../dead-letter/support.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();

describe('dead-letter reindex', () => {
  it('indexes dead letters added without the writer, with their own times, once', async () => {
    const kit = deadLetterKit(redis);
    const written = await kit.write({ deadLetteredAt: T + 2 });
    // As an older Ferry, or a script using plain BullMQ, would have added them.
    await kit.raw.add('crm.createContact', aRecord({ deadLetteredAt: T + 3 }), { jobId: 'dl-crm.raw1.1' });
    await kit.raw.add('mail.send', aRecord({ service: 'mail', operation: 'send', deadLetteredAt: T + 1 }), {
      jobId: 'foreign-id',
    });
    expect((await kit.reader.list()).items.map((item) => item.id)).toEqual([written]);

    const result = await reindexDeadLetters({ connection: redis.client, prefix: kit.prefix, batchSize: 2 });
    expect(result).toEqual({ examined: 3, indexed: 2, skipped: [], pruned: 0 });
    expect((await kit.reader.list()).items.map((item) => item.id)).toEqual([
      'dl-crm.raw1.1',
      written,
      'foreign-id',
    ]);
    expect((await kit.reader.list({ service: 'mail' })).items.map((item) => item.id)).toEqual(['foreign-id']);
    expect(await kit.reader.countByService()).toEqual(
      new Map([
        ['crm', 2],
        ['mail', 1],
      ]),
    );
    // Indexed, a foreign id can be shown and deleted.
    expect(await kit.reader.show('foreign-id')).toMatchObject({ service: 'mail', name: 'mail.send' });
    expect(await kit.purger.delete('foreign-id')).toBe(true);
    expect(await kit.reader.countByService()).toEqual(new Map([['crm', 2]]));

    expect(await reindexDeadLetters({ connection: redis.client, prefix: kit.prefix })).toEqual({
      examined: 2,
      indexed: 0,
      skipped: [],
      pruned: 0,
    });
  });

  it('drops the entries of dead letters removed behind its back', async () => {
    const kit = deadLetterKit(redis);
    const kept = await kit.write({ deadLetteredAt: T });
    const removed = [await kit.write({ service: 'mail' }), await kit.write()];
    for (const id of removed) await kit.raw.remove(id);
    expect(await kit.reader.countByService()).toEqual(
      new Map([
        ['crm', 2],
        ['mail', 1],
      ]),
    );
    const result = await reindexDeadLetters({ connection: redis.client, prefix: kit.prefix });
    expect(result).toMatchObject({ examined: 1, indexed: 0, pruned: 2 });
    expect(await kit.reader.countByService()).toEqual(new Map([['crm', 1]]));
    expect(await redis.client.zrange(kit.keys.byTime, 0, '-1')).toEqual([kept]);
  });

  it('leaves out jobs that are not dead-letter records, and keys a foreign writer added out of views', async () => {
    const kit = deadLetterKit(redis);
    await kit.raw.add('whatever', { hello: 'world' }, { jobId: 'not-a-record' });
    const record = {
      ...aRecord(),
      apiKey: 'sk_live_secret',
      finalError: { type: 'ServerError', message: 'HTTP 500', status: 500, token: 'sk_live_secret' },
    };
    await kit.raw.add('crm.createContact', record, { jobId: 'dl-crm.extra.1' });
    const result = await reindexDeadLetters({ connection: redis.client, prefix: kit.prefix });
    expect(result).toMatchObject({ examined: 2, indexed: 1, skipped: ['not-a-record'] });
    expect(await kit.reader.show('not-a-record')).toBeUndefined();
    const page = await kit.reader.list({ includeInput: true });
    const shown = await kit.reader.show('dl-crm.extra.1');
    expect(page.items).toHaveLength(1);
    expect(shown?.finalError).toEqual({ type: 'ServerError', message: 'HTTP 500', status: 500 });
    expect(JSON.stringify([page, shown])).not.toContain('sk_live_secret');
  });

  it('sets the time of an entry to the stored record, where a repeated write could not', async () => {
    const kit = deadLetterKit(redis);
    const record = aRecord({ deadLetteredAt: T });
    // Added before the index existed, then written again (a re-run): BullMQ keeps the first record, the
    // entry the writer adds has the second one's time.
    await kit.raw.add('crm.createContact', record, {
      jobId: `dl-crm.${record.sourceJobId}.${record.enqueuedAt}`,
    });
    const { id } = await kit.writer.write({ ...record, deadLetteredAt: T + 100 });
    expect((await kit.reader.list({ since: T + 50 })).items.map((item) => item.id)).toEqual([id]);

    await reindexDeadLetters({ connection: redis.client, prefix: kit.prefix });
    expect((await kit.reader.list({ since: T + 50 })).items).toEqual([]);
    expect((await kit.reader.list({ until: T })).items.map((item) => [item.id, item.deadLetteredAt])).toEqual(
      [[id, T]],
    );
  });
});
