import type { Command } from 'commander';

import { UsageError } from '../output.ts';

export function registerApiCommand(program: Command): void {
  program
    .command('api')
    .description('run the HTTP API (enqueue, job status and events, dead letters, Bull Board, metrics)')
    .addHelpText(
      'after',
      `
Needs REDIS_URL and tokens in FERRY_API_TOKENS (JSON) or FERRY_API_TOKENS_FILE (YAML), e.g.
  FERRY_API_TOKENS='[{"name":"ops","sha256":"<hex sha256 of the token>","scopes":["admin"]}]'

Examples:
  $ ferry api
  $ PORT=9000 HOST=0.0.0.0 ferry api
`,
    )
    .action(async () => {
      const [
        { connect, loadRuntime, readEnvWithRedis },
        { onShutdownSignal, SHUTDOWN_SLACK_MS },
        { API_CLOSE_WAIT_MS, apiMetricsListener, startApi },
        { loadTokenSet },
        { StartupResources },
      ] = await Promise.all([
        import('../runtime.ts'),
        import('../shutdown.ts'),
        import('../api-server.ts'),
        import('../../api/auth.ts'),
        import('../startup.ts'),
      ]);
      const env = readEnvWithRedis();
      const tokens = await loadTokenSet(env);
      if (tokens === undefined) {
        throw new UsageError(
          'no API tokens: set FERRY_API_TOKENS (JSON) or FERRY_API_TOKENS_FILE (YAML); every route but /healthz and /readyz needs one',
        );
      }
      const runtime = await loadRuntime({ name: 'ferry-api', env });
      // No wait for Redis: the API starts while Redis is down and answers 503 + Retry-After until it is back.
      // Closed if a later step fails (the port is in use): open, they would keep the process alive for ever.
      const resources = new StartupResources();
      const connection = connect(env, 'api', 'ferry-api');
      resources.add(() => connection.disconnect());
      connection.on('error', () => undefined);
      // Job event streams block on Redis: they need a worker-role connection (BullMQ copies it per service).
      const eventsConnection = connect(env, 'worker', 'ferry-api-events');
      resources.add(() => eventsConnection.disconnect());
      eventsConnection.on('error', () => undefined);
      const api = await resources.run(() =>
        startApi(runtime, {
          connection,
          eventsConnection,
          tokens,
          metricsListener: apiMetricsListener(env),
        }),
      );
      runtime.logger.info({ url: api.url, tokens: tokens.size }, `Ferry API listening on ${api.url}`);
      if (api.metricsUrl !== undefined)
        runtime.logger.info({ url: `${api.metricsUrl}/metrics` }, `metrics on ${api.metricsUrl}/metrics`);
      onShutdownSignal(
        runtime.logger,
        async () => {
          await api.close();
          connection.disconnect();
          eventsConnection.disconnect();
        },
        // api.close() is bounded by API_CLOSE_WAIT_MS (plus moments to force-close): a last resort past it.
        { limitMs: API_CLOSE_WAIT_MS + SHUTDOWN_SLACK_MS * 2 },
      );
    });
}
