import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';

import type { Command } from 'commander';

import type { Producer } from '../../producer/producer.ts';
import { type CliIo, processIo } from '../io.ts';

export function registerDevCommand(program: Command, io: CliIo = processIo()): void {
  program
    .command('dev')
    .description(
      'run Ferry locally in one process: a private redis-server (when no REDIS_URL, REDIS_CLUSTER_NODES or REDIS_SENTINELS is set), the demo service, workers, and the HTTP API with Bull Board',
    )
    .option('--no-demo-jobs', 'do not enqueue the three demo jobs at start')
    .addHelpText(
      'after',
      '\nExamples:\n  $ ferry dev\n  $ REDIS_URL=redis://127.0.0.1:6379 ferry dev --no-demo-jobs\n',
    )
    .action(async (options: { demoJobs: boolean }) => {
      const [
        { Producer },
        { startDemoService },
        { startPrivateRedis, stopLeftoverRedis },
        runtimeModule,
        { AFTER_POOL_CLOSE_MS, onShutdownSignal, SHUTDOWN_SLACK_MS },
        { settleWithin },
        { apiMetricsListener, startApi },
        { loadTokenSet, TokenSet },
        { StartupResources, stoppable },
        { ENV_FILE, lockDevFolder },
        { readEnv },
      ] = await Promise.all([
        import('../../producer/producer.ts'),
        import('../demo-service.ts'),
        import('../redis-server.ts'),
        import('../runtime.ts'),
        import('../shutdown.ts'),
        import('../../core/deadline.ts'),
        import('../api-server.ts'),
        import('../../api/auth.ts'),
        import('../startup.ts'),
        import('../dev-lock.ts'),
        import('../../core/env.ts'),
      ]);
      const { connect, connectWhenReady, loadRuntime, redisAddress, startWorkers } = runtimeModule;
      // One dev per folder: a second one would run a second redis-server on the same AOF.
      const ferryDir = join(process.cwd(), '.ferry');
      const lock = await lockDevFolder(ferryDir);
      // However this process ends (but SIGKILL: the next dev takes the lock over), dev.env and the lock go.
      process.once('exit', () => lock.release());
      // Everything started below is stopped again if a later step fails (a PORT in use, a bad services file).
      const resources = new StartupResources();
      resources.add(() => lock.release());
      const stops: (() => Promise<void>)[] = [];
      const lines: string[] = [];
      const started = await resources.run(async () => {
        if (
          process.env.REDIS_URL === undefined &&
          process.env.REDIS_CLUSTER_NODES === undefined &&
          (process.env.REDIS_SENTINELS ?? '') === ''
        ) {
          const dir = join(ferryDir, 'redis');
          // A killed dev's redis-server still appends to this AOF: stopped before another one starts on it.
          const { stale } = lock;
          if (stale?.redisPort !== undefined && (await stopLeftoverRedis(stale.redisPort, dir)))
            lines.push(
              `note      stopped the redis-server a killed ferry dev (pid ${stale.pid}) left running`,
            );
          // appendfsync always: an acknowledged job survives a Redis crash (DESIGN §8).
          const redis = await startPrivateRedis({ dir, appendfsync: 'always' });
          resources.add(() => redis.stop());
          process.env.REDIS_URL = redis.url;
          // Within the shutdown budget: a Redis that does not stop at once (paused) is killed, which loses no
          // acknowledged write (AOF always); and never left running if this process exits another way.
          stops.push(async () => {
            if ((await settleWithin(redis.stop(), AFTER_POOL_CLOSE_MS)) === 'timeout') await redis.kill();
          });
          process.once('exit', () => {
            if (redis.process.exitCode === null && redis.process.signalCode === null)
              redis.process.kill('SIGKILL');
          });
          await lock.update({ redisPort: redis.port, redisDir: dir });
          lines.push(`redis     ${redis.url} (private redis-server, data in ${dir})`);
        } else if ((process.env.REDIS_SENTINELS ?? '') !== '') {
          // Never a password: REDIS_PASSWORD and REDIS_SENTINEL_PASSWORD stay out of the banner.
          lines.push(`redis     ${redisAddress(readEnv())}`);
        } else {
          lines.push(`redis     ${process.env.REDIS_URL ?? process.env.REDIS_CLUSTER_NODES}`);
        }
        let demoUrl: string | undefined;
        if (process.env.FERRY_SERVICE_DEMO_URL === undefined) {
          const demo = await startDemoService();
          resources.add(() => demo.close());
          demoUrl = demo.url;
          process.env.FERRY_SERVICE_DEMO_URL = demo.url;
          stops.push(() => demo.close());
          lines.push(`demo      ${demo.url} (local demo service: /echo, /flaky, /reject)`);
        }
        // The secret store works out of the box: a master key of this checkout's own, kept next to the private
        // Redis's data so values set in one run open in the next. Never used when a key is configured.
        if (process.env.FERRY_SECRETS_KEY === undefined && process.env.FERRY_SECRETS_KEY_FILE === undefined) {
          const keyFile = join(ferryDir, 'secrets.key');
          await ensureDevMasterKey(keyFile);
          process.env.FERRY_SECRETS_KEY_FILE = keyFile;
          lines.push(`secrets   store key in ${keyFile} (dev only; set FERRY_SECRETS_KEY in production)`);
        }
        const runtime = await loadRuntime({ name: 'ferry-dev', pretty: true });
        // With REDIS_URL set, FERRY_REDIS_WAIT_MS applies as to `ferry worker`; the private Redis answers at once.
        const connection = await stoppable(
          (signal) =>
            connectWhenReady(runtime.env, 'worker', 'ferry-dev', {
              waitMs: runtime.env.FERRY_REDIS_WAIT_MS,
              logger: runtime.logger,
              signal,
            }),
          runtime.logger,
          (connection) => connection.disconnect(),
        );
        resources.add(() => connection.disconnect());
        const { pool, secrets } = await startWorkers(runtime, connection, undefined);
        resources.add(() => secrets.close());
        resources.add(() => pool.close({ deadlineMs: 0 }));
        await pool.start();
        const services = [...runtime.config.services.keys()];
        lines.push(`services  ${services.join(', ')} (from ${runtime.env.FERRY_SERVICES})`);
        lines.push(`workers   one per service, prefix "${runtime.env.FERRY_PREFIX}"`);
        const producerConnection = connect(runtime.env, 'api', 'ferry-dev-producer');
        resources.add(() => producerConnection.disconnect());
        const producer = new Producer({
          connection: producerConnection,
          prefix: runtime.env.FERRY_PREFIX,
          services: runtime.config.services,
          // FERRY_SECRETS_KEY's keyring (startWorkers refused to start without it if any operation is sensitive).
          ...(secrets.keyring === undefined ? {} : { keyring: secrets.keyring }),
        });
        resources.add(() => producer.close());
        // Tokens from the environment when set; otherwise one admin token for this run, printed below.
        let devToken: string | undefined;
        let tokens = await loadTokenSet(runtime.env);
        if (tokens === undefined) {
          devToken = randomBytes(24).toString('base64url');
          tokens = TokenSet.parse([{ name: 'dev', token: devToken, scopes: ['admin'] }], 'dev token');
        }
        const api = await startApi(runtime, {
          connection: producerConnection,
          eventsConnection: connection,
          tokens,
          pool,
          fallbackToFreePort: process.env.PORT === undefined,
          metricsListener: apiMetricsListener(runtime.env),
        });
        resources.add(() => api.close());
        lines.push(`api       ${api.url}  (OpenAPI: ${api.url}/docs)`);
        if (api.metricsUrl !== undefined) lines.push(`metrics   ${api.metricsUrl}/metrics  (no token)`);
        const apiPort = Number(new URL(api.url).port);
        if (process.env.PORT === undefined && apiPort !== runtime.env.PORT)
          lines.push(
            `note      ${runtime.env.PORT} was in use; the API is on :${apiPort} (set PORT to choose)`,
          );
        lines.push(`board     ${api.url}/admin/queues  (Bull Board: any user name, the token as password)`);
        lines.push(
          devToken === undefined
            ? 'token     from FERRY_API_TOKENS / FERRY_API_TOKENS_FILE'
            : `token     ${devToken}  (admin, this run only)`,
        );
        await lock.update({ apiUrl: api.url });
        await lock.writeEnvFile(devEnvEntries(runtime.env, api.url, devToken), [
          `ferry dev (pid ${process.pid}) in ${process.cwd()}; removed when it stops.`,
          `In another shell: set -a; . .ferry/${ENV_FILE}; set +a`,
          ...(devToken === undefined
            ? ['The API tokens are those of FERRY_API_TOKENS / FERRY_API_TOKENS_FILE.']
            : ['FERRY_DEV_TOKEN: the admin token of this run, for the API (no ferry command reads it).']),
        ]);
        lines.push(
          `env       ${join(ferryDir, ENV_FILE)}  (for other shells: set -a; . .ferry/${ENV_FILE}; set +a)`,
        );
        return { runtime, connection, pool, secrets, producerConnection, producer, api, devToken, demoUrl };
      });
      const { runtime, connection, pool, secrets, producerConnection, producer, api, devToken, demoUrl } =
        started;
      const { env } = runtime;
      const budgetMs = env.FERRY_SHUTDOWN_TIMEOUT_MS + env.FERRY_SHUTDOWN_HANDBACK_MS;
      onShutdownSignal(
        runtime.logger,
        async () => {
          // The same bound as `ferry worker`: the API closes (bounded on its own) while the pool drains.
          const [report] = await Promise.all([
            pool.shutdown({
              deadlineMs: env.FERRY_SHUTDOWN_TIMEOUT_MS,
              handbackMs: env.FERRY_SHUTDOWN_HANDBACK_MS,
            }),
            api.close(),
          ]);
          await settleWithin(producer.close(), AFTER_POOL_CLOSE_MS);
          secrets.close();
          connection.disconnect();
          producerConnection.disconnect();
          for (const stop of stops.reverse()) await settleWithin(stop(), 2 * AFTER_POOL_CLOSE_MS);
          lock.release();
          return { unrecorded: report.unrecorded.length };
        },
        { limitMs: budgetMs + SHUTDOWN_SLACK_MS },
      );
      const token = devToken ?? '<your token>';
      const redisHint =
        runtime.env.REDIS_SENTINELS === undefined
          ? `REDIS_URL=${runtime.env.REDIS_URL ?? ''}`
          : `REDIS_SENTINELS=${runtime.env.REDIS_SENTINELS} REDIS_SENTINEL_NAME=${runtime.env.REDIS_SENTINEL_NAME}`;
      io.stdout.write(
        `\nFerry dev is running (Ctrl-C to stop)\n  ${lines.join('\n  ')}\n\nTry:\n` +
          `  curl -s -H 'authorization: Bearer ${token}' -H 'content-type: application/json' \\\n` +
          `    -d '{"service":"demo","operation":"echo","input":{"hello":"world"}}' ${api.url}/v1/jobs\n` +
          `  ${redisHint} npx ferry enqueue demo echo --input '{"hello":"world"}' --wait\n` +
          `  ${redisHint} FERRY_SECRETS_KEY_FILE=${process.env.FERRY_SECRETS_KEY_FILE ?? ''} npx ferry secrets list\n\n`,
      );
      if (
        options.demoJobs &&
        demoUrl !== undefined &&
        runtime.config.services.get('demo')?.operations.has('echo') === true
      ) {
        void runDemoJobs(producer, runtime.logger);
      }
    });
}

