/** The tests' global setup skips tsc when dist/ is up to date: only when every output is newer than its inputs. */
import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it, onTestFinished } from 'vitest';

import { distUpToDate } from '../helpers/global-setup.ts';

/** A project with src/a.ts and src/sub/b.ts, its configs at `inputsAt` and its outputs at `outputsAt` (s). */
async function project(times: { inputsAt: number; outputsAt: number }): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'ferry-dist-freshness-'));
  onTestFinished(() => rm(root, { recursive: true, force: true }));
  await mkdir(join(root, 'src', 'sub'), { recursive: true });
  await mkdir(join(root, 'dist', 'sub'), { recursive: true });
  for (const [file, at] of [
    ['tsconfig.json', times.inputsAt],
    ['tsconfig.build.json', times.inputsAt],
    ['package-lock.json', times.inputsAt],
    ['src/a.ts', times.inputsAt],
    ['src/sub/b.ts', times.inputsAt],
    ['dist/a.js', times.outputsAt],
    ['dist/sub/b.js', times.outputsAt],
  ] as const) {
    await writeFile(join(root, file), '');
    await utimes(join(root, file), at, at);
  }
  return root;
}

describe('distUpToDate', () => {
  it('is true when every output is at least as new as its source and the configs', async () => {
    expect(distUpToDate(await project({ inputsAt: 1_000, outputsAt: 2_000 }))).toBe(true);
    expect(distUpToDate(await project({ inputsAt: 1_000, outputsAt: 1_000 }))).toBe(true);
  });

  it('is false when a source, a config or the lock file changed after the build', async () => {
    for (const file of ['src/sub/b.ts', 'tsconfig.build.json', 'package-lock.json']) {
      const root = await project({ inputsAt: 1_000, outputsAt: 2_000 });
      await utimes(join(root, file), 3_000, 3_000);
      expect(distUpToDate(root), file).toBe(false);
    }
  });

  it('is false when an output is missing or a source is new, and when there is nothing built', async () => {
    const missing = await project({ inputsAt: 1_000, outputsAt: 2_000 });
    await rm(join(missing, 'dist', 'sub', 'b.js'));
    expect(distUpToDate(missing)).toBe(false);
    const added = await project({ inputsAt: 1_000, outputsAt: 2_000 });
    await writeFile(join(added, 'src', 'c.ts'), '');
    expect(distUpToDate(added)).toBe(false);
    const unbuilt = await project({ inputsAt: 1_000, outputsAt: 2_000 });
    await rm(join(unbuilt, 'dist'), { recursive: true });
    expect(distUpToDate(unbuilt)).toBe(false);
  });
});
