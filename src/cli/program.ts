/**
 * The `ferry` program: every command, wired to an injected CliIo (io.ts), and one run of it from arguments to
 * exit code. The bin (main.ts) runs it with the process's stdio; tests run it in-process with captured streams.
 */
import { Command, CommanderError } from 'commander';

import { isFerryError } from '../core/errors.ts';
import { registerApiCommand } from './commands/api.ts';
import { registerBreakersCommand } from './commands/breakers.ts';
import { registerConfigCommand } from './commands/config.ts';
import { registerDevCommand } from './commands/dev.ts';
import { registerDlqCommand } from './commands/dlq.ts';
import { registerEnqueueCommand } from './commands/enqueue.ts';
import { registerOpenapiCommand } from './commands/openapi.ts';
import { registerQueuesCommand } from './commands/queues.ts';
import { registerRetryPlanCommand } from './commands/retry-plan.ts';
import { registerSchedulesCommand } from './commands/schedules.ts';
import { registerSecretsCommand } from './commands/secrets.ts';
import { registerStatusCommand } from './commands/status.ts';
import { registerWorkerCommand } from './commands/worker.ts';
import type { CliIo } from './io.ts';
import { EXIT_FAILURE, EXIT_USAGE, printError, UsageError } from './output.ts';
import { StartupStopped } from './startup.ts';

/**
 * The program for `args` (the arguments after `ferry`). Commander writes its help, usage errors and version to
 * `io` and throws instead of exiting (runCli turns that into the exit code).
 */
export function buildProgram(args: readonly string[], io: CliIo): Command {
  const program = new Command('ferry')
    .description('Ferry: queue-based integration worker')
    .addHelpText(
      'after',
      `
Examples:
  $ ferry dev                                   # everything locally, with a private redis-server
  $ REDIS_URL=redis://127.0.0.1:6379 ferry worker --services crm
  $ REDIS_URL=redis://127.0.0.1:6379 FERRY_API_TOKENS_FILE=./tokens.yaml ferry api
  $ ferry enqueue crm createContact --input '{"email":"ada@example.com"}' --wait
  $ ferry config check ./ferry.services.yaml
  $ ferry secrets stage crm_key < new-key.txt     # then secrets test, promote
  $ ferry status                                 # per service: queues, holds, breakers, dead letters
  $ ferry dlq replay --service crm --since 2h --dry-run
  $ ferry breakers open crm --for 30m --reason "partner maintenance"

Environment: REDIS_URL (or REDIS_CLUSTER_NODES or REDIS_SENTINELS), FERRY_SERVICES, FERRY_PREFIX, LOG_LEVEL (see README and docs/configuration.md).`,
    )
    .option('--verbose', 'print stack traces with errors')
    // Before any command is added: subcommands inherit both settings.
    .configureOutput({
      writeOut: (text) => io.stdout.write(text),
      writeErr: (text) => io.stderr.write(text),
    })
    .exitOverride()
    .showHelpAfterError();

  registerDevCommand(program, io);
  registerWorkerCommand(program);
  registerApiCommand(program);
  registerEnqueueCommand(program, io);
  registerConfigCommand(program, io);
  registerSecretsCommand(program, io);
  registerStatusCommand(program, io);
  registerDlqCommand(program, io);
  registerBreakersCommand(program, io);
  registerQueuesCommand(program, io);
  registerRetryPlanCommand(program, io);
  registerSchedulesCommand(program, io);
  registerOpenapiCommand(program, io);

  // commander takes a root option anywhere in the line, so a root --version would swallow `ferry secrets delete
  // crm_key --version 3` (print 0.1.0, delete nothing, exit 0). Ferry's own --version is meant only first.
  const first = args[0];
  if (first === undefined || ['-V', '--version', '-h', '--help'].includes(first)) program.version('0.1.0');
  return program;
}

/**
 * Runs `ferry <args>` to its end and returns the exit code (also left in io.exitCode): 0 ok, 1 failure, 2
 * usage. A failed command ends with io.exit() (for the process: exit now, whatever it left open).
 */
export async function runCli(args: readonly string[], io: CliIo): Promise<number> {
  const program = buildProgram(args, io);
  try {
    await program.parseAsync(args, { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version end here with exit code 0. Nothing is open yet: the process ends on its own.
      io.exitCode = error.exitCode === 0 ? 0 : EXIT_USAGE;
    } else {
      failed(error);
    }
  }
  return io.exitCode ?? 0;

  function failed(error: unknown): void {
    if (error instanceof StartupStopped) {
      // SIGTERM/SIGINT while a long-running command was still starting (waiting for Redis): nothing was in flight.
      io.exitCode = 0;
    } else {
      printError(error, program.opts<{ verbose?: boolean }>().verbose === true, io.stderr);
      // A mistake in what the caller typed (arguments, input) is a usage error; anything else a failure.
      io.exitCode =
        error instanceof UsageError || (isFerryError(error) && error.type === 'ValidationError')
          ? EXIT_USAGE
          : EXIT_FAILURE;
    }
    // The error line is written (stderr is synchronous) and pino flushes its buffered lines on exit. Whatever a
    // failed command left open (a Redis client reconnecting, a server, a child process) must not keep the
    // process alive: the commands close what they opened, and this makes sure of it.
    io.exit();
  }
}
