/**
 * What a command reads and writes, passed in rather than taken from `process`: stdin, stdout, stderr, the exit
 * code and the hard exit. The bin (main.ts) passes the process's own; tests pass captured streams and run a
 * command in-process (test/helpers/cli.ts). Environment variables are still read from process.env.
 */

/** A stream a command writes to; a TTY says so (`isTTY`, `columns`) like process.stdout does. */
export type CliOutput = NodeJS.WritableStream & { isTTY?: boolean; columns?: number };

/** Where a command reads piped values and answers from; a terminal says so with `isTTY` like process.stdin. */
export type CliInput = NodeJS.ReadableStream & {
  isTTY?: boolean;
  setRawMode?: (mode: boolean) => unknown;
};

export interface CliIo {
  readonly stdin: CliInput;
  readonly stdout: CliOutput;
  readonly stderr: CliOutput;
  /** The code the command ends with (0 ok, 1 failure, 2 usage…); like process.exitCode, set by the command. */
  exitCode: number | undefined;
  /**
   * Ends the run now with the exit code set: for the process, `process.exit` (whatever a failed command left
   * open must not keep it alive); in-process, the run simply returns.
   */
  exit(): void;
}

/** The process's own stdio, exit code and exit: what `ferry` uses. */
export function processIo(): CliIo {
  return {
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
    get exitCode() {
      const code = process.exitCode;
      return code === undefined ? undefined : Number(code);
    },
    set exitCode(code: number | undefined) {
      process.exitCode = code;
    },
    exit() {
      process.exit();
    },
  };
}
