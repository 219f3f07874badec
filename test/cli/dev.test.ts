/**
 * `ferry dev` (DESIGN §6): with REDIS_URL unset it starts a private redis-server under ./.ferry, the demo
 * service and the workers, says so, runs its three demo jobs, and on SIGTERM stops everything it started.
 * Without redis-server installed it fails with one line that says what to install.
 */
import { execFile } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { copyFile, mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { Job, Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { describe, expect, it, onTestFinished } from 'vitest';

import { decodeStoredResult } from '../../src/core/stored-result.ts';
import {
  DEAD_LETTER_QUEUE,
  deadLetterJobId,
  type DeadLetterRecord,
  serviceQueueName,
} from '../../src/index.ts';
import {
  type FerryProcess,
  isProcessAlive,
  ROOT,
  runFerry,
  spawnFerry,
  tempDir,
} from '../helpers/processes.ts';
import { startRedis } from '../helpers/redis.ts';

const execFileAsync = promisify(execFile);

/** For the REDIS_URL case only; the other cases must start their own. */
const redis = await startRedis();

/** A project directory holding only the repository's ferry.services.yaml, as a new user would have. */
async function projectDir(): Promise<string> {
  const dir = await tempDir('ferry-dev');
  await copyFile(join(ROOT, 'ferry.services.yaml'), join(dir, 'ferry.services.yaml'));
  return dir;
}

function refusesConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
    socket.connect(port, '127.0.0.1');
  });
}

/**
 * Listens on 8080 on a random 127.x.y.z address (tried until one is free there). Only on this address, so the
 * test neither depends on nor disturbs whoever has 127.0.0.1:8080.
 */
async function occupy8080OnOwnLoopback(): Promise<{ host: string; close: () => Promise<void> }> {
  for (let attempt = 0; ; attempt++) {
    const host = `127.${1 + randomInt(254)}.${randomInt(256)}.${1 + randomInt(254)}`;
    const server = createServer();
    const ok = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(8080, host, () => resolve(true));
    });
    if (ok) return { host, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
    if (attempt >= 20) throw new Error('no 127.x.y.z address with a free 8080');
  }
}

/** `ferry dev` in `cwd` (PORT=0), once it says it is running, with its API URL. */
async function runningDev(
  cwd: string,
  env: Record<string, string | undefined> = {},
): Promise<{ dev: FerryProcess; apiUrl: string }> {
  const dev = spawnFerry(['dev', '--no-demo-jobs'], { cwd, env: { PORT: '0', ...env } });
  const apiLine = await dev.waitForLine(/^\s+api\s+http:\/\/127\.0\.0\.1:\d+/, { timeoutMs: 30_000 });
  await dev.waitForLine('Ferry dev is running');
  return { dev, apiUrl: /(http:\/\/127\.0\.0\.1:\d+)/.exec(apiLine)![1]! };
}

/** Alive and not a zombie (Linux's /proc): an orphan's exit is reaped by whatever init the machine has. */
async function isRunning(pid: number): Promise<boolean> {
  if (!isProcessAlive(pid)) return false;
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat !== '' && !/^\d+ \(.*\) Z/.test(stat);
}

/** What `set -a; . .ferry/dev.env; set +a` gives a POSIX shell in `cwd`. */
async function sourceDevEnv(cwd: string): Promise<Record<string, string>> {
  const { stdout } = await execFileAsync('/bin/sh', ['-c', 'set -a; . ./.ferry/dev.env; set +a; env -0'], {
    cwd,
    env: { PATH: process.env.PATH },
  });
  return Object.fromEntries(
    stdout
      .split('\0')
      .filter((entry) => entry.includes('='))
      .map((entry) => [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)]),
  );
}

