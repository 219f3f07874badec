import { readFile } from 'node:fs/promises';

import { describe, expect, it } from 'vitest';

import { ENV_VARIABLES } from '../../src/core/env.ts';

describe('docs/configuration.md', () => {
  it('documents every variable readEnv reads', async () => {
    const doc = await readFile(new URL('../../docs/configuration.md', import.meta.url), 'utf8');
    const documented = new Set(
      [...doc.matchAll(/^\| `([A-Z_]+)`(?:, `([A-Z_]+)`)? /gm)].flatMap((m) => m.slice(1)),
    );
    expect(ENV_VARIABLES.length).toBeGreaterThan(20);
    expect(ENV_VARIABLES.filter((name) => !documented.has(name))).toEqual([]);
  });
});
