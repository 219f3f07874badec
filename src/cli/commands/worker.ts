import { join } from 'node:path';

import type { Command } from 'commander';

import { UsageError } from '../output.ts';

export function registerWorkerCommand(program: Command): void {
  program
    .command('worker')
    .description('run workers for the services in the services file (all, or --services a,b)')
    .option('--services <names>', 'comma-separated services to work on')
    .addHelpText(
      'after',
      '\nExamples:\n  $ ferry worker\n  $ FERRY_SERVICES=./prod.services.yaml ferry worker --services crm,billing\n',
    )
    .action(async (options: { services?: string }) => {
      // Loaded when the command runs: `ferry --help` and the other commands do not pay for BullMQ and undici.
      const [
        runtimeModule,
        { AFTER_POOL_CLOSE_MS, onShutdownSignal, SHUTDOWN_SLACK_MS },
        { redisReadiness, startMetricsServer },
        { DeadLetterReader },
        { settleWithin },
        { StartupResources, stoppable },
        { readDevEnvFile },
      ] = await Promise.all([
        import('../runtime.ts'),
        import('../shutdown.ts'),
        import('../metrics-server.ts'),
        import('../../dead-letter/reader.ts'),
        import('../../core/deadline.ts'),
        import('../startup.ts'),
        import('../dev-lock.ts'),
      ]);
      const { connectWhenReady, createProcessMetrics, loadRuntime, readEnvWithRedis, startWorkers } =
        runtimeModule;
      const runtime = await loadRuntime({ name: 'ferry-worker', env: readEnvWithRedis() });
      const { env, logger } = runtime;
      const services = options.services
        ?.split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '');
      const unknown = services?.filter((s) => !runtime.config.services.has(s)) ?? [];
      if (unknown.length > 0)
        throw new UsageError(
          `--services: unknown service(s) ${unknown.join(', ')} (not in ${env.FERRY_SERVICES})`,
        );
      // Joining the Redis of the `ferry dev` running in this folder without its service URL overrides (the demo
      // service's), this worker would call the services file's placeholder baseUrl: said at once, with the fix.
      const devEnv = await readDevEnvFile(join(process.cwd(), '.ferry'));
      if (
        devEnv !== undefined &&
        env.REDIS_URL !== undefined &&
        devEnv.get('REDIS_URL') === env.REDIS_URL &&
        devEnv.get('FERRY_PREFIX') === env.FERRY_PREFIX
      ) {
        // Only FERRY_SERVICE_<NAME>_URL names and origins are logged: never the token or a Redis password.
        const missing = [...devEnv].filter(
          ([key, value]) => /^FERRY_SERVICE_[A-Z0-9_]+_URL$/.test(key) && process.env[key] !== value,
        );
        for (const [key, value] of missing) {
          // The origin only: a URL given to dev by hand may carry credentials or a secret path.
          const origin = URL.canParse(value) ? new URL(value).origin : '(not a URL)';
          logger.warn(
            { variable: key, devOrigin: origin },
            `this worker joins the Redis of the ferry dev running in this folder, which sets ${key}=${origin}; ` +
              `this worker does not, and calls the services file's baseUrl instead: start it after ` +
              `\`set -a; . .ferry/dev.env; set +a\``,
          );
        }
      }
      // FERRY_REDIS_WAIT_MS: fail at once, wait so long, or wait (logging once) until Redis answers.
      const connection = await stoppable(
        (signal) =>
          connectWhenReady(env, 'worker', 'ferry-worker', {
            waitMs: env.FERRY_REDIS_WAIT_MS,
            logger,
            signal,
          }),
        logger,
        (connection) => connection.disconnect(),
      );
      // Closed, newest first, if a later step fails: a port in use must not leave the process hanging.
      const resources = new StartupResources();
      resources.add(() => connection.disconnect());
      const startup = resources.run(async () => {
        const started = await startWorkers(runtime, connection, services);
        resources.add(() => started.secrets.close());
        resources.add(() => started.pool.close({ deadlineMs: 0 }));
        // FERRY_METRICS_PORT=0 turns the metrics server off, and with it every metric: nothing is counted.
        const processMetrics =
          env.FERRY_METRICS_PORT === 0
            ? undefined
            : createProcessMetrics(runtime, connection, {
                pool: started.pool,
                deadLetterCounts: new DeadLetterReader({ connection, prefix: env.FERRY_PREFIX })
                  .deadLetterCounts,
              });
        if (processMetrics !== undefined) resources.add(() => processMetrics.close());
        // Bound before the pool takes its first job: a port in use fails start-up with nothing to wind down.
        const metricsServer =
          processMetrics === undefined
            ? undefined
            : await startMetricsServer({
                host: env.FERRY_METRICS_HOST,
                port: env.FERRY_METRICS_PORT,
                metrics: processMetrics,
                ready: redisReadiness(connection),
                logger,
              });
        return { ...started, metrics: processMetrics, server: metricsServer };
      });
      const budgetMs = env.FERRY_SHUTDOWN_TIMEOUT_MS + env.FERRY_SHUTDOWN_HANDBACK_MS;
      // Listening from here, while the start-up steps run: a SIGTERM then waits for them (bounded by limitMs) and
      // closes what they started, exit 0, where Node's default would kill the process mid-start. A start-up
      // that fails rejects here too, and exits 1 as it would without the signal.
      onShutdownSignal(
        logger,
        async () => {
          const { pool, secrets, metrics, server } = await startup;
          const report = await pool.shutdown({
            deadlineMs: env.FERRY_SHUTDOWN_TIMEOUT_MS,
            handbackMs: env.FERRY_SHUTDOWN_HANDBACK_MS,
          });
          // Scrapable until the last in-flight job has finished; a scrape that waits on Redis is not waited for.
          await settleWithin(Promise.all([server?.close(), metrics?.close()]), AFTER_POOL_CLOSE_MS);
          secrets.close();
          connection.disconnect();
          return { unrecorded: report.unrecorded.length };
        },
        { limitMs: budgetMs + SHUTDOWN_SLACK_MS },
      );
      const { pool, server } = await startup;
      await pool.start();
      if (server !== undefined)
        logger.info({ url: `${server.url}/metrics` }, `metrics on ${server.url}/metrics`);
    });
}
