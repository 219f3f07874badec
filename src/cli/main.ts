#!/usr/bin/env node
import { processIo } from './io.ts';
import { runCli } from './program.ts';

// `ferry ... | head -1` closes our stdout early: that is the reader's choice, not an error worth a stack trace.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw error;
});

await runCli(process.argv.slice(2), processIo());
