/**
 * ioredis connection factories. BullMQ's tested client, and the only one with Cluster support (DESIGN §8).
 * Workers block on Redis and must never give up a command (`maxRetriesPerRequest: null`); producers behind
 * an API must fail fast instead of queueing commands while Redis is down.
 */
import { Cluster, type ClusterNode, Redis, type RedisOptions } from 'ioredis';

export type RedisClient = Redis | Cluster;

export interface RedisTarget {
  /** `redis://` or `rediss://` URL of a single Redis. */
  url?: string;
  /** Cluster seed nodes (`host:port`); takes precedence over url. */
  clusterNodes?: readonly string[];
  /**
   * Redis Sentinels to ask for the master `sentinelName` (default `mymaster`); takes precedence over url and
   * clusterNodes (the environment never sets two: readEnv refuses it).
   */
  sentinels?: readonly { host: string; port: number }[];
  sentinelName?: string;
  /** Password of the Sentinels (`requirepass` in sentinel.conf). */
  sentinelPassword?: string;
  /** Password of the data nodes (Sentinel's master, cluster nodes); with url, used when the URL has none. */
  password?: string;
}

/**
 * How long a Sentinel may take to answer where the master is: one that hangs (SIGSTOP, a dead host behind a
 * live TCP proxy) is skipped for the next one instead of holding the (re)connection for ever.
 */
export const SENTINEL_COMMAND_TIMEOUT_MS = 2_000;

/**
 * Longest pause between two reconnects through the Sentinels (plus up to 100 ms of jitter). Each reconnect
 * asks a Sentinel where the master is, so this bounds how long after a failover a process keeps waiting
 * for nothing: ioredis's own backoff grows to 5 s, which alone would break "accepting again within 5 s of
 * the failover". The price is one short Sentinel query per connection every half second while the master
 * is down (down-after-milliseconds plus the election: seconds, not minutes).
 */
export const SENTINEL_RECONNECT_MAX_MS = 500;

/** Reconnect backoff through the Sentinels: 50, 100, 200, 400, then 500 ms, each plus 0-100 ms of jitter. */
export function sentinelReconnectDelay(times: number): number {
  return (
    Math.min(50 * 2 ** Math.max(0, times - 1), SENTINEL_RECONNECT_MAX_MS) + Math.floor(Math.random() * 100)
  );
}

/** `api`: a producer that answers HTTP requests, which must get their 503 soon (docs/api.md). */
export type ConnectionRole = 'worker' | 'producer' | 'api';

/**
 * The API's command timeout: a hung Redis (SIGSTOP, a stuck failover) answers nothing while the connection
 * stays open, so without it a request would wait for the producer's 5 s. The API's own commands are small
 * (one job, a page of dead letters, a 1000-job batch of about 16 MiB at most), far below this on a healthy
 * Redis.
 */
export const API_COMMAND_TIMEOUT_MS = 2_000;

const producerOptions: RedisOptions = {
  maxRetriesPerRequest: 1,
  enableOfflineQueue: false,
  commandTimeout: 5_000,
  connectTimeout: 5_000,
};

const roleOptions: Record<ConnectionRole, RedisOptions> = {
  worker: { maxRetriesPerRequest: null, enableReadyCheck: true },
  producer: producerOptions,
  api: { ...producerOptions, commandTimeout: API_COMMAND_TIMEOUT_MS },
};

/**
 * How often a Cluster client re-reads the slot map (CLUSTER SLOTS on a fresh connection to a random node).
 * ioredis re-reads it only after MOVED, CLUSTERDOWN or a closed connection. A master that hangs instead of
 * dying (a frozen VM, a partition, SIGSTOP) closes nothing: every command for its slots went on to it and
 * timed out, long after its replica had taken over (test/cluster/failover.test.ts: no enqueue of that
 * service accepted for the whole 15 s measured). The API re-reads every second, so it follows a failover
 * within about a second; workers every 5 s, as each of their clients (one per service queue, for BullMQ's
 * blocking reads) does its own. A re-read drops the connection to a master that serves no slot any more,
 * which fails what hung on it over to the new master. See refreshSlotsEvery.
 */
export const CLUSTER_SLOTS_REFRESH_MS: Record<ConnectionRole, number> = {
  api: 1_000,
  producer: 5_000,
  worker: 5_000,
};

