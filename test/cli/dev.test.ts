/**
 * `ferry dev` (DESIGN §6): with REDIS_URL unset it starts a private redis-server under ./.ferry, the demo
 * service and the workers, says so, runs its three demo jobs, and on SIGTERM stops everything it started.
 * Without redis-server installed it fails with one line that says what to install.
 */
import { copyFile, mkdir, readdir, stat } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import { join } from 'node:path';

import { Job, Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { describe, expect, it, onTestFinished } from 'vitest';

import {
  DEAD_LETTER_QUEUE,
  deadLetterJobId,
  type DeadLetterRecord,
  serviceQueueName,
} from '../../src/index.ts';
import { isProcessAlive, ROOT, spawnFerry, tempDir } from '../helpers/processes.ts';
import { startRedis } from '../helpers/redis.ts';

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

describe('ferry dev', () => {
  it('starts a private redis-server, the demo service and workers, runs the demo jobs, and stops it all on SIGTERM', async () => {
    const cwd = await projectDir();
    const dev = spawnFerry(['dev'], { cwd });

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
    expect(completed.find((job) => job.name === 'flaky')?.returnvalue).toMatchObject({
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
    const dev = spawnFerry(['dev', '--no-demo-jobs'], { cwd, env: { REDIS_URL: redis.url } });
    const redisLine = await dev.waitForLine(/^\s+redis\s+/, { timeoutMs: 30_000 });
    expect(redisLine.trim()).toBe(`redis     ${redis.url}`);
    await dev.waitForLine('Ferry dev is running');
    // The workers set up the demo queue on the given Redis; no .ferry/redis was made, only the dev master key
    // of the secret store (owner-only), which the banner names.
    const metaKey = `ferry:${serviceQueueName('demo')}:meta`;
    expect(await redis.client.exists(metaKey)).toBe(1);
    expect(await readdir(join(cwd, '.ferry'))).toEqual(['secrets.key']);
    expect((await stat(join(cwd, '.ferry', 'secrets.key'))).mode & 0o777).toBe(0o600);
    expect(dev.stdout.join('\n')).toContain(`secrets   store key in ${join(cwd, '.ferry', 'secrets.key')}`);
    dev.terminate();
    expect((await dev.waitForExit(20_000)).code).toBe(0);
  }, 60_000);

  it('serves the HTTP API with the admin token it prints, and takes a port of its own when 8080 is busy', async () => {
    const cwd = await projectDir();
    // Whatever holds 8080 on this machine (or this blocker): dev must not fail for it when PORT is unset.
    const blocker = createServer();
    await new Promise<void>((resolve) => {
      blocker.once('error', () => resolve());
      blocker.listen(8080, '127.0.0.1', () => resolve());
    });
    onTestFinished(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
    const dev = spawnFerry(['dev', '--no-demo-jobs'], { cwd, env: { REDIS_URL: redis.url } });
    const apiLine = await dev.waitForLine(/^\s+api\s+http:\/\/127\.0\.0\.1:\d+/, { timeoutMs: 30_000 });
    const apiUrl = /(http:\/\/127\.0\.0\.1:\d+)/.exec(apiLine)![1]!;
    expect(apiUrl).not.toBe('http://127.0.0.1:8080');
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
    // A liveness bound, not a timing: it used to print the error, then hang in its port poll for 10 s.
    const exit = await dev.waitForExit(8_000);
    expect(exit, dev.output()).toEqual({ code: 1, signal: null });
    const lines = dev.stderr.filter((line) => line.trim() !== '');
    expect(lines, dev.output()).toHaveLength(1);
    expect(lines[0]).toMatch(/redis-server was not found/);
    expect(lines[0]).toMatch(/apt-get install redis-server/);
    expect(lines[0]).toMatch(/REDIS_URL/);
    expect(dev.stdout.join('\n')).not.toContain('Ferry dev is running');
  }, 30_000);
});
