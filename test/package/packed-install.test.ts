import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ROOT } from '../helpers/processes.ts';
import { startRedis } from '../helpers/redis.ts';

/**
 * Ferry as another service gets it: packed with `npm pack` from a checkout that has no dist/ (so the `prepare`
 * script must build it, as it does for `npm install git+https://…`), installed from the tarball into a fresh
 * project, then used there: `ferry/producer` enqueues into a real Redis, the `ferry` bin runs, and a strict
 * TypeScript consumer type-checks against the published declarations.
 *
 * The checkout is a copy of the working tree's files that git would commit (tracked and untracked, minus
 * .gitignore: no dist/, no .ferry/), with node_modules linked to ours rather than installed: `prepare` needs
 * the dev dependencies, and a second `npm ci` would cost a minute to prove what `.ci/run` proves already.
 *
 * The fresh project installs with a lock file built from ours (the production entries, plus the tarball):
 * `npm ci --prefer-offline` then needs only tarballs the repository's own `npm ci` put in the npm cache, so it
 * runs offline and in seconds, on the dependency versions this suite tested. What it does not cover is a fresh
 * resolution of Ferry's ranges against the registry on the day a service installs it.
 */

const run = promisify(execFile);
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

interface PackageJson {
  version: string;
  license: string;
  dependencies: Record<string, string>;
  bin: Record<string, string>;
  engines: Record<string, string>;
}
interface PackResult {
  filename: string;
  integrity: string;
  files: { path: string }[];
}
interface LockEntry {
  dev?: boolean;
  devOptional?: boolean;
  optional?: boolean;
}

/** The runner's environment without npm's script variables (`npm test` sets npm_config_local_prefix & co.). */
function npmEnv(): NodeJS.ProcessEnv {
  const keep = new Set(['npm_config_cache', 'npm_config_registry', 'npm_config_userconfig']);
  return Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !/^npm_/i.test(name) || keep.has(name.toLowerCase())),
  );
}

async function npm(args: string[], cwd: string): Promise<{ stdout: string; stderr: string }> {
  return run('npm', [...args, '--no-audit', '--no-fund'], { cwd, env: npmEnv(), maxBuffer: 16 << 20 });
}

/** The files a fresh clone would have: what git tracks or would add, read from the working tree. */
async function copyCheckout(to: string): Promise<void> {
  const { stdout } = await run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: ROOT,
    maxBuffer: 16 << 20,
  });
  const files = stdout.split('\0').filter((file) => file !== '');
  for (const file of files) {
    // A tracked file deleted in the working tree is not part of the change under test.
    if (!(await stat(join(ROOT, file)).catch(() => undefined))?.isFile()) continue;
    await mkdir(dirname(join(to, file)), { recursive: true });
    await copyFile(join(ROOT, file), join(to, file));
  }
  await symlink(join(ROOT, 'node_modules'), join(to, 'node_modules'), 'dir');
}

const redis = await startRedis();
const work = await mkdtemp(join(tmpdir(), 'ferry-packed-'));
afterAll(() => rm(work, { recursive: true, force: true }));
const checkout = join(work, 'checkout');
const app = join(work, 'app');
const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as PackageJson;
let packed: PackResult;
let hadDist: boolean;