/**
 * What another shell needs to use this dev: the same Redis, prefix, services file and secret-store key as the
 * `ferry` commands read them, and the API's URL and (when dev made it) token for curl and scripts.
 */
function devEnvEntries(
  env: {
    REDIS_URL?: string | undefined;
    REDIS_CLUSTER_NODES?: string | undefined;
    REDIS_SENTINELS?: string | undefined;
    REDIS_SENTINEL_NAME: string;
    REDIS_SENTINEL_PASSWORD?: string | undefined;
    REDIS_PASSWORD?: string | undefined;
    FERRY_PREFIX: string;
    FERRY_SERVICES: string;
  },
  apiUrl: string,
  devToken: string | undefined,
): [string, string][] {
  const entries: [string, string][] = [];
  if (env.REDIS_SENTINELS !== undefined) {
    // The file is 0600 and already holds the token; another shell needs the passwords as much as the address.
    entries.push(['REDIS_SENTINELS', env.REDIS_SENTINELS], ['REDIS_SENTINEL_NAME', env.REDIS_SENTINEL_NAME]);
    if (env.REDIS_SENTINEL_PASSWORD !== undefined)
      entries.push(['REDIS_SENTINEL_PASSWORD', env.REDIS_SENTINEL_PASSWORD]);
  } else if (env.REDIS_CLUSTER_NODES !== undefined)
    entries.push(['REDIS_CLUSTER_NODES', env.REDIS_CLUSTER_NODES]);
  else if (env.REDIS_URL !== undefined) entries.push(['REDIS_URL', env.REDIS_URL]);
  if (env.REDIS_PASSWORD !== undefined) entries.push(['REDIS_PASSWORD', env.REDIS_PASSWORD]);
  entries.push(['FERRY_PREFIX', env.FERRY_PREFIX], ['FERRY_SERVICES', resolve(env.FERRY_SERVICES)]);
  // A key given as a value (FERRY_SECRETS_KEY) stays where it was given: only a file's path is written.
  if (process.env.FERRY_SECRETS_KEY === undefined && process.env.FERRY_SECRETS_KEY_FILE !== undefined)
    entries.push(['FERRY_SECRETS_KEY_FILE', resolve(process.env.FERRY_SECRETS_KEY_FILE)]);
  if (process.env.FERRY_SERVICE_DEMO_URL !== undefined)
    entries.push(['FERRY_SERVICE_DEMO_URL', process.env.FERRY_SERVICE_DEMO_URL]);
  entries.push(['FERRY_API_URL', apiUrl]);
  if (devToken !== undefined) entries.push(['FERRY_DEV_TOKEN', devToken]);
  return entries;
}

