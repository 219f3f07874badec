/**
 * A process's secret lookup, from the environment (docs/secrets.md): which sources, in which order, the
 * store's master keys, the caches and the watch that drops them when the store changes.
 */
import { readFile } from 'node:fs/promises';

import { DEFAULT_SECRETS_SOURCES, type Env } from '../core/env.ts';
import { ConfigurationError } from '../core/errors.ts';
import type { Logger } from '../core/logger.ts';
import type { RedisClient } from '../core/redis.ts';
import type { ServicesConfig } from '../core/services/types.ts';
import { CachedSecretSource } from './cached-source.ts';
import { type Keyring, parseKeyring } from './crypto.ts';
import { createEnvSecretSource } from './env-provider.ts';
import { createFileSecretSource } from './file-provider.ts';
import { SecretStore } from './redis-store.ts';
import { createSecretResolver, type SecretResolver, type SecretSource } from './resolver.ts';

export type SecretsEnv = Pick<
  Env,
  | 'FERRY_SECRETS_KEY'
  | 'FERRY_SECRETS_KEY_FILE'
  | 'FERRY_SECRETS_DIR'
  | 'FERRY_SECRETS_SOURCES'
  | 'FERRY_SECRETS_CACHE_MS'
  | 'FERRY_SECRETS_REFRESH_MS'
>;

/** FERRY_SECRETS_KEY, else the contents of FERRY_SECRETS_KEY_FILE, parsed; undefined when neither is set. */
export async function loadKeyring(env: SecretsEnv): Promise<Keyring | undefined> {
  if (env.FERRY_SECRETS_KEY !== undefined && env.FERRY_SECRETS_KEY.trim() !== '') {
    return parseKeyring(env.FERRY_SECRETS_KEY);
  }
  if (env.FERRY_SECRETS_KEY_FILE === undefined) return undefined;
  let text: string;
  try {
    text = await readFile(env.FERRY_SECRETS_KEY_FILE, 'utf8');
  } catch (error) {
    throw new ConfigurationError(
      `FERRY_SECRETS_KEY_FILE: cannot read ${env.FERRY_SECRETS_KEY_FILE} (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  return parseKeyring(text, 'FERRY_SECRETS_KEY_FILE');
}

/**
 * A process that seals or opens jobs (API, worker, dev) needs FERRY_SECRETS_KEY as soon as one operation of the
 * services it serves is `sensitive`: a ConfigurationError naming the first such operation, else nothing.
 */
export function requireSealKey(
  config: ServicesConfig,
  keyring: Keyring | undefined,
  services?: readonly string[],
): void {
  if (keyring !== undefined) return;
  for (const service of config.services.values()) {
    if (services !== undefined && !services.includes(service.name)) continue;
    for (const operation of service.operations.values())
      if (operation.sensitive === true)
        throw new ConfigurationError(
          `services.${service.name}.operations.${operation.name} is sensitive (sealed input), and FERRY_SECRETS_KEY is not set: set it (ferry secrets keygen)`,
        );
  }
}

export interface SecretsRuntime {
  /** FERRY_SECRETS_KEY's keyring (seals and opens sensitive jobs); undefined without a key. */
  readonly keyring?: Keyring | undefined;
  readonly resolver: SecretResolver;
  /** Undefined without a master key. */
  readonly store: SecretStore | undefined;
  /** The sources in lookup order (for `ferry secrets list`: where else a name is defined). */
  readonly sources: readonly SecretSource[];
  close(): void;
}

export interface SecretsRuntimeOptions {
  env: SecretsEnv;
  /** The process's environment, for FERRY_SECRET_<NAME> (default process.env). */
  processEnv?: NodeJS.ProcessEnv;
  connection: RedisClient;
  prefix: string;
  logger: Logger;
  /** Watch the store's generation and drop cached values on a change (workers); default true. */
  watch?: boolean;
}

/**
 * The sources of FERRY_SECRETS_SOURCES in its order: `store` when a master key is set (listing it without one
 * is a ConfigurationError), `file` when FERRY_SECRETS_DIR is set, `env` always.
 */
export async function createSecretsRuntime(options: SecretsRuntimeOptions): Promise<SecretsRuntime> {
  const { env, logger } = options;
  const keyring = await loadKeyring(env);
  const explicit = env.FERRY_SECRETS_SOURCES;
  const order = (explicit ?? DEFAULT_SECRETS_SOURCES).split(',') as SecretSource['kind'][];
  const store =
    keyring === undefined
      ? undefined
      : new SecretStore({ connection: options.connection, prefix: options.prefix, keyring });
  let storeSource: CachedSecretSource | undefined;
  const sources: SecretSource[] = [];
  for (const kind of new Set(order)) {
    if (kind === 'store') {
      if (store === undefined) {
        if (explicit !== undefined) {
          throw new ConfigurationError('FERRY_SECRETS_SOURCES lists store, but FERRY_SECRETS_KEY is not set');
        }
        continue;
      }
      storeSource = new CachedSecretSource(
        { kind: 'store', read: (key) => store.read(key) },
        { cacheMs: env.FERRY_SECRETS_CACHE_MS },
      );
      sources.push(storeSource);
    } else if (kind === 'file') {
      if (env.FERRY_SECRETS_DIR === undefined) continue;
      sources.push(
        new CachedSecretSource(createFileSecretSource(env.FERRY_SECRETS_DIR), {
          cacheMs: env.FERRY_SECRETS_CACHE_MS,
        }),
      );
    } else {
      sources.push(createEnvSecretSource(options.processEnv));
    }
  }

  let timer: NodeJS.Timeout | undefined;
  if (store !== undefined && storeSource !== undefined && options.watch !== false) {
    const cache = storeSource;
    let seen: string | undefined = await store.generation().catch(() => undefined);
    let failing = false;
    let polling = false;
    // A change is one script that also bumps the generation, so after a promote every worker drops its
    // cached values within one interval (the "within a second"). A poll, not pub/sub: it needs no
    // connection of its own, works the same on a Cluster, and a missed message cannot leave a worker stale.
    timer = setInterval(() => {
      if (polling) return;
      polling = true;
      store
        .generation()
        .then((generation) => {
          // Unseen (the read at start failed): a change may have come after a value was cached, so drop them.
          if (generation !== seen) cache.clear();
          seen = generation;
          if (failing) logger.info('secret store reachable again');
          failing = false;
        })
        .catch((error: unknown) => {
          if (!failing)
            logger.warn({ err: error }, 'secret store generation check failed; cached values kept');
          failing = true;
        })
        .finally(() => {
          polling = false;
        });
    }, env.FERRY_SECRETS_REFRESH_MS);
    timer.unref();
  }
  return {
    keyring,
    resolver: createSecretResolver(sources),
    store,
    sources,
    close() {
      if (timer !== undefined) clearInterval(timer);
    },
  };
}
