import type { Command } from 'commander';

import { type CliIo, processIo } from '../io.ts';
import { printJson } from '../output.ts';

export function registerRetryPlanCommand(program: Command, io: CliIo = processIo()): void {
  program
    .command('retry-plan <service>')
    .description(
      "print the attempt timeline of a service's retry policy: waits with their jitter range, time until dead-letter",
    )
    .option('--json', 'print the plan as JSON')
    .addHelpText(
      'after',
      `
Examples:
  $ ferry retry-plan crm
  $ ferry retry-plan crm --json | jq .untilDeadLetter

Reads only the services file (FERRY_SERVICES); needs no Redis.`,
    )
    .action(async (service: string, options: { json?: boolean }) => {
      const [
        { loadServicesFile },
        { readEnv },
        { requireService },
        { planRetries },
        { formatTable },
        { formatDuration },
      ] = await Promise.all([
        import('../../core/services/load.ts'),
        import('../../core/env.ts'),
        import('../../ops/deps.ts'),
        import('../../ops/retry-plan.ts'),
        import('../ops-session.ts'),
        import('../progress.ts'),
      ]);
      const config = await loadServicesFile(readEnv().FERRY_SERVICES);
      const settings = requireService(config, service);
      const plan = planRetries(settings.retry, { timeoutMs: settings.timeoutMs });
      if (options.json === true) {
        printJson({ service, ...plan }, io.stdout);
        return;
      }
      const d = (ms: number): string => (ms === 0 ? '0' : formatDuration(ms));
      const rows = plan.timeline.map((step) => [
        String(step.attempt),
        `${d(step.startsAfter.minMs)} … ${d(step.startsAfter.maxMs)}`,
        d(step.startsAfter.expectedMs),
        step.delayAfter === null ? 'dead-letter' : `0 … ${d(step.delayAfter.capMs)}`,
      ]);
      const total = plan.untilDeadLetter;
      io.stdout.write(
        [
          `${service}: ${plan.attempts} attempt(s), backoff ${d(plan.delayMs)} × 2^(n-1) with full jitter, capped at ${d(plan.maxDelayMs)}`,
          '',
          formatTable([
            ['ATTEMPT', 'STARTS AFTER (MIN … MAX)', 'EXPECTED', 'THEN WAITS (JITTER RANGE)'],
            ...rows,
          ]),
          '',
          `until dead-letter (a job failing every time): ${d(total.minMs)} … ${d(total.maxMs)}, expected ${d(total.expectedMs)}` +
            (plan.callTimeMaxMs === undefined
              ? ''
              : `, plus up to ${d(plan.callTimeMaxMs)} of calls (${plan.attempts} × timeout ${d(settings.timeoutMs)})`),
          '',
          ...plan.notes.map((note) => `- ${note}`),
        ].join('\n') + '\n',
      );
    });
}
