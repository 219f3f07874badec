/**
 * Deletes dead letters: one (DeadLetterPurger), or every one matching a filter (purgeDeadLetters, over
 * walkDeadLetters, the walk replay.ts shares). A deleted dead letter stays deleted: its source
 * job carries DEAD_LETTERED_FIELD (writer.ts), which the failed-set sweep and a re-run of the job trust
 * instead of looking for the dead letter, so neither writes it again.
 */
import { Queue } from 'bullmq';

import { ConfigurationError, ValidationError } from '../core/errors.ts';
import type { DeadLetterRecord } from '../core/job.ts';
import { DEAD_LETTER_QUEUE } from '../core/queue-layout.ts';
import type { RedisClient } from '../core/redis.ts';
import {
  type DeadLetterFilter,
  type DeadLetterScope,
  indexedService,
  type ListQuery,
  matchesFacets,
  matchesRecord,
  needsRecordFilter,
  parseListOptions,
  type Position,
} from './list-query.ts';
import {
  type DeadLetterFacets,
  type DeadLetterKeys,
  deadLetterKeys,
  INDEX_PAGE,
  isDeadLetterId,
  parseFacets,
  serviceOfDeadLetter,
  unindexIfMissing,
} from './search-index.ts';
import { parseDeadLetterRecord } from './view.ts';
import { markSourceOfDeadLetter } from './writer.ts';

export class DeadLetterPurger {
  readonly #client: RedisClient;
  readonly #prefix: string;
  readonly #keys: DeadLetterKeys;
  #queue: Queue<DeadLetterRecord> | undefined;

  constructor(options: { connection: RedisClient; prefix: string }) {
    this.#client = options.connection;
    this.#prefix = options.prefix;
    this.#keys = deadLetterKeys(options.prefix);
  }

