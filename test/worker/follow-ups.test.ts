/**
 * The runtime of onFailure rules and `then` steps (issue 16 §2, §4) on a real redis-server and real local HTTP
 * servers: the follow-up job is made exactly once, keeps the tenant, names its origin, and the dead letter
 * (or the completed result) names it. The compiled rules are set on the parsed config here, so these tests do
 * not depend on the services-file keys (test/e2e/reactions.test.ts loads them from YAML).
 */
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import { describe, expect, it, onTestFinished } from 'vitest';

import type { DeadLetterRecord, JobData, JobResult } from '../../src/core/job.ts';
import { idempotentJobId, serviceQueueName } from '../../src/core/queue-layout.ts';
import type {
  CompiledEnqueue,
  CompiledOperation,
  CompiledTemplate,
  FailureRule,
  ServicesConfig,
  TemplateContext,
} from '../../src/core/services/types.ts';
import { decodeStoredResult } from '../../src/core/stored-result.ts';
import { createMetrics } from '../../src/metrics/metrics.ts';
import { onFailureIdempotencyKey, thenIdempotencyKey } from '../../src/worker/follow-ups.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, type TestFerry } from '../helpers/ferry.ts';
import { promtoolCheckMetrics } from '../helpers/promtool.ts';
import { restrictedRedisUser, startRedis, uniquePrefix } from '../helpers/redis.ts';
import { until, waitUntil } from '../helpers/until.ts';
import { Scrape } from '../metrics/support.ts';

const redis = await startRedis();

/** The source service: 401, 422, 500 or a 200 with an id, by path. */
const source = await startDownstream((request) => {
  if (request.url === '/auth') return { status: 401, body: { error: 'who are you' } };
  if (request.url === '/reject') return { status: 422, body: { error: 'no' } };
  if (request.url === '/boom') return { status: 500, body: { error: 'boom' } };
  return { status: 200, body: { id: 'abc-123' } };
});
/** Every follow-up's target: answers 200 and records what it got. */
const targets = await startDownstream(() => ({ status: 200, body: { ok: true } }));

const QUIET_BREAKER = { errorThresholdPercentage: 100, volumeThreshold: 1_000_000 };
const FAST_RETRY = { attempts: 2, backoff: { delayMs: 20, maxDelayMs: 50 } };
const post = (path: string) => ({ method: 'POST', path, body: '{{ input }}' });

function servicesFile(): unknown {
  const target = (operations: Record<string, unknown>) => ({
    baseUrl: targets.url,
    timeoutMs: 5_000,
    retry: FAST_RETRY,
    breaker: QUIET_BREAKER,
    operations,
  });
  return {
    services: {
      svc: {
        baseUrl: source.url,
        timeoutMs: 5_000,
        retry: FAST_RETRY,
        breaker: QUIET_BREAKER,
        operations: {
          auth: post('/auth'),
          reject: post('/reject'),
          boom: post('/boom'),
          step1: post('/step1'),
        },
      },
      ops: target({ alert: post('/alert') }),
      backup: target({ create: post('/backup') }),
      two: target({ step2: post('/step2') }),
      three: target({ step3: post('/step3') }),
    },
  };
}

/** A compiled `input:` template as the schema would make it (mode value): a plain function of the context. */
function template(render: (context: TemplateContext) => unknown): CompiledTemplate {
  return { source: '<test>', secretNames: [], usesInput: true, render };
}

function enqueue(service: string, operation: string, input?: CompiledTemplate): CompiledEnqueue {
  return { service, operation, input };
}

type Reactions = Partial<Pick<CompiledOperation, 'onFailure' | 'then'>>;

/** The parsed config with compiled onFailure/then set on some operations. */
function withReactions(changes: Record<string, Record<string, Reactions>>) {
  return (config: ServicesConfig): ServicesConfig => {
    const services = new Map(config.services);
    for (const [name, operations] of Object.entries(changes)) {
      const service = services.get(name)!;
      const next = new Map(service.operations);
      for (const [operation, change] of Object.entries(operations))
        next.set(operation, { ...next.get(operation)!, ...change });
      services.set(name, { ...service, operations: next });
    }
    return { ...config, services };
  };
}

