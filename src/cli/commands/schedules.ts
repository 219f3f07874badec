import type { Command } from 'commander';

import type { ScheduleView } from '../../ops/schedules.ts';
import { type CliIo, processIo } from '../io.ts';
import { printJson } from '../output.ts';

export function registerSchedulesCommand(program: Command, io: CliIo = processIo()): void {
  const schedules = program
    .command('schedules')
    .description("the services file's schedules: list, pause, resume, run-now")
    .addHelpText(
      'after',
      `
Examples:
  $ ferry schedules list
  $ ferry schedules list --json
  $ ferry schedules pause nightly-sync     # no run until resumed, across worker restarts
  $ ferry schedules resume nightly-sync
  $ ferry schedules run-now nightly-sync   # one run at once, with its own idempotency key

Workers create, update and remove the schedules when they start, from their services file.`,
    );

  schedules
    .command('list')
    .description('every schedule: when it runs, its next run, and its last run with the outcome')
    .option('--json', 'print as JSON')
    .action(async (options: { json?: boolean }) => {
      const [{ withOps, formatTable, isoTime }, { listSchedules }] = await Promise.all([
        import('../ops-session.ts'),
        import('../../ops/schedules.ts'),
      ]);
      const list = await withOps((deps) => listSchedules(deps));
      if (options.json === true) {
        printJson(list, io.stdout);
        return;
      }
      if (list.length === 0) {
        io.stdout.write('no schedules in the services file\n');
        return;
      }
      const rows = list.map((s) => [
        s.name,
        `${s.service}.${s.operation}`,
        when(s),
        s.paused ? 'paused' : s.nextRunAt === null ? '- (no worker yet)' : isoTime(s.nextRunAt),
        s.lastRun === null
          ? '-'
          : `${isoTime(s.lastRun.runAt)}${s.lastRun.trigger === 'runNow' ? ' (run-now)' : ''} ${
              s.lastRun.outcome
            } ${s.lastRun.jobId}${
              s.lastRun.routedTo === undefined
                ? ''
                : ` routed to ${s.lastRun.routedTo.service} ${s.lastRun.routedTo.jobId}`
            }${s.lastRun.deadLetterId === undefined ? '' : ` ${s.lastRun.deadLetterId}`}`,
      ]);
      io.stdout.write(
        `${formatTable([['SCHEDULE', 'OPERATION', 'WHEN', 'NEXT RUN', 'LAST RUN'], ...rows])}\n`,
      );
    });

  for (const action of ['pause', 'resume'] as const) {
    schedules
      .command(`${action} <name>`)
      .description(
        action === 'pause'
          ? 'pause a schedule in every worker, across their restarts, until resumed'
          : 'resume a paused schedule: its next run follows the services file',
      )
      .option('--json', 'print the result as JSON')
      .action(async (name: string, options: { json?: boolean }) => {
        const [{ withOps, isoTime }, { pauseSchedule, resumeSchedule }] = await Promise.all([
          import('../ops-session.ts'),
          import('../../ops/schedules.ts'),
        ]);
        const view = await withOps((deps) =>
          action === 'pause' ? pauseSchedule(deps, name) : resumeSchedule(deps, name),
        );
        if (options.json === true) printJson(view, io.stdout);
        else if (action === 'pause') io.stdout.write(`${name}: paused\n`);
        else
          io.stdout.write(
            `${name}: resumed${view.nextRunAt === null ? '' : `; next run ${isoTime(view.nextRunAt)}`}\n`,
          );
      });
  }

  schedules
    .command('run-now <name>')
    .description('add one run of a schedule at once (its own idempotency key; paused or not)')
    .option('--json', 'print the result as JSON')
    .action(async (name: string, options: { json?: boolean }) => {
      const [{ withOps }, { runScheduleNow }] = await Promise.all([
        import('../ops-session.ts'),
        import('../../ops/schedules.ts'),
      ]);
      // A sensitive operation's run is sealed: the command needs FERRY_SECRETS_KEY, as the worker does.
      const run = await withOps((deps) => runScheduleNow(deps, name), { keyring: true });
      if (options.json === true) printJson(run, io.stdout);
      else
        io.stdout.write(
          `${name}: run ${run.jobId} enqueued on ${run.service} (idempotency key ${run.idempotencyKey})\n`,
        );
    });
}

function when(s: ScheduleView): string {
  if (s.cron !== undefined) return `cron ${s.cron}${s.tz === undefined ? '' : ` (${s.tz})`}`;
  return `every ${s.everyMs} ms`;
}
