import { execFileSync } from 'node:child_process';

/**
 * End-to-end tests spawn the built CLI, so build once before any test file runs. tsc writes its output even
 * when it finds type errors; those are the build and typecheck steps' to report (`.ci/run` runs both), so a
 * type error in one file does not stop every test from running: only a build that produced nothing does.
 */
export default function setup(): void {
  try {
    execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
  } catch (error) {
    const status = (error as { status?: number }).status;
    // tsc: 1 = errors, no output; 2 = errors, output written (noEmitOnError is off).
    if (status !== 2) throw error;
    process.stderr.write(
      'global-setup: tsc reported type errors (above); the tests run on what it emitted\n',
    );
  }
}
