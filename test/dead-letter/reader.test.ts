/** Listing, showing and counting dead letters: filters, cursor pagination, bounded work, the views' shape. */
import { describe, expect, it, onTestFinished } from 'vitest';
import { z } from 'zod';

import { ValidationError } from '../../src/core/errors.ts';
import {
  deadLetterDetailSchema,
  type DeadLetterListOptions,
  DeadLetterReader,
  deadLetterViewSchema,
} from '../../src/dead-letter/reader.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';
import { allPages, aRecord, deadLetterKit, T } from './support.ts';

const redis = await startRedis();

/** Five dead letters, a to e, one millisecond apart (e newest), across two services. */
async function fiveDeadLetters() {
  const kit = deadLetterKit(redis);
  const a = await kit.write({ tenant: 'acme', deadLetteredAt: T + 1 });
  const b = await kit.write({
    operation: 'getContact',
    tenant: 'beta',
    finalError: { type: 'ClientError', message: 'HTTP 404', status: 404 },
    deadLetteredAt: T + 2,
  });
  const c = await kit.write({
    service: 'mail',
    operation: 'send',
    finalError: { type: 'TimeoutError', message: 'no answer within 5000 ms' },
    deadLetteredAt: T + 3,
  });
  const d = await kit.write({
    service: 'mail',
    operation: 'send',
    tenant: 'acme',
    finalError: { type: 'ClientError', message: 'HTTP 422', status: 422 },
    deadLetteredAt: T + 4,
  });
  const e = await kit.write({
    tenant: 'acme',
    finalError: { type: 'ClientError', message: 'HTTP 400', status: 400 },
    deadLetteredAt: T + 5,
  });
  return { kit, ids: { a, b, c, d, e } };
}

type Name = 'a' | 'b' | 'c' | 'd' | 'e';

