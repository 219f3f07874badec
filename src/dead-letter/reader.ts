/**
 * Reads dead letters for the API and the CLI: list (filters, cursor pagination), show, counts by service.
 * Lists walk the index (search-index.ts), newest first, and read a record only when it may match, so a page
 * costs about the page, not the queue. Redis errors propagate as they are (the API answers 503).
 */
import type { DeadLetterRecord } from '../core/job.ts';
import type { RedisClient } from '../core/redis.ts';
import {
  type DeadLetterListOptions,
  decodeCursor,
  DEFAULT_LIST_LIMIT,
  encodeCursor,
  indexedService,
  type ListQuery,
  matchesFacets,
  matchesRecord,
  needsRecordFilter,
  parseListOptions,
  type Position,
} from './list-query.ts';
import {
  type DeadLetterKeys,
  deadLetterKeys,
  INDEX_PAGE,
  isDeadLetterId,
  parseFacets,
  serviceOfDeadLetterId,
  unindexIfMissing,
} from './search-index.ts';
import {
  type DeadLetterDetail,
  type DeadLetterView,
  parseDeadLetterRecord,
  toDeadLetterDetail,
  toDeadLetterView,
} from './view.ts';

export type { DeadLetterFilter, DeadLetterListOptions, DeadLetterScope } from './list-query.ts';
export { DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT } from './list-query.ts';
export {
  type DeadLetterDetail,
  deadLetterDetailSchema,
  type DeadLetterView,
  deadLetterViewSchema,
} from './view.ts';

/** Index entries one list call examines at most before it returns, with a cursor to go on. */
export const DEFAULT_MAX_EXAMINED = 5_000;
/** Index entries read per round trip while filters other than service and time are applied. */
const FILTERED_BATCH = 200;

export interface DeadLetterPage {
  /** Newest first (by deadLetteredAt, then by id). */
  items: DeadLetterView[];
  /**
   * Where the next page starts; null when there is nothing more. A page can be short, even empty, and still
   * have a cursor: each call examines at most `maxExamined` index entries (a filter that matches rarely
   * would otherwise read the whole queue in one request). Dead letters added or deleted between pages
   * neither shift nor repeat the others: the cursor is a position (time, id), not an offset.
   */
  nextCursor: string | null;
  /** Index entries examined for this page. */
  examined: number;
}

export class DeadLetterReader {
  readonly #client: RedisClient;
  readonly #keys: DeadLetterKeys;
  readonly #maxExamined: number;

  constructor(options: {
    connection: RedisClient;
    prefix: string;
    /** Index entries a list call examines at most; default DEFAULT_MAX_EXAMINED. */
    maxExamined?: number;
  }) {
    this.#client = options.connection;
    this.#keys = deadLetterKeys(options.prefix);
    this.#maxExamined = Math.max(1, options.maxExamined ?? DEFAULT_MAX_EXAMINED);
  }

  /** One page of dead letters. Throws ValidationError (with `field`) for a bad option or cursor. */
  async list(options: DeadLetterListOptions = {}): Promise<DeadLetterPage> {
    const query = parseListOptions(options);
    const limit = query.limit ?? DEFAULT_LIST_LIMIT;
    const service = indexedService(query);
    if (service === null) return { items: [], nextCursor: null, examined: 0 };
    const key = service === undefined ? this.#keys.byTime : this.#keys.byService(service);
    const min = query.since === undefined ? '-inf' : String(query.since);
    const cursor = query.cursor === undefined ? undefined : decodeCursor(query.cursor);
    // The range's top: the cursor, unless `until` is below it (filters changed between pages).
    let from: { max: string; after: string } =
      cursor !== undefined && (query.until === undefined || cursor.score <= query.until)
        ? { max: String(cursor.score), after: cursor.id }
        : { max: query.until === undefined ? '+inf' : String(query.until), after: '' };
    if (query.since !== undefined && from.max !== '+inf' && Number(from.max) < query.since) {
      return { items: [], nextCursor: null, examined: 0 };
    }

    const filtered = needsRecordFilter(query, service);
    const items: DeadLetterView[] = [];
    let examined = 0;
    let last: Position | undefined;
    let exhausted = false;
    while (items.length < limit && examined < this.#maxExamined) {
      const room = this.#maxExamined - examined;
      const want = Math.min(filtered ? FILTERED_BATCH : limit - items.length, room);
      const entries = await this.#range(key, from, min, want);
      exhausted = entries.length < want;
      const consumed = await this.#consume(entries, query, service, items, limit);
      examined += consumed;
      last = entries[consumed - 1] ?? last;
      // The page filled before the batch's end: the rest of it comes next time.
      if (consumed < entries.length) exhausted = false;
      if (exhausted || consumed < entries.length || last === undefined) break;
      from = { max: String(last.score), after: last.id };
    }
    const nextCursor = exhausted || last === undefined ? null : encodeCursor(last);
    return { items, nextCursor, examined };
  }

