/**
 * The CLI's read side of issue 16 on a real redis-server, in-process (test/helpers/cli.ts) and as the built
 * CLI in a child process for one run of each wait: `ferry enqueue --wait --follow` waits for the end of a
 * chain (the chain's jobs finished with BullMQ directly, as the worker's reactions would), and `ferry dlq
 * show` / `list` name a dead letter's onFailure follow-up and origin.
 */
import { describe, expect, it } from 'vitest';

import type { JobOrigin } from '../../src/core/job.ts';
import { deadLetterKit } from '../dead-letter/support.ts';
import { runCliInProcess } from '../helpers/cli.ts';
import { runFerry, workerEnv, writeServicesFile } from '../helpers/processes.ts';
import { rawJobs } from '../helpers/raw-jobs.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();
const operations = { step: { method: 'POST', path: '/s', body: '{{ input }}' } };
const servicesFile = await writeServicesFile({
  services: {
    crm: { baseUrl: 'http://127.0.0.1:9', operations },
    billing: { baseUrl: 'http://127.0.0.1:9', operations },
  },
});

describe('ferry enqueue --wait --follow', () => {
  it('waits for the last job of the chain; --json gives it with the chain', async () => {
    const prefix = uniquePrefix();
    const env = workerEnv({ redisUrl: redis.url, servicesFile, prefix });
    const raw = rawJobs(redis.url, prefix);
    /** Completes the next crm job with a then step on billing, and that billing job with a body. */
    const workChain = async (n: number): Promise<{ first: string; second: string }> => {
      const step1 = await raw.take('crm');
      const origin: JobOrigin = { kind: 'then', source: { service: 'crm', jobId: step1.id! }, depth: 1 };
      const second = await raw.add('billing', 'step', { input: {}, origin }, `then-${n}`);
      await raw.complete(step1, { next: { service: 'billing', jobId: second } });
      await raw.complete(await raw.take('billing'), { status: 201, body: { billed: n } });
      return { first: step1.id!, second };
    };

    const jsonRun = runFerry(
      ['enqueue', 'crm', 'step', '--input', '{"n":1}', '--wait', '--follow', '--json'],
      { env },
    );
    const chain1 = await workChain(1);
    const json = await jsonRun;
    expect(json.code, json.process.output()).toBe(0);
    const view = JSON.parse(json.stdout) as Record<string, unknown>;
    expect(view).toMatchObject({
      service: 'billing',
      id: chain1.second,
      state: 'completed',
      result: { status: 201, body: { billed: 1 } },
      origin: { kind: 'then', source: { service: 'crm', jobId: chain1.first } },
      chain: [
        { service: 'crm', jobId: chain1.first },
        { service: 'billing', jobId: chain1.second },
      ],
    });

    const humanRun = runCliInProcess(['enqueue', 'crm', 'step', '--input', '{"n":2}', '--wait', '--follow'], {
      env,
    });
    const chain2 = await workChain(2);
    const human = await humanRun;
    expect(human.code, human.output()).toBe(0);
    const lines = human.stdout.split('\n');
    expect(lines[0]).toBe(`chain: crm/${chain2.first} -> billing/${chain2.second}`);
    expect(lines[1]).toBe(`completed: billing/${chain2.second} status 201 after 1 attempt(s)`);
    expect(JSON.parse(lines.slice(2).join('\n'))).toEqual({ billed: 2 });
  }, 60_000);

  it('a link to a missing job: one FollowError line naming it, exit 1; --follow without --wait: exit 2', async () => {
    const prefix = uniquePrefix();
    const env = workerEnv({ redisUrl: redis.url, servicesFile, prefix });
    const raw = rawJobs(redis.url, prefix);
    const run = runFerry(['enqueue', 'crm', 'step', '--wait', '--follow'], { env });
    const job = await raw.take('crm');
    await raw.complete(job, { next: { service: 'billing', jobId: 'gone-1' } });
    const broken = await run;
    expect(broken.code, broken.process.output()).toBe(1);
    expect(broken.stderr).toBe(
      `FollowError: job billing/gone-1, which crm/${job.id} links to, does not exist`,
    );

    const usage = await runCliInProcess(['enqueue', 'crm', 'step', '--follow'], { env });
    expect(usage.code, usage.output()).toBe(2);
    expect(usage.stderr).toMatch(/--follow: only with --wait/);
  }, 60_000);
});

describe('ferry dlq show and list', () => {
  it('name the onFailure follow-up and the origin of a dead letter', async () => {
    const kit = deadLetterKit(redis);
    const env = workerEnv({ redisUrl: redis.url, servicesFile, prefix: kit.prefix });
    const now = Date.now();
    const origin: JobOrigin = {
      kind: 'onFailure',
      source: { service: 'billing', jobId: 'b-7' },
      deadLetterId: 'dl-billing.b-7.1700000000000',
      rule: 1,
      depth: 1,
    };
    const followUp = { service: 'billing', jobId: 'idem-ferry-onfailure-dl-crm.x-0', rule: 0 };
    const id = await kit.write({
      service: 'crm',
      operation: 'step',
      tenant: 'acme',
      origin,
      followUp,
      deadLetteredAt: now - 1_000,
      enqueuedAt: now - 5_000,
    });
    const plain = await kit.write({ service: 'crm', operation: 'step', deadLetteredAt: now - 2_000 });
    const refused = await kit.write({
      service: 'crm',
      operation: 'step',
      followUpError: 'chain depth limit 16 reached',
      deadLetteredAt: now - 3_000,
    });

    const shown = await runCliInProcess(['dlq', 'show', id], { env });
    expect(shown.code, shown.output()).toBe(0);
    expect(shown.stdout).toContain(
      'origin: onFailure of billing/b-7 (dead letter dl-billing.b-7.1700000000000, rule 1), depth 1',
    );
    expect(shown.stdout).toContain('follow-up: billing/idem-ferry-onfailure-dl-crm.x-0 (onFailure rule 0)');
    const json = JSON.parse(
      (await runCliInProcess(['dlq', 'show', id, '--json'], { env })).stdout,
    ) as unknown;
    expect(json).toMatchObject({ id, origin, followUp });
    const plainShown = await runCliInProcess(['dlq', 'show', plain], { env });
    expect(plainShown.stdout).not.toMatch(/^(origin|follow-up):/m);
    const refusedShown = await runCliInProcess(['dlq', 'show', refused], { env });
    expect(refusedShown.stdout).toContain('follow-up: none: chain depth limit 16 reached');

    const list = await runCliInProcess(['dlq', 'list'], { env });
    expect(list.code, list.output()).toBe(0);
    const rows = list.stdout.split('\n');
    expect(rows[0]).toMatch(/\sATTEMPTS\s+FOLLOW-UP\s+MESSAGE$/);
    expect(rows.find((row) => row.startsWith(id))).toMatch(/\s1\s+billing \(rule 0\)\s+HTTP 500$/);
    expect(rows.find((row) => row.startsWith(plain))).toMatch(/\s1\s+-\s+HTTP 500$/);
  }, 60_000);
});