describe('dead-letter list', () => {
  it.each<[string, DeadLetterListOptions, Name[]]>([
    ['no filter: newest first', {}, ['e', 'd', 'c', 'b', 'a']],
    ['service', { service: 'mail' }, ['d', 'c']],
    ['operation', { operation: 'getContact' }, ['b']],
    ['tenant', { tenant: 'acme' }, ['e', 'd', 'a']],
    ['error type', { errorType: 'ClientError' }, ['e', 'd', 'b']],
    ['status', { status: 404 }, ['b']],
    ['since (inclusive)', { since: T + 4 }, ['e', 'd']],
    ['until (inclusive)', { until: T + 2 }, ['b', 'a']],
    ['since and until', { since: T + 2, until: T + 4 }, ['d', 'c', 'b']],
    ['service and tenant', { service: 'crm', tenant: 'acme' }, ['e', 'a']],
    ['service, error type, status', { service: 'mail', errorType: 'ClientError', status: 422 }, ['d']],
    ['nothing matches', { service: 'crm', status: 422 }, []],
    ['a service that has none', { service: 'billing' }, []],
    ['scope: one service', { scope: { services: ['mail'] } }, ['d', 'c']],
    [
      'scope: tenants (none excludes untenanted)',
      { scope: { tenants: ['beta', 'acme'] } },
      ['e', 'd', 'b', 'a'],
    ],
    ['scope: service outside it', { service: 'crm', scope: { services: ['mail'] } }, []],
    [
      'scope: two services, a tenant filter',
      { tenant: 'acme', scope: { services: ['crm', 'mail'] } },
      ['e', 'd', 'a'],
    ],
    ['scope: empty', { scope: { services: [] } }, []],
    ['scope: tenant outside it', { tenant: 'beta', scope: { tenants: ['acme'] } }, []],
  ])('filters by %s', async (_name, options, expected) => {
    const { kit, ids } = await fiveDeadLetters();
    const page = await kit.reader.list(options);
    expect(page.items.map((item) => item.id)).toEqual(expected.map((name) => ids[name]));
    expect(page.nextCursor).toBeNull();
    // The same answer one item per page, through the cursor.
    expect((await allPages(kit.reader, { ...options, limit: 1 })).ids).toEqual(expected.map((n) => ids[n]));
  });

  it('shows what the record holds, without the input unless asked', async () => {
    const { kit, ids } = await fiveDeadLetters();
    const [item] = (await kit.reader.list({ operation: 'getContact' })).items;
    expect(item).toEqual({
      id: ids.b,
      service: 'crm',
      operation: 'getContact',
      tenant: 'beta',
      sourceJobId: expect.any(String) as string,
      sourceQueue: '{crm}',
      attempts: [
        {
          attempt: 1,
          outcome: 'failed',
          at: T - 10,
          durationMs: 5,
          type: 'ServerError',
          status: 500,
          message: 'boom',
        },
      ],
      finalError: { type: 'ClientError', message: 'HTTP 404', status: 404 },
      deadLetteredAt: T + 2,
      enqueuedAt: T - 1_000,
    });
    const [withInput] = (await kit.reader.list({ operation: 'getContact', includeInput: true })).items;
    expect(withInput).toEqual({ ...item, input: { n: expect.any(Number) as number } });
  });

  it('pages 50 by default, up to 500, and refuses a limit outside 1..500', async () => {
    const kit = deadLetterKit(redis);
    for (let i = 0; i < 60; i++) await kit.write({ deadLetteredAt: T + i });
    const first = await kit.reader.list();
    expect(first.items).toHaveLength(50);
    expect(first.items[0]?.deadLetteredAt).toBe(T + 59);
    expect(first.nextCursor).not.toBeNull();
    const rest = await kit.reader.list({ cursor: first.nextCursor! });
    expect(rest.items.map((item) => item.deadLetteredAt)).toEqual(
      [9, 8, 7, 6, 5, 4, 3, 2, 1, 0].map((i) => T + i),
    );
    expect(rest.nextCursor).toBeNull();
    expect((await kit.reader.list({ limit: 500 })).items).toHaveLength(60);
    for (const limit of [0, 501, 2.5, -1]) {
      await expect(kit.reader.list({ limit }), `limit ${limit}`).rejects.toMatchObject({
        type: 'ValidationError',
        field: 'limit',
      });
    }
  });

  it.each<[string, Record<string, unknown>, string]>([
    ['an unknown error type', { errorType: 'OopsError' }, 'errorType'],
    ['a status that is not HTTP', { status: 99 }, 'status'],
    ['a time that is not epoch ms', { since: 'yesterday' }, 'since'],
    ['a cursor it did not make', { cursor: 'bm90IGEgY3Vyc29y' }, 'cursor'],
    ['a cursor that is not base64url JSON', { cursor: '!!!' }, 'cursor'],
    ['an unknown option', { colour: 'red' }, 'query'],
  ])('refuses %s, naming the field', async (_name, options, field) => {
    const kit = deadLetterKit(redis);
    const error: unknown = await kit.reader.list(options as DeadLetterListOptions).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toMatchObject({ field });
  });

  it('neither skips nor repeats a dead letter when others are added or deleted between pages', async () => {
    const kit = deadLetterKit(redis);
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push(await kit.write({ deadLetteredAt: T + i }));
    const newestFirst = [...ids].reverse();
    const first = await kit.reader.list({ limit: 3 });
    expect(first.items.map((item) => item.id)).toEqual(newestFirst.slice(0, 3));

    // Between pages: the page's last item (the cursor's own entry) and one not yet seen are deleted, a newer
    // one and one older than all are added.
    expect(await kit.purger.delete(ids[7]!)).toBe(true);
    expect(await kit.purger.delete(ids[4]!)).toBe(true);
    await kit.write({ deadLetteredAt: T + 100 });
    const older = await kit.write({ deadLetteredAt: T - 100 });

    const rest = await allPages(kit.reader, { limit: 3, cursor: first.nextCursor! });
    expect(rest.ids).toEqual([ids[6], ids[5], ids[3], ids[2], ids[1], ids[0], older]);
  });

  it('keeps its place among dead letters of the same millisecond, ordered by id bytewise', async () => {
    const kit = deadLetterKit(redis);
    // Ids that a locale-aware comparison would order differently from Redis (punctuation, case).
    const sources = ['a-b', 'a.b', 'aZb', 'a_b', 'A-b', 'ab', 'a~b', 'a-c'];
    for (const sourceJobId of sources) await kit.write({ sourceJobId, deadLetteredAt: T });
    await kit.write({ sourceJobId: 'newer', deadLetteredAt: T + 1 });
    await kit.write({ sourceJobId: 'older', deadLetteredAt: T - 1 });
    const whole = (await kit.reader.list()).items.map((item) => item.id);
    expect(whole).toHaveLength(10);
    const tie = whole.slice(1, -1);
    expect(tie).toEqual([...tie].sort((x, y) => Buffer.compare(Buffer.from(y), Buffer.from(x))));
    expect((await allPages(kit.reader, { limit: 1 })).ids).toEqual(whole);

    // The cursor's own entry deleted, and members of the tie added on both sides of it.
    const first = await kit.reader.list({ limit: 4 });
    const cursorId = first.items[3]!.id;
    expect(await kit.purger.delete(cursorId)).toBe(true);
    const before = await kit.write({ sourceJobId: 'a-a', deadLetteredAt: T });
    const after = await kit.write({ sourceJobId: 'zz', deadLetteredAt: T });
    const rest = await allPages(kit.reader, { limit: 2, cursor: first.nextCursor! });
    expect(rest.ids).toEqual(
      [...whole.slice(4, -1).concat(before)].sort(descendingTie).concat(whole.at(-1)!),
    );
    expect(rest.ids).not.toContain(after);
  });

  it('examines a bounded number of entries per call and returns a cursor to go on', async () => {
    const kit = deadLetterKit(redis, { maxExamined: 4 });
    const rare = await kit.write({ tenant: 'rare', deadLetteredAt: T });
    for (let i = 1; i < 10; i++) await kit.write({ tenant: 'common', deadLetteredAt: T + i });
    const pages = [];
    let cursor: string | undefined;
    do {
      const page = await kit.reader.list({ tenant: 'rare', ...(cursor === undefined ? {} : { cursor }) });
      pages.push(page);
      cursor = page.nextCursor ?? undefined;
    } while (cursor !== undefined);
    expect(pages.map((page) => page.examined)).toEqual([4, 4, 2]);
    expect(pages.map((page) => page.items.map((item) => item.id))).toEqual([[], [], [rare]]);
  });

  it('skips an entry whose job something else removed, and drops the entry', async () => {
    const kit = deadLetterKit(redis);
    const [one, two, three] = [await kit.write(), await kit.write(), await kit.write()];
    // As Bull Board's "remove" does: the job goes, the index is not told.
    await kit.raw.remove(two);
    expect((await kit.reader.countByService()).get('crm')).toBe(3);
    const page = await kit.reader.list();
    expect(page.items.map((item) => item.id).sort()).toEqual([one, three].sort());
    expect(await redis.client.zscore(kit.keys.byTime, two)).toBeNull();
    expect((await kit.reader.countByService()).get('crm')).toBe(2);
  });

  it('keeps the first record and its time when the same dead letter is written again', async () => {
    const kit = deadLetterKit(redis);
    const record = aRecord({ deadLetteredAt: T });
    const { id } = await kit.writer.write(record);
    expect((await kit.writer.write({ ...record, deadLetteredAt: T + 100 })).id).toBe(id);
    const page = await kit.reader.list();
    expect(page.items.map((item) => [item.id, item.deadLetteredAt])).toEqual([[id, T]]);
    expect((await kit.reader.list({ since: T + 50 })).items).toEqual([]);
    expect(await kit.reader.countByService()).toEqual(new Map([['crm', 1]]));
  });
});

