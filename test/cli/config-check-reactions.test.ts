/**
 * `ferry config check` refuses the reactions graph of issue 16 (an unbounded onFailure/then cycle, unknown
 * targets, fallbacks), as the CLI prints it (in-process, test/helpers/cli.ts): exit 1, one `path: message`
 * line each; a bounded cycle passes.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { runCliInProcess } from '../helpers/cli.ts';
import { ROOT, writeServicesFile } from '../helpers/processes.ts';

const FIXTURES = join(ROOT, 'test', 'fixtures', 'services');

async function expectedIssues(path: string): Promise<string[]> {
  const expected: string[] = [];
  for (const line of (await readFile(path, 'utf8')).split('\n')) {
    if (!line.startsWith('# expect: ')) break;
    expected.push(line.slice('# expect: '.length));
  }
  return expected;
}

describe('ferry config check: reactions', () => {
  it.each(['invalid-reaction-cycle.yaml', 'invalid-reaction-targets.yaml'])(
    '%s: exit 1, every issue on its line with its path',
    async (name) => {
      const path = join(FIXTURES, name);
      const expected = await expectedIssues(path);
      expect(expected.length).toBeGreaterThan(0);
      const run = await runCliInProcess(['config', 'check', path]);
      expect(run.code, run.output()).toBe(1);
      expect(run.stdout).toBe('');
      const lines = run.stderr.split('\n').map((line) => line.trim());
      expect(lines[0]).toBe(`${path}: ${expected.length} problem(s)`);
      for (const issue of expected) expect(lines).toContain(issue);
    },
  );

  it('the cycle bounded by maxDepth passes, exit 0', async () => {
    const text = (await readFile(join(FIXTURES, 'invalid-reaction-cycle.yaml'), 'utf8')).replace(
      'operation: createContact, input',
      'operation: createContact, maxDepth: 3, input',
    );
    expect(text).toContain('maxDepth: 3');
    const path = await writeServicesFile(text);
    const run = await runCliInProcess(['config', 'check', path]);
    expect(run.code, run.output()).toBe(0);
    expect(run.stdout).toBe(`ok: ${path} (2 service(s): crm, billing)`);
  });
});
