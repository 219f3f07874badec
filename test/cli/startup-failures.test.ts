/**
 * Every start-up failure of the long-running commands (`ferry api`, `ferry worker`, `ferry dev`) and of the
 * one-shot commands prints one line on stderr saying what to do and exits non-zero within 5 s of it (issue
 * 14, items 7-8). "One line": stderr holds exactly that `Type: message` line; log lines (pino, JSON or pretty)
 * go to stdout and are not counted. The 5 s is a liveness bound, not a speed test: the old code hung for ever
 * (a Redis connection or a private redis-server opened before the failing step held the process open) or
 * waited 30 s before failing (LINE_BOUND_MS catches that).
 */
import { copyFile, readdir, readFile, readlink } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { freePort } from '../../src/cli/redis-server.ts';
import { registerCleanup } from '../helpers/cleanup.ts';
import {
  type FerryProcess,
  ROOT,
  spawnFerry,
  tempDir,
  workerEnv,
  writeServicesFile,
} from '../helpers/processes.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();
const FIXTURES = join(ROOT, 'test', 'fixtures', 'services');
const TOKENS = JSON.stringify([
  { name: 'ops', token: 'ferry-startup-token-0123456789abcdef', scopes: ['admin'] },
]);
/**
 * The bound, counted from the failure's line: the old code printed it, then a connection or a child
 * it had opened held the process open. These commands fail in well under a second once node has started.
 */
const EXIT_BOUND_MS = 5_000;
/**
 * How long after the spawn the line may come: node's own start-up is in it, which took more than 5 s on a
 * loaded 2-core machine (load average 21). Still well under the 30 s the old code waited for Redis first.
 */
const LINE_BOUND_MS = 15_000;
/** A password in REDIS_URL: never printed, not even in the line that says where Redis is. */
const PASSWORD = 'pw-Zq9-never-printed';

const servicesFile = await writeServicesFile({
  services: { svc: { baseUrl: 'http://127.0.0.1:9', operations: { op: { method: 'GET', path: '/' } } } },
});

/** A port something else listens on, for as long as the test runs. */
async function takenPort(): Promise<number> {
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  registerCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as { port: number }).port;
}

/** A project folder as a new user has it: the repository's services file, nothing else. */
async function projectDir(): Promise<string> {
  const dir = await tempDir('ferry-startup');
  await copyFile(join(ROOT, 'ferry.services.yaml'), join(dir, 'ferry.services.yaml'));
  return dir;
}

/**
 * Asserts the failure: a line on stderr within LINE_BOUND_MS, then exit code != 0 within EXIT_BOUND_MS of it,
 * and stderr exactly one line that matches `line`. Returns that line.
 */
async function expectOneLineFailure(ferry: FerryProcess, line: RegExp): Promise<string> {
  await ferry.waitForLine((text) => text.trim() !== '', { stream: 'stderr', timeoutMs: LINE_BOUND_MS });
  const started = Date.now();
  const exit = await ferry.waitForExit(EXIT_BOUND_MS + 5_000);
  const tookMs = Date.now() - started;
  expect(exit.signal, ferry.output()).toBeNull();
  expect(exit.code, ferry.output()).not.toBe(0);
  expect(tookMs, ferry.output()).toBeLessThan(EXIT_BOUND_MS);
  const lines = ferry.stderr.filter((text) => text.trim() !== '');
  expect(lines, ferry.output()).toHaveLength(1);
  expect(lines[0]).toMatch(/^\w+: \S/);
  expect(lines[0]).toMatch(line);
  return lines[0]!;
}