describe('dead-letter view schemas', () => {
  it('describe what list and show return, as JSON Schema for the OpenAPI document', async () => {
    const kit = deadLetterKit(redis);
    const id = await kit.write({ tenant: 'acme', metadata: { order: 1 } });
    const [item] = (await kit.reader.list({ includeInput: true })).items;
    expect(deadLetterViewSchema.parse(item)).toEqual(item);
    const shown = await kit.reader.show(id);
    expect(deadLetterDetailSchema.parse(shown)).toEqual(shown);
    const json = z.toJSONSchema(deadLetterDetailSchema) as { required: string[] };
    expect(json.required).toEqual(
      expect.arrayContaining(['id', 'name', 'service', 'finalError', 'deadLetteredAt']),
    );
  });
});

describe('dead-letter show', () => {
  it('returns the whole record with its id and job name', async () => {
    const kit = deadLetterKit(redis);
    const record = aRecord({ tenant: 'acme', idempotencyKey: 'order-42', metadata: { order: 42 } });
    const { id } = await kit.writer.write(record);
    expect(await kit.reader.show(id)).toEqual({ id, name: 'crm.createContact', ...record });
  });

  it.each(['dl-crm.missing.1', 'missing', '', 'meta', 'wait', 'id', 'events', 'ferry:by-time', 'a:b'])(
    'returns undefined for %j',
    async (id) => {
      const kit = deadLetterKit(redis);
      await kit.write();
      expect(await kit.reader.show(id)).toBeUndefined();
    },
  );
});

