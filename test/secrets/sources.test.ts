/**
 * The read-only sources (a directory of files), the cache in front of the slow ones, and a process's secret
 * lookup from its environment: precedence, and a change in the store reaching a running resolver within one
 * refresh interval.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it, onTestFinished } from 'vitest';

import { readEnv } from '../../src/core/env.ts';
import { ConfigurationError } from '../../src/core/errors.ts';
import { createLogger } from '../../src/core/logger.ts';
import { CachedSecretSource } from '../../src/secrets/cached-source.ts';
import { generateMasterKey } from '../../src/secrets/crypto.ts';
import { createFileSecretSource } from '../../src/secrets/file-provider.ts';
import type { SecretSource } from '../../src/secrets/resolver.ts';
import { createSecretsRuntime } from '../../src/secrets/setup.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();
const dir = await mkdtemp(join(tmpdir(), 'ferry-secret-files-'));
afterAll(() => rm(dir, { recursive: true, force: true }));
await writeFile(join(dir, 'crm_key'), 'file-global\n');
await mkdir(join(dir, 'tenant', 'acme'), { recursive: true });
await writeFile(join(dir, 'tenant', 'acme', 'crm_key'), 'file-acme\r\n');
await writeFile(join(dir, 'exact'), 'two lines\n\n');

describe('file source', () => {
  const files = createFileSecretSource(dir);

  it('reads <dir>/<name> and <dir>/tenant/<t>/<name>, dropping one trailing newline', async () => {
    expect(await files.read('crm_key')).toBe('file-global');
    expect(await files.read('tenant/acme/crm_key')).toBe('file-acme');
    expect(await files.read('exact')).toBe('two lines\n');
    expect(await files.read('absent')).toBeUndefined();
    expect(await files.read('tenant/beta/crm_key')).toBeUndefined();
  });

  it('never reads outside the directory', async () => {
    await expect(Promise.resolve().then(() => files.read('../etc/passwd'))).rejects.toThrow('must match');
    await expect(Promise.resolve().then(() => files.read('tenant/../../x'))).rejects.toThrow();
  });

  it('a directory where a file should be is a ConfigurationError, not a crash', async () => {
    await mkdir(join(dir, 'is_a_dir'), { recursive: true });
    await expect(files.read('is_a_dir')).rejects.toBeInstanceOf(ConfigurationError);
  });
});

describe('CachedSecretSource', () => {
  function counting(table: Map<string, string>): SecretSource & { reads: number } {
    const source = {
      kind: 'store' as const,
      reads: 0,
      read: async (key: string) => {
        source.reads++;
        // A slow source: the answer comes in a later turn of the event loop, after the caller's next read.
        await new Promise((resolve) => setImmediate(resolve));
        return table.get(key);
      },
    };
    return source;
  }

  it('answers from the cache synchronously, absent keys included; concurrent misses share one read', async () => {
    const source = counting(new Map([['a', 'value-a']]));
    const cached = new CachedSecretSource(source, { cacheMs: 60_000 });
    const [first, second] = [cached.read('a'), cached.read('a')];
    expect(first).toBe(second);
    expect(await first).toBe('value-a');
    expect(cached.read('a')).toBe('value-a');
    expect(await cached.read('b')).toBeUndefined();
    expect(cached.read('b')).toBeUndefined();
    expect(source.reads).toBe(2);
  });

  it('reads again after cacheMs and after clear(); a read from before clear() is not cached', async () => {
    let now = 0;
    const table = new Map([['a', 'old']]);
    const source = counting(table);
    const cached = new CachedSecretSource(source, { cacheMs: 1_000, now: () => now });
    expect(await cached.read('a')).toBe('old');
    table.set('a', 'new');
    now = 999;
    expect(cached.read('a')).toBe('old');
    now = 1_000;
    expect(await cached.read('a')).toBe('new');
    table.set('a', 'newer');
    const inFlight = cached.read('x');
    cached.clear();
    await inFlight;
    expect(cached.size).toBe(0);
    expect(await cached.read('a')).toBe('newer');
  });
});

describe('createSecretsRuntime', () => {
  const logger = createLogger({ level: 'silent' });

  async function runtime(vars: Record<string, string>, processEnv: Record<string, string> = {}) {
    const prefix = uniquePrefix();
    const secrets = await createSecretsRuntime({
      env: readEnv({ ...vars, FERRY_PREFIX: prefix }),
      processEnv: { ...vars, ...processEnv },
      connection: redis.client,
      prefix,
      logger,
    });
    onTestFinished(() => secrets.close());
    return secrets;
  }

  it('store, file, env by default: the store wins within a scope, a tenant value anywhere beats a global one', async () => {
    const secrets = await runtime(
      { FERRY_SECRETS_KEY: generateMasterKey(), FERRY_SECRETS_DIR: dir },
      {
        FERRY_SECRET_CRM_KEY: 'env-global',
        FERRY_SECRET_TENANT_beta__CRM_KEY: 'env-beta',
        FERRY_SECRET_ONLY_ENV: 'env-only',
      },
    );
    expect(secrets.sources.map((source) => source.kind)).toEqual(['store', 'file', 'env']);
    expect(await secrets.resolver.resolve('crm_key', undefined)).toBe('file-global');
    await secrets.store!.set('crm_key', 'store-global');
    // The cache held the store's "absent": it is dropped when the generation changes.
    await expect
      .poll(() => secrets.resolver.resolve('crm_key', undefined), { timeout: 1_000 })
      .toBe('store-global');
    expect(await secrets.resolver.resolve('crm_key', 'acme')).toBe('file-acme');
    expect(await secrets.resolver.resolve('crm_key', 'beta')).toBe('env-beta');
    expect(await secrets.resolver.resolve('only_env', 'beta')).toBe('env-only');
  });

  it('FERRY_SECRETS_SOURCES reorders them; no store without a key, and asking for one without it fails start-up', async () => {
    const secrets = await runtime(
      { FERRY_SECRETS_DIR: dir, FERRY_SECRETS_SOURCES: 'env,file' },
      { FERRY_SECRET_CRM_KEY: 'env-global' },
    );
    expect(secrets.store).toBeUndefined();
    expect(await secrets.resolver.resolve('crm_key', undefined)).toBe('env-global');
    await expect(runtime({ FERRY_SECRETS_SOURCES: 'store,env' })).rejects.toThrow(
      'FERRY_SECRETS_SOURCES lists store, but FERRY_SECRETS_KEY is not set',
    );
  });

  it('reads the master key from FERRY_SECRETS_KEY_FILE', async () => {
    const file = join(dir, 'master.key');
    await writeFile(file, `${generateMasterKey()}\n`);
    const secrets = await runtime({ FERRY_SECRETS_KEY_FILE: file });
    expect(secrets.store?.hasKeyring).toBe(true);
    await expect(runtime({ FERRY_SECRETS_KEY_FILE: join(dir, 'missing.key') })).rejects.toThrow(
      /FERRY_SECRETS_KEY_FILE: cannot read .*missing\.key \(ENOENT\)/,
    );
  });

  it('a promote reaches a running resolver within the refresh interval (250 ms by default)', async () => {
    const secrets = await runtime({ FERRY_SECRETS_KEY: generateMasterKey() });
    const store = secrets.store!;
    await store.set('crm_key', 'before');
    await store.stage('crm_key', 'after');
    await expect
      .poll(() => secrets.resolver.resolve('crm_key', undefined), { timeout: 1_000 })
      .toBe('before');
    const promotedAt = Date.now();
    await store.promote('crm_key');
    await expect
      .poll(() => secrets.resolver.resolve('crm_key', undefined), { timeout: 1_000, interval: 10 })
      .toBe('after');
    expect(Date.now() - promotedAt).toBeLessThan(1_000);
  });

  it('a change made before the first generation read that succeeds still drops the cache', async () => {
    // Regression: when the generation could not be read at start, the first poll that could only noted it,
    // so a value cached before that poll outlived a promote made before it by up to FERRY_SECRETS_CACHE_MS.
    const prefix = uniquePrefix();
    const key = generateMasterKey();
    let failGet = true;
    /** Generation reads that succeeded: polls of the store after it became reachable. */
    let generationReads = 0;
    const flaky = new Proxy(redis.client, {
      get(target, property, receiver) {
        if (property === 'get') {
          if (failGet) return () => Promise.reject(new Error('Connection is closed.'));
          return (key: string) =>
            target.get(key).then((value) => {
              generationReads++;
              return value;
            });
        }
        return Reflect.get(target, property, receiver) as unknown;
      },
    });
    const secrets = await createSecretsRuntime({
      env: readEnv({ FERRY_SECRETS_KEY: key, FERRY_PREFIX: prefix, FERRY_SECRETS_REFRESH_MS: '300' }),
      processEnv: {},
      connection: flaky,
      prefix,
      logger,
    });
    onTestFinished(() => secrets.close());
    const store = secrets.store!;
    await store.set('crm_key', 'before');
    expect(await secrets.resolver.resolve('crm_key', undefined)).toBe('before');
    await store.set('crm_key', 'after');
    failGet = false;
    // Two polls that read the generation: the first one's outcome (drop the cache or not) is settled once the
    // second has begun, as polls never overlap.
    await expect.poll(() => generationReads, { timeout: 10_000 }).toBeGreaterThanOrEqual(2);
    expect(await secrets.resolver.resolve('crm_key', undefined)).toBe('after');
  });
});
