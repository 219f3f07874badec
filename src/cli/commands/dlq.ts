import { userInfo } from 'node:os';

import type { Command } from 'commander';

import type { JobOrigin } from '../../core/job.ts';
import type { DeadLetterFilter } from '../../dead-letter/list-query.ts';
import type { DeadLetterDetail } from '../../dead-letter/view.ts';
import { type CliIo, processIo } from '../io.ts';
import { EXIT_FAILURE, printJson, UsageError } from '../output.ts';

interface FilterOptions {
  service?: string;
  operation?: string;
  tenant?: string;
  errorType?: string;
  status?: string;
  since?: string;
  until?: string;
}

/** Exit code of a replay stopped by Ctrl-C (128 + SIGINT): a re-run continues where it stopped. */
const EXIT_INTERRUPTED = 130;

const FILTER_HELP = `
Filters (all optional, combined with AND): --service, --operation, --tenant, --error-type (the final
error's type, e.g. ServerError), --status (its HTTP status), --since / --until (dead-lettered at or after /
at or before: an ISO time such as 2026-05-01T10:00:00Z, or a time ago such as 2h, 7d).`;

function withFilters(command: Command): Command {
  return command
    .option('--service <service>', 'only this service')
    .option('--operation <operation>', 'only this operation')
    .option('--tenant <tenant>', 'only this tenant')
    .option('--error-type <type>', 'only this final error type (ServerError, ClientError, …)')
    .option('--status <code>', 'only this final HTTP status (e.g. 503)')
    .option('--since <time>', 'dead-lettered at or after (ISO time, or a time ago: 2h, 7d)')
    .option('--until <time>', 'dead-lettered at or before (ISO time, or a time ago)');
}

async function toFilter(options: FilterOptions): Promise<DeadLetterFilter> {
  const { parseTime, parseCount } = await import('../ops-session.ts');
  const filter: DeadLetterFilter = {};
  if (options.service !== undefined) filter.service = options.service;
  if (options.operation !== undefined) filter.operation = options.operation;
  if (options.tenant !== undefined) filter.tenant = options.tenant;
  if (options.errorType !== undefined) filter.errorType = options.errorType as DeadLetterFilter['errorType'];
  if (options.status !== undefined) filter.status = parseCount(options.status, '--status', { min: 100 });
  if (options.since !== undefined) filter.since = parseTime(options.since, '--since');
  if (options.until !== undefined) filter.until = parseTime(options.until, '--until');
  return filter;
}

/** `50`, `50/s`, `600/m`, `3600/h` → jobs per second. */
function parseRate(value: string): number {
  const match = /^(\d+(?:\.\d+)?)(?:\/(s|m|h))?$/.exec(value.trim());
  const per = { s: 1, m: 60, h: 3600 }[(match?.[2] ?? 's') as 's' | 'm' | 'h'];
  const rate = match === null ? NaN : Number(match[1]) / per;
  if (!(rate > 0)) throw new UsageError(`--rate: "${value}" is not a rate (examples: 50, 50/s, 600/m)`);
  return rate;
}