describe('dead-letter counts', () => {
  it('counts by service, leaving out services without any', async () => {
    const { kit, ids } = await fiveDeadLetters();
    expect(await kit.reader.countByService()).toEqual(
      new Map([
        ['crm', 3],
        ['mail', 2],
      ]),
    );
    await kit.purger.delete(ids.c);
    await kit.purger.delete(ids.d);
    const counts: ReadonlyMap<string, number> = await kit.reader.deadLetterCounts();
    expect(counts).toEqual(new Map([['crm', 3]]));
  });

  it('is empty before any dead letter', async () => {
    const kit = deadLetterKit(redis);
    expect(await kit.reader.countByService()).toEqual(new Map());
  });
});

describe('dead letters as written', () => {
  it('are indexed even when Redis has forgotten the scripts (SCRIPT FLUSH)', async () => {
    const kit = deadLetterKit(redis);
    const first = await kit.write({ deadLetteredAt: T });
    await redis.client.script('FLUSH');
    const second = await kit.write({ deadLetteredAt: T + 1 });
    const third = await kit.write({ deadLetteredAt: T + 2 });
    expect((await kit.reader.list()).items.map((item) => item.id)).toEqual([third, second, first]);
    expect(await kit.raw.getWaitingCount()).toBe(3);
  });
});

describe('dead letters written by the worker', () => {
  it('lists, shows and counts what a downstream refusing with 400 dead-lettered', async () => {
    const downstream = await startDownstream(() => ({ status: 400, body: { error: 'bad email' } }));
    onTestFinished(() => downstream.close());
    const ferry = await createTestFerry(redis, { services: oneService(downstream.url) });
    const reader = new DeadLetterReader({ connection: redis.client, prefix: ferry.prefix });
    const first = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'create',
      input: { email: 'x' },
    });
    const second = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'create',
      input: { email: 'y' },
      tenant: 'acme',
    });
    const views = [
      await ferry.producer.waitFor('svc', first.id, { timeoutMs: 10_000 }),
      await ferry.producer.waitFor('svc', second.id, { timeoutMs: 10_000 }),
    ];
    expect(views.map((view) => view.state)).toEqual(['dead_lettered', 'dead_lettered']);

    const page = await reader.list({ service: 'svc', errorType: 'ClientError', status: 400 });
    expect(page.items.map((item) => item.sourceJobId).sort()).toEqual([first.id, second.id].sort());
    expect((await reader.list({ tenant: 'acme' })).items.map((item) => item.id)).toEqual([
      views[1]!.deadLetterId,
    ]);
    const shown = await reader.show(views[0]!.deadLetterId!);
    expect(shown).toMatchObject({
      id: views[0]!.deadLetterId,
      name: 'svc.create',
      service: 'svc',
      operation: 'create',
      input: { email: 'x' },
      sourceJobId: first.id,
      sourceQueue: '{svc}',
      attempts: [{ attempt: 1, outcome: 'failed', type: 'ClientError', status: 400 }],
      finalError: { type: 'ClientError', status: 400 },
    });
    expect(await reader.countByService()).toEqual(new Map([['svc', 2]]));
  });
});

function descendingTie(x: string, y: string): number {
  return Buffer.compare(Buffer.from(y), Buffer.from(x));
}
