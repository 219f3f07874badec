/**
 * `promtool check metrics` (Debian's `prometheus` package), for the tests that hold every metrics endpoint to
 * what Prometheus's own linter accepts. Like chromium for the browser tests, a missing promtool fails the test
 * with how to install it, never a silent skip: `.ci/run` installs it.
 */
import { spawn } from 'node:child_process';
import { access, constants } from 'node:fs/promises';

export const PROMTOOL_PATH = '/usr/bin/promtool';

export interface PromtoolResult {
  /** 0: no problem; 1: the text did not parse; 3: lint problems (one per line of `problems`). */
  code: number | null;
  /** Everything promtool printed (it reports on stderr), one problem per line; empty when it found none. */
  problems: string[];
}

/** Pipes a scrape to `promtool check metrics` and returns what it said. */
export async function promtoolCheckMetrics(text: string): Promise<PromtoolResult> {
  try {
    await access(PROMTOOL_PATH, constants.X_OK);
  } catch {
    throw new Error(
      `${PROMTOOL_PATH} not found: this test lints metrics with Prometheus's promtool. Install it with ` +
        '`sudo apt-get install -y --no-install-recommends prometheus`, or run .ci/run, which installs it.',
    );
  }
  const child = spawn(PROMTOOL_PATH, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stdin.on('error', () => undefined);
  child.stdin.end(text);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (exitCode) => resolve(exitCode));
  });
  return { code, problems: output.split('\n').filter((line) => line.trim() !== '') };
}
