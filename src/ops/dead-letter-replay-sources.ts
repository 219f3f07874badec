/**
 * What a replay (dead-letter-replay.ts) takes, in batches: the dead letters matching a filter, newest first
 * (fromIndex, over the index walk), or exactly the ids given (fromIds), each with its record or why it is
 * skipped.
 */
import type { DeadLetterRecord } from '../core/job.ts';
import type { RedisClient } from '../core/redis.ts';
import { type ListQuery, matchesRecord } from '../dead-letter/list-query.ts';
import { type DeadLetterKeys, isDeadLetterId, serviceOfDeadLetterId } from '../dead-letter/search-index.ts';
import { parseDeadLetterRecord } from '../dead-letter/view.ts';
import { walkDeadLetters, type WalkedDeadLetter } from '../dead-letter/walk.ts';

/** Dead letters read and replayed together (concurrently, within the rate). */
const BATCH = 200;
/**
 * Why a dead letter was skipped: `not-found` (an id that names no dead letter, or one outside the scope, or
 * one deleted, by a purge or a concurrent replay, after it was read and before its turn),
 * `not-matching` (an id whose dead letter the filter excludes), `unknown-service` (not in `deps.services`),
 * `breaker-open` (onlyWhenClosed), `unreadable` (data that is not a dead-letter record).
 */
export type ReplaySkipReason =
  'not-found' | 'not-matching' | 'unknown-service' | 'breaker-open' | 'unreadable';

export interface Candidate {
  id: string;
  /** Known from the id or the facets when there is no record. */
  service?: string;
  record?: DeadLetterRecord;
  skip?: ReplaySkipReason;
}

/**
 * The matching dead letters written up to `untilMs`, newest first. A dead letter of a job this run replayed
 * (its source job `rp-…`, created after the run started) is left out even if a worker's clock put it before
 * `untilMs`: it would be the same job a second time.
 */
export async function* fromIndex(
  client: RedisClient,
  keys: DeadLetterKeys,
  query: ListQuery,
  untilMs: number,
  wallStart: number,
): AsyncGenerator<Candidate[]> {
  const exclude = (id: string): boolean => {
    const service = serviceOfDeadLetterId(id);
    if (service === undefined || !id.startsWith(`dl-${service}.rp-`)) return false;
    return Number(/\.(\d+)$/.exec(id)?.[1] ?? 0) >= wallStart;
  };
  const walk = walkDeadLetters(client, keys, {
    query,
    untilMs,
    batchSize: BATCH,
    withRecords: true,
    exclude,
  });
  for await (const batch of walk) yield batch.map(toCandidate);
}

function toCandidate(entry: WalkedDeadLetter): Candidate {
  const service = entry.record?.service ?? entry.facets?.service ?? serviceOfDeadLetterId(entry.id);
  return {
    id: entry.id,
    ...(service === undefined ? {} : { service }),
    ...(entry.record === undefined ? { skip: 'unreadable' as const } : { record: entry.record }),
  };
}

/** Each distinct id once, in the order given, checked against the scope and the filter. */
export async function* fromIds(
  client: RedisClient,
  keys: DeadLetterKeys,
  query: ListQuery,
  ids: readonly string[],
): AsyncGenerator<Candidate[]> {
  const unique = [...new Set(ids)];
  const inScope: ListQuery = query.scope === undefined ? {} : { scope: query.scope };
  for (let start = 0; start < unique.length; start += BATCH) {
    const chunk = unique.slice(start, start + BATCH);
    yield Promise.all(
      chunk.map(async (id): Promise<Candidate> => {
        const service = serviceOfDeadLetterId(id);
        const known = service === undefined ? { id } : { id, service };
        const json = (await isDeadLetterId(client, keys, id))
          ? await client.hget(keys.job(id), 'data')
          : null;
        if (json === null) return { ...known, skip: 'not-found' };
        const record = parseDeadLetterRecord(json);
        if (record === undefined) return { ...known, skip: 'unreadable' };
        if (!matchesRecord(record, inScope, undefined)) return { ...known, skip: 'not-found' };
        const inTime =
          (query.since === undefined || record.deadLetteredAt >= query.since) &&
          (query.until === undefined || record.deadLetteredAt <= query.until);
        if (!inTime || !matchesRecord(record, query, query.service))
          return { id, record, skip: 'not-matching' };
        return { id, record };
      }),
    );
  }
}
