import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** What the build reads besides src: when one changes, every output is stale. */
const BUILD_INPUTS = ['tsconfig.json', 'tsconfig.build.json', 'package-lock.json'];

function mtimeMs(path: string): number | undefined {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

/**
 * True when every src/**\/*.ts has its dist/**\/*.js, written after both it and the build's configs: the build
 * would only write the same files again. tsc rewrites every output on each run, so an edit, a checkout or a
 * deleted output makes it stale. (An output of a deleted source stays, as it does after a build.)
 */
export function distUpToDate(root = process.cwd()): boolean {
  const configs = Math.max(...BUILD_INPUTS.map((file) => mtimeMs(join(root, file)) ?? Infinity));
  const sources = readdirSync(join(root, 'src'), { recursive: true, encoding: 'utf8' }).filter(
    (file) => file.endsWith('.ts') && !file.endsWith('.d.ts'),
  );
  if (sources.length === 0) return false;
  return sources.every((file) => {
    const output = mtimeMs(join(root, 'dist', file.replace(/\.ts$/, '.js')));
    const source = mtimeMs(join(root, 'src', file)) ?? Infinity;
    return output !== undefined && output >= source && output >= configs;
  });
}

/**
 * End-to-end tests spawn the built CLI, so build once before any test file runs, unless dist/ is already up
 * to date (npm ci's prepare step built it, or the last run did): that saves 10-20 s of tsc per run. tsc writes
 * its output even when it finds type errors; those are the build and typecheck steps' to report (`.ci/run`
 * runs both), so a type error in one file does not stop every test from running: only a build that produced
 * nothing does.
 */
export default function setup(): void {
  if (distUpToDate()) return;
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
