import { readFile } from 'node:fs/promises';
import { text } from 'node:stream/consumers';

import type { Command } from 'commander';

import type { EnqueueRequest, JobRef } from '../../core/job.ts';
import type { JobView } from '../../producer/producer.ts';
import { type CliIo, processIo } from '../io.ts';
import { EXIT_FAILURE, printJson, UsageError } from '../output.ts';

interface EnqueueOptions {
  input?: string;
  tenant?: string;
  idempotencyKey?: string;
  delayMs?: string;
  priority?: string;
  metadata?: string;
  wait?: boolean;
  follow?: boolean;
  timeoutMs?: string;
  json?: boolean;
}

export function registerEnqueueCommand(program: Command, io: CliIo = processIo()): void {
  program
    .command('enqueue <service> <operation>')
    .description('enqueue one job (validated against the services file)')
    .option('--input <json>', 'job input: JSON, @file, or - for stdin')
    .option('--tenant <tenant>', 'tenant (selects tenant-scoped secrets)')
    .option('--idempotency-key <key>', 'a repeat with the same key returns the first job')
    .option('--delay-ms <ms>', 'run no sooner than this many ms from now')
    .option('--priority <n>', 'BullMQ priority: 0 (none, the default) or 1 (highest) to 2097152 (lowest)')
    .option('--metadata <json>', 'job metadata: a JSON object or @file (at most FERRY_MAX_METADATA_BYTES)')
    .option('--wait', 'wait until the job completes or is dead-lettered; exit 1 if dead-lettered')
    .option(
      '--follow',
      'with --wait: follow the chain (then steps, fallback routes) and wait for its last job',
    )
    .option(
      '--timeout-ms <ms>',
      'with --wait: give up after this long (the whole chain with --follow)',
      '60000',
    )
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `\nExamples:\n  $ ferry enqueue demo echo --input '{"hello":"world"}' --wait\n  $ ferry enqueue crm createContact --input @contact.json --idempotency-key order-42 --json\n  $ echo '{"id":7}' | ferry enqueue crm getContact --input -\n  $ ferry enqueue crm createContact --input @contact.json --wait --follow --json | jq .chain\n  $ ferry enqueue crm createContact --input @contact.json --priority 1 --metadata '{"source":"backfill"}'\n`,
    )
    .action(async (service: string, operation: string, options: EnqueueOptions) => {
      const [{ loadServicesFile }, { Producer }, { connectWhenReady, readEnvWithRedis }] = await Promise.all([
        import('../../core/services/load.ts'),
        import('../../producer/producer.ts'),
        import('../runtime.ts'),
      ]);
      if (options.follow === true && options.wait !== true)
        throw new UsageError('--follow: only with --wait (it waits for the end of the chain)');
      const env = readEnvWithRedis();
      const config = await loadServicesFile(env.FERRY_SERVICES);
      const request: EnqueueRequest = { service, operation };
      if (options.input !== undefined) request.input = await readJsonArgument(io, options.input, '--input');
      if (options.metadata !== undefined)
        request.metadata = (await readJsonArgument(io, options.metadata, '--metadata', false)) as Record<
          string,
          unknown
        >;
      if (options.priority !== undefined) {
        // Digits only (Number('') is 0, Number('1e3') is 1000); the bounds are the producer's, as for the API.
        if (!/^\d+$/.test(options.priority.trim()))
          throw new UsageError(`--priority: "${options.priority}" is not a whole number`);
        request.priority = Number(options.priority);
      }
      if (options.tenant !== undefined) request.tenant = options.tenant;
      if (options.idempotencyKey !== undefined) request.idempotencyKey = options.idempotencyKey;
      if (options.delayMs !== undefined) request.delayMs = Number(options.delayMs);
      // A one-shot command: a Redis that refuses the connection ends it at once, with one line.
      const connection = await connectWhenReady(env, 'producer', 'ferry-cli', { waitMs: 0 });
      // A sensitive operation's job is sealed with FERRY_SECRETS_KEY (the producer refuses it without one).
      const keyring = await (await import('../../secrets/setup.ts')).loadKeyring(env);
      const producer = new Producer({
        connection,
        prefix: env.FERRY_PREFIX,
        services: config.services,
        // The API's limit: a job the CLI writes is one the API would have taken.
        maxMetadataBytes: env.FERRY_MAX_METADATA_BYTES,
        ...(keyring === undefined ? {} : { keyring }),
      });
      try {
        const result = await producer.enqueue(request);
        if (options.wait !== true) {
          if (options.json === true) printJson(result, io.stdout);
          else
            io.stdout.write(
              `${result.created ? 'enqueued' : 'already enqueued (idempotency key)'}: ${service}/${result.id}\n`,
            );
          return;
        }
        const timeoutMs = Number(options.timeoutMs);
        const view: JobView & { chain?: JobRef[] } =
          options.follow === true
            ? await producer.waitFor(service, result.id, { timeoutMs, follow: true })
            : await producer.waitFor(service, result.id, { timeoutMs });
        if (options.json === true) printJson(view, io.stdout);
        else {
          // With --follow, the jobs before the last one first: one line each.
          if (view.chain !== undefined && view.chain.length > 1)
            io.stdout.write(
              `chain: ${view.chain.map((ref) => `${ref.service}/${ref.jobId}`).join(' -> ')}\n`,
            );
          if (view.state === 'completed')
            io.stdout.write(
              `completed: ${view.service}/${view.id} status ${view.result?.status} after ${view.attempts} attempt(s)\n` +
                `${JSON.stringify(view.result?.body ?? null, null, 2)}\n`,
            );
          else
            io.stdout.write(
              `dead-lettered: ${view.service}/${view.id} ${view.lastError?.type}: ${view.lastError?.message}\n` +
                `dead letter: ${view.deadLetterId ?? '(being written)'}\n`,
            );
        }
        if (view.state !== 'completed') io.exitCode = EXIT_FAILURE;
      } finally {
        await producer.close();
        // The producer does not own a connection it was given: without this the process never exits.
        connection.disconnect();
      }
    });
}

/** JSON, `@file` or (when `stdin`) `-`; a file that cannot be read is a usage error in one line. */
async function readJsonArgument(io: CliIo, value: string, option: string, stdin = true): Promise<unknown> {
  const raw =
    stdin && value === '-'
      ? await text(io.stdin)
      : value.startsWith('@')
        ? await readArgumentFile(value.slice(1), option)
        : value;
  try {
    return JSON.parse(raw) as unknown;
  } catch (error) {
    throw new UsageError(`${option}: not valid JSON (${(error as Error).message})`);
  }
}

const READ_ERRORS: Record<string, string> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EISDIR: 'a directory, not a file',
  ENAMETOOLONG: 'name too long',
};

async function readArgumentFile(file: string, option: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    const why = typeof code === 'string' ? (READ_ERRORS[code] ?? code) : 'unreadable';
    throw new UsageError(`${option}: cannot read ${JSON.stringify(file)} (${why})`);
  }
}
