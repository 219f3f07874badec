import { z } from 'zod';

import { ValidationError } from './errors.ts';
import { DEFAULT_API_BODY_LIMIT_BYTES, DEFAULT_MAX_JSON_DEPTH, DEFAULT_MAX_METADATA_BYTES } from './job.ts';
import { DEFAULT_LOG_BUFFER_BYTES, MAX_LOG_BUFFER_BYTES } from './logger.ts';
import { DEFAULT_PREFIX } from './queue-layout.ts';
import { DAY, SECOND } from './time.ts';

/**
 * Configuration from the environment, validated once at start-up. Every variable and its default is listed
 * in docs/configuration.md.
 */
const envSchema = z.object({
  /** Redis URL. Unset under `ferry dev`: it starts a private redis-server. */
  REDIS_URL: z.string().url().optional(),
  /** Comma-separated `host:port` seeds of a Redis Cluster; takes precedence over REDIS_URL. */
  REDIS_CLUSTER_NODES: z.string().optional(),
  /**
   * Comma-separated `host:port` of Redis Sentinels (at most MAX_SENTINELS): the master is asked of them, and
   * followed through a failover. Not together with REDIS_URL or REDIS_CLUSTER_NODES (readEnv refuses it).
   */
  REDIS_SENTINELS: z.preprocess((value) => (value === '' ? undefined : value), z.string().optional()),
  /** The master's name in the Sentinels' configuration (`sentinel monitor <name> …`). */
  REDIS_SENTINEL_NAME: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,64}$/, 'must match [A-Za-z0-9._-]{1,64}')
    .default('mymaster'),
  /** Password of the Sentinels themselves (`requirepass` in sentinel.conf); unset: none. */
  REDIS_SENTINEL_PASSWORD: z.preprocess((value) => (value === '' ? undefined : value), z.string().optional()),
  /**
   * Password of the Redis data nodes behind REDIS_SENTINELS or REDIS_CLUSTER_NODES; with REDIS_URL, used
   * when the URL carries none.
   */
  REDIS_PASSWORD: z.preprocess((value) => (value === '' ? undefined : value), z.string().optional()),
  /**
   * How long `ferry worker` and `ferry dev` (with REDIS_URL) wait for Redis at start-up, logging once that they
   * wait and where: 0 fails at the first failed attempt; unset (or empty) waits until Redis answers, as a
   * container under compose or Kubernetes should rather than crash-loop. One-shot commands never wait.
   */
  FERRY_REDIS_WAIT_MS: z.preprocess(
    (value) => (value === '' ? undefined : value),
    z.coerce.number().int().min(0).optional(),
  ),
  /** Key prefix of every Ferry key in Redis. */
  FERRY_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,64}$/, 'must match [A-Za-z0-9_-]{1,64}')
    .default(DEFAULT_PREFIX),
  /** The services file. */
  FERRY_SERVICES: z.string().default('./ferry.services.yaml'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** `pretty` for human-readable logs (default under `ferry dev`), `json` otherwise. */
  LOG_FORMAT: z.enum(['json', 'pretty']).optional(),
  /** Log lines collected before a write (about this many bytes, at most 100 ms); 0 writes each line at once. */
  FERRY_LOG_BUFFER_BYTES: z.coerce
    .number()
    .int()
    .min(0)
    .max(MAX_LOG_BUFFER_BYTES)
    .default(DEFAULT_LOG_BUFFER_BYTES),
  /**
   * How long SIGTERM/SIGINT lets in-flight calls run on before aborting them (at once while Redis does not
   * answer: their results could not be recorded). With FERRY_SHUTDOWN_HANDBACK_MS the whole shutdown budget:
   * the defaults (5 s + 3 s) keep a worker's exit within 10 s, inside Kubernetes' default 30 s grace.
   */
  FERRY_SHUTDOWN_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .min(0)
    .default(5 * SECOND),
  /** After the calls are aborted: how long their jobs get to be recorded as interrupted and handed back. */
  FERRY_SHUTDOWN_HANDBACK_MS: z.coerce
    .number()
    .int()
    .min(0)
    .default(3 * SECOND),
  /** Job lock; a crashed worker's jobs run again after about this long. */
  FERRY_LOCK_DURATION_MS: z.coerce
    .number()
    .int()
    .min(1000)
    .default(30 * SECOND),
  /** How often stalled jobs are looked for. */
  FERRY_STALLED_INTERVAL_MS: z.coerce
    .number()
    .int()
    .min(500)
    .default(30 * SECOND),
  /** Stalls before a job is given up and dead-lettered. */
  FERRY_MAX_STALLED_COUNT: z.coerce.number().int().min(1).default(5),
  /** How often failed sets are swept for jobs without a dead letter. */
  FERRY_SWEEP_INTERVAL_MS: z.coerce
    .number()
    .int()
    .min(500)
    .default(30 * SECOND),
  /** Dead letters older than this are deleted by the workers' sweep; 0 keeps them until purged. */
  FERRY_DLQ_MAX_AGE_MS: z.coerce
    .number()
    .int()
    .min(0)
    .default(30 * DAY),
  /**
   * At most this many dead letters are kept (the oldest go first); 0: no limit. A guard for Redis's memory
   * (a full `noeviction` Redis refuses enqueues too), sized for a two-hour outage at 100 jobs/s.
   */
  FERRY_DLQ_MAX_COUNT: z.coerce.number().int().min(0).default(1_000_000),
  /** Port of the HTTP API (`ferry api`, `ferry dev`). */
  PORT: z.coerce.number().int().min(0).max(65_535).default(8080),
  /** Address the HTTP API listens on; loopback by default, `0.0.0.0` in a container. */
  HOST: z.string().min(1).default('127.0.0.1'),
  /** API bearer tokens as JSON: `[{ name, token | sha256, scopes, services?, tenants? }]`. */
  FERRY_API_TOKENS: z.string().optional(),
  /** A YAML file with the same list as FERRY_API_TOKENS (used when that is unset). */
  FERRY_API_TOKENS_FILE: z.string().optional(),
  /**
   * Largest HTTP request body the API accepts: a batch of 1000 jobs of 4 KiB plus one job at the default caps
   * (DEFAULT_API_BODY_LIMIT_BYTES, about 4.4 MiB). POST /v1/jobs takes at most one job's worth of it.
   */
  FERRY_API_BODY_LIMIT_BYTES: z.coerce.number().int().min(1024).default(DEFAULT_API_BODY_LIMIT_BYTES),
  /** Largest `metadata` of a job, in JSON bytes (413 over it). */
  FERRY_MAX_METADATA_BYTES: z.coerce
    .number()
    .int()
    .min(0)
    .max(1024 * 1024)
    .default(DEFAULT_MAX_METADATA_BYTES),
  /**
   * Replicas that must acknowledge an enqueue (Redis `WAIT`) before the API answers 2xx; 0 (default): no
   * WAIT. Fewer within FERRY_ENQUEUE_REPLICA_TIMEOUT_MS: 503 with Retry-After (the job may have been added).
   */
  FERRY_ENQUEUE_MIN_REPLICAS: z.coerce.number().int().min(0).max(100).default(0),
  /** How long an enqueue waits for FERRY_ENQUEUE_MIN_REPLICAS (WAIT's timeout; 0 would block forever). */
  FERRY_ENQUEUE_REPLICA_TIMEOUT_MS: z.coerce.number().int().min(1).max(30_000).default(1_000),
  /** Deepest nesting of arrays and objects in a JSON request body (400 over it, before it is parsed). */
  FERRY_API_MAX_JSON_DEPTH: z.coerce.number().int().min(2).max(1000).default(DEFAULT_MAX_JSON_DEPTH),
  /** Longest a client may take to send a whole request, headers and body; it is then cut off. */
  FERRY_API_REQUEST_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .min(100)
    .default(30 * SECOND),
  /**
   * Port of a process's own `/metrics`, `/healthz` and `/readyz` server (no token); 0 turns it off. A worker
   * opens it by default; `ferry api` and `ferry dev` only when the variable is set (see apiMetricsListener).
   */
  FERRY_METRICS_PORT: z.coerce.number().int().min(0).max(65_535).default(9464),
  /** Address the metrics server listens on. */
  FERRY_METRICS_HOST: z.string().min(1).default('127.0.0.1'),
  /**
   * Tenants per `tenantConcurrency` service with a `ferry_tenant_in_flight` series of their own (the most
   * calls in flight); the rest are summed as `tenant="_other"`. Bounds the series a tenant-heavy load makes.
   */
  FERRY_METRICS_TOP_TENANTS: z.coerce.number().int().min(0).max(1000).default(10),
  /**
   * Master keys of the encrypted secret store: comma-separated `[<id>:]<key>`, each key 32 bytes as base64 or
   * 64 hex digits; the first encrypts, the others only decrypt (during a rotation). Unset: no store.
   */
  FERRY_SECRETS_KEY: z.string().optional(),
  /** A file holding FERRY_SECRETS_KEY's value (used when that is unset). */
  FERRY_SECRETS_KEY_FILE: z.string().optional(),
  /** Who runs an audited command (`ferry dlq show --reveal`), for its audit line; the OS user is logged too. */
  FERRY_OPERATOR: z.string().max(128).optional(),
  /** A directory of secret files (Docker/Kubernetes secrets): `<dir>/<name>`, `<dir>/tenant/<t>/<name>`. */
  FERRY_SECRETS_DIR: z.string().optional(),
  /**
   * Where secrets are looked up, first match wins within a scope: any of store, file, env, in order. Unset:
   * DEFAULT_SECRETS_SOURCES, without the store when no master key is set (set, listing store without a key
   * fails start-up).
   */
  FERRY_SECRETS_SOURCES: z
    .string()
    .regex(/^(store|file|env)(,(store|file|env))*$/, 'must be a comma-separated list of store, file, env')
    .optional(),
  /** How long a worker keeps a decrypted (or file) value before reading it again. */
  FERRY_SECRETS_CACHE_MS: z.coerce
    .number()
    .int()
    .min(0)
    .default(60 * SECOND),
  /** How often a worker checks the store for a change (set, promote, rollback, delete) and drops its cache. */
  FERRY_SECRETS_REFRESH_MS: z.coerce.number().int().min(50).max(1000).default(250),
});

