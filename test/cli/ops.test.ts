/**
 * The ops commands (issue 5) as scripts and people run them, against a private redis-server, with a real
 * `ferry worker` and downstream where behaviour depends on them. Output (human and --json) and exit codes: 0
 * ok, 1 failure, 2 usage. Most runs are in-process (test/helpers/cli.ts); one per command group runs the
 * built CLI as a child process (runFerry), the way scripts call it.
 */
import { describe, expect, it, onTestFinished } from 'vitest';

import type { DeadLetterRecord } from '../../src/core/job.ts';
import { Producer } from '../../src/producer/index.ts';
import { deadLetterKit } from '../dead-letter/support.ts';
import { runCliInProcess as ferry } from '../helpers/cli.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { runFerry, startWorker, workerEnv, writeServicesFile } from '../helpers/processes.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();
const STACK_LINE = /^\s+at /m;

const downstream = await startDownstream((request) =>
  request.url.startsWith('/refuse')
    ? { status: 422, body: { error: 'refused on purpose' } }
    : { status: 200, body: { ok: true }, delayMs: request.url.startsWith('/slow') ? 50 : 0 },
);
const servicesFile = await writeServicesFile({
  services: {
    crm: {
      baseUrl: downstream.url,
      concurrency: 2,
      retry: { attempts: 3, backoff: { delayMs: 1000, maxDelayMs: 4000 } },
      operations: {
        create: { method: 'POST', path: '/things', body: '{{ input }}' },
        slow: { method: 'POST', path: '/slow', body: '{{ input }}' },
        refuse: { method: 'POST', path: '/refuse', body: '{{ input }}' },
      },
    },
    mailer: {
      baseUrl: downstream.url,
      rateLimit: { max: 10, perMs: 1000 },
      operations: { send: { method: 'POST', path: '/mail', body: '{{ input }}' } },
    },
  },
});

function setup(): { prefix: string; env: Record<string, string | undefined> } {
  const prefix = uniquePrefix();
  return { prefix, env: workerEnv({ redisUrl: redis.url, servicesFile, prefix }) };
}

function producer(prefix: string): Producer {
  const p = new Producer({ connection: redis.url, prefix });
  onTestFinished(() => p.close());
  return p;
}

const json = <T>(stdout: string): T => JSON.parse(stdout) as T;
const callsTo = (path: string): number => downstream.requests.filter((r) => r.url.startsWith(path)).length;

/**
 * A job of the other service through the same running worker, to its downstream call: the worker process has
 * taken and run work since this was called. What it did not do meanwhile for a held or paused service, it
 * was not going to do; a wait on this event replaces a fixed sleep.
 */
async function workerRoundTrip(p: Producer): Promise<void> {
  const marker = uniquePrefix();
  await p.enqueue({ service: 'mailer', operation: 'send', input: { marker } });
  await expect
    .poll(() => downstream.requests.some((r) => r.url === '/mail' && r.body.includes(marker)), {
      timeout: 20_000,
    })
    .toBe(true);
}