export function registerDlqCommand(program: Command, io: CliIo = processIo()): void {
  const dlq = program
    .command('dlq')
    .description('dead letters: list, show, replay, purge, reindex')
    .addHelpText(
      'after',
      `
Examples:
  $ ferry dlq list --service crm --since 2h
  $ ferry dlq show dl-crm.42.1767225600000
  $ ferry dlq replay --service crm --since 2h --dry-run
  $ ferry dlq replay --service crm --since 2h --rate 20/s
  $ ferry dlq purge --older-than 30d --yes`,
    );

  withFilters(dlq.command('list'))
    .description('dead letters, newest first, a page at a time')
    .option('--limit <n>', 'page size, 1 to 500', '50')
    .option('--cursor <cursor>', 'the next page: the cursor the previous page printed')
    .option('--json', 'print the page as JSON ({ items, nextCursor })')
    .addHelpText(
      'after',
      `${FILTER_HELP}\n\nExamples:\n  $ ferry dlq list --service crm --error-type ServerError --since 2h\n  $ ferry dlq list --status 422 --json | jq -r '.items[].id'\n`,
    )
    .action(async (options: FilterOptions & { limit: string; cursor?: string; json?: boolean }) => {
      const [{ withOps, parseCount, formatTable, isoTime }, { DeadLetterReader }] = await Promise.all([
        import('../ops-session.ts'),
        import('../../dead-letter/reader.ts'),
      ]);
      const filter = await toFilter(options);
      const limit = parseCount(options.limit, '--limit');
      const page = await withOps((deps) =>
        new DeadLetterReader(deps).list({
          ...filter,
          limit,
          ...(options.cursor === undefined ? {} : { cursor: options.cursor }),
        }),
      );
      if (options.json === true) {
        printJson({ items: page.items, nextCursor: page.nextCursor }, io.stdout);
        return;
      }
      const rows = page.items.map((item) => [
        item.id,
        isoTime(item.deadLetteredAt),
        `${item.service}/${item.operation}`,
        item.tenant ?? '-',
        item.finalError.type,
        item.finalError.status === undefined ? '-' : String(item.finalError.status),
        String(item.attempts.filter((a) => a.outcome === 'failed').length),
        // The follow-up's service and rule; its job id (long, derived from the dead letter's) is in show.
        item.followUp === undefined ? '-' : `${item.followUp.service} (rule ${item.followUp.rule})`,
        oneLine(item.finalError.message, 60),
      ]);
      const table = formatTable([
        [
          'ID',
          'DEAD-LETTERED',
          'SERVICE/OPERATION',
          'TENANT',
          'ERROR',
          'STATUS',
          'ATTEMPTS',
          'FOLLOW-UP',
          'MESSAGE',
        ],
        ...rows,
      ]);
      io.stdout.write(
        `${page.items.length === 0 ? 'no dead letters match' : table}\n` +
          (page.nextCursor === null ? '' : `more: ferry dlq list … --cursor ${page.nextCursor}\n`),
      );
    });

  dlq
    .command('show <id>')
    .description('one dead letter: its job, every attempt as a timeline, the final error')
    .option('--json', 'print the whole dead letter as JSON')
    .option(
      '--reveal',
      'open a sealed (sensitive) input and metadata with FERRY_SECRETS_KEY; writes an audit line to stderr',
    )
    .addHelpText(
      'after',
      '\nExamples:\n  $ ferry dlq show dl-crm.42.1767225600000\n  $ ferry dlq show dl-crm.42.1767225600000 --json | jq .attempts\n  $ FERRY_OPERATOR=alice ferry dlq show dl-crm.42.1767225600000 --reveal\n',
    )
    .action(async (id: string, options: { json?: boolean; reveal?: boolean }) => {
      const [{ withOps }, { DeadLetterReader }] = await Promise.all([
        import('../ops-session.ts'),
        import('../../dead-letter/reader.ts'),
      ]);
      if (options.reveal === true) {
        const detail = await revealDeadLetter(io, id);
        if (detail === undefined) return;
        if (options.json === true) printJson(detail, io.stdout);
        else io.stdout.write(`${await formatDetail(detail)}\n`);
        return;
      }
      const detail = await withOps((deps) => new DeadLetterReader(deps).show(id));
      if (detail === undefined) {
        io.stderr.write(`NotFound: no dead letter with id "${id}"\n`);
        io.exitCode = EXIT_FAILURE;
        return;
      }
      if (options.json === true) printJson(detail, io.stdout);
      else io.stdout.write(`${await formatDetail(detail)}\n`);
    });

  withFilters(dlq.command('replay [ids...]'))
    .description('put dead letters back on their service queues (fresh attempts, same idempotency key)')
    .option('--ids <ids>', 'only these dead letters, comma-separated (or give them as arguments)')
    .option('--all', 'every dead letter (required when no ids and no filter are given)')
    .option('--yes', 'with --all: do not ask (required when stdin is not a terminal)')
    .option('--dry-run', 'print how many and which would go; change nothing')
    .option('--rate <rate>', 'jobs per second at most: 20, 20/s, 600/m (default: as fast as Redis allows)')
    .option('--only-when-closed', 'skip dead letters of services whose breaker is open')
    .option('--limit <n>', 'replay at most this many')
    .option('--json', 'JSON lines (progress, then the result) even on a terminal')
    .addHelpText(
      'after',
      `${FILTER_HELP}

Without ids or a filter, replay refuses (exit 2) unless --all is given; --all asks first on a terminal and
needs --yes when stdin is not one. --dry-run needs neither and reports "wouldReplay".

Progress: a bar with count and ETA on a terminal; JSON lines on stdout otherwise
({"done":…,"total":…,"rate":…,"etaMs":…}), then one line {"result":{…}}.
Ctrl-C stops cleanly (jobs in flight finish); run the same command again to continue: no dead letter is
replayed twice and none is lost. Exit codes: 0 all matched went (or were skipped by --only-when-closed),
1 some failed or named ids were not found, 2 usage, 130 interrupted.

Examples:
  $ ferry dlq replay --service crm --since 2h --dry-run
  $ ferry dlq replay --service crm --since 2h --rate 20/s --only-when-closed
  $ ferry dlq replay dl-crm.42.1767225600000 dl-crm.43.1767225600000
  $ ferry dlq replay --all --rate 50/s
  $ ferry dlq replay --error-type ServerError --json | tail -1 | jq .result`,
    )
    .action(
      async (
        args: string[],
        options: FilterOptions & {
          ids?: string;
          all?: boolean;
          yes?: boolean;
          dryRun?: boolean;
          rate?: string;
          onlyWhenClosed?: boolean;
          limit?: string;
          json?: boolean;
        },
      ) => {
        const [
          { withOps, parseCount },
          { replayDeadLetters, replayDeps },
          { createProgress, abortOnInterrupt },
        ] = await Promise.all([
          import('../ops-session.ts'),
          import('../../ops/dead-letter-replay.ts'),
          import('../progress.ts'),
        ]);
        const filter = await toFilter(options);
        const ids = [...args, ...(options.ids?.split(',') ?? [])].map((id) => id.trim()).filter(Boolean);
        const ratePerSecond = options.rate === undefined ? undefined : parseRate(options.rate);
        const limit = options.limit === undefined ? undefined : parseCount(options.limit, '--limit');
        const dryRun = options.dryRun === true;
        const everything = ids.length === 0 && Object.keys(filter).length === 0;
        if (everything && !dryRun && options.all !== true)
          throw new UsageError(
            'dlq replay: give ids, a filter, or --all to replay every dead letter (--dry-run to see them first)',
          );
        const ask = everything && !dryRun && options.yes !== true;
        if (ask) refuseOffTerminal(io, 'dlq replay --all replays every dead letter');
        const controller = new AbortController();
        const dispose = abortOnInterrupt(controller, 'replay stopping', io.stderr);
        let progress: ReturnType<typeof createProgress> | undefined;
        let missing = 0;
        try {
          const report = await withOps(async (deps) => {
            const target = replayDeps(deps);
            if (ask) {
              const { matched } = await replayDeadLetters(target, {
                dryRun: true,
                ...(limit === undefined ? {} : { limit }),
              });
              if (matched > 0 && !(await confirm(io, `Replay all ${matched} dead letter(s)? [y/N] `)))
                throw new UsageError('not confirmed: nothing replayed');
            }
            progress = dryRun
              ? undefined
              : createProgress({ stream: io.stdout, json: options.json === true });
            return replayDeadLetters(target, {
              ...(Object.keys(filter).length > 0 ? { filter } : {}),
              ...(ids.length > 0 ? { ids } : {}),
              dryRun,
              ...(ratePerSecond === undefined ? {} : { ratePerSecond }),
              onlyWhenClosed: options.onlyWhenClosed === true,
              ...(limit === undefined ? {} : { limit }),
              signal: controller.signal,
              onProgress: (p) => {
                if (p.last?.outcome === 'skipped' && p.last.reason !== 'breaker-open') missing++;
                progress?.update({
                  done: p.done,
                  ...(p.matchedIsTotal ? { total: p.matched } : {}),
                  extra: { replayed: p.replayed, skipped: p.skipped, failed: p.failed },
                });
              },
            });
          });
          const { items, ...summary } = report;
          const done = report.replayed + report.skipped + report.failed;
          progress?.finish({
            done,
            total: report.interrupted ? report.matched : done,
            extra: { replayed: report.replayed, skipped: report.skipped, failed: report.failed },
          });
          const json = options.json === true || io.stdout.isTTY !== true;
          if (dryRun) {
            // Nothing was replayed: the dry run's count is what would go.
            const { replayed: wouldReplay, ...rest } = report;
            if (options.json === true) printJson({ ...rest, wouldReplay }, io.stdout);
            else printDryRun(io, report.replayed, items, report.itemsOmitted);
          } else if (json) {
            io.stdout.write(`${JSON.stringify({ result: { ...summary, items } })}\n`);
          } else {
            io.stdout.write(
              `${report.interrupted ? 'interrupted' : 'done'}: ${report.replayed} replayed, ${report.skipped} skipped, ${report.failed} failed` +
                ` in ${(report.elapsedMs / 1000).toFixed(1)}s${report.interrupted ? ' (run the same command again to continue)' : ''}\n`,
            );
            for (const item of items
              .filter((i) => i.outcome === 'failed' || i.outcome === 'skipped')
              .slice(0, 20))
              io.stdout.write(`  ${item.outcome}: ${item.id} ${item.reason ?? ''}\n`);
          }
          if (report.interrupted) io.exitCode = EXIT_INTERRUPTED;
          else if (report.failed > 0 || missing > 0) io.exitCode = EXIT_FAILURE;
        } finally {
          dispose();
        }
      },
    );

  withFilters(dlq.command('purge'))
    .description('delete dead letters for good (asks first unless --yes)')
    .option('--older-than <duration>', 'only dead letters written longer ago than this (e.g. 7d, 12h)')
    .option('--dry-run', 'count what would be deleted; delete nothing')
    .option('--yes', 'do not ask (required when stdin is not a terminal)')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `${FILTER_HELP}\n\nExamples:\n  $ ferry dlq purge --older-than 30d\n  $ ferry dlq purge --service crm --error-type ClientError --yes --json\n  $ ferry dlq purge --older-than 7d --dry-run\n`,
    )
    .action(
      async (
        options: FilterOptions & { olderThan?: string; dryRun?: boolean; yes?: boolean; json?: boolean },
      ) => {
        const [{ withOps, parseDuration }, { purgeDeadLetters }, { createProgress, abortOnInterrupt }] =
          await Promise.all([
            import('../ops-session.ts'),
            import('../../ops/dead-letter-purge.ts'),
            import('../progress.ts'),
          ]);
        const filter = await toFilter(options);
        const olderThanMs =
          options.olderThan === undefined ? undefined : parseDuration(options.olderThan, '--older-than');
        const dryRun = options.dryRun === true;
        if (!dryRun && options.yes !== true) refuseOffTerminal(io, 'dlq purge deletes for good');
        const base = {
          ...(Object.keys(filter).length > 0 ? { filter } : {}),
          ...(olderThanMs === undefined ? {} : { olderThanMs }),
        };
        const controller = new AbortController();
        const dispose = abortOnInterrupt(controller, 'purge stopping', io.stderr);
        try {
          const report = await withOps(async (deps) => {
            if (!dryRun && options.yes !== true) {
              const { matched } = await purgeDeadLetters(deps, { ...base, dryRun: true });
              if (matched === 0)
                return { dryRun: false, matched: 0, deleted: 0, interrupted: false, elapsedMs: 0 };
              if (!(await confirm(io, `Delete ${matched} dead letter(s) for good? [y/N] `))) {
                throw new UsageError('not confirmed: nothing deleted');
              }
            }
            const progress =
              dryRun || options.json === true ? undefined : createProgress({ stream: io.stderr });
            const result = await purgeDeadLetters(deps, {
              ...base,
              dryRun,
              signal: controller.signal,
              onProgress: (p) =>
                progress?.update({ done: p.done, ...(p.matchedIsTotal ? { total: p.matched } : {}) }),
            });
            if (result.matched > 0) progress?.finish({ done: result.matched, total: result.matched });
            return result;
          });
          if (options.json === true) printJson(report, io.stdout);
          else
            io.stdout.write(
              report.dryRun
                ? `would delete ${report.matched} dead letter(s)\n`
                : `deleted ${report.deleted} dead letter(s)${report.interrupted ? ' (interrupted: run again to delete the rest)' : ''}\n`,
            );
          if (report.interrupted) io.exitCode = EXIT_INTERRUPTED;
        } finally {
          dispose();
        }
      },
    );

  dlq
    .command('reindex')
    .description('rebuild the dead-letter index from the queue (after raw writes or removals); safe any time')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nExamples:\n  $ ferry dlq reindex\n  $ ferry dlq reindex --json | jq .pruned\n')
    .action(async (options: { json?: boolean }) => {
      const [{ withOps }, { reindexDeadLetters }] = await Promise.all([
        import('../ops-session.ts'),
        import('../../ops/dead-letter-reindex.ts'),
      ]);
      const result = await withOps((deps) => reindexDeadLetters(deps));
      if (options.json === true) printJson(result, io.stdout);
      else
        io.stdout.write(
          `examined ${result.examined}, indexed ${result.indexed}, pruned ${result.pruned}, skipped ${result.skipped.length} (not dead-letter records)\n`,
        );
    });
}

