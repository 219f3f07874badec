/**
 * Scrape-time reads (Redis, injected readers) bounded in time and in number: a scrape waits at most
 * `timeoutMs` for them and then answers with what it has, and each reader has at most one read in flight.
 * A Redis that hangs (paused, failing over, or a worker connection that queues commands while disconnected)
 * therefore neither holds /metrics up nor piles up a read per scrape: the next scrape waits on the same read.
 */

export type ReadOutcome<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: 'failed' | 'timeout' };

export type Readers<T> = { readonly [K in keyof T]: () => Promise<T[K]> };
export type Outcomes<T> = { readonly [K in keyof T]: ReadOutcome<T[K]> };

/**
 * Returns `scrape()`: runs every reader (joining a read still in flight from an earlier scrape) and resolves
 * within about `timeoutMs` with each one's outcome. Never rejects. Calls made while a scrape is under way
 * share it, so the gauges of one registry render see one consistent set of reads.
 */
export function createBoundedScrape<T extends object>(
  readers: Readers<T>,
  timeoutMs: number,
): () => Promise<Outcomes<T>> {
  const keys = Object.keys(readers) as (keyof T & string)[];
  const inflight = new Map<keyof T, Promise<ReadOutcome<unknown>>>();
  let current: Promise<Outcomes<T>> | undefined;

  const read = (key: keyof T): Promise<ReadOutcome<unknown>> => {
    let pending = inflight.get(key);
    if (pending === undefined) {
      pending = Promise.resolve()
        .then(() => readers[key]())
        .then(
          (value): ReadOutcome<unknown> => ({ ok: true, value }),
          (): ReadOutcome<unknown> => ({ ok: false, reason: 'failed' }),
        );
      inflight.set(key, pending);
      void pending.then(() => inflight.delete(key));
    }
    return pending;
  };

  const scrapeOnce = async (): Promise<Outcomes<T>> => {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<ReadOutcome<never>>((resolve) => {
      timer = setTimeout(() => resolve({ ok: false, reason: 'timeout' }), timeoutMs);
      timer.unref();
    });
    try {
      const outcomes = await Promise.all(keys.map((key) => Promise.race([read(key), timedOut])));
      return Object.fromEntries(keys.map((key, i) => [key, outcomes[i]])) as unknown as Outcomes<T>;
    } finally {
      clearTimeout(timer);
    }
  };

  return () => {
    if (current === undefined) {
      current = scrapeOnce();
      void current.then(() => {
        current = undefined;
      });
    }
    return current;
  };
}