describe('ferry status', () => {
  it(
    'human table and --json: counts, last hour (none until a worker records), dead letters, workers',
    { timeout: 90_000 },
    async () => {
      const { prefix, env } = setup();
      const before = await runFerry(['status', '--json'], { env });
      expect(before.code, before.process.output()).toBe(0);
      const [crm] = json<{ service: string; lastHour: unknown; workers: number }[]>(before.stdout);
      expect(crm).toMatchObject({ service: 'crm', lastHour: null, workers: 0, waiting: 0, deadLetters: 0 });

      const worker = await startWorker(env);
      const p = producer(prefix);
      await p.enqueue({ service: 'crm', operation: 'create', input: { n: 1 } });
      await p.enqueue({ service: 'crm', operation: 'refuse', input: { n: 2 } });
      await expect
        .poll(
          async () =>
            json<{ deadLetters: number }[]>((await ferry(['status', '--json'], { env })).stdout)[0]!
              .deadLetters,
          {
            timeout: 15_000,
          },
        )
        .toBe(1);

      const after = json<Record<string, unknown>[]>((await ferry(['status', '--json'], { env })).stdout);
      expect(after.map((s) => s.service)).toEqual(['crm', 'mailer']);
      expect(after[0]).toMatchObject({
        lastHour: { completed: 1, failed: 1 },
        deadLetters: 1,
        breaker: { state: 'closed' },
        held: null,
        paused: false,
        rateLimit: null,
      });
      expect(after[0]!.workers).toBeGreaterThanOrEqual(1);
      expect(after[1]).toMatchObject({ rateLimit: { max: 10, perMs: 1000 }, lastHour: null });

      const human = await ferry(['status'], { env });
      expect(human.code).toBe(0);
      const lines = human.stdout.split('\n');
      expect(lines[0]).toMatch(
        /^SERVICE\s+WAITING\s+ACTIVE\s+DELAYED\s+HELD\s+DONE\/1H\s+FAILED\/1H\s+DLQ\s+BREAKER/,
      );
      expect(lines[1]).toMatch(/^crm\s+0\s+0\s+0\s+no\s+1\s+1\s+1\s+closed\s+none\s+no\s+[1-9]/);
      expect(lines[2]).toMatch(/^mailer\s+0\s+0\s+0\s+no\s+-\s+-\s+0\s+closed\s+10\/1s/);
      expect(human.stdout).toContain('no worker has recorded metrics for this service yet');
      worker.terminate();
    },
  );

  it('an unknown service: exit 2 with one line naming it; Redis unreachable: exit 1, one line', async () => {
    const { env } = setup();
    const unknown = await ferry(['status', 'nope'], { env });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toBe(
      'ValidationError: unknown service "nope" (services in the services file: crm, mailer)',
    );

    const down = await runFerry(['status'], { env: { ...env, REDIS_URL: 'redis://127.0.0.1:1' } });
    expect(down.code).toBe(1);
    expect(down.stderr.split('\n')).toHaveLength(1);
    expect(down.stderr).toMatch(/Redis at 127\.0\.0\.1:1 is unreachable .*REDIS_URL/);
    expect(down.stderr).not.toMatch(STACK_LINE);
  });
});