function printDryRun(
  io: CliIo,
  count: number,
  items: readonly { id: string; service: string; operation: string; outcome: string; reason?: string }[],
  omitted: number,
): void {
  const lines = [`would replay ${count} dead letter(s):`];
  for (const item of items) {
    lines.push(
      item.outcome === 'would-replay'
        ? `  ${item.id}  ${item.service}/${item.operation}`
        : `  (skipped: ${item.reason ?? item.outcome}) ${item.id}`,
    );
  }
  if (omitted > 0) lines.push(`  … and ${omitted} more (use --json, or narrow the filters)`);
  io.stdout.write(`${lines.join('\n')}\n`);
}

async function formatDetail(d: DeadLetterDetail): Promise<string> {
  const [{ formatTable, isoTime }, { formatDuration }] = await Promise.all([
    import('../ops-session.ts'),
    import('../progress.ts'),
  ]);
  const head = [
    `${d.id}  ${d.service}/${d.operation}`,
    `tenant: ${d.tenant ?? '-'}   idempotency key: ${d.idempotencyKey ?? '-'}   source job: ${d.sourceQueue}/${d.sourceJobId}`,
    `enqueued ${isoTime(d.enqueuedAt)}, dead-lettered ${isoTime(d.deadLetteredAt)} (${formatDuration(d.deadLetteredAt - d.enqueuedAt)} later)`,
    ...(d.origin === undefined ? [] : [`origin: ${describeOrigin(d.origin)}`]),
    '',
    'attempts:',
  ];
  const rows = d.attempts.map((a) => [
    String(a.attempt),
    isoTime(a.at),
    formatDuration(a.durationMs),
    a.outcome,
    a.type ?? '-',
    a.status === undefined ? '-' : String(a.status),
    a.retryDelayMs === undefined
      ? '-'
      : `${a.outcome === 'held' ? 'held' : 'retry in'} ${formatDuration(a.retryDelayMs)}`,
    oneLine(a.message, 80),
  ]);
  const final = d.finalError;
  return [
    ...head,
    formatTable([['#', 'TIME', 'DURATION', 'OUTCOME', 'TYPE', 'STATUS', 'THEN', 'MESSAGE'], ...rows]),
    '',
    `final error: ${final.type}${final.status === undefined ? '' : ` (${final.status})`}: ${final.message}`,
    ...(d.followUp === undefined
      ? []
      : [`follow-up: ${d.followUp.service}/${d.followUp.jobId} (onFailure rule ${d.followUp.rule})`]),
    ...(d.followUpError === undefined ? [] : [`follow-up: none: ${oneLine(d.followUpError, 200)}`]),
    `input: ${oneLine(JSON.stringify(d.input) ?? 'undefined', 200)}`,
    ...(d.sealed === true
      ? ['sealed: input and metadata are sealed (sensitive); --reveal opens them with FERRY_SECRETS_KEY']
      : []),
  ].join('\n');
}