export function createRedisConnection(target: RedisTarget, role: ConnectionRole, name?: string): RedisClient {
  const options: RedisOptions = {
    ...roleOptions[role],
    ...(name === undefined ? {} : { connectionName: name }),
  };
  if (target.password !== undefined) options.password = target.password;
  if (target.sentinels !== undefined && target.sentinels.length > 0) {
    return reconnectAfterStrandedEnd(
      new Redis({
        ...options,
        sentinels: target.sentinels.map(({ host, port }) => ({ host, port })),
        name: target.sentinelName ?? 'mymaster',
        role: 'master',
        ...(target.sentinelPassword === undefined ? {} : { sentinelPassword: target.sentinelPassword }),
        sentinelCommandTimeout: SENTINEL_COMMAND_TIMEOUT_MS,
        // Every reconnect asks the Sentinels again, so after a failover the next one finds the new master.
        retryStrategy: sentinelReconnectDelay,
        // Subscribed to +switch-master on the Sentinels, a connection leaves the old master the moment the
        // new one is announced. Without it, after a planned failover (SENTINEL FAILOVER) or a healed partition
        // the old master, still up, took writes for up to 10 s (until the Sentinels demote it), and those
        // acknowledged writes were then lost. The price: one subscription per Sentinel per connection.
        failoverDetector: true,
        // A master that was demoted without dropping its clients (a manual failover, a healed partition)
        // answers writes with READONLY: reconnect then, through the Sentinels. A worker resends the refused
        // command (it was not run); a producer's fails, and the API answers 503.
        reconnectOnError: (error) => (/^READONLY /.test(error.message) ? (role === 'worker' ? 2 : 1) : false),
      }),
    );
  }
  if (target.clusterNodes !== undefined && target.clusterNodes.length > 0) {
    const nodes: ClusterNode[] = target.clusterNodes.map((node) => {
      const [host, port] = node.split(':');
      return { host: host ?? '127.0.0.1', port: Number(port ?? 6379) };
    });
    // A producer's Cluster queues commands until its first `ready`, and fails fast from then on. BullMQ takes a
    // Cluster in status `connect` (connected, its CLUSTER INFO check not answered yet) as ready and sends INFO at
    // once; refused there, a Queue created in that moment (the API builds its queues while it connects) keeps
    // the rejection for good, and Bull Board answered 500 for the life of the process. Commands of that moment
    // still end within commandTimeout (a 503 at the API).
    const cluster = new Cluster(nodes, { redisOptions: options, enableOfflineQueue: true });
    if (role !== 'worker') {
      cluster.once('ready', () => {
        cluster.options.enableOfflineQueue = false;
      });
    }
    return refreshSlotsEvery(cluster, CLUSTER_SLOTS_REFRESH_MS[role]);
  }
  if (target.url === undefined) {
    throw new Error('no Redis target: set REDIS_URL, REDIS_CLUSTER_NODES or REDIS_SENTINELS');
  }
  // Options fill in what the URL leaves out: a password in the URL wins over `password`.
  return new Redis(target.url, options);
}

/**
 * Re-reads the slot map every `everyMs` while the client is ready, on this client and on every duplicate of it
 * (BullMQ duplicates a worker's client for its blocking reads). Not ioredis' own `slotsRefreshInterval`: its
 * timer re-arms itself when a re-read is under way as the client disconnects, and then runs for ever, holding
 * the process open. This one is unref'd and stops when the client ends.
 */
function refreshSlotsEvery(cluster: Cluster, everyMs: number): Cluster {
  const timer = setInterval(() => {
    if (cluster.status === 'ready') cluster.refreshSlotsCache();
  }, everyMs);
  timer.unref();
  cluster.once('end', () => clearInterval(timer));
  const duplicate = cluster.duplicate.bind(cluster);
  cluster.duplicate = ((...args: Parameters<Cluster['duplicate']>) =>
    refreshSlotsEvery(duplicate(...args), everyMs)) as Cluster['duplicate'];
  return cluster;
}

/**
 * Resolves when the client is ready, rejects after timeoutMs (a producer must not hang at start-up) with the
 * last connection error in the message. While waiting, connection errors are collected here instead of being
 * printed by ioredis as "Unhandled error event" stack traces.
 */
export async function waitUntilReady(client: RedisClient, timeoutMs = 10_000): Promise<void> {
  if (client.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    let lastError: Error | undefined;
    const timer = setTimeout(() => {
      cleanup();
      const why = lastError === undefined ? '' : ` (${lastError.message})`;
      reject(new Error(`Redis was not ready within ${timeoutMs} ms${why}`));
    }, timeoutMs);
    const onReady = (): void => {
      cleanup();
      resolve();
    };
    const onError = (error: Error): void => {
      lastError = error;
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      client.off('ready', onReady);
      client.off('error', onError);
    };
    client.on('ready', onReady);
    client.on('error', onError);
  });
}

/** Pause before a Sentinel connection that ioredis ended by itself connects again. */
const STRANDED_RECONNECT_MS = 100;

/**
 * ioredis ends a Sentinel connection for good when the failover detector (`+switch-master`) disconnects it
 * while a reconnect is still asking the Sentinels where the master is: the connector throws "Connection is
 * closed", the client goes to `end`, and every command after that fails without a reconnect (ioredis issue
 * #1683). A loaded run of test/e2e/sentinel-failover.test.ts saw it: a worker that never again took a job.
 * An `end` that Ferry did not ask for (`quit()` or `disconnect()` without reconnect) connects again; so do the
 * connections BullMQ duplicates from this one.
 */
export function reconnectAfterStrandedEnd(redis: Redis): Redis {
  let closing = false;
  const { quit, disconnect, duplicate } = redis;
  redis.quit = function (this: Redis, ...args: Parameters<Redis['quit']>) {
    closing = true;
    return quit.apply(this, args);
  } as Redis['quit'];
  redis.disconnect = function (this: Redis, reconnect?: boolean) {
    if (reconnect !== true) closing = true;
    disconnect.call(this, reconnect);
  };
  redis.duplicate = function (this: Redis, ...args: Parameters<Redis['duplicate']>) {
    return reconnectAfterStrandedEnd(duplicate.apply(this, args));
  };
  redis.on('end', () => {
    if (closing) return;
    setTimeout(() => {
      if (!closing && redis.status === 'end') redis.connect().catch(() => undefined);
    }, STRANDED_RECONNECT_MS).unref();
  });
  return redis;
}