describe('ferry dev', () => {
  it('starts a private redis-server, the demo service and workers, runs the demo jobs, and stops it all on SIGTERM', async () => {
    const cwd = await projectDir();
    // PORT=0: a real 8080 (or another test's) is not this test's business.
    const dev = spawnFerry(['dev'], { cwd, env: { PORT: '0' } });

    // What it started, in its banner.
    const redisLine = await dev.waitForLine(/^\s+redis\s+redis:\/\/127\.0\.0\.1:\d+/, { timeoutMs: 30_000 });
    const [, url, port] = /(redis:\/\/127\.0\.0\.1:(\d+))/.exec(redisLine)!;
    expect(redisLine).toContain(`private redis-server, data in ${join(cwd, '.ferry', 'redis')}`);
    await dev.waitForLine(/^\s+demo\s+http:\/\/127\.0\.0\.1:\d+ \(local demo service/);
    await dev.waitForLine(/^\s+services\s+demo \(from \.\/ferry\.services\.yaml\)/);
    await dev.waitForLine(/^\s+workers\s+one per service, prefix "ferry"/);
    await dev.waitForLine('Ferry dev is running');
    // Redis keeps its append-only file in the project's .ferry directory.
    expect(await readdir(join(cwd, '.ferry', 'redis'))).toContain('appendonlydir');

    // The three demo jobs: one completes, one completes after two 503s, one is refused and dead-lettered.
    await dev.waitForLine(/demo job echo: completed/, { timeoutMs: 30_000 });
    await dev.waitForLine(/demo job flaky: completed/, { timeoutMs: 30_000 });
    await dev.waitForLine(/demo job reject: dead_lettered/, { timeoutMs: 30_000 });

    // The same, read from its Redis: which is a real redis-server process whose pid we can follow.
    const client = new Redis(url!, { maxRetriesPerRequest: 1, lazyConnect: true });
    onTestFinished(() => client.disconnect());
    await client.connect();
    const info = await client.info('server');
    const redisPid = Number(/process_id:(\d+)/.exec(info)?.[1]);
    expect(isProcessAlive(redisPid)).toBe(true);
    const queue = new Queue(serviceQueueName('demo'), { connection: client, prefix: 'ferry' });
    const deadLetters = new Queue<DeadLetterRecord>(DEAD_LETTER_QUEUE, {
      connection: client,
      prefix: 'ferry',
    });
    const completed = await queue.getJobs(['completed']);
    expect(completed.map((job) => job.name).sort()).toEqual(['echo', 'flaky']);
    expect(decodeStoredResult(completed.find((job) => job.name === 'flaky')?.returnvalue)).toMatchObject({
      status: 200,
      attempts: 3,
    });
    const [rejected] = await queue.getJobs(['failed']);
    expect(rejected?.name).toBe('reject');
    const dead = await Job.fromId<DeadLetterRecord>(
      deadLetters,
      deadLetterJobId('demo', rejected!.id!, rejected!.timestamp),
    );
    expect(dead?.data.finalError).toMatchObject({ type: 'ClientError', status: 422 });
    await queue.close();
    await deadLetters.close();
    client.disconnect();

    dev.terminate();
    const exit = await dev.waitForExit(20_000);
    expect(exit, dev.output()).toEqual({ code: 0, signal: null });
    await dev.waitForLine('shut down cleanly');
    // Its private redis-server is gone with it.
    await expect.poll(() => isProcessAlive(redisPid), { timeout: 10_000 }).toBe(false);
    expect(await refusesConnections(Number(port))).toBe(true);
    expect(dev.stderr.join('\n')).not.toMatch(/\n\s+at /);
  }, 90_000);

  it('uses REDIS_URL when it is set, and starts no redis-server', async () => {
    const cwd = await projectDir();
    const dev = spawnFerry(['dev', '--no-demo-jobs'], { cwd, env: { REDIS_URL: redis.url, PORT: '0' } });
    const redisLine = await dev.waitForLine(/^\s+redis\s+/, { timeoutMs: 30_000 });
    expect(redisLine.trim()).toBe(`redis     ${redis.url}`);
    await dev.waitForLine('Ferry dev is running');
    // The workers set up the demo queue on the given Redis; no .ferry/redis was made, only the dev master key
    // of the secret store (owner-only), which the banner names, and the folder's lock and dev.env.
    const metaKey = `ferry:${serviceQueueName('demo')}:meta`;
    expect(await redis.client.exists(metaKey)).toBe(1);
    expect((await readdir(join(cwd, '.ferry'))).sort()).toEqual(['dev.env', 'dev.lock', 'secrets.key']);
    expect((await stat(join(cwd, '.ferry', 'secrets.key'))).mode & 0o777).toBe(0o600);
    expect(dev.stdout.join('\n')).toContain(`secrets   store key in ${join(cwd, '.ferry', 'secrets.key')}`);
    dev.terminate();
    expect((await dev.waitForExit(20_000)).code).toBe(0);
    expect(await readdir(join(cwd, '.ferry'))).toEqual(['secrets.key']);
  }, 60_000);

  it('serves the HTTP API with the admin token it prints, and says so when 8080 is taken and it took another port', async () => {
    const cwd = await projectDir();
    // 8080 taken on an address of this test's own (127.0.0.0/8 is all loopback on Linux): a real 8080 on the
    // machine, or another test's, can neither make the port free nor take it away while this test runs.
    const { host, close } = await occupy8080OnOwnLoopback();
    onTestFinished(close);
    const dev = spawnFerry(['dev', '--no-demo-jobs'], { cwd, env: { REDIS_URL: redis.url, HOST: host } });
    const apiLine = await dev.waitForLine(
      new RegExp(`^\\s+api\\s+http://${host.replaceAll('.', '\\.')}:\\d+`),
      {
        timeoutMs: 30_000,
      },
    );
    const apiUrl = /(http:\/\/[\d.]+:\d+)/.exec(apiLine)![1]!;
    const apiPort = new URL(apiUrl).port;
    expect(apiPort).not.toBe('8080');
    await dev.waitForLine(`8080 was in use; the API is on :${apiPort}`);
    const tokenLine = await dev.waitForLine(/^\s+token\s+\S+\s+\(admin, this run only\)/);
    const token = /^\s+token\s+(\S+)/.exec(tokenLine)![1]!;
    await dev.waitForLine('Ferry dev is running');
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const enqueued = await fetch(`${apiUrl}/v1/jobs`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ service: 'demo', operation: 'echo', input: { hello: 'api' } }),
    });
    expect(enqueued.status).toBe(202);
    const { statusUrl } = (await enqueued.json()) as { statusUrl: string };
    await expect
      .poll(
        async () =>
          ((await (await fetch(apiUrl + statusUrl, { headers })).json()) as { state: string }).state,
        {
          timeout: 15_000,
        },
      )
      .toBe('completed');
    expect((await fetch(`${apiUrl}/v1/services`)).status).toBe(401);
    // One process, one /metrics: the worker pool's deliveries are in the API's metrics.
    const metrics = await (await fetch(`${apiUrl}/metrics`, { headers })).text();
    expect(metrics).toMatch(
      /^ferry_jobs_finished_total\{service="demo",operation="echo",outcome="completed"\} 1$/m,
    );
    // Bull Board with the token as the Basic password, as a browser sends it.
    const basic = `Basic ${Buffer.from(`admin:${token}`).toString('base64')}`;
    const board = await fetch(`${apiUrl}/admin/queues`, { headers: { authorization: basic } });
    expect(board.status).toBe(200);
    expect((await fetch(`${apiUrl}/admin/queues`)).headers.get('www-authenticate')).toContain('Basic');
    dev.terminate();
    expect((await dev.waitForExit(20_000)).code).toBe(0);
  }, 60_000);

  it('without redis-server on PATH: exit 1 and one line naming redis-server and how to install it', async () => {
    const cwd = await projectDir();
    // Node is started by absolute path; the PATH holds nothing, so no redis-server can be found.
    const emptyBin = join(cwd, 'empty-bin');
    await mkdir(emptyBin);
    const dev = spawnFerry(['dev'], { cwd, env: { PATH: emptyBin } });
    // A liveness bound, not a timing: it used to print the error, then hang in its port poll for 10 s. Counted
    // from the error line, not from the spawn: a loaded machine took more than 8 s to start node at all.
    await dev.waitForLine(/redis-server was not found/, { stream: 'stderr', timeoutMs: 25_000 });
    const exit = await dev.waitForExit(6_000);
    expect(exit, dev.output()).toEqual({ code: 1, signal: null });
    const lines = dev.stderr.filter((line) => line.trim() !== '');
    expect(lines, dev.output()).toHaveLength(1);
    expect(lines[0]).toMatch(/redis-server was not found/);
    expect(lines[0]).toMatch(/apt-get install redis-server/);
    expect(lines[0]).toMatch(/REDIS_URL/);
    expect(dev.stdout.join('\n')).not.toContain('Ferry dev is running');
  }, 45_000);
});

