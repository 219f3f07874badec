/** Output and exit codes shared by every command: 0 ok, 1 failure, 2 usage. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** One clear line on stderr, `type: message`; the stack only with --verbose. */
export function printError(error: unknown, verbose = false): void {
  if (error instanceof Error) {
    const type = (error as { type?: unknown }).type;
    const label = typeof type === 'string' ? type : error.name === 'Error' ? 'error' : error.name;
    process.stderr.write(`${label}: ${error.message}\n`);
    if (verbose && error.stack !== undefined) process.stderr.write(`${error.stack}\n`);
  } else {
    process.stderr.write(`error: ${String(error)}\n`);
  }
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