export type Env = Readonly<z.infer<typeof envSchema>>;

/** FERRY_SECRETS_SOURCES when it is unset. */
export const DEFAULT_SECRETS_SOURCES = 'store,file,env';

/** Every variable readEnv reads (docs/configuration.md's table lists each; a test holds it to this). */
export const ENV_VARIABLES: readonly string[] = Object.freeze(Object.keys(envSchema.shape));

export function readEnv(env: NodeJS.ProcessEnv = process.env): Env {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const name = String(issue.path[0] ?? 'env');
    throw new ValidationError(`${name}: ${issue.message}`, { field: name });
  }
  const data = parsed.data;
  if (data.REDIS_SENTINELS !== undefined) {
    // REDIS_CLUSTER_NODES over REDIS_URL is an old, documented precedence; Sentinel is new, so no guessing.
    const others = (['REDIS_URL', 'REDIS_CLUSTER_NODES'] as const).filter((name) => data[name] !== undefined);
    if (others.length > 0) {
      throw new ValidationError(
        `REDIS_SENTINELS: set either REDIS_SENTINELS or ${others.join(' and ')}, not both`,
        { field: 'REDIS_SENTINELS' },
      );
    }
    parseSentinels(data.REDIS_SENTINELS);
  }
  return Object.freeze(data);
}