/**
 * `dlq show --reveal`: the dead letter with its sealed input and metadata opened, or undefined (one line on
 * stderr, exit code set). The key is checked before Redis is read. Every reveal of a sealed dead letter writes
 * one audit line (pino JSON, stderr): who (FERRY_OPERATOR, the OS user), which dead letter, when, the
 * outcome; never the plaintext.
 */
async function revealDeadLetter(io: CliIo, id: string): Promise<DeadLetterDetail | undefined> {
  const [{ withOps }, { DeadLetterReader }, { readEnvWithRedis }, { loadKeyring }, { openJobContent }] =
    await Promise.all([
      import('../ops-session.ts'),
      import('../../dead-letter/reader.ts'),
      import('../runtime.ts'),
      import('../../secrets/setup.ts'),
      import('../../core/sealed-data.ts'),
    ]);
  const env = readEnvWithRedis();
  const keyring = await loadKeyring(env);
  if (keyring === undefined) {
    io.stderr.write(
      'ConfigurationError: --reveal opens sealed data with FERRY_SECRETS_KEY (or FERRY_SECRETS_KEY_FILE), which is not set\n',
    );
    io.exitCode = EXIT_FAILURE;
    return undefined;
  }
  const found = await withOps((deps) => new DeadLetterReader(deps).showSealed(id));
  if (found === undefined) {
    io.stderr.write(`NotFound: no dead letter with id "${id}"\n`);
    io.exitCode = EXIT_FAILURE;
    return undefined;
  }
  const { detail, sealed } = found;
  if (sealed === undefined) return detail;
  const audit = await auditLogger(io);
  const who = { operator: env.FERRY_OPERATOR ?? null, osUser: osUser() };
  const what = {
    deadLetterId: id,
    service: detail.service,
    operation: detail.operation,
    tenant: detail.tenant ?? null,
  };
  try {
    const content = openJobContent(
      keyring,
      { service: detail.service, tenant: detail.tenant },
      sealed,
      Number.POSITIVE_INFINITY,
    );
    audit.info({ audit: 'dlq.reveal', outcome: 'revealed', ...who, ...what }, 'sealed dead letter revealed');
    const { sealed: _flag, ...rest } = detail;
    return {
      ...rest,
      input: content.input,
      ...(content.metadata === undefined ? {} : { metadata: content.metadata }),
    };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    audit.warn(
      { audit: 'dlq.reveal', outcome: 'refused', reason: message, ...who, ...what },
      'reveal refused',
    );
    const type = (error as { type?: string }).type ?? 'Error';
    io.stderr.write(`${type}: ${message}\n`);
    io.exitCode = EXIT_FAILURE;
    return undefined;
  }
}