/** Creates the dev master key file (owner-only) unless it exists. */
async function ensureDevMasterKey(path: string): Promise<void> {
  const [{ mkdir, writeFile }, { dirname }, { generateMasterKey }] = await Promise.all([
    import('node:fs/promises'),
    import('node:path'),
    import('../../secrets/crypto.ts'),
  ]);
  await mkdir(dirname(path), { recursive: true });
  try {
    await writeFile(path, `${generateMasterKey()}\n`, { flag: 'wx', mode: 0o600 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
}

/** One job that succeeds, one that retries then succeeds, one that is dead-lettered: the whole pipeline at a glance. */
async function runDemoJobs(
  producer: Producer,
  logger: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void },
): Promise<void> {
  try {
    const jobs = await producer.enqueueMany([
      { service: 'demo', operation: 'echo', input: { hello: 'world' } },
      { service: 'demo', operation: 'flaky', input: { note: 'fails twice, then succeeds' } },
      { service: 'demo', operation: 'reject', input: { note: 'refused: goes to the dead-letter queue' } },
    ]);
    for (const job of jobs) {
      const view = await producer.waitFor('demo', job.id, { timeoutMs: 60_000 });
      logger.info(
        {
          jobId: view.id,
          operation: view.operation,
          state: view.state,
          attempts: view.attempts,
          lastErrorType: view.lastError?.type,
        },
        `demo job ${view.operation}: ${view.state}`,
      );
    }
  } catch (error) {
    logger.warn({ err: error }, 'demo jobs did not finish');
  }
}
