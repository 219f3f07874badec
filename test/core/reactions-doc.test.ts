/**
 * docs/reactions.md's examples are whole services files: each one must load as written (schema, templates,
 * reaction targets, cycles, schedules), so the worked examples users copy never drift from what Ferry accepts.
 */
import { readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { parseServicesYaml } from '../../src/core/services/load.ts';

const DOC = new URL('../../docs/reactions.md', import.meta.url);

function yamlBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/```yaml\n([\s\S]*?)```/g)].map((match) => match[1] ?? '');
}

const blocks = yamlBlocks(readFileSync(DOC, 'utf8'));

describe('docs/reactions.md', () => {
  it('has the worked examples the issue asks for', () => {
    // try_catch on error.type, Slack on dead letters, SMS failover, create-then-bill, schedules.
    expect(blocks.length).toBeGreaterThanOrEqual(5);
  });

  it.each(blocks.map((yaml, index) => [index + 1, yaml] as const))(
    'example %i loads as a services file',
    (_index, yaml) => {
      const config = parseServicesYaml(yaml, { env: {} });
      expect(config.services.size).toBeGreaterThan(0);
    },
  );
});
