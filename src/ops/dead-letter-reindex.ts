/**
 * `ferry dlq reindex`: rebuilds the dead-letter index (src/dead-letter/search-index.ts) from the queue itself: for dead letters written before
 * the index existed, or by anything that bypasses the writer (a raw BullMQ add), and to drop entries whose
 * job something else removed (Bull Board, `queue.drain`, `obliterate`, a crash between a delete's two
 * steps). Reads every dead letter once, in batches; safe to run at any time, while workers write and
 * operators delete, and to run again (it is idempotent). Entries it adds have their exact score
 * (`deadLetteredAt` of the stored record).
 */
import type { RedisClient } from '../core/redis.ts';
import {
  type DeadLetterKeys,
  deadLetterKeys,
  indexCommand,
  parseFacets,
  serviceOfDeadLetterId,
  unindexIfMissing,
} from '../dead-letter/search-index.ts';
import { parseDeadLetterRecord } from '../dead-letter/view.ts';

export interface ReindexResult {
  /** Jobs of `{dead-letter}` read. */
  examined: number;
  /** Dead letters that were missing from the index and are in it now. */
  indexed: number;
  /** Jobs whose data is not a dead-letter record: left alone, not indexed. */
  skipped: string[];
  /** Ids whose entries were removed because their job no longer exists. */
  pruned: number;
}

/** BullMQ's collections of a queue's job ids: lists, then sorted sets. A dead letter normally sits in `wait`. */
const LISTS = ['wait', 'paused', 'active'];
const SORTED_SETS = ['prioritized', 'delayed', 'completed', 'failed', 'waiting-children'];

export async function reindexDeadLetters(options: {
  connection: RedisClient;
  prefix: string;
  /** Ids read per round trip; default 500. */
  batchSize?: number;
}): Promise<ReindexResult> {
  const client = options.connection;
  const keys = deadLetterKeys(options.prefix);
  const batchSize = options.batchSize ?? 500;
  const result: ReindexResult = { examined: 0, indexed: 0, skipped: [], pruned: 0 };
  for (const name of [...LISTS, ...SORTED_SETS]) {
    const key = keys.job(name);
    const isList = LISTS.includes(name);
    // By rank: a job that moves meanwhile may be missed or read twice; the writer indexes new ones anyway.
    for (let start = 0; ; start += batchSize) {
      const stop = start + batchSize - 1;
      const ids = isList
        ? await client.lrange(key, start, stop)
        : await client.zrange(key, start, String(stop));
      await indexBatch(client, keys, ids, result);
      if (ids.length < batchSize) break;
    }
  }
  result.pruned += await prune(client, keys, keys.byTime, undefined, batchSize);
  for (const service of await client.smembers(keys.services)) {
    result.pruned += await prune(client, keys, keys.byService(service), service, batchSize);
  }
  return result;
}

async function indexBatch(
  client: RedisClient,
  keys: DeadLetterKeys,
  ids: readonly string[],
  result: ReindexResult,
): Promise<void> {
  const data = await Promise.all(ids.map((id) => client.hget(keys.job(id), 'data')));
  await Promise.all(
    ids.map(async (id, i) => {
      const json = data[i];
      if (json === null || json === undefined) return; // removed meanwhile
      result.examined++;
      const record = parseDeadLetterRecord(json);
      if (record === undefined) {
        result.skipped.push(id);
        return;
      }
      const added = Number(await client.eval(...indexCommand(keys, id, record, 'exact')));
      if (added === 2) result.indexed++;
    }),
  );
}

/** Removes the entries of `index` whose job is gone; ZSCAN returns every member present throughout. */
async function prune(
  client: RedisClient,
  keys: DeadLetterKeys,
  index: string,
  service: string | undefined,
  batchSize: number,
): Promise<number> {
  let pruned = 0;
  let cursor = '0';
  do {
    const [next, flat] = await client.zscan(index, cursor, 'COUNT', batchSize);
    cursor = next;
    const ids = flat.filter((_, i) => i % 2 === 0);
    const exists = await Promise.all(ids.map((id) => client.exists(keys.job(id))));
    const gone = ids.filter((_, i) => exists[i] === 0);
    if (gone.length === 0) continue;
    const facets = service === undefined ? await client.hmget(keys.facets, ...gone) : [];
    for (const [i, id] of gone.entries()) {
      const owner = service ?? parseFacets(facets[i])?.service ?? serviceOfDeadLetterId(id);
      if ((await unindexIfMissing(client, keys, id, owner)) > 0) pruned++;
    }
  } while (cursor !== '0');
  return pruned;
}