/** `AuthenticationError` → ops.alert (job, error, dead letter); anything else → backup.create (the input). */
const RULES: FailureRule[] = [
  {
    when: { errorTypes: ['AuthenticationError'], statuses: undefined },
    enqueue: enqueue(
      'ops',
      'alert',
      template((context) => ({
        job: context.job.id,
        error: context.error?.message,
        type: context.error?.type,
        status: context.error?.status,
        deadLetter: context.deadLetter?.id,
        tenant: context.tenant,
      })),
    ),
  },
  {
    when: undefined,
    enqueue: enqueue(
      'backup',
      'create',
      template((context) => context.input),
    ),
  },
];
const ON_FAILURE = withReactions({
  svc: { auth: { onFailure: RULES }, reject: { onFailure: RULES }, boom: { onFailure: RULES } },
});

/** step1 → two.step2 (carries result.body.id) → three.step3 (carries it on). */
const CHAIN = withReactions({
  svc: {
    step1: {
      then: enqueue(
        'two',
        'step2',
        template((context) => ({
          carried: (context.result?.body as { id: string }).id,
          email: (context.input as { email: string }).email,
        })),
      ),
    },
  },
  two: {
    step2: {
      then: enqueue(
        'three',
        'step3',
        template((context) => ({ carried: (context.input as { carried: string }).carried })),
      ),
    },
  },
});

function queueOf(ferry: TestFerry, service: string): Queue<JobData, JobResult> {
  const queue = new Queue<JobData, JobResult>(serviceQueueName(service), {
    connection: redis.client,
    prefix: ferry.prefix,
  });
  onTestFinished(() => queue.close());
  return queue;
}

async function jobCount(ferry: TestFerry, service: string): Promise<number> {
  const counts = await queueOf(ferry, service).getJobCounts();
  return Object.values(counts).reduce((sum, n) => sum + n, 0);
}

async function deadLetter(ferry: TestFerry, id: string): Promise<DeadLetterRecord> {
  const job = await ferry.pool.deadLetters.get(id);
  expect(job, `dead letter ${id}`).toBeDefined();
  return job!.data;
}

function requestsTo(path: string) {
  return targets.requests.filter((request) => request.url === path);
}

