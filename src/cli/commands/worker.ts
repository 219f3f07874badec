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
      const [{ connectReady, loadRuntime, readEnvWithRedis, startWorkers }, { onShutdownSignal }] =
        await Promise.all([import('../runtime.ts'), import('../shutdown.ts')]);
      const runtime = await loadRuntime({ name: 'ferry-worker', env: readEnvWithRedis() });
      const services = options.services
        ?.split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '');
      const unknown = services?.filter((s) => !runtime.config.services.has(s)) ?? [];
      if (unknown.length > 0)
        throw new UsageError(
          `--services: unknown service(s) ${unknown.join(', ')} (not in ${runtime.env.FERRY_SERVICES})`,
        );
      const connection = await connectReady(runtime.env, 'worker', 'ferry-worker');
      const pool = startWorkers(runtime, connection, services);
      onShutdownSignal(runtime.logger, async () => {
        await pool.close({ deadlineMs: runtime.env.FERRY_SHUTDOWN_TIMEOUT_MS });
        connection.disconnect();
      });
      await pool.start();
    });
}