beforeAll(async () => {
  const started = Date.now();
  await copyCheckout(checkout);
  hadDist = (await stat(join(checkout, 'dist')).catch(() => undefined)) !== undefined;
  const copied = Date.now();
  const { stdout } = await npm(['pack', '--json', '--pack-destination', work], checkout);
  packed = (JSON.parse(stdout) as PackResult[])[0]!;
  const packedAt = Date.now();

  const spec = `file:../${packed.filename}`;
  const ours = JSON.parse(await readFile(join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, LockEntry>;
  };
  const packages: Record<string, unknown> = {
    '': { name: 'ferry-consumer', dependencies: { ferry: spec } },
    'node_modules/ferry': {
      version: pkg.version,
      resolved: spec,
      integrity: packed.integrity,
      license: pkg.license,
      dependencies: pkg.dependencies,
      bin: pkg.bin,
      engines: pkg.engines,
    },
  };
  for (const [path, entry] of Object.entries(ours.packages)) {
    if (path === '' || entry.dev === true) continue;
    // devOptional: needed by a dev dependency and by an optional production one; here only the latter.
    const { devOptional, ...rest } = entry;
    packages[path] = devOptional === true ? { ...rest, optional: true } : rest;
  }
  await mkdir(app);
  await writeFile(
    join(app, 'package.json'),
    JSON.stringify({
      name: 'ferry-consumer',
      private: true,
      type: 'module',
      dependencies: { ferry: spec },
    }),
  );
  await writeFile(
    join(app, 'package-lock.json'),
    JSON.stringify({ name: 'ferry-consumer', lockfileVersion: 3, requires: true, packages }),
  );
  // npm checks engines against the Node it runs on: the suite's, since .ci/run puts it first on PATH.
  const install = await npm(['ci', '--prefer-offline'], app);
  expect(install.stderr).not.toMatch(/EBADENGINE/);
  process.stderr.write(
    `packed-install: copy ${copied - started} ms, npm pack (prepare builds dist/) ${packedAt - copied} ms, ` +
      `npm ci of the tarball ${Date.now() - packedAt} ms\n`,
  );
}, 300_000);

describe(`npm pack → install into a fresh project (node ${process.versions.node})`, () => {
  it('packs dist/ built by prepare, package.json, README and LICENSE, and nothing else', async () => {
    expect(hadDist).toBe(false);
    const paths = packed.files.map((file) => file.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        'LICENSE',
        'README.md',
        'package.json',
        'dist/cli/main.js',
        'dist/index.js',
        'dist/index.d.ts',
        'dist/producer/index.js',
        'dist/producer/index.d.ts',
      ]),
    );
    const others = paths.filter(
      (path) =>
        !['LICENSE', 'README.md', 'package.json'].includes(path) && !/^dist\/.+\.(js|d\.ts)$/.test(path),
    );
    expect(others).toEqual([]);
    // Built from today's sources: every module has its source (no stale output of a deleted file).
    const orphans: string[] = [];
    for (const path of paths.filter((p) => p.startsWith('dist/'))) {
      const source = join(ROOT, 'src', path.slice('dist/'.length).replace(/\.(js|d\.ts)$/, '.ts'));
      if ((await stat(source).catch(() => undefined)) === undefined) orphans.push(path);
    }
    expect(orphans).toEqual([]);
  });

  it('imports ferry/producer and enqueues a job into ferry:{service}', async () => {
    await writeFile(
      join(app, 'enqueue.mjs'),
      `import { Producer } from 'ferry/producer';
const producer = new Producer({ connection: process.env.REDIS_URL });
try {
  const job = await producer.enqueue({ service: 'billing', operation: 'charge', input: { amount: 5 } });
  process.stdout.write(JSON.stringify(job));
} finally {
  await producer.close();
}
`,
    );
    const { stdout } = await run(process.execPath, ['enqueue.mjs'], {
      cwd: app,
      env: { ...npmEnv(), REDIS_URL: redis.url },
      timeout: 30_000,
    });
    const job = JSON.parse(stdout) as { id: string; service: string; created: boolean };
    expect(job).toMatchObject({ service: 'billing', operation: 'charge', created: true });
    expect(await redis.client.lrange('ferry:{billing}:wait', 0, -1)).toContain(job.id);
    // BullMQ's job hash: the queue is the service, the job name the operation.
    const stored = await redis.client.hmget(`ferry:{billing}:${job.id}`, 'name', 'data');
    expect(stored[0]).toBe('charge');
    expect(JSON.parse(stored[1] ?? '{}')).toMatchObject({ input: { amount: 5 } });
  }, 60_000);

  it('runs the installed ferry bin', async () => {
    const bin = join(app, 'node_modules', '.bin', 'ferry');
    const version = await run(bin, ['--version'], { cwd: app, env: npmEnv(), timeout: 30_000 });
    expect(version.stdout.trim()).toBe(pkg.version);
    const help = await run(bin, ['--help'], { cwd: app, env: npmEnv(), timeout: 30_000 });
    expect(help.stdout).toMatch(/\bworker\b/);
  }, 60_000);

  it('type-checks a strict consumer against the published types, which hold no worker types', async () => {
    await writeFile(
      join(app, 'consumer.ts'),
      `import { type EnqueueResult, Producer, serviceQueueName, ValidationError } from 'ferry/producer';

const producer = new Producer({ connection: 'redis://127.0.0.1:1', prefix: 'ferry' });
export async function charge(amount: number): Promise<EnqueueResult | string> {
  try {
    return await producer.enqueue({ service: 'billing', operation: 'charge', input: { amount } });
  } catch (error) {
    if (error instanceof ValidationError) return \`\${error.field ?? 'job'}: \${error.message}\`;
    throw error;
  } finally {
    await producer.close();
  }
}
export const queue: string = serviceQueueName('billing');
// The declarations are real, not \`any\`: each line below must be refused.
// @ts-expect-error operation is required
void producer.enqueue({ service: 'billing' });
// @ts-expect-error connection is a URL or a client
void new Producer({ connection: 6379 });
`,
    );
    await writeFile(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'es2022',
          module: 'nodenext',
          moduleResolution: 'nodenext',
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          types: ['node'],
          typeRoots: [join(ROOT, 'node_modules', '@types')],
        },
        files: ['consumer.ts'],
      }),
    );
    const checked = await run(process.execPath, [TSC, '-p', 'tsconfig.json', '--listFiles'], {
      cwd: app,
      env: npmEnv(),
      timeout: 120_000,
    }).catch((error: { stdout?: string }) => {
      throw new Error(`tsc failed:\n${error.stdout ?? String(error)}`);
    });
    const files = checked.stdout.split('\n').filter((line) => line.endsWith('.ts'));
    expect(files).toContain(join(app, 'node_modules', 'ferry', 'dist', 'producer', 'index.d.ts'));
    expect(
      files.filter((file) =>
        /node_modules\/(ferry\/dist\/(worker|breakers|secrets|api|cli)\/|undici\/|opossum\/|@types\/opossum\/|fastify\/)/.test(
          file,
        ),
      ),
    ).toEqual([]);
  }, 180_000);
});
