import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';

import { describe, expect, it } from 'vitest';

/** The part of `semver` used here (it ships no types, and @types/semver is not worth a dependency for two calls). */
interface Semver {
  minVersion(range: string): { version: string } | null;
  satisfies(version: string, range: string, options: { includePrerelease: boolean }): boolean;
}
const semver = createRequire(import.meta.url)('semver') as Semver;

interface LockEntry {
  version?: string;
  engines?: { node?: string } | string[];
}

async function readJson<T>(path: string): Promise<T> {
  return JSON.parse(await readFile(new URL(`../../${path}`, import.meta.url), 'utf8')) as T;
}

/**
 * `npm ci` prints `EBADENGINE` for every installed package whose `engines.node` the running Node does not
 * satisfy (npm-install-checks: `semver.satisfies(node, range, { includePrerelease: true })`). We promise every
 * Node our own `engines` allows, so every package in the lock file, production and dev, must accept the lowest
 * version of each of its alternatives (22.13.0 and 24.0.0 for `^22.13.0 || ^24.0.0`): a dependency bump that
 * needs a newer Node fails here instead of warning on a newcomer's first install. (`.ci/run` also runs `npm ci`
 * on each supported Node and fails on EBADENGINE; this test names the package.)
 */
describe('package-lock.json engines', () => {
  it('every locked package accepts the lowest Node of each range our engines field allows', async () => {
    const pkg = await readJson<{ engines: { node: string } }>('package.json');
    const lowest = pkg.engines.node.split('||').map((range) => semver.minVersion(range)?.version ?? '');
    expect(lowest.length).toBeGreaterThanOrEqual(1);
    for (const version of lowest) expect(version).toMatch(/^\d+\.\d+\.\d+$/);
    const lock = await readJson<{ packages: Record<string, LockEntry> }>('package-lock.json');
    const entries = Object.entries(lock.packages).filter(([path]) => path !== '');
    expect(entries.length).toBeGreaterThan(100);
    const refused = lowest.flatMap((node) =>
      entries.flatMap(([path, entry]) => {
        const range = Array.isArray(entry.engines) ? undefined : entry.engines?.node;
        return range === undefined || semver.satisfies(node, range, { includePrerelease: true })
          ? []
          : [`${path}@${entry.version ?? '?'} needs node ${range}, refuses ${node}`];
      }),
    );
    expect(refused).toEqual([]);
  });
});
