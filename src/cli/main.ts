#!/usr/bin/env node
import { Command, CommanderError } from 'commander';

import { isFerryError } from '../core/errors.ts';
import { registerConfigCommand } from './commands/config.ts';
import { registerDevCommand } from './commands/dev.ts';
import { registerEnqueueCommand } from './commands/enqueue.ts';
import { registerWorkerCommand } from './commands/worker.ts';
import { EXIT_FAILURE, EXIT_USAGE, printError, UsageError } from './output.ts';

const program = new Command('ferry')
  .description('Ferry: queue-based integration worker')
  .version('0.1.0')
  .option('--verbose', 'print stack traces with errors')
  .exitOverride()
  .showHelpAfterError();

registerDevCommand(program);
registerWorkerCommand(program);
registerEnqueueCommand(program);
registerConfigCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    // --help and --version end here with exit code 0.
    process.exitCode = error.exitCode === 0 ? 0 : EXIT_USAGE;
  } else {
    printError(error, program.opts<{ verbose?: boolean }>().verbose === true);
    // A mistake in what the caller typed (arguments, input) is a usage error; anything else a failure.
    process.exitCode =
      error instanceof UsageError || (isFerryError(error) && error.type === 'ValidationError')
        ? EXIT_USAGE
        : EXIT_FAILURE;
  }
}
