import type { Command } from 'commander';

import type { BreakerView } from '../../ops/breaker-control.ts';
import { type CliIo, processIo } from '../io.ts';
import { printJson } from '../output.ts';

export function registerBreakersCommand(program: Command, io: CliIo = processIo()): void {
  const breakers = program
    .command('breakers')
    .description("services' circuit breakers, as every worker sees them: list, open, close")
    .addHelpText(
      'after',
      `
Examples:
  $ ferry breakers list
  $ ferry breakers open crm --for 2h --reason "partner maintenance"
  $ ferry breakers close crm

While a breaker is open no worker calls the service: jobs are held without using attempts, for up to the
service's retry.maxHoldMs (1 h by default) per job. For a longer window, also \`ferry queues pause\`.`,
    );

  breakers
    .command('list')
    .description('every breaker: state, until when, manual or not, and whether the queue is held')
    .option('--json', 'print as JSON')
    .action(async (options: { json?: boolean }) => {
      const [{ withOps, formatTable }, { listBreakers }] = await Promise.all([
        import('../ops-session.ts'),
        import('../../ops/breaker-control.ts'),
      ]);
      const list = await withOps((deps) => listBreakers(deps));
      if (options.json === true) {
        printJson(list, io.stdout);
        return;
      }
      const { formatDuration } = await import('../progress.ts');
      const rows = list.map((b) => [
        b.service,
        b.state,
        b.openUntil === undefined ? '-' : describeUntil(b, formatDuration),
        b.manual === true ? `yes${b.reason === undefined ? '' : `: ${b.reason}`}` : 'no',
        b.heldForMs > 0 ? formatDuration(b.heldForMs) : 'no',
      ]);
      io.stdout.write(`${formatTable([['SERVICE', 'STATE', 'OPEN UNTIL', 'MANUAL', 'HELD'], ...rows])}\n`);
    });

  breakers
    .command('open <service>')
    .description('open a breaker in every worker (a maintenance window): no calls within about a second')
    .option('--for <duration>', "how long (90s, 15m, 2h, 1d); default: the service's retry.maxHoldMs")
    .option('--reason <text>', 'why (shown by breakers list and status)')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      '\nExamples:\n  $ ferry breakers open crm --for 2h --reason "partner maintenance"\n  $ ferry breakers open crm --for 15m --json\n',
    )
    .action(async (service: string, options: { for?: string; reason?: string; json?: boolean }) => {
      const [{ withOps, parseDuration, isoTime }, { openBreaker }, { formatDuration }] = await Promise.all([
        import('../ops-session.ts'),
        import('../../ops/breaker-control.ts'),
        import('../progress.ts'),
      ]);
      const forMs = options.for === undefined ? undefined : parseDuration(options.for, '--for');
      const result = await withOps((deps) =>
        openBreaker(deps, service, {
          ...(forMs === undefined ? {} : { forMs }),
          ...(options.reason === undefined ? {} : { reason: options.reason }),
        }),
      );
      if (result.exceedsMaxHold) {
        io.stderr.write(
          `warning: longer than ${service}'s retry.maxHoldMs (${formatDuration(result.maxHoldMs)}): jobs held longer than that use attempts; for a long window also run \`ferry queues pause ${service}\`\n`,
        );
      }
      if (options.json === true) {
        printJson(result, io.stdout);
        return;
      }
      io.stdout.write(
        `${service}: breaker open until ${isoTime(result.openUntil!)} (manual); every worker stops calling it within about a second\n`,
      );
    });

  breakers
    .command('close <service>')
    .description('close a breaker in every worker: they resume calling within about a second')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nExamples:\n  $ ferry breakers close crm\n  $ ferry breakers close crm --json\n')
    .action(async (service: string, options: { json?: boolean }) => {
      const [{ withOps }, { closeBreaker }] = await Promise.all([
        import('../ops-session.ts'),
        import('../../ops/breaker-control.ts'),
      ]);
      const result = await withOps((deps) => closeBreaker(deps, service));
      if (options.json === true) printJson(result, io.stdout);
      else io.stdout.write(`${service}: breaker closed; workers resume within about a second\n`);
    });
}

function describeUntil(b: BreakerView, formatDuration: (ms: number) => string): string {
  const left = b.openUntil! - Date.now();
  return left > 0 ? `${new Date(b.openUntil!).toISOString()} (${formatDuration(left)} left)` : 'probe due';
}