describe('ferry dev: one per folder, and .ferry/dev.env for other shells', () => {
  it("a second dev in the same folder is refused at once with the first one's pid and API URL", async () => {
    const cwd = await projectDir();
    const { dev: first, apiUrl } = await runningDev(cwd, { REDIS_URL: redis.url });
    const second = spawnFerry(['dev', '--no-demo-jobs'], { cwd, env: { REDIS_URL: redis.url, PORT: '0' } });
    // A liveness bound, not a timing, counted from the refusal line (a loaded machine took more than 10 s to
    // start node at all): it exits right after saying so.
    await second.waitForLine('ferry dev is already running in this folder', {
      stream: 'stderr',
      timeoutMs: 25_000,
    });
    const exit = await second.waitForExit(6_000);
    expect(exit, second.output()).toEqual({ code: 1, signal: null });
    const lines = second.stderr.filter((line) => line.trim() !== '');
    expect(lines, second.output()).toHaveLength(1);
    expect(lines[0]).toContain('ferry dev is already running in this folder');
    expect(lines[0]).toContain(`pid ${first.child.pid}`);
    expect(lines[0]).toContain(apiUrl);
    expect(lines[0]).toContain('.ferry/dev.env');
    // The first one is untouched: its lock and dev.env are still there, its API still answers.
    expect((await fetch(`${apiUrl}/healthz`)).status).toBe(200);
    expect((await readdir(join(cwd, '.ferry'))).sort()).toEqual(['dev.env', 'dev.lock', 'secrets.key']);
    first.terminate();
    expect((await first.waitForExit(20_000)).code).toBe(0);
  }, 60_000);

  it('two started at once in one folder: exactly one runs', async () => {
    const cwd = await projectDir();
    const env = { REDIS_URL: redis.url, PORT: '0' };
    const both = [0, 1].map(() => spawnFerry(['dev', '--no-demo-jobs'], { cwd, env }));
    const refused = await Promise.race(both.map(async (dev) => (await dev.exited, dev)));
    expect((await refused.exited).code, refused.output()).toBe(1);
    expect(refused.stderr.join('\n')).toContain('ferry dev is already running in this folder');
    const running = both.find((dev) => dev !== refused)!;
    await running.waitForLine('Ferry dev is running', { timeoutMs: 30_000 });
    running.terminate();
    expect((await running.waitForExit(20_000)).code).toBe(0);
  }, 60_000);

  it('takes over the lock of a SIGKILLed dev, stopping the redis-server it left on the same AOF', async () => {
    const cwd = await projectDir();
    const { dev: killed } = await runningDev(cwd);
    const first = await sourceDevEnv(cwd);
    const client = new Redis(first.REDIS_URL!, { maxRetriesPerRequest: 1, lazyConnect: true });
    client.on('error', () => undefined);
    onTestFinished(() => client.disconnect());
    await client.connect();
    const leftoverPid = Number(/process_id:(\d+)/.exec(await client.info('server'))?.[1]);
    await client.set('written-before-the-kill', 'kept');
    client.disconnect();
    await killed.kill9();
    // SIGKILL runs no exit hook: its redis-server is still running, and its lock is still there.
    expect(isProcessAlive(leftoverPid)).toBe(true);
    onTestFinished(() => {
      if (isProcessAlive(leftoverPid)) process.kill(leftoverPid, 'SIGKILL');
    });
    expect(await readdir(join(cwd, '.ferry'))).toContain('dev.lock');

    const { dev } = await runningDev(cwd);
    await dev.waitForLine(
      `stopped the redis-server a killed ferry dev (pid ${killed.child.pid}) left running`,
    );
    // Gone (a zombie at most, when nothing reaps orphans in this container).
    expect(await isRunning(leftoverPid)).toBe(false);
    // One redis-server on the AOF, and it has what the first one acknowledged.
    const now = await sourceDevEnv(cwd);
    expect(now.REDIS_URL).not.toBe(first.REDIS_URL);
    const next = new Redis(now.REDIS_URL!, { maxRetriesPerRequest: 1, lazyConnect: true });
    onTestFinished(() => next.disconnect());
    await next.connect();
    expect(await next.get('written-before-the-kill')).toBe('kept');
    next.disconnect();
    expect(JSON.parse(await readFile(join(cwd, '.ferry', 'dev.lock'), 'utf8'))).toMatchObject({
      pid: dev.child.pid,
    });
    dev.terminate();
    expect((await dev.waitForExit(20_000)).code).toBe(0);
  }, 90_000);

  it('.ferry/dev.env (owner-only) works from another shell: its Redis, its API with the token, ferry commands; gone on SIGTERM', async () => {
    const cwd = await projectDir();
    const { dev, apiUrl } = await runningDev(cwd);
    const path = join(cwd, '.ferry', 'dev.env');
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const env = await sourceDevEnv(cwd);
    expect(env).toMatchObject({
      FERRY_API_URL: apiUrl,
      FERRY_PREFIX: 'ferry',
      FERRY_SERVICES: join(cwd, 'ferry.services.yaml'),
      FERRY_SECRETS_KEY_FILE: join(cwd, '.ferry', 'secrets.key'),
    });
    // The token it printed is the one in the file.
    const token = /^\s+token\s+(\S+)/.exec(dev.stdout.find((line) => /^\s+token\s/.test(line))!)![1]!;
    expect(env.FERRY_DEV_TOKEN).toBe(token);

    const client = new Redis(env.REDIS_URL!, { maxRetriesPerRequest: 1, lazyConnect: true });
    onTestFinished(() => client.disconnect());
    await client.connect();
    expect(await client.ping()).toBe('PONG');
    client.disconnect();
    const services = await fetch(`${env.FERRY_API_URL}/v1/services`, {
      headers: { authorization: `Bearer ${env.FERRY_DEV_TOKEN}` },
    });
    expect(services.status).toBe(200);
    // A ferry command with nothing but dev.env's variables sees dev's queues.
    const fromEnv = Object.fromEntries(Object.entries(env).filter(([key]) => /^(REDIS_|FERRY_)/.test(key)));
    const queues = await runFerry(['queues', 'list'], { cwd, env: fromEnv });
    expect(queues.code, queues.process.output()).toBe(0);
    expect(queues.stdout).toContain('demo');

    dev.terminate();
    expect((await dev.waitForExit(20_000)).code).toBe(0);
    expect(await readdir(join(cwd, '.ferry'))).not.toContain('dev.env');
    expect(await readdir(join(cwd, '.ferry'))).not.toContain('dev.lock');
  }, 60_000);

  it("a worker on dev's Redis without dev.env's demo URL warns at start; with dev.env it reaches the demo service", async () => {
    const cwd = await projectDir();
    const { dev } = await runningDev(cwd);
    const env = await sourceDevEnv(cwd);
    const demoLine = dev.stdout.find((line) => /^\s+demo\s/.test(line))!;
    const demoUrl = /(http:\/\/127\.0\.0\.1:\d+)/.exec(demoLine)![1]!;
    expect(env.FERRY_SERVICE_DEMO_URL).toBe(demoUrl);

    // Only dev's REDIS_URL (as dev's banner hints): it would call the services file's 127.0.0.1:4010.
    const bare = spawnFerry(['worker'], { cwd, env: { REDIS_URL: env.REDIS_URL } });
    const warning = await bare.waitForLine(/joins the Redis of the ferry dev running in this folder/, {
      timeoutMs: 30_000,
    });
    expect(warning).toContain(`FERRY_SERVICE_DEMO_URL=${demoUrl}`);
    expect(warning).toContain('set -a; . .ferry/dev.env; set +a');
    // Nothing secret: neither dev's token nor its Redis URL.
    expect(bare.output()).not.toContain(env.FERRY_DEV_TOKEN!);
    // Stopped once started: a SIGTERM while a worker is still starting exits non-zero (CI, loaded, saw 1),
    // which is not what this test is about.
    await bare.waitForLine(/worker pool started/, { timeoutMs: 30_000 });
    bare.terminate();
    expect((await bare.waitForExit(20_000)).code, bare.output()).toBe(0);

    // With dev.env's variables (another prefix, so dev's own workers do not take the job): no warning, and
    // a demo job completes against dev's demo service.
    const fromEnv = Object.fromEntries(Object.entries(env).filter(([key]) => /^(REDIS_|FERRY_)/.test(key)));
    const own = { ...fromEnv, FERRY_PREFIX: 'joined' };
    const worker = spawnFerry(['worker'], { cwd, env: own });
    await worker.waitForLine(/worker pool started/, { timeoutMs: 30_000 });
    const job = await runFerry(['enqueue', 'demo', 'echo', '--input', '{"hello":"joined"}', '--wait'], {
      cwd,
      env: own,
    });
    expect(job.code, job.process.output() + worker.output()).toBe(0);
    expect(job.stdout).toContain('completed');
    expect(worker.output()).not.toContain('ECONNREFUSED');
    expect(worker.output()).not.toContain('joins the Redis of the ferry dev');
    worker.terminate();
    expect((await worker.waitForExit(20_000)).code).toBe(0);
    dev.terminate();
    expect((await dev.waitForExit(20_000)).code).toBe(0);
  }, 90_000);
});
