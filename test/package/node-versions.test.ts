/**
 * The supported Node.js versions, said in four places that must agree (issue 21): package.json `engines`, the
 * versions `.ci/run` runs the suite on, the README's prerequisites line and the Dockerfile's base image. A
 * version CI does not test is not supported, and a supported major CI skips is not tested.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { ROOT } from '../helpers/processes.ts';

/** The part of `semver` used here (it ships no types). */
const semver = createRequire(import.meta.url)('semver') as {
  intersects(a: string, b: string): boolean;
  minVersion(range: string): { version: string; major: number; minor: number; patch: number } | null;
  satisfies(version: string, range: string): boolean;
  valid(version: string): string | null;
};

const read = (path: string): Promise<string> => readFile(join(ROOT, path), 'utf8');

async function engines(): Promise<string> {
  return (JSON.parse(await read('package.json')) as { engines: { node: string } }).engines.node;
}

/** Node majors `range` allows (between 18 and 40, wide enough for any engines field this project will have). */
function majorsOf(range: string): number[] {
  return Array.from({ length: 23 }, (_, i) => 18 + i).filter((major) =>
    semver.intersects(`^${major}.0.0`, range),
  );
}

/** `NODE_VERSIONS=(22.23.5 24.22.3)` in .ci/run. */
async function ciVersions(): Promise<string[]> {
  const line = /^NODE_VERSIONS=\(([^)]*)\)$/m.exec(await read('.ci/run'));
  expect(line, 'NODE_VERSIONS=(…) in .ci/run').not.toBeNull();
  return line![1]!.trim().split(/\s+/);
}

/** `22.13+ or 24`: each allowed major, with its lowest minor when that is not .0 (the README's wording). */
function readmeWording(range: string): string {
  return majorsOf(range)
    .map((major) => {
      // Each `||` alternative narrowed to the major (a space is AND only within one alternative).
      const lowest = range
        .split('||')
        .filter((set) => semver.intersects(set, `^${major}.0.0`))
        .map((set) => semver.minVersion(`${set} >=${major}.0.0 <${major + 1}.0.0`)!)
        .sort((a, b) => a.minor - b.minor || a.patch - b.patch)[0]!;
      return lowest.minor === 0 && lowest.patch === 0 ? `${major}` : `${major}.${lowest.minor}+`;
    })
    .join(' or ');
}

describe(`supported Node.js versions (this run: node ${process.versions.node})`, () => {
  it('engines allows two or more LTS majors and no Node 20', async () => {
    const range = await engines();
    const majors = majorsOf(range);
    expect(majors.length).toBeGreaterThanOrEqual(2);
    expect(majors.every((major) => major % 2 === 0)).toBe(true);
    expect(majors).not.toContain(20);
  });

  it('.ci/run runs the suite on one version of every major engines allows, lowest first', async () => {
    const range = await engines();
    const versions = await ciVersions();
    for (const version of versions) {
      expect(semver.valid(version), version).toBe(version);
      expect(semver.satisfies(version, range), `${version} satisfies ${range}`).toBe(true);
    }
    expect(versions.map((version) => Number(version.split('.')[0]))).toEqual(majorsOf(range));
  });

  it("the README's prerequisites name the same majors", async () => {
    const readme = await read('README.md');
    expect(readme).toContain(`Prerequisites: **Node.js ${readmeWording(await engines())}**`);
  });

  it('the Dockerfile builds and runs on the newest major engines allows', async () => {
    const image = /^ARG NODE_IMAGE=node:(\d+)-bookworm-slim$/m.exec(await read('Dockerfile'));
    expect(image, 'ARG NODE_IMAGE=node:<major>-bookworm-slim').not.toBeNull();
    expect(Number(image![1])).toBe(majorsOf(await engines()).at(-1));
  });

  it('the wording follows engines', () => {
    expect(readmeWording('^22.13.0 || ^24.0.0')).toBe('22.13+ or 24');
    expect(readmeWording('>=20.19 <21 || ^22.12.0')).toBe('20.19+ or 22.12+');
    expect(readmeWording('>=22.12')).toMatch(/^22\.12\+ or 23 or 24 or /);
    expect(majorsOf('^22.13.0 || ^24.0.0')).toEqual([22, 24]);
  });
});