describe('onFailure', () => {
  it('sends a 401 to the AuthenticationError rule: one follow-up, tenant kept, origin and dead letter named', async () => {
    const ferry = await createTestFerry(redis, { services: servicesFile(), transform: ON_FAILURE });
    const job = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'auth',
      input: { email: 'a@example.com' },
      tenant: 'acme',
    });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 15_000 });
    expect(view.state).toBe('dead_lettered');
    const deadLetterId = view.deadLetterId!;
    const key = `ferry-onfailure-${deadLetterId}-0`;
    expect(onFailureIdempotencyKey(deadLetterId, 0)).toBe(key);
    const followUpId = idempotentJobId(key);
    expect((await deadLetter(ferry, deadLetterId)).followUp).toEqual({
      service: 'ops',
      jobId: followUpId,
      rule: 0,
    });

    const followUp = await ferry.producer.waitFor('ops', followUpId, { timeoutMs: 15_000 });
    expect(followUp.state).toBe('completed');
    const stored = await queueOf(ferry, 'ops').getJob(followUpId);
    expect(stored?.data).toMatchObject({
      tenant: 'acme',
      idempotencyKey: key,
      origin: {
        kind: 'onFailure',
        source: { service: 'svc', jobId: job.id },
        deadLetterId,
        rule: 0,
        depth: 1,
      },
    });
    const [alert, ...more] = requestsTo('/alert').filter(
      (request) => request.headers['idempotency-key'] === key,
    );
    expect(more).toEqual([]);
    expect(JSON.parse(alert!.body)).toEqual({
      job: job.id,
      error: expect.stringMatching(/^downstream answered 401/),
      type: 'AuthenticationError',
      status: 401,
      deadLetter: deadLetterId,
      tenant: 'acme',
    });
    expect(await jobCount(ferry, 'ops')).toBe(1);
    expect(await jobCount(ferry, 'backup')).toBe(0);
  });

  it('sends any other error (a 422, a 500 once the attempts run out) to the catch-all rule', async () => {
    const ferry = await createTestFerry(redis, { services: servicesFile(), transform: ON_FAILURE });
    for (const operation of ['reject', 'boom']) {
      const input = { operation, n: Math.floor(Math.random() * 1e9) };
      const job = await ferry.producer.enqueue({ service: 'svc', operation, input });
      const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 15_000 });
      expect(view.state).toBe('dead_lettered');
      const followUpId = idempotentJobId(`ferry-onfailure-${view.deadLetterId}-1`);
      expect((await deadLetter(ferry, view.deadLetterId!)).followUp).toEqual({
        service: 'backup',
        jobId: followUpId,
        rule: 1,
      });
      expect((await ferry.producer.waitFor('backup', followUpId, { timeoutMs: 15_000 })).state).toBe(
        'completed',
      );
      const sent = requestsTo('/backup').filter((request) => JSON.parse(request.body).n === input.n);
      expect(sent.map((request) => JSON.parse(request.body))).toEqual([input]);
    }
    expect(await jobCount(ferry, 'backup')).toBe(2);
    expect(await jobCount(ferry, 'ops')).toBe(0);
  });

  it("passes on no tenant a raw producer's job held that is not a valid one", async () => {
    const ferry = await createTestFerry(redis, { services: servicesFile(), transform: ON_FAILURE });
    // Refused by the worker (ValidationError, tenant), so dead-lettered: the catch-all rule fires.
    const raw = await queueOf(ferry, 'svc').add('reject', { input: { n: 3 }, tenant: 'not a tenant!' });
    const view = await ferry.producer.waitFor('svc', raw.id!, { timeoutMs: 15_000 });
    expect(view.state).toBe('dead_lettered');
    const followUp = (await deadLetter(ferry, view.deadLetterId!)).followUp!;
    expect((await ferry.producer.waitFor('backup', followUp.jobId, { timeoutMs: 15_000 })).state).toBe(
      'completed',
    );
    const stored = await queueOf(ferry, 'backup').getJob(followUp.jobId);
    expect(stored?.data.input).toEqual({ n: 3 });
    expect(stored?.data).not.toHaveProperty('tenant');
  });

  it('makes no follow-up for a rule whose input cannot be rendered, and the dead letter says why', async () => {
    const broken = withReactions({
      svc: {
        reject: {
          onFailure: [
            {
              when: undefined,
              enqueue: enqueue(
                'ops',
                'alert',
                template(() => {
                  throw new (class extends Error {})('not a Ferry error');
                }),
              ),
            },
          ],
        },
      },
    });
    const ferry = await createTestFerry(redis, { services: servicesFile(), transform: broken });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'reject', input: {} });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 15_000 });
    const record = await deadLetter(ferry, view.deadLetterId!);
    expect(record.followUp).toBeUndefined();
    expect(record.followUpError).toMatch(/^onFailure rule 0: input for ops\.alert: /);
    expect(await jobCount(ferry, 'ops')).toBe(0);
    expect(ferry.logs.some((line) => line.includes('onFailure follow-up not enqueued'))).toBe(true);
  });

  it('stops at the chain depth limit: a follow-up of a follow-up past it is not made', async () => {
    // ops.alert fails too (422) and its own rule would enqueue ops.alert again: a loop the depth bounds.
    targets.script((request) =>
      request.url === '/alert' ? { status: 422, body: {} } : { status: 200, body: { ok: true } },
    );
    onTestFinished(() => targets.script(() => ({ status: 200, body: { ok: true } })));
    const loop = withReactions({
      svc: { reject: { onFailure: [RULES[0]!, { when: undefined, enqueue: enqueue('ops', 'alert') }] } },
      ops: { alert: { onFailure: [{ when: undefined, enqueue: enqueue('ops', 'alert') }] } },
    });
    const ferry = await createTestFerry(redis, {
      services: servicesFile(),
      transform: loop,
      pool: { maxChainDepth: 3 },
    });
    await ferry.producer.enqueue({ service: 'svc', operation: 'reject', input: {} });
    // svc.reject (depth 0) → alert (1) → alert (2) → alert (3) → none: depth 4 is over the limit.
    const dead = await until(
      async () => {
        const letters = await ferry.pool.deadLetters.queue.getJobs(['wait']);
        return letters.length === 4 ? letters.map((letter) => letter.data) : undefined;
      },
      20_000,
      () => 'four dead letters',
    );
    const last = dead.find((record) => record.origin?.depth === 3);
    expect(last?.followUp).toBeUndefined();
    expect(last?.followUpError).toMatch(/chain depth limit 3 reached/);
    expect(await jobCount(ferry, 'ops')).toBe(3);
  });
});

