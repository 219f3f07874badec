import type { Socket } from 'node:net';

import { buildConnector, type Dispatcher, Pool, ProxyAgent } from 'undici';

import type { SecretObserver } from '../../secrets/resolver.ts';
import { checkOriginHost, type EgressScope, guardedLookup } from './egress.ts';
import {
  checkTlsMaterial,
  DEFAULT_TRANSPORT,
  envProxyFor,
  NO_PROXY_ENV,
  observeTransport,
  type ProxyEnv,
  type Transport,
} from './transport.ts';

export interface PoolOptions {
  /** Sockets per origin; Ferry uses the service's concurrency, so no call queues behind another. */
  connections: number;
  /** The service's egress policy: checked for IP-literal origins here and for host names at each dial. */
  egress: EgressScope;
  /** HTTPS_PROXY / HTTP_PROXY / NO_PROXY as the worker read them at start; default none. */
  proxyEnv?: ProxyEnv | undefined;
  /** Told the secret parts of each new transport (PEM key lines, proxy credentials). */
  scrubber?: SecretObserver | undefined;
  now?: () => number;
}

/** Most pools a set keeps (origins × transports); past it the least recently used is closed. */
export const MAX_POOLS = 256;
/** A pool unused this long is closed (its sockets are gone after keepAliveTimeout anyway): a rotated-out transport. */
export const POOL_IDLE_RETIRE_MS = 60_000;
const KEEP_ALIVE_MS = 30_000;

interface Entry {
  readonly dispatcher: Dispatcher;
  lastUsedMs: number;
}

/**
 * One keep-alive undici dispatcher per origin and transport. A service usually has one origin; a baseUrl that
 * reads a secret (per-tenant API domains) can have several, each created on first use. A transport (issue 17:
 * a proxy, TLS material) is part of the key by its hash: a rotated client certificate makes a new pool at the
 * next job, and the old one is closed gracefully (its calls in flight finish) once unused for
 * POOL_IDLE_RETIRE_MS, or when MAX_POOLS is passed.
 *
 * Through a proxy (undici ProxyAgent, always a CONNECT tunnel), the proxy resolves the target's name, so the
 * egress policy is applied before each CONNECT: the target host is resolved here and every address checked
 * (an IP literal is checked before dispatch, as for a direct call). The proxy itself is operator-configured and
 * is not checked.
 */
export class PoolSet {
  readonly #entries = new Map<string, Entry>();
  readonly #options: PoolOptions;
  readonly #now: () => number;
  #sweeper: NodeJS.Timeout | undefined;

