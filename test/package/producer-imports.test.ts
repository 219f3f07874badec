import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

import { afterAll, describe, expect, it } from 'vitest';

import { ROOT } from '../helpers/processes.ts';

const run = promisify(execFile);

/**
 * Records every module a fresh Node process loads for one entry point: ES modules through a resolve hook
 * (module.register; the hook thread appends each URL to a file synchronously, so the list is complete when
 * the import settles) and CommonJS modules (undici, opossum and ioredis are CommonJS, and Node 20's hooks do
 * not see `require` inside them) from the CommonJS module cache.
 */
const HOOK = `
import { appendFileSync } from 'node:fs';
let out;
export function initialize(data) { out = data.out; }
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  appendFileSync(out, resolved.url + '\\n');
  return resolved;
}
`;
const MAIN = `
import { createRequire, register } from 'node:module';
const [entry, out] = process.argv.slice(1);
register('data:text/javascript,' + encodeURIComponent(process.env.FERRY_TEST_HOOK), { data: { out } });
await import(entry);
const cjs = Object.keys(createRequire(import.meta.url).cache);
process.stdout.write(JSON.stringify(cjs));
`;

const dir = await mkdtemp(join(tmpdir(), 'ferry-imports-'));
afterAll(() => rm(dir, { recursive: true, force: true }));

/** Every file (as a path) the process loaded to import `entry` (a path under dist/). */
async function loadedBy(entry: string): Promise<string[]> {
  const out = join(dir, `${entry.replaceAll('/', '_')}.txt`);
  await writeFile(out, '');
  const { stdout } = await run(
    process.execPath,
    ['--input-type=module', '-e', MAIN, pathToFileURL(join(ROOT, entry)).href, out],
    { cwd: ROOT, env: { ...process.env, FERRY_TEST_HOOK: HOOK } },
  );
  const esm = (await readFile(out, 'utf8'))
    .split('\n')
    .filter((url) => url.startsWith('file:'))
    .map((url) => decodeURIComponent(new URL(url).pathname));
  return [...new Set([...esm, ...(JSON.parse(stdout) as string[])])].map((path) =>
    path.startsWith(ROOT) ? path.slice(ROOT.length) : path,
  );
}

/** What `ferry/producer` must never load: the delivery side, its HTTP client and breakers, and the API. */
const FORBIDDEN = [
  /^dist\/(worker|breakers|secrets|api|cli|dead-letter|metrics|ops)\//,
  /(^|\/)node_modules\/(undici|opossum|fastify|@fastify\/[^/]+|@bull-board\/[^/]+|prom-client|pino)\//,
];

describe('ferry/producer imports', () => {
  it('loads no worker, breaker, undici, opossum, API or Bull Board code', async () => {
    const loaded = await loadedBy('dist/producer/index.js');
    // The recording sees both kinds of module: dist/ is ESM, bullmq and ioredis are CommonJS.
    expect(loaded).toContain('dist/producer/producer.js');
    expect(loaded.some((path) => path.startsWith('node_modules/bullmq/'))).toBe(true);
    expect(loaded.some((path) => path.startsWith('node_modules/ioredis/'))).toBe(true);
    expect(loaded.filter((path) => FORBIDDEN.some((pattern) => pattern.test(path)))).toEqual([]);
  });

  it('the same recording does see them loaded by the full entry point', async () => {
    const loaded = await loadedBy('dist/index.js');
    for (const prefix of [
      'dist/worker/',
      'dist/breakers/',
      'node_modules/undici/',
      'node_modules/opossum/',
    ]) {
      expect(loaded.some((path) => path.startsWith(prefix))).toBe(true);
    }
  });
});
