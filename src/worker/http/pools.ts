import { Pool } from 'undici';

import { checkOriginHost, type EgressScope, guardedLookup } from './egress.ts';

export interface PoolOptions {
  /** Sockets per origin; Ferry uses the service's concurrency, so no call queues behind another. */
  connections: number;
  /** The service's egress policy: checked for IP-literal origins here and for host names at each dial. */
  egress: EgressScope;
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

  /** Throws EgressDeniedError, before any connection, for an IP-literal origin the egress policy refuses. */
  get(origin: string): Pool {
    let pool = this.#pools.get(origin);
    if (pool === undefined) {
      checkOriginHost(this.#options.egress, origin);
      pool = new Pool(origin, {
        connections: this.#options.connections,
        pipelining: 1,
        keepAliveTimeout: 30_000,
        // Ferry enforces the whole-attempt deadline itself; these are only backstops.
        connectTimeout: 30_000,
        // Every address a host name resolves to is checked before the socket connects to it (egress.ts).
        connect: { lookup: guardedLookup(this.#options.egress, origin) },
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