describe('onFailure exactly once', () => {
  it('adds the follow-up of a dead letter the sweep writes (a job failed without one), once', async () => {
    const ferry = await createTestFerry(redis, {
      services: servicesFile(),
      transform: ON_FAILURE,
      start: false,
      pool: { sweepIntervalMs: 3_600_000 },
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'auth', input: { n: 1 } });
    // Failed outside Ferry's processor, as BullMQ fails a job that stalled too often: no dead letter.
    // A connection handed to BullMQ is the caller's to close.
    const rawConnection = redis.client.duplicate({ maxRetriesPerRequest: null });
    onTestFinished(() => rawConnection.disconnect());
    const raw = new Worker(
      serviceQueueName('svc'),
      () => Promise.reject(new UnrecoverableError('AuthenticationError: downstream answered 401')),
      { connection: rawConnection, prefix: ferry.prefix },
    );
    onTestFinished(() => raw.close());
    await waitUntil(
      async () => (await queueOf(ferry, 'svc').getJobState(job.id)) === 'failed',
      10_000,
      'the job failed',
    );
    await raw.close();

    expect(await ferry.pool.sweep()).toBe(1);
    expect(await ferry.pool.sweep()).toBe(0);
    const view = await ferry.producer.get('svc', job.id);
    const followUpId = idempotentJobId(`ferry-onfailure-${view!.deadLetterId}-0`);
    expect((await deadLetter(ferry, view!.deadLetterId!)).followUp).toEqual({
      service: 'ops',
      jobId: followUpId,
      rule: 0,
    });
    expect(await jobCount(ferry, 'ops')).toBe(1);
    await ferry.start();
    expect((await ferry.producer.waitFor('ops', followUpId, { timeoutMs: 15_000 })).state).toBe('completed');
    const key = `ferry-onfailure-${view!.deadLetterId}-0`;
    expect(requestsTo('/alert').filter((r) => r.headers['idempotency-key'] === key)).toHaveLength(1);
  });

  it('finishes the follow-up of a worker that wrote the dead letter but could not enqueue it', async () => {
    // The first worker's Redis user may write its own queue and the dead letters, not ops's queue: its dead
    // letter is written and the follow-up's add is refused, as if it died between the two.
    const prefix = uniquePrefix();
    const limited = Object.assign(Object.create(null) as object, redis, {
      url: await restrictedRedisUser(redis, prefix, {
        writes: ['{svc}', '{dead-letter}'],
        reads: ['{ops}:*'],
      }),
    }) as typeof redis;
    const first = await createTestFerry(limited, {
      services: servicesFile(),
      transform: ON_FAILURE,
      prefix,
      pool: { services: ['svc'], sweepIntervalMs: 3_600_000 },
    });
    const job = await first.producer.enqueue({ service: 'svc', operation: 'auth', input: { n: 2 } });
    const deadLetterId = await until(
      async () => {
        const letters = await first.pool.deadLetters.queue.getJobs(['wait']);
        return letters[0]?.id;
      },
      15_000,
      () => 'the dead letter',
    );
    await waitUntil(
      () => first.logs.some((line) => line.includes('NOPERM')),
      15_000,
      'the refused follow-up',
    );
    expect(await jobCount(first, 'ops')).toBe(0);
    expect(await queueOf(first, 'svc').getJobState(job.id)).not.toBe('failed');
    await first.pool.close({ deadlineMs: 2_000 });

    const second = await createTestFerry(redis, {
      services: servicesFile(),
      transform: ON_FAILURE,
      prefix,
      pool: { sweepIntervalMs: 3_600_000 },
    });
    const followUpId = idempotentJobId(`ferry-onfailure-${deadLetterId}-0`);
    expect((await second.producer.waitFor('ops', followUpId, { timeoutMs: 20_000 })).state).toBe('completed');
    await waitUntil(
      async () => (await queueOf(second, 'svc').getJobState(job.id)) === 'failed',
      15_000,
      'the source job failed',
    );
    expect(await second.pool.sweep()).toBe(0);
    expect(await jobCount(second, 'ops')).toBe(1);
    expect(await second.pool.deadLetters.queue.getJobCountByTypes('wait')).toBe(1);
    const key = `ferry-onfailure-${deadLetterId}-0`;
    expect(requestsTo('/alert').filter((r) => r.headers['idempotency-key'] === key)).toHaveLength(1);
  });
});