async function auditLogger(io: CliIo): Promise<{
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
}> {
  const { createLogger } = await import('../../core/logger.ts');
  return createLogger({ name: 'ferry-audit', destination: io.stderr });
}

function osUser(): string | null {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER ?? null;
  }
}

/** `onFailure of crm/42 (dead letter dl-crm.42.1767225600000, rule 0), depth 1`: what made the job. */
function describeOrigin(origin: JobOrigin): string {
  const details = [
    ...(origin.deadLetterId === undefined ? [] : [`dead letter ${origin.deadLetterId}`]),
    ...(origin.rule === undefined ? [] : [`rule ${origin.rule}`]),
  ];
  const from =
    origin.source !== undefined
      ? ` of ${origin.source.service}/${origin.source.jobId}`
      : origin.schedule !== undefined
        ? ` ${origin.schedule}`
        : '';
  return `${origin.kind}${from}${details.length === 0 ? '' : ` (${details.join(', ')})`}, depth ${origin.depth}`;
}

function oneLine(text: string, max: number): string {
  const line = text.replace(/\s+/g, ' ');
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

/** Without --yes, a command that asks first refuses (exit 2, one line) when stdin is not a terminal to ask on. */
function refuseOffTerminal(io: CliIo, what: string): void {
  if (io.stdin.isTTY !== true)
    throw new UsageError(`${what}: pass --yes to confirm (stdin is not a terminal to ask on)`);
}

async function confirm(io: CliIo, question: string): Promise<boolean> {
  const { createInterface } = await import('node:readline/promises');
  const rl = createInterface({ input: io.stdin, output: io.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(question)).trim());
  } finally {
    rl.close();
  }
}