  /** The whole dead letter, or undefined when there is none by that id. */
  async show(id: string): Promise<DeadLetterDetail | undefined> {
    if (!(await isDeadLetterId(this.#client, this.#keys, id))) return undefined;
    const [name, data] = await this.#client.hmget(this.#keys.job(id), 'name', 'data');
    if (name === null || name === undefined || data === null || data === undefined) return undefined;
    const record = parseDeadLetterRecord(data);
    return record === undefined ? undefined : toDeadLetterDetail(id, name, record);
  }

  /**
   * A dead letter with its sealed envelope (`record.sealed`), for `ferry dlq show --reveal` only: views never
   * carry the envelope.
   */
  async showSealed(
    id: string,
  ): Promise<{ detail: DeadLetterDetail; sealed: string | undefined } | undefined> {
    if (!(await isDeadLetterId(this.#client, this.#keys, id))) return undefined;
    const [name, data] = await this.#client.hmget(this.#keys.job(id), 'name', 'data');
    if (name === null || name === undefined || data === null || data === undefined) return undefined;
    const record = parseDeadLetterRecord(data);
    if (record === undefined) return undefined;
    return { detail: toDeadLetterDetail(id, name, record), sealed: record.sealed };
  }

  /** Dead letters per service; services without any are absent. One SMEMBERS and one pipeline of ZCARDs. */
  async countByService(): Promise<Map<string, number>> {
    const services = (await this.#client.smembers(this.#keys.services)).sort();
    if (services.length === 0) return new Map();
    const pipeline = this.#client.pipeline();
    for (const service of services) pipeline.zcard(this.#keys.byService(service));
    const results = (await pipeline.exec()) ?? [];
    const counts = new Map<string, number>();
    for (const [i, service] of services.entries()) {
      const [error, count] = results[i] ?? [null, 0];
      if (error) throw error;
      if (Number(count) > 0) counts.set(service, Number(count));
    }
    return counts;
  }

  /** countByService in the shape the metrics module takes (a function it can call on each scrape). */
  readonly deadLetterCounts = (): Promise<ReadonlyMap<string, number>> => this.countByService();

  async #range(
    key: string,
    from: { max: string; after: string },
    min: string,
    count: number,
  ): Promise<Position[]> {
    const flat = (await this.#client.eval(INDEX_PAGE, 1, key, from.max, from.after, min, count)) as string[];
    const entries: Position[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) entries.push({ id: flat[i]!, score: Number(flat[i + 1]) });
    return entries;
  }

  /**
   * Adds the entries' matching dead letters to `items`, in order, until it holds `limit`; returns how many
   * entries it consumed (all, unless the page filled first). Records are read only for entries whose facets
   * match, and no more at a time than the page has room for.
   */
  async #consume(
    entries: readonly Position[],
    query: ListQuery,
    service: string | undefined,
    items: DeadLetterView[],
    limit: number,
  ): Promise<number> {
    const filtered = needsRecordFilter(query, service);
    const facets =
      filtered && entries.length > 0
        ? (await this.#client.hmget(this.#keys.facets, ...entries.map((entry) => entry.id))).map(parseFacets)
        : [];
    let next = 0;
    while (next < entries.length) {
      const candidates: number[] = [];
      let end = next;
      for (; end < entries.length && candidates.length < limit - items.length; end++) {
        const entryFacets = facets[end];
        if (entryFacets === undefined || matchesFacets(entryFacets, query, service)) candidates.push(end);
      }
      const records = await this.#load(
        candidates.map((i) => entries[i]!.id),
        candidates.map((i) => service ?? facets[i]?.service),
      );
      for (const [k, i] of candidates.entries()) {
        const record = records[k];
        if (record === undefined || !matchesRecord(record, query, service)) continue;
        items.push(toDeadLetterView(entries[i]!.id, record, query.includeInput === true));
        if (items.length === limit) return i + 1;
      }
      next = end;
    }
    return entries.length;
  }

  /** The records of `ids`; a job deleted meanwhile is skipped (and its entries removed), as is a foreign one. */
  async #load(
    ids: readonly string[],
    services: readonly (string | undefined)[],
  ): Promise<(DeadLetterRecord | undefined)[]> {
    const data = await Promise.all(ids.map((id) => this.#client.hget(this.#keys.job(id), 'data')));
    return Promise.all(
      data.map(async (json, k) => {
        if (json !== null) return parseDeadLetterRecord(json);
        const id = ids[k]!;
        await unindexIfMissing(this.#client, this.#keys, id, services[k] ?? serviceOfDeadLetterId(id));
        return undefined;
      }),
    );
  }
}