  constructor(options: PoolOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Throws EgressDeniedError, before any connection, for an IP-literal origin the egress policy refuses, and
   * ConfigurationError for TLS material that is not usable PEM.
   */
  get(origin: string, transport: Transport = DEFAULT_TRANSPORT): Dispatcher {
    const key = transport.key === '' ? origin : `${origin} ${transport.key}`;
    let entry = this.#entries.get(key);
    if (entry === undefined) {
      entry = { dispatcher: this.#create(origin, transport), lastUsedMs: 0 };
      this.#entries.set(key, entry);
      this.#bound(key);
    }
    entry.lastUsedMs = this.#now();
    return entry.dispatcher;
  }

  /** Pools held (for tests). */
  get size(): number {
    return this.#entries.size;
  }

  #create(origin: string, transport: Transport): Dispatcher {
    const { egress, connections } = this.#options;
    checkOriginHost(egress, origin);
    if (transport.tls !== undefined) checkTlsMaterial(transport.tls);
    if (this.#options.scrubber !== undefined) observeTransport(transport, this.#options.scrubber);
    const proxy =
      transport.proxy === 'none'
        ? undefined
        : transport.proxy === 'env'
          ? envProxyFor(this.#options.proxyEnv ?? NO_PROXY_ENV, origin)
          : transport.proxy;
    const tls = transport.tls ?? {};
    const common = {
      connections,
      pipelining: 1,
      keepAliveTimeout: KEEP_ALIVE_MS,
      // Ferry enforces the whole-attempt deadline itself; these are only backstops.
      connectTimeout: 30_000,
    };
    if (proxy === undefined) {
      // Every address a host name resolves to is checked before the socket connects to it (egress.ts).
      const connect = { ...tls, lookup: guardedLookup(egress, origin) };
      return new Pool(origin, {
        ...common,
        connect:
          transport.tls === undefined
            ? connect
            : keepingTlsAlerts(buildConnector({ ...connect, timeout: common.connectTimeout })),
      });
    }
    const lookup = guardedLookup(egress, origin);
    return new ProxyAgent({
      ...common,
      uri: proxy,
      requestTls: tls,
      // The tunnelled connections: a refused client certificate's TLS alert must survive here too.
      ...(transport.tls === undefined
        ? {}
        : {
            factory: (url: string | URL, options: Pool.Options): Dispatcher =>
              new Pool(url, {
                ...options,
                ...(typeof options.connect === 'function'
                  ? { connect: keepingTlsAlerts(options.connect) }
                  : {}),
              }),
          }),
      // The CONNECT requests to the proxy go through this client: the target is checked before each.
      clientFactory: (url, options) => {
        const client = new Pool(url, options);
        const connect = client.connect.bind(client) as (
          options: Dispatcher.ConnectOptions,
        ) => Promise<Dispatcher.ConnectData>;
        (client as { connect: unknown }).connect = async (
          options: Dispatcher.ConnectOptions,
        ): Promise<Dispatcher.ConnectData> => {
          await checkTarget(lookup, options.path);
          return connect(options);
        };
        return client;
      },
    });
  }

  /** Retires idle pools and keeps at most MAX_POOLS; a sweep timer does the same while pools are held. */
  #bound(keep: string): void {
    const now = this.#now();
    for (const [key, entry] of this.#entries) {
      if (key !== keep && now - entry.lastUsedMs >= POOL_IDLE_RETIRE_MS) this.#retire(key, entry);
    }
    while (this.#entries.size > MAX_POOLS) {
      let oldest: [string, Entry] | undefined;
      for (const each of this.#entries)
        if (oldest === undefined || each[1].lastUsedMs < oldest[1].lastUsedMs) oldest = each;
      if (oldest === undefined) break;
      this.#retire(oldest[0], oldest[1]);
    }
    if (this.#entries.size > 1 && this.#sweeper === undefined) {
      this.#sweeper = setInterval(() => this.#bound(''), POOL_IDLE_RETIRE_MS);
      this.#sweeper.unref();
    }
  }

  #retire(key: string, entry: Entry): void {
    this.#entries.delete(key);
    // close(): calls in flight finish first.
    entry.dispatcher.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    await Promise.all(entries.map((entry) => entry.dispatcher.destroy()));
  }
}

/** A TLS alert the server sent (`ERR_SSL_TLSV1_ALERT_UNKNOWN_CA`): why it ended the connection. */
const TLS_ALERT = /^ERR_SSL_\w+_ALERT_/;

/**
 * A server refusing a client certificate sends a TLS alert, under TLS 1.3 after the client's handshake is done,
 * so it arrives while the request is in flight; undici then sees the connection end and reports "other side
 * closed", losing the alert. Destroying the socket with the alert at once makes it the request's error
 * (classified by transport.ts: AuthenticationError).
 */
function keepingTlsAlerts(connector: buildConnector.connector): buildConnector.connector {
  return (options, callback) =>
    connector(options, (error, socket) => {
      // On a failed connect undici passes the error alone (no socket argument at all).
      if (error === null && socket !== null && socket !== undefined) {
        const tlsSocket: Socket = socket;
        tlsSocket.prependListener('error', (cause: Error & { code?: unknown }) => {
          if (typeof cause.code === 'string' && TLS_ALERT.test(cause.code) && !tlsSocket.destroyed)
            tlsSocket.destroy(cause);
        });
      }
      // The connector's callback is typed as two overloads; pass through what it gave.
      (callback as (error: Error | null, socket?: Socket | null) => void)(error, socket);
    });
}

/** `host:port` of a CONNECT: resolved and checked like a direct dial (guardedLookup), or refused. */
function checkTarget(lookup: ReturnType<typeof guardedLookup>, hostPort: string): Promise<void> {
  const match = /^\[?(.*?)\]?:\d+$/.exec(hostPort);
  const host = match === null ? hostPort : match[1]!;
  return new Promise((resolve, reject) => {
    lookup(host, { all: true }, (error) => {
      if (error !== null) reject(error);
      else resolve();
    });
  });
}
