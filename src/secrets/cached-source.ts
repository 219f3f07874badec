import type { SecretSource } from './resolver.ts';

export interface CachedSourceOptions {
  /** How long a value (or its absence) is kept before the source is asked again. */
  cacheMs: number;
  now?: () => number;
  /** Most keys kept; past it the cache starts over (a bound on memory, not an LRU: keys are few). */
  maxEntries?: number;
}

interface Entry {
  readonly value: string | undefined;
  readonly expiresAt: number;
}

/**
 * Keeps what a slow source (the store: a Redis read and a decryption; files: a read) answered, so a job
 * whose secrets are cached resolves them synchronously. An absent key is cached too: a tenant without its own
 * value would otherwise cost a read per job before the global value answers. Concurrent misses of one key
 * share one read. `clear()` drops everything (the store changed).
 */
export class CachedSecretSource implements SecretSource {
  readonly kind: SecretSource['kind'];
  readonly #source: SecretSource;
  readonly #cacheMs: number;
  readonly #now: () => number;
  readonly #maxEntries: number;
  readonly #entries = new Map<string, Entry>();
  readonly #reading = new Map<string, Promise<string | undefined>>();
  /** Bumped by clear(): a read that started before it must not put its (old) value back. */
  #epoch = 0;

  constructor(source: SecretSource, options: CachedSourceOptions) {
    this.kind = source.kind;
    this.#source = source;
    this.#cacheMs = options.cacheMs;
    this.#now = options.now ?? Date.now;
    this.#maxEntries = options.maxEntries ?? 10_000;
  }

  read(key: string): string | undefined | Promise<string | undefined> {
    const entry = this.#entries.get(key);
    if (entry !== undefined && entry.expiresAt > this.#now()) return entry.value;
    const pending = this.#reading.get(key);
    if (pending !== undefined) return pending;
    const epoch = this.#epoch;
    const reading = Promise.resolve(this.#source.read(key)).then(
      (value) => {
        if (this.#reading.get(key) === reading) this.#reading.delete(key);
        if (epoch === this.#epoch && this.#cacheMs > 0) {
          if (this.#entries.size >= this.#maxEntries) this.#entries.clear();
          this.#entries.set(key, { value, expiresAt: this.#now() + this.#cacheMs });
        }
        return value;
      },
      (error: unknown) => {
        if (this.#reading.get(key) === reading) this.#reading.delete(key);
        throw error;
      },
    );
    this.#reading.set(key, reading);
    return reading;
  }

  clear(): void {
    this.#epoch++;
    this.#entries.clear();
    this.#reading.clear();
  }

  get size(): number {
    return this.#entries.size;
  }
}
