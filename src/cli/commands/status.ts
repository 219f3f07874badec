import type { Command } from 'commander';

import type { ServiceStatus } from '../../ops/status.ts';
import { type CliIo, processIo } from '../io.ts';
import { printJson } from '../output.ts';

export function registerStatusCommand(program: Command, io: CliIo = processIo()): void {
  program
    .command('status')
    .description('per service: queue counts, holds, last hour, dead letters, breaker, rate limit, workers')
    .argument('[services...]', 'only these services (default: every service in the services file)')
    .option('--json', 'print the status as JSON (an array, one object per service)')
    .addHelpText(
      'after',
      `
Examples:
  $ ferry status
  $ ferry status crm --json | jq '.[0].breaker.state'

Columns: waiting, active, delayed; held (until when, and why: breaker open or rate limited); done/failed in
the last hour (dead-lettered counts as failed; "-" when no worker has recorded any yet); dead letters;
breaker; rate limit; paused; workers connected.`,
    )
    .action(async (services: string[], options: { json?: boolean }) => {
      const [{ withOps }, { readStatus }] = await Promise.all([
        import('../ops-session.ts'),
        import('../../ops/status.ts'),
      ]);
      const status = await withOps((deps) => readStatus(deps, services.length > 0 ? services : undefined));
      if (options.json === true) printJson(status, io.stdout);
      else io.stdout.write(`${await formatStatus(status)}\n`);
    });
}

async function formatStatus(status: readonly ServiceStatus[]): Promise<string> {
  const { formatTable, isoTime } = await import('../ops-session.ts');
  const { formatDuration } = await import('../progress.ts');
  const now = Date.now();
  const header = [
    'SERVICE',
    'WAITING',
    'ACTIVE',
    'DELAYED',
    'HELD',
    'DONE/1H',
    'FAILED/1H',
    'DLQ',
    'BREAKER',
    'RATE LIMIT',
    'PAUSED',
    'WORKERS',
  ];
  const rows = status.map((s) => [
    s.service,
    String(s.waiting),
    String(s.active),
    String(s.delayed),
    s.held === null
      ? 'no'
      : `${s.held.reason === 'breakerOpen' ? 'breaker open' : 'rate limited'} until ${isoTime(s.held.untilMs)}`,
    s.lastHour === null ? '-' : String(s.lastHour.completed),
    s.lastHour === null ? '-' : String(s.lastHour.failed),
    String(s.deadLetters),
    s.breaker.state === 'closed'
      ? 'closed'
      : `${s.breaker.state}${s.breaker.manual === true ? ' (manual)' : ''}${
          s.breaker.state === 'open' && s.breaker.openUntil !== undefined
            ? ` ${formatDuration(s.breaker.openUntil - now)} left`
            : ''
        }`,
    s.rateLimit === null ? 'none' : `${s.rateLimit.max}/${formatDuration(s.rateLimit.perMs)}`,
    s.paused ? 'yes' : 'no',
    String(s.workers),
  ]);
  const notes = status.some((s) => s.lastHour === null)
    ? '\n\n- in DONE/1H, FAILED/1H: no worker has recorded metrics for this service yet'
    : '';
  return `${formatTable([header, ...rows])}${notes}`;
}
