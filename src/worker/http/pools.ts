import { Pool } from 'undici';

export interface PoolOptions {
  /** Sockets per origin; Ferry uses the service's concurrency, so no call queues behind another. */
  connections: number;
}

/**
 * One keep-alive undici Pool per origin. A service usually has one origin; a baseUrl that reads a secret
 * (per-tenant API domains) can have several, each created on first use.
 */
export class PoolSet {
  readonly #pools = new Map<string, Pool>();
  readonly #options: PoolOptions;

  constructor(options: PoolOptions) {
    this.#options = options;
  }

  get(origin: string): Pool {
    let pool = this.#pools.get(origin);
    if (pool === undefined) {
      pool = new Pool(origin, {
        connections: this.#options.connections,
        pipelining: 1,
        keepAliveTimeout: 30_000,
        // Ferry enforces the whole-attempt deadline itself; these are only backstops.
        connectTimeout: 30_000,
      });
      this.#pools.set(origin, pool);
    }
    return pool;
  }

  async close(): Promise<void> {
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.all(pools.map((pool) => pool.destroy()));
  }
}
