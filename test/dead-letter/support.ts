/** Dead letters written through the real writer on a prefix unique to the test, and the readers of them. */
import { Queue } from 'bullmq';
import { onTestFinished } from 'vitest';

import type { DeadLetterRecord } from '../../src/core/job.ts';
import { DEAD_LETTER_QUEUE } from '../../src/core/queue-layout.ts';
import { HOUR } from '../../src/core/time.ts';
import { DeadLetterPurger } from '../../src/dead-letter/purge.ts';
import { DeadLetterReader } from '../../src/dead-letter/reader.ts';
import { type DeadLetterKeys, deadLetterKeys } from '../../src/dead-letter/search-index.ts';
import { DeadLetterWriter } from '../../src/dead-letter/writer.ts';
import { type TestRedis, uniquePrefix } from '../helpers/redis.ts';

/** A fixed base time, so tests state deadLetteredAt exactly (epoch ms). */
export const T = 1_700_000_000_000;

export interface DeadLetterKit {
  prefix: string;
  keys: DeadLetterKeys;
  writer: DeadLetterWriter;
  reader: DeadLetterReader;
  purger: DeadLetterPurger;
  /** The `{dead-letter}` queue as a raw BullMQ tool (Bull Board, a script) sees it. */
  raw: Queue<unknown>;
  /** Writes a dead letter with the writer; returns its id. */
  write(overrides?: Partial<DeadLetterRecord>): Promise<string>;
}

let sequence = 0;

/** A dead letter of `crm.createContact` that failed with a 500, unless overridden. */
export function aRecord(overrides: Partial<DeadLetterRecord> = {}): DeadLetterRecord {
  sequence++;
  const service = overrides.service ?? 'crm';
  return {
    service,
    operation: 'createContact',
    input: { n: sequence },
    sourceJobId: `job${sequence}`,
    sourceQueue: `{${service}}`,
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
    finalError: { type: 'ServerError', message: 'HTTP 500', status: 500 },
    deadLetteredAt: T,
    enqueuedAt: T - 1_000,
    ...overrides,
  };
}

export function deadLetterKit(redis: TestRedis, options: { maxExamined?: number } = {}): DeadLetterKit {
  const prefix = uniquePrefix();
  const connection = redis.client;
  const writer = new DeadLetterWriter({ connection, prefix });
  const purger = new DeadLetterPurger({ connection, prefix });
  const raw = new Queue<unknown>(DEAD_LETTER_QUEUE, { connection, prefix });
  onTestFinished(async () => {
    await writer.close();
    await purger.close();
    await raw.close();
  });
  return {
    prefix,
    keys: deadLetterKeys(prefix),
    writer,
    reader: new DeadLetterReader({ connection, prefix, ...options }),
    purger,
    raw,
    write: async (overrides) => (await writer.write(aRecord(overrides))).id,
  };
}

/** Every page of a list, following nextCursor; `between` runs after each page but the last. */
export async function allPages(
  reader: DeadLetterReader,
  options: Parameters<DeadLetterReader['list']>[0],
  between?: (page: number) => Promise<void>,
): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = [];
  let cursor: string | undefined;
  for (let pages = 1; ; pages++) {
    const page = await reader.list({ ...options, ...(cursor === undefined ? {} : { cursor }) });
    ids.push(...page.items.map((item) => item.id));
    if (page.nextCursor === null) return { ids, pages };
    if (pages > 1_000) throw new Error('the cursor never ends');
    cursor = page.nextCursor;
    await between?.(pages);
  }
}

/** Ids of every dead letter left, newest first. */
export async function left(kit: DeadLetterKit): Promise<string[]> {
  return (await kit.reader.list({ limit: 500 })).items.map((item) => item.id);
}

/** `count` dead letters one hour apart, the newest at T; returned newest first. */
export async function hourly(kit: DeadLetterKit, count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++)
    ids.unshift(await kit.write({ deadLetteredAt: T - (count - 1 - i) * HOUR }));
  return ids;
}