describe('start-up failures: non-zero exit within 5 s, one line', () => {
  describe('a port in use', () => {
    it('ferry api (PORT taken): exits, the Redis connections it opened do not hold it', async () => {
      const port = await takenPort();
      const api = spawnFerry(['api'], {
        env: {
          REDIS_URL: redis.url,
          FERRY_SERVICES: servicesFile,
          FERRY_API_TOKENS: TOKENS,
          PORT: String(port),
          LOG_FORMAT: 'json',
        },
      });
      await expectOneLineFailure(api, new RegExp(`127\\.0\\.0\\.1:${port}.*in use.*PORT`));
    });

    it('ferry dev (PORT taken): exits, and stops its private redis-server and demo service', async () => {
      const cwd = await projectDir();
      const port = await takenPort();
      const dev = spawnFerry(['dev', '--no-demo-jobs'], { cwd, env: { PORT: String(port) } });
      await expectOneLineFailure(dev, new RegExp(`127\\.0\\.0\\.1:${port}.*in use.*PORT`));
      // Its redis-server was stopped: nothing holds the AOF, and the folder's lock is released.
      const redisLine = dev.stdout.find((line) => /private redis-server/.test(line));
      expect(redisLine, 'the banner is printed only once running').toBeUndefined();
      expect(await readdir(join(cwd, '.ferry'))).not.toContain('dev.lock');
      await expectNoRedisServerIn(join(cwd, '.ferry', 'redis'));
    });

    it('ferry worker (FERRY_METRICS_PORT taken): exits, naming the variable', async () => {
      const port = await takenPort();
      const worker = spawnFerry(['worker'], {
        env: workerEnv({
          redisUrl: redis.url,
          servicesFile,
          prefix: uniquePrefix(),
          extra: { FERRY_METRICS_PORT: String(port) },
        }),
      });
      await expectOneLineFailure(worker, /^ConfigurationError: FERRY_METRICS_PORT: .* already in use/);
    });
    it('ferry api (FERRY_METRICS_PORT taken): exits after its API port was bound, naming the variable', async () => {
      const metricsPort = await takenPort();
      const api = spawnFerry(['api'], {
        env: {
          REDIS_URL: redis.url,
          FERRY_SERVICES: servicesFile,
          FERRY_API_TOKENS: TOKENS,
          PORT: '0',
          FERRY_METRICS_PORT: String(metricsPort),
          LOG_FORMAT: 'json',
        },
      });
      await expectOneLineFailure(api, /^ConfigurationError: FERRY_METRICS_PORT: .* already in use/);
    });
  });

  describe('Redis unreachable, fail fast (FERRY_REDIS_WAIT_MS=0)', () => {
    it('ferry worker: says where Redis is and what to do, never the password', async () => {
      const port = await freePort();
      const worker = spawnFerry(['worker'], {
        env: workerEnv({
          redisUrl: `redis://ferry:${PASSWORD}@127.0.0.1:${port}`,
          servicesFile,
          prefix: uniquePrefix(),
          extra: { FERRY_REDIS_WAIT_MS: '0' },
        }),
      });
      const line = await expectOneLineFailure(
        worker,
        new RegExp(`^RedisUnreachableError: Redis at 127\\.0\\.0\\.1:${port} is unreachable .*REDIS_URL`),
      );
      expect(line).toContain('FERRY_REDIS_WAIT_MS');
      expect(worker.output()).not.toContain(PASSWORD);
    });

    it('ferry dev with REDIS_URL: the same line, and nothing it started is left', async () => {
      const cwd = await projectDir();
      const port = await freePort();
      const dev = spawnFerry(['dev', '--no-demo-jobs'], {
        cwd,
        env: { REDIS_URL: `redis://:${PASSWORD}@127.0.0.1:${port}`, FERRY_REDIS_WAIT_MS: '0', PORT: '0' },
      });
      await expectOneLineFailure(dev, new RegExp(`^RedisUnreachableError: Redis at 127\\.0\\.0\\.1:${port}`));
      expect(dev.output()).not.toContain(PASSWORD);
      expect(await readdir(join(cwd, '.ferry'))).not.toContain('dev.lock');
    });

    it.each([
      ['status', ['status']],
      ['queues list', ['queues', 'list']],
      ['dlq list', ['dlq', 'list']],
      ['enqueue', ['enqueue', 'svc', 'op']],
      ['secrets list', ['secrets', 'list']],
    ])('one-shot ferry %s: never waits', async (_name, args) => {
      const port = await freePort();
      const run = spawnFerry(args, {
        env: { REDIS_URL: `redis://:${PASSWORD}@127.0.0.1:${port}`, FERRY_SERVICES: servicesFile },
      });
      const line = await expectOneLineFailure(
        run,
        new RegExp(`^RedisUnreachableError: Redis at 127\\.0\\.0\\.1:${port} is unreachable .*REDIS_URL`),
      );
      expect(line).not.toContain('FERRY_REDIS_WAIT_MS');
      expect(run.output()).not.toContain(PASSWORD);
    });

    it('a bounded wait (FERRY_REDIS_WAIT_MS=1000) gives up after it, with one line', async () => {
      const port = await freePort();
      const worker = spawnFerry(['worker'], {
        env: workerEnv({
          redisUrl: `redis://127.0.0.1:${port}`,
          servicesFile,
          prefix: uniquePrefix(),
          extra: { FERRY_REDIS_WAIT_MS: '1000' },
        }),
      });
      await expectOneLineFailure(
        worker,
        /Redis at 127\.0\.0\.1:\d+ was not ready within 1000 ms.*FERRY_REDIS_WAIT_MS/,
      );
    });
  });

  describe('a bad services file: the line names the file and the path of the mistake', () => {
    const many = join(FIXTURES, 'invalid-many.yaml');

    it('ferry worker', async () => {
      const worker = spawnFerry(['worker'], {
        env: workerEnv({ redisUrl: redis.url, servicesFile: many, prefix: uniquePrefix() }),
      });
      const line = await expectOneLineFailure(worker, /^ServicesFileError: /);
      expect(line).toContain(`ServicesFileError: ${many}: servics: unknown option`);
      expect(line).toMatch(/and \d+ more problem\(s\): ferry config check .*invalid-many\.yaml/);
    });

    it('ferry api', async () => {
      const file = join(FIXTURES, 'invalid-attempts.yaml');
      const api = spawnFerry(['api'], {
        env: { REDIS_URL: redis.url, FERRY_SERVICES: file, FERRY_API_TOKENS: TOKENS, PORT: '0' },
      });
      const line = await expectOneLineFailure(api, /^ServicesFileError: /);
      expect(line).toBe(`ServicesFileError: ${file}: services.crm.retry.attempts: must be an integer >= 1`);
    });

    it('ferry dev: also stops the private redis-server and demo service it had started', async () => {
      const cwd = await projectDir();
      const file = join(FIXTURES, 'invalid-yaml-syntax.yaml');
      const dev = spawnFerry(['dev'], { cwd, env: { FERRY_SERVICES: file, PORT: '0' } });
      const line = await expectOneLineFailure(dev, /^ServicesFileError: /);
      expect(line).toMatch(new RegExp(`^ServicesFileError: ${escape(file)}:\\d+:\\d+: YAML syntax error`));
      expect(await readdir(join(cwd, '.ferry'))).not.toContain('dev.lock');
      await expectNoRedisServerIn(join(cwd, '.ferry', 'redis'));
    });
  });

  it('ferry api without tokens: exit 2, one line naming the variables', async () => {
    const api = spawnFerry(['api'], {
      env: { REDIS_URL: redis.url, FERRY_SERVICES: servicesFile, PORT: '0' },
    });
    await expectOneLineFailure(
      api,
      /^UsageError: no API tokens: set FERRY_API_TOKENS .* FERRY_API_TOKENS_FILE/,
    );
    expect((await api.exited).code).toBe(2);
  });
});

/**
 * No redis-server runs in `dir` (a redis-server works in its --dir; Linux's /proc says where each process is).
 * Polled: the failed command may exit a moment before the SIGKILL it sent on exit has taken effect.
 */
async function expectNoRedisServerIn(dir: string): Promise<void> {
  const serversIn = async (): Promise<number[]> => {
    const pids: number[] = [];
    for (const entry of await readdir('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const comm = await readFile(`/proc/${entry}/comm`, 'utf8');
        if (comm.startsWith('redis-server') && (await readlink(`/proc/${entry}/cwd`)) === dir)
          pids.push(Number(entry));
      } catch {
        // Gone meanwhile, or not ours to look at.
      }
    }
    return pids;
  };
  await expect.poll(serversIn, { timeout: 5_000 }).toEqual([]);
}

function escape(text: string): string {
  return text.replaceAll(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