describe('then', () => {
  it('carries a value from step 1 response into step 3 request, each next job made once', async () => {
    const ferry = await createTestFerry(redis, { services: servicesFile(), transform: CHAIN });
    const job = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'step1',
      input: { email: 'b@example.com' },
      tenant: 'acme',
      idempotencyKey: 'order-7',
    });
    const first = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 15_000 });
    expect(first.state).toBe('completed');
    const stepOne = await queueOf(ferry, 'svc').getJob(job.id);
    const key2 = thenIdempotencyKey('svc', 'order-7');
    const next2 = { service: 'two', jobId: idempotentJobId(key2) };
    expect(decodeStoredResult(stepOne?.returnvalue)?.next).toEqual(next2);

    await ferry.producer.waitFor('two', next2.jobId, { timeoutMs: 15_000 });
    const stepTwo = await queueOf(ferry, 'two').getJob(next2.jobId);
    expect(stepTwo?.data).toMatchObject({
      input: { carried: 'abc-123', email: 'b@example.com' },
      tenant: 'acme',
      idempotencyKey: key2,
      origin: { kind: 'then', source: { service: 'svc', jobId: job.id }, depth: 1 },
    });
    const next3 = { service: 'three', jobId: idempotentJobId(thenIdempotencyKey('two', key2)) };
    expect(decodeStoredResult(stepTwo?.returnvalue)?.next).toEqual(next3);
    expect((await ferry.producer.waitFor('three', next3.jobId, { timeoutMs: 15_000 })).state).toBe(
      'completed',
    );
    const stepThree = await queueOf(ferry, 'three').getJob(next3.jobId);
    expect(stepThree?.data.origin).toEqual({ kind: 'then', source: next2, depth: 2 });
    expect(decodeStoredResult(stepThree?.returnvalue)?.next).toBeUndefined();

    const received = requestsTo('/step3').filter(
      (request) => request.headers['idempotency-key'] === stepThree?.data.idempotencyKey,
    );
    expect(received.map((request) => JSON.parse(request.body))).toEqual([{ carried: 'abc-123' }]);
    expect([await jobCount(ferry, 'two'), await jobCount(ferry, 'three')]).toEqual([1, 1]);
  });

  it('adds no next step from a run that lost its lock: the run that owns the job adds it, once', async () => {
    // The first call of step1 takes the job's lock away while it runs (as a Redis stall longer than the lock
    // would): that run must write nothing; BullMQ's stall check gives the job to a new run.
    let lockKey = '';
    const lossy = await startDownstream((_request, index) => {
      if (index === 0) void redis.client.del(lockKey);
      return { status: 200, body: { id: `call-${index}` }, delayMs: index === 0 ? 300 : 0 };
    });
    onTestFinished(() => lossy.close());
    const services = servicesFile() as { services: Record<string, Record<string, unknown>> };
    services.services.svc!.baseUrl = lossy.url;
    const ferry = await createTestFerry(redis, { services, transform: CHAIN });
    const added: string[] = [];
    ferry.pool.on('job:followUp:enqueued', (event) => {
      if (event.kind === 'then' && event.service === 'svc') added.push(event.target.jobId);
    });
    const key = 'order-lost-lock';
    lockKey = `${ferry.prefix}:${serviceQueueName('svc')}:${idempotentJobId(key)}:lock`;
    const job = await ferry.producer.enqueue({
      service: 'svc',
      operation: 'step1',
      input: { email: 'c@example.com' },
      idempotencyKey: key,
    });
    expect((await ferry.producer.waitFor('svc', job.id, { timeoutMs: 20_000 })).state).toBe('completed');
    expect(lossy.requests.length).toBe(2);
    const next = idempotentJobId(thenIdempotencyKey('svc', key));
    expect(added).toEqual([next]);
    // The next step carries the owning run's answer, not the abandoned run's.
    const stepTwo = await queueOf(ferry, 'two').getJob(next);
    expect(stepTwo?.data.input).toEqual({ carried: 'call-1', email: 'c@example.com' });
  });

  it('dead-letters the source job as ValidationError when the next input cannot be rendered', async () => {
    const broken = withReactions({
      svc: {
        step1: {
          then: enqueue(
            'two',
            'step2',
            template((context) => (context.result?.body as { missing: { id: string } }).missing.id),
          ),
        },
      },
    });
    const ferry = await createTestFerry(redis, { services: servicesFile(), transform: broken });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'step1', input: {} });
    const view = await ferry.producer.waitFor('svc', job.id, { timeoutMs: 15_000 });
    expect(view.state).toBe('dead_lettered');
    const record = await deadLetter(ferry, view.deadLetterId!);
    expect(record.finalError).toMatchObject({ type: 'ValidationError', field: 'then' });
    expect(record.finalError.message).toMatch(/^then: input for two\.step2: /);
    expect(await jobCount(ferry, 'two')).toBe(0);
  });

  it('dead-letters a step past the chain depth limit as ValidationError naming the limit', async () => {
    const ferry = await createTestFerry(redis, {
      services: servicesFile(),
      transform: CHAIN,
      pool: { maxChainDepth: 1 },
    });
    const job = await ferry.producer.enqueue({ service: 'svc', operation: 'step1', input: { email: 'c' } });
    expect((await ferry.producer.waitFor('svc', job.id, { timeoutMs: 15_000 })).state).toBe('completed');
    const stepOne = await queueOf(ferry, 'svc').getJob(job.id);
    const next2 = decodeStoredResult(stepOne!.returnvalue)!.next!;
    const two = await ferry.producer.waitFor('two', next2.jobId, { timeoutMs: 15_000 });
    expect(two.state).toBe('dead_lettered');
    const record = await deadLetter(ferry, two.deadLetterId!);
    expect(record.finalError.type).toBe('ValidationError');
    expect(record.finalError.message).toMatch(/chain depth limit 1 reached/);
    expect(record.origin).toMatchObject({ kind: 'then', depth: 1 });
    expect(await jobCount(ferry, 'three')).toBe(0);
  });

  it("a raw producer's forged origin neither escapes the depth limit nor makes a next step", async () => {
    const ferry = await createTestFerry(redis, { services: servicesFile(), transform: CHAIN });
    const forged: unknown[] = [
      { kind: 'then', depth: -1 },
      { kind: 'then', depth: 0.5 },
      { kind: 'bogus', depth: 0 },
      { kind: 'then', depth: '0' },
      { kind: 'then', depth: Number.MAX_SAFE_INTEGER },
      { kind: 'then', depth: 0, source: { service: 'other', jobId: 'x' }, extra: 'x'.repeat(10_000) },
      'depth-0',
    ];
    const ids: string[] = [];
    for (const [index, origin] of forged.entries()) {
      const job = await queueOf(ferry, 'svc').add(
        'step1',
        { input: { email: `forged-${index}` }, tenant: 'acme', origin } as JobData,
        { jobId: `forged-origin-${index}` },
      );
      ids.push(job.id!);
    }
    const states = [];
    for (const id of ids) states.push((await ferry.producer.waitFor('svc', id, { timeoutMs: 15_000 })).state);
    // Each malformed origin, and a depth past the limit, is dead-lettered; unknown keys of a well-formed origin
    // are dropped (its depth 0 is a producer's own), so that one job makes its one next step.
    expect(states).toEqual([
      'dead_lettered',
      'dead_lettered',
      'dead_lettered',
      'dead_lettered',
      'dead_lettered',
      'completed',
      'dead_lettered',
    ]);
    expect(await jobCount(ferry, 'two')).toBe(1);
  });
});

