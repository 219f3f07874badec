/** Output and exit codes shared by every command: 0 ok, 1 failure, 2 usage. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** One clear line on stderr, `type: message`; the stack only with --verbose. */
export function printError(
  error: unknown,
  verbose = false,
  stderr: NodeJS.WritableStream = process.stderr,
): void {
  if (error instanceof Error) {
    const type = (error as { type?: unknown }).type;
    const label = typeof type === 'string' ? type : error.name === 'Error' ? 'error' : error.name;
    stderr.write(`${label}: ${oneLine(error)}\n`);
    // The stack's frames only: its first line(s) repeat the error line just written.
    const frames = verbose ? (error.stack ?? '').split('\n').filter((line) => /^\s+at /.test(line)) : [];
    if (frames.length > 0) stderr.write(`${frames.join('\n')}\n`);
  } else {
    stderr.write(`error: ${String(error)}\n`);
  }
}

export function printJson(value: unknown, stdout: NodeJS.WritableStream = process.stdout): void {
  stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/**
 * A services file with several problems has one per line in its message: on a command's error path the first
 * of them, with the file and how to see them all (`ferry config check` prints every one).
 */
function oneLine(error: Error): string {
  const { issues, file } = error as { issues?: unknown; file?: unknown };
  if (error.name !== 'ServicesFileError' || !Array.isArray(issues) || issues.length === 0)
    return error.message;
  const first = issues[0] as { path: string; message: string };
  const where =
    typeof file !== 'string' || first.path === file || first.path.startsWith(`${file}:`)
      ? first.path
      : `${file}: ${first.path}`;
  const more =
    issues.length === 1
      ? ''
      : ` (and ${issues.length - 1} more problem(s): ferry config check${typeof file === 'string' ? ` ${file}` : ''} lists them)`;
  return `${where}: ${first.message}${more}`.replaceAll(/\s*\n\s*/g, ' ');
}