  /**
   * Deletes one dead letter and its index entries; true when it existed. The job goes first, with BullMQ's
   * own removal (its lists, logs), then the entries, and only if the job is still gone: a list running
   * meanwhile may meet an entry without its job and skips it, but never shows a dead letter that is gone.
   * Deleting again (after a crash between the two) removes what is left. An id that cannot name a dead
   * letter (a BullMQ key such as `meta`) is reported as not existing, never removed.
   */
  async delete(id: string): Promise<boolean> {
    if (!(await isDeadLetterId(this.#client, this.#keys, id))) return false;
    const [existed, service] = await Promise.all([
      this.#client.exists(this.#keys.job(id)),
      serviceOfDeadLetter(this.#client, this.#keys, id),
    ]);
    // A worker that died between writing this dead letter and marking its source job would write it again
    // on the job's re-run (so would the sweep): a purged, retired or replayed dead letter would come back.
    // Marking the source (only if it is still the job that died) keeps every deleted dead letter deleted.
    if (existed === 1) await markSourceOfDeadLetter(this.#client, this.#prefix, id);
    if (existed === 1 && (await this.#deadLetterQueue().remove(id)) === 0) {
      // BullMQ refuses to remove a locked job: something consumes `{dead-letter}`, which must stay paused.
      throw new ConfigurationError(
        `dead letter ${id} is locked by a worker: nothing may consume ${DEAD_LETTER_QUEUE}, which stays paused`,
      );
    }
    await unindexIfMissing(this.#client, this.#keys, id, service);
    return existed === 1;
  }

  async close(): Promise<void> {
    await this.#queue?.close();
  }

  #deadLetterQueue(): Queue<DeadLetterRecord> {
    this.#queue ??= new Queue<DeadLetterRecord>(DEAD_LETTER_QUEUE, {
      connection: this.#client,
      prefix: this.#prefix,
    });
    return this.#queue;
  }
}

export interface WalkOptions {
  /** Filters and scope (parseListOptions); `limit` and `cursor` are not read. */
  query: ListQuery;
  /** An upper bound on deadLetteredAt besides the query's `until` (epoch ms, inclusive). */
  untilMs?: number;
  /** Index entries read per round trip. */
  batchSize: number;
  /** Load every record (replay needs them); otherwise only those whose facets are missing. */
  withRecords: boolean;
  /** Ids to pass over without reading anything of them. */
  exclude?: (id: string) => boolean;
}

export interface WalkedDeadLetter {
  id: string;
  /** deadLetteredAt as indexed. */
  score: number;
  facets?: DeadLetterFacets;
  /** Loaded when asked for (withRecords) or needed to match; undefined when asked for but not a record. */
  record?: DeadLetterRecord;
}

/**
 * The dead letters matching `query`, newest first (a list's order, so `limit` takes what a list shows first),
 * in batches. Newest first is also what keeps deleting cheap: BullMQ removes a job from `{dead-letter}`'s
 * wait list with `LREM … 1 id`, which scans from the head, where the newest are; oldest first, each delete
 * scanned the whole list (O(n) each, measured: 10,000 deletes spent 1.8 s in LREM). The position is (score, id), not an offset:
 * dead letters deleted meanwhile (by the caller, as it goes, or anyone) shift nothing, and none is met twice.
 * Reads facets for filters the index cannot answer, and records only where needed. Writes nothing: an entry
 * whose job is gone is passed over (a list or a delete cleans it up), so a dry run stays a dry run.
 */
export async function* walkDeadLetters(
  client: RedisClient,
  keys: DeadLetterKeys,
  options: WalkOptions,
): AsyncGenerator<WalkedDeadLetter[]> {
  const { query, batchSize } = options;
  const service = indexedService(query);
  if (service === null) return;
  const key = service === undefined ? keys.byTime : keys.byService(service);
  const { min, max } = scoreRange(query, options.untilMs);
  if (min > max) return;
  const filtered = needsRecordFilter(query, service);
  let from = { max: max === Infinity ? '+inf' : String(max), after: '' };
  const bottom = min === -Infinity ? '-inf' : String(min);
  for (;;) {
    const flat = (await client.eval(INDEX_PAGE, 1, key, from.max, from.after, bottom, batchSize)) as string[];
    const entries: Position[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) entries.push({ id: flat[i]!, score: Number(flat[i + 1]) });
    const end = entries.at(-1);
    if (end === undefined) return;
    from = { max: String(end.score), after: end.id };
    const kept =
      options.exclude === undefined ? entries : entries.filter((entry) => !options.exclude!(entry.id));
    const facets =
      filtered && kept.length > 0
        ? (await client.hmget(keys.facets, ...kept.map((entry) => entry.id))).map(parseFacets)
        : [];
    const candidates: WalkedDeadLetter[] = [];
    for (const [i, entry] of kept.entries()) {
      const entryFacets = facets[i];
      if (entryFacets !== undefined && !matchesFacets(entryFacets, query, service)) continue;
      candidates.push(entryFacets === undefined ? entry : { ...entry, facets: entryFacets });
    }
    const load = (candidate: WalkedDeadLetter): boolean =>
      options.withRecords || (filtered && candidate.facets === undefined);
    const data = await Promise.all(
      candidates.map((candidate) =>
        load(candidate) ? client.hget(keys.job(candidate.id), 'data') : Promise.resolve(undefined),
      ),
    );
    const batch: WalkedDeadLetter[] = [];
    for (const [i, candidate] of candidates.entries()) {
      const json = data[i];
      if (json === undefined) {
        batch.push(candidate);
        continue;
      }
      if (json === null) continue; // deleted meanwhile, or a stale entry
      const record = parseDeadLetterRecord(json);
      if (record !== undefined && !matchesRecord(record, query, service)) continue;
      // Not a record: only reported when the facets said it matches (or nothing is filtered).
      if (record === undefined && filtered && candidate.facets === undefined) continue;
      batch.push(record === undefined ? candidate : { ...candidate, record });
    }
    if (batch.length > 0) yield batch;
    if (entries.length < batchSize) return;
  }
}

/** How many dead letters walkDeadLetters would yield, when the index alone can tell (service and time); else undefined. */
export async function countDeadLetters(
  client: RedisClient,
  keys: DeadLetterKeys,
  query: ListQuery,
  untilMs?: number,
): Promise<number | undefined> {
  const service = indexedService(query);
  if (service === null) return 0;
  if (needsRecordFilter(query, service)) return undefined;
  const { min, max } = scoreRange(query, untilMs);
  if (min > max) return 0;
  const key = service === undefined ? keys.byTime : keys.byService(service);
  return client.zcount(key, min === -Infinity ? '-inf' : min, max === Infinity ? '+inf' : max);
}

function scoreRange(query: ListQuery, untilMs: number | undefined): { min: number; max: number } {
  return {
    min: query.since ?? -Infinity,
    max: Math.min(query.until ?? Infinity, untilMs ?? Infinity),
  };
}

export interface PurgeOptions {
  filter?: DeadLetterFilter;
  scope?: DeadLetterScope;
  /** Only dead letters written more than this long ago (`--older-than 7d`). */
  olderThanMs?: number;
  /** Count what would go; delete nothing. Default false. */
  dryRun?: boolean;
  /** Stops between batches of deletes; a re-run deletes the rest. */
  signal?: AbortSignal;
  onProgress?: (progress: PurgeProgress) => void;
  /** Epoch ms; default Date.now. */
  now?: () => number;
}

export interface PurgeProgress {
  /** Known up front when cheap (filters the index answers alone), else a running count. */
  matched: number;
  matchedIsTotal: boolean;
  done: number;
  deleted: number;
  elapsedMs: number;
  etaMs?: number;
}

export interface PurgeReport {
  dryRun: boolean;
  /** Dead letters matched (those a dry run would delete). */
  matched: number;
  deleted: number;
  interrupted: boolean;
  elapsedMs: number;
}

/** Deletes at once per batch, each with DeadLetterPurger's crash-safe order. */
const PURGE_BATCH = 500;

/**
 * Deletes every dead letter matching the filter and written at least `olderThanMs` ago, newest first.
 * Only dead letters written up to the start are deleted (one written meanwhile was not there to be chosen).
 * Throws ValidationError for a bad filter.
 */
export async function purgeDeadLetters(
  deps: { connection: RedisClient; prefix: string },
  options: PurgeOptions = {},
): Promise<PurgeReport> {
  const query = parseListOptions({
    ...options.filter,
    ...(options.scope === undefined ? {} : { scope: options.scope }),
  });
  const { olderThanMs, signal, dryRun = false } = options;
  if (olderThanMs !== undefined && !(Number.isSafeInteger(olderThanMs) && olderThanMs >= 0))
    throw new ValidationError('olderThanMs: must be an integer >= 0', { field: 'olderThanMs' });
  const startedAt = performance.now();
  const now = (options.now ?? Date.now)();
  const untilMs = now - (olderThanMs ?? 0);
  const keys = deadLetterKeys(deps.prefix);
  const total = await countDeadLetters(deps.connection, keys, query, untilMs);
  const purger = dryRun ? undefined : new DeadLetterPurger(deps);
  const report = { dryRun, matched: 0, deleted: 0, interrupted: false };
  try {
    const walk = walkDeadLetters(deps.connection, keys, {
      query,
      untilMs,
      batchSize: PURGE_BATCH,
      withRecords: false,
    });
    for await (const batch of walk) {
      if (signal?.aborted === true) {
        report.interrupted = true;
        break;
      }
      report.matched += batch.length;
      if (purger !== undefined) {
        const deleted = await Promise.all(batch.map(({ id }) => purger.delete(id)));
        report.deleted += deleted.filter(Boolean).length;
      }
      const elapsedMs = performance.now() - startedAt;
      const matched = Math.max(total ?? 0, report.matched);
      options.onProgress?.({
        matched,
        matchedIsTotal: total !== undefined,
        done: report.matched,
        deleted: report.deleted,
        elapsedMs,
        ...(total === undefined
          ? {}
          : { etaMs: Math.round((elapsedMs / report.matched) * (matched - report.matched)) }),
      });
    }
  } finally {
    await purger?.close();
  }
  return { ...report, elapsedMs: Math.round(performance.now() - startedAt) };
}