describe('follow-up metrics', () => {
  it('count follow-ups by kind and the ones that could not be made, in series promtool accepts', async () => {
    const brokenThen = withReactions({
      svc: {
        step1: {
          then: enqueue(
            'two',
            'step2',
            template(() => {
              throw new Error('no');
            }),
          ),
        },
      },
    });
    const ferry = await createTestFerry(redis, {
      services: servicesFile(),
      transform: (config) => brokenThen(CHAIN(ON_FAILURE(config))),
    });
    const metrics = createMetrics({
      config: ferry.config,
      connection: ferry.connection,
      prefix: ferry.prefix,
      processMetrics: false,
    });
    onTestFinished(() => metrics.close());
    metrics.observeDeliveries(ferry.pool);
    const auth = await ferry.producer.enqueue({ service: 'svc', operation: 'auth', input: {} });
    const step = await ferry.producer.enqueue({ service: 'svc', operation: 'step1', input: {} });
    // auth's rule makes a follow-up; step1's then cannot be rendered (step1 has no onFailure rule).
    const views = await Promise.all([
      ferry.producer.waitFor('svc', auth.id, { timeoutMs: 15_000 }),
      ferry.producer.waitFor('svc', step.id, { timeoutMs: 15_000 }),
    ]);
    expect(views.map((view) => view.state)).toEqual(['dead_lettered', 'dead_lettered']);
    const { body } = await metrics.render();
    const scrape = new Scrape(body);
    expect(scrape.type('ferry_follow_ups_total')).toBe('COUNTER');
    expect(scrape.value('ferry_follow_ups_total', { service: 'svc', kind: 'onFailure' })).toBe(1);
    expect(scrape.value('ferry_follow_ups_total', { service: 'svc', kind: 'then' })).toBe(0);
    expect(
      scrape.value('ferry_follow_ups_refused_total', { service: 'svc', kind: 'then', reason: 'template' }),
    ).toBe(1);
    expect(
      scrape.value('ferry_follow_ups_refused_total', { service: 'svc', kind: 'onFailure', reason: 'depth' }),
    ).toBe(0);
    expect(await promtoolCheckMetrics(body)).toEqual({ code: 0, problems: [] });
  });
});

describe('follow-up idempotency keys', () => {
  it('stay valid keys for any dead letter id: hashed past 200 characters or with a header-unsafe character', () => {
    const plain = onFailureIdempotencyKey('dl-svc.idem-abc.1796439964637', 2);
    expect(plain).toBe('ferry-onfailure-dl-svc.idem-abc.1796439964637-2');
    // A raw producer's job id may be 300 characters, and hold a newline.
    for (const id of [`dl-svc.${'x'.repeat(300)}.1`, 'dl-svc.a\nb.1']) {
      const key = onFailureIdempotencyKey(id, 0);
      expect(key).toMatch(/^ferry-onfailure-h[A-Za-z0-9_-]{43}-0$/);
      expect(onFailureIdempotencyKey(id, 1)).not.toBe(key);
    }
    const then = thenIdempotencyKey('svc', 'k'.repeat(200));
    expect(then).toMatch(/^ferry-then-[A-Za-z0-9_-]{43}$/);
    expect(thenIdempotencyKey('other', 'k'.repeat(200))).not.toBe(then);
  });
});
