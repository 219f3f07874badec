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
 * satisfy (npm-install-checks: `semver.satisfies(node, range, { includePrerelease: true })`). We promise the
 * lowest Node our own `engines` allows, so every package in the lock file, production and dev, must accept it:
 * a dependency bump that needs a newer Node fails here instead of warning on a newcomer's first install.
 */
describe('package-lock.json engines', () => {
  it('every locked package accepts the lowest Node our engines field allows', async () => {
    const pkg = await readJson<{ engines: { node: string } }>('package.json');
    const lowest = semver.minVersion(pkg.engines.node)?.version;
    expect(lowest).toMatch(/^\d+\.\d+\.\d+$/);
    const lock = await readJson<{ packages: Record<string, LockEntry> }>('package-lock.json');
    const entries = Object.entries(lock.packages).filter(([path]) => path !== '');
    expect(entries.length).toBeGreaterThan(100);
    const refused = entries.flatMap(([path, entry]) => {
      const range = Array.isArray(entry.engines) ? undefined : entry.engines?.node;
      return range === undefined || semver.satisfies(lowest ?? '', range, { includePrerelease: true })
        ? []
        : [`${path}@${entry.version ?? '?'} needs node ${range}`];
    });
    expect(refused).toEqual([]);
  });
});