/** Most entries REDIS_SENTINELS may list: a deployment runs 3 or 5; this only bounds a mistake. */
export const MAX_SENTINELS = 16;

export interface HostPort {
  host: string;
  port: number;
}

/**
 * REDIS_SENTINELS as `{ host, port }`s: `host:port` or `[ipv6]:port`, comma-separated, 1 to MAX_SENTINELS of
 * them. Throws a ValidationError naming the variable and the bad entry.
 */
export function parseSentinels(value: string): HostPort[] {
  const fail = (message: string): never => {
    throw new ValidationError(`REDIS_SENTINELS: ${message}`, { field: 'REDIS_SENTINELS' });
  };
  const entries = value
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  if (entries.length === 0) fail('must list at least one host:port');
  if (entries.length > MAX_SENTINELS) fail(`lists ${entries.length} entries; at most ${MAX_SENTINELS}`);
  return entries.map((entry) => {
    const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]{1,253})):(\d{1,5})$/.exec(entry);
    const port = Number(match?.[3]);
    if (match === null || port < 1 || port > 65_535) {
      return fail(`"${entry.slice(0, 80)}" is not host:port (e.g. 10.0.0.5:26379)`);
    }
    return { host: match[1] ?? match[2]!, port };
  });
}

/** REDIS_SENTINELS parsed (readEnv has validated it), or undefined when unset. */
export function sentinels(env: Env): HostPort[] | undefined {
  return env.REDIS_SENTINELS === undefined ? undefined : parseSentinels(env.REDIS_SENTINELS);
}

export function clusterNodes(env: Env): string[] | undefined {
  const nodes = env.REDIS_CLUSTER_NODES?.split(',')
    .map((node) => node.trim())
    .filter((node) => node !== '');
  return nodes === undefined || nodes.length === 0 ? undefined : nodes;
}