describe('ferry dlq list, show, purge, reindex', () => {
  async function seed(): Promise<{
    env: Record<string, string | undefined>;
    ids: { recent500: string; old422: string; mailer: string };
  }> {
    const kit = deadLetterKit(redis);
    // deadLetterKit picks its own prefix: the CLI must read the same one.
    const env = workerEnv({ redisUrl: redis.url, servicesFile, prefix: kit.prefix });
    const now = Date.now();
    const at = (agoMs: number): Partial<DeadLetterRecord> => ({
      deadLetteredAt: now - agoMs,
      enqueuedAt: now - agoMs - 5_000,
    });
    const ids = {
      recent500: await kit.write({ ...at(60_000), tenant: 'acme' }),
      old422: await kit.write({
        ...at(3 * 3_600_000),
        operation: 'refuse',
        finalError: { type: 'ClientError', message: 'HTTP 422', status: 422 },
      }),
      mailer: await kit.write({
        ...at(10 * 86_400_000),
        service: 'mailer',
        operation: 'send',
        sourceQueue: '{mailer}',
      }),
    };
    return { env, ids };
  }

  it('list by each filter (human and --json), with a cursor across pages', { timeout: 90_000 }, async () => {
    const { env, ids } = await seed();
    const list = async (...args: string[]): Promise<string[]> => {
      const run = await ferry(['dlq', 'list', '--json', ...args], { env });
      expect(run.code, run.output()).toBe(0);
      return json<{ items: { id: string }[] }>(run.stdout).items.map((item) => item.id);
    };
    expect(await list()).toEqual([ids.recent500, ids.old422, ids.mailer]);
    expect(await list('--service', 'mailer')).toEqual([ids.mailer]);
    expect(await list('--operation', 'refuse')).toEqual([ids.old422]);
    expect(await list('--tenant', 'acme')).toEqual([ids.recent500]);
    expect(await list('--error-type', 'ClientError')).toEqual([ids.old422]);
    expect(await list('--status', '500')).toEqual([ids.recent500, ids.mailer]);
    expect(await list('--since', '2h')).toEqual([ids.recent500]);
    expect(await list('--until', '2h', '--since', '1d')).toEqual([ids.old422]);
    expect(await list('--until', new Date(Date.now() - 86_400_000).toISOString())).toEqual([ids.mailer]);

    const first = await ferry(['dlq', 'list', '--limit', '2', '--json'], { env });
    const page = json<{ items: unknown[]; nextCursor: string }>(first.stdout);
    expect(page.items).toHaveLength(2);
    expect(await list('--limit', '2', '--cursor', page.nextCursor)).toEqual([ids.mailer]);

    const human = await ferry(['dlq', 'list', '--service', 'crm'], { env });
    expect(human.stdout.split('\n')[0]).toMatch(
      /^ID\s+DEAD-LETTERED\s+SERVICE\/OPERATION\s+TENANT\s+ERROR\s+STATUS/,
    );
    expect(human.stdout).toMatch(
      new RegExp(`${ids.recent500}\\s+\\S+Z\\s+crm/createContact\\s+acme\\s+ServerError\\s+500`),
    );

    for (const bad of [
      ['--since', 'yesterday'],
      ['--status', 'x'],
      ['--error-type', 'Nope'],
      ['--limit', '0'],
    ]) {
      const run = await ferry(['dlq', 'list', ...bad], { env });
      expect(run.code, run.output()).toBe(2);
      expect(run.stderr.split('\n')).toHaveLength(1);
    }
  });

  it('show: the attempt history as a timeline and the final error; --json; an unknown id exits 1', async () => {
    const { env, ids } = await seed();
    const human = await ferry(['dlq', 'show', ids.recent500], { env });
    expect(human.code, human.output()).toBe(0);
    expect(human.stdout).toContain(`${ids.recent500}  crm/createContact`);
    expect(human.stdout).toMatch(/^#\s+TIME\s+DURATION\s+OUTCOME\s+TYPE\s+STATUS\s+THEN\s+MESSAGE$/m);
    expect(human.stdout).toMatch(/^1\s+\S+Z\s+5ms\s+failed\s+ServerError\s+500\s+-\s+boom$/m);
    expect(human.stdout).toContain('final error: ServerError (500): HTTP 500');
    const detail = json<{ id: string; attempts: unknown[]; input: unknown }>(
      (await ferry(['dlq', 'show', ids.recent500, '--json'], { env })).stdout,
    );
    expect(detail).toMatchObject({ id: ids.recent500, attempts: [{ attempt: 1, status: 500 }] });

    const missing = await ferry(['dlq', 'show', 'dl-crm.nope.1'], { env });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe('NotFound: no dead letter with id "dl-crm.nope.1"');
  });

  it(
    'purge: without --yes off a terminal exits 2 and deletes nothing; dry run; by age and by filter with --yes',
    { timeout: 90_000 },
    async () => {
      const { env, ids } = await seed();
      const remaining = async (): Promise<string[]> =>
        json<{ items: { id: string }[] }>((await ferry(['dlq', 'list', '--json'], { env })).stdout).items.map(
          (i) => i.id,
        );

      const refused = await runFerry(['dlq', 'purge', '--older-than', '1d'], { env });
      expect(refused.code).toBe(2);
      expect(refused.stderr).toMatch(/pass --yes/);
      const dry = await ferry(['dlq', 'purge', '--older-than', '1h', '--dry-run', '--json'], { env });
      expect(json(dry.stdout)).toMatchObject({ dryRun: true, matched: 2, deleted: 0 });
      expect(await remaining()).toHaveLength(3);

      const byAge = await ferry(['dlq', 'purge', '--older-than', '7d', '--yes'], { env });
      expect(byAge.code, byAge.output()).toBe(0);
      expect(byAge.stdout).toBe('deleted 1 dead letter(s)');
      expect(await remaining()).toEqual([ids.recent500, ids.old422]);

      const byFilter = await ferry(['dlq', 'purge', '--error-type', 'ClientError', '--yes', '--json'], {
        env,
      });
      expect(json(byFilter.stdout)).toMatchObject({ dryRun: false, matched: 1, deleted: 1 });
      expect(await remaining()).toEqual([ids.recent500]);

      const bad = await ferry(['dlq', 'purge', '--older-than', 'soon', '--yes'], { env });
      expect(bad.code).toBe(2);
    },
  );

  it('reindex: exit 0, --json result', async () => {
    const { env } = await seed();
    const run = await runFerry(['dlq', 'reindex', '--json'], { env });
    expect(run.code, run.process.output()).toBe(0);
    expect(json(run.stdout)).toMatchObject({ examined: 3, skipped: [] });
  });
});

describe('ferry breakers', () => {
  it(
    'open: a running ferry worker stops calling within about a second; close: it resumes within about a second',
    { timeout: 90_000 },
    async () => {
      const { prefix, env } = setup();
      await startWorker(env);
      const p = producer(prefix);
      await p.enqueueMany(
        Array.from({ length: 300 }, (_, n) => ({ service: 'crm', operation: 'slow', input: { n } })),
      );
      await expect.poll(() => callsTo('/slow'), { timeout: 10_000 }).toBeGreaterThan(5);

      const open = await ferry(['breakers', 'open', 'crm', '--for', '10m', '--reason', 'maintenance'], {
        env,
      });
      const openedAt = Date.now();
      expect(open.code, open.output()).toBe(0);
      expect(open.stdout).toMatch(/^crm: breaker open until \S+Z \(manual\)/);
      // The worker learns of it within about a second, and holds the queue (status shows the hold). Calls in
      // flight then finish; none starts after: across two round trips of a mailer job the count stays put.
      await expect
        .poll(
          async () =>
            json<{ held: { reason: string } | null }[]>(
              (await ferry(['status', '--json'], { env })).stdout,
            )[0]!.held?.reason,
          { timeout: 15_000, interval: 100 },
        )
        .toBe('breakerOpen');
      await workerRoundTrip(p);
      const calls = callsTo('/slow');
      const lastCall = Math.max(...downstream.requests.filter((r) => r.url === '/slow').map((r) => r.at));
      // About a second (one sync interval) plus a 50 ms call; the margin is for a loaded 2-core machine.
      expect(lastCall - openedAt).toBeLessThan(3_000);
      await workerRoundTrip(p);
      expect(callsTo('/slow')).toBe(calls);

      const list = json<
        { service: string; state: string; manual?: boolean; reason?: string; heldForMs: number }[]
      >((await ferry(['breakers', 'list', '--json'], { env })).stdout);
      expect(list[0]).toMatchObject({ service: 'crm', state: 'open', manual: true, reason: 'maintenance' });
      expect(list[0]!.heldForMs).toBeGreaterThan(0);
      const status = json<{ held: { reason: string } | null }[]>(
        (await ferry(['status', '--json'], { env })).stdout,
      );
      expect(status[0]!.held?.reason).toBe('breakerOpen');
      const human = await ferry(['breakers', 'list'], { env });
      expect(human.stdout).toMatch(/^crm\s+open\s+\S+ \(\d+m\d+s left\)\s+yes: maintenance\s+\d/m);

      const close = await runFerry(['breakers', 'close', 'crm'], { env });
      const closedAt = Date.now();
      expect(close.code, close.process.output()).toBe(0);
      await expect.poll(() => callsTo('/slow'), { timeout: 15_000, interval: 20 }).toBeGreaterThan(calls);
      // The first call past the count that stayed put while the breaker was open.
      const firstAfter = downstream.requests.filter((r) => r.url.startsWith('/slow'))[calls]!.at;
      // Workers re-check a hold every second; one that still saw the breaker open ends its own hold. The
      // margin is for a loaded 2-core machine, as above.
      expect(firstAfter - closedAt).toBeLessThan(3_000);
      const after = json<{ state: string }[]>((await ferry(['breakers', 'list', '--json'], { env })).stdout);
      expect(after[0]!.state).toBe('closed');
    },
  );

  it('usage errors exit 2: unknown service, bad --for; open past maxHoldMs warns', async () => {
    const { env } = setup();
    const unknown = await ferry(['breakers', 'open', 'nope'], { env });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown service "nope"');
    const badFor = await ferry(['breakers', 'open', 'crm', '--for', 'a while'], { env });
    expect(badFor.code).toBe(2);
    expect(badFor.stderr).toMatch(/^UsageError: --for: "a while" is not a duration/);
    const long = await ferry(['breakers', 'open', 'crm', '--for', '2h', '--json'], { env });
    expect(long.code).toBe(0);
    expect(json(long.stdout)).toMatchObject({ state: 'open', manual: true, exceedsMaxHold: true });
    expect(long.stderr).toMatch(/^warning: longer than crm's retry.maxHoldMs/);
    expect((await ferry(['breakers', 'close', 'nope'], { env })).code).toBe(2);
  });
});

describe('ferry queues', () => {
  // A worker start and eight runs of the CLI: with each run a child process, that took more than the default
  // 30 s on a loaded machine. The runs are in-process now (one stays a child process), with the same 90 s
  // budget as the other tests that start a worker.
  it('pause: no job is taken; resume: they run; list --json says paused', { timeout: 90_000 }, async () => {
    const { prefix, env } = setup();
    await startWorker(env);
    const pause = await runFerry(['queues', 'pause', 'crm'], { env });
    expect(pause.code, pause.process.output()).toBe(0);
    expect(pause.stdout).toBe('crm: paused');
    const p = producer(prefix);
    const marker = uniquePrefix();
    await p.enqueue({ service: 'crm', operation: 'create', input: { marker } });
    const called = (): boolean => downstream.requests.some((r) => r.body.includes(marker));
    // The same worker takes and runs a mailer job meanwhile: it would have taken the crm job too.
    await workerRoundTrip(p);
    expect(called()).toBe(false);
    const list = json<{ service: string; paused: boolean; counts: Record<string, number> }[]>(
      (await ferry(['queues', 'list', '--json'], { env })).stdout,
    );
    expect(list[0]).toMatchObject({ service: 'crm', paused: true, counts: { waiting: 1 } });
    const status = json<{ waiting: number; paused: boolean }[]>(
      (await ferry(['status', '--json'], { env })).stdout,
    );
    expect(status[0]).toMatchObject({ waiting: 1, paused: true });
    expect((await ferry(['queues', 'list'], { env })).stdout).toMatch(/^crm\s+yes\s+1\s+0\s+0\s+0/m);

    const resume = await ferry(['queues', 'resume', 'crm', '--json'], { env });
    expect(json(resume.stdout)).toEqual({ service: 'crm', paused: false });
    await expect.poll(called).toBe(true);
    expect((await ferry(['queues', 'pause', 'nope'], { env })).code).toBe(2);
  });
});

describe('ferry retry-plan', () => {
  it('prints the timeline and the time until dead-letter; --json; unknown service exits 2', async () => {
    const env = { FERRY_SERVICES: servicesFile };
    const human = await runFerry(['retry-plan', 'crm'], { env });
    expect(human.code, human.process.output()).toBe(0);
    expect(human.stdout).toContain('crm: 3 attempt(s), backoff 1s × 2^(n-1) with full jitter, capped at 4s');
    expect(human.stdout).toMatch(/^1\s+0 … 0\s+0\s+0 … 1s$/m);
    expect(human.stdout).toMatch(/^3\s+0 … 3s\s+1.5s\s+dead-letter$/m);
    expect(human.stdout).toContain('until dead-letter (a job failing every time): 0 … 3s, expected 1.5s');
    expect(human.stdout).toContain('Retry-After');
    const plan = json<{ untilDeadLetter: unknown; timeline: unknown[] }>(
      (await ferry(['retry-plan', 'crm', '--json'], { env })).stdout,
    );
    expect(plan.untilDeadLetter).toEqual({ minMs: 0, maxMs: 3_000, expectedMs: 1_500 });
    expect(plan.timeline).toHaveLength(3);
    expect((await ferry(['retry-plan', 'nope'], { env })).code).toBe(2);
  });
});

describe('help', () => {
  it.each([['status'], ['dlq', 'replay'], ['dlq', 'purge'], ['breakers'], ['queues'], ['retry-plan']])(
    'ferry %s --help: exit 0 with examples',
    async (...command) => {
      const run = await ferry([...command, '--help']);
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/Examples:\n\s+\$ ferry /);
    },
  );
});
