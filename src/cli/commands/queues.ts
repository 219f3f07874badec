import type { Command } from 'commander';

import { type CliIo, processIo } from '../io.ts';
import { printJson } from '../output.ts';

export function registerQueuesCommand(program: Command, io: CliIo = processIo()): void {
  const queues = program
    .command('queues')
    .description('service queues: list, pause, resume')
    .addHelpText(
      'after',
      `
Examples:
  $ ferry queues list
  $ ferry queues pause crm      # no worker takes crm's jobs (calls in flight finish); enqueues still accepted
  $ ferry queues resume crm`,
    );

  queues
    .command('list')
    .description('every service queue: paused or not, jobs by state')
    .option('--json', 'print as JSON')
    .action(async (options: { json?: boolean }) => {
      const [{ withOps, formatTable }, { listQueues }] = await Promise.all([
        import('../ops-session.ts'),
        import('../../ops/queues.ts'),
      ]);
      const list = await withOps((deps) => listQueues(deps));
      if (options.json === true) {
        printJson(list, io.stdout);
        return;
      }
      const states = ['waiting', 'prioritized', 'active', 'delayed', 'completed', 'failed'];
      const rows = list.map((q) => [
        q.service,
        q.paused ? 'yes' : 'no',
        ...states.map((state) => String(q.counts[state] ?? 0)),
      ]);
      io.stdout.write(
        `${formatTable([['SERVICE', 'PAUSED', ...states.map((s) => s.toUpperCase())], ...rows])}\n`,
      );
    });

  for (const action of ['pause', 'resume'] as const) {
    queues
      .command(`${action} <service>`)
      .description(
        action === 'pause'
          ? 'pause a service queue: no worker in any process takes its jobs until resumed (jobs keep their attempts)'
          : 'resume a paused service queue: workers take its jobs again at once',
      )
      .option('--json', 'print the result as JSON')
      .addHelpText(
        'after',
        `\nExamples:\n  $ ferry queues ${action} crm\n  $ ferry queues ${action} crm --json\n`,
      )
      .action(async (service: string, options: { json?: boolean }) => {
        const [{ withOps }, { setQueuePaused }] = await Promise.all([
          import('../ops-session.ts'),
          import('../../ops/queues.ts'),
        ]);
        const result = await withOps((deps) => setQueuePaused(deps, service, action === 'pause'));
        if (options.json === true) printJson(result, io.stdout);
        else io.stdout.write(`${service}: ${result.paused ? 'paused' : 'resumed'}\n`);
      });
  }
}
