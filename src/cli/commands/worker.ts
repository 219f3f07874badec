import type { Command } from 'commander';

import { readEnv } from '../../core/env.ts';
import { UsageError } from '../output.ts';
import { connectReady, loadRuntime, startWorkers } from '../runtime.ts';
import { onShutdownSignal } from '../shutdown.ts';

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
      // Checked before the services file is read: a missing REDIS_URL is the caller's mistake (exit 2), and it
      // must not be hidden behind a "services file not found" failure (exit 1).
      const preflight = readEnv();
      if (preflight.REDIS_URL === undefined && preflight.REDIS_CLUSTER_NODES === undefined) {
        throw new UsageError(
          'REDIS_URL (or REDIS_CLUSTER_NODES) is not set; `ferry dev` starts a private Redis for local use',
        );
      }
      const runtime = await loadRuntime({ name: 'ferry-worker' });
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
