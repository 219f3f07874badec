/**
 * Sealed inputs end to end (issue 17 item 5): a `sensitive: true` operation's input and metadata reach the
 * downstream intact, and their plaintext is in no Redis key (every type, read and DUMPed), no AOF file, no API
 * answer (job, dead letters, SSE, Bull Board's JSON) and no log line. Real redis-server with appendonly, real
 * HTTP downstream, the in-process API and worker pool.
 */
import { randomBytes } from 'node:crypto';

import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';

import { TokenSet } from '../../src/api/auth.ts';
import { buildFerryApi } from '../../src/cli/api-server.ts';
import { readEnv } from '../../src/core/env.ts';
import { type JobData, SEALED_PLACEHOLDER } from '../../src/core/job.ts';
import { createLogger } from '../../src/core/logger.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { parseKeyring } from '../../src/secrets/crypto.ts';
import { Scrubber } from '../../src/secrets/scrub.ts';
import { requireSealKey } from '../../src/secrets/setup.ts';
import { startTestApi, TOKEN_CONFIG, TOKENS } from '../helpers/api.ts';
import { type Downstream, startDownstream } from '../helpers/downstream.ts';
import { createTestFerry } from '../helpers/ferry.ts';
import { rawJobs } from '../helpers/raw-jobs.ts';
import { dumpRedis, redisAtRest, startRedis, uniquePrefix } from '../helpers/redis.ts';
import { findSecretForms, secretForms } from '../helpers/secret-forms.ts';
import { servicesFileIssues } from '../helpers/services-issues.ts';

const redis = await startRedis({ appendonly: true });
const KEY = randomBytes(32).toString('base64');
const keyring = parseKeyring(`k1:${KEY}`);

function services(url: string): unknown {
  return {
    services: {
      vault: {
        baseUrl: url,
        timeoutMs: 5_000,
        sensitive: true,
        retry: { attempts: 1 },
        operations: {
          create: {
            method: 'POST',
            path: '/things',
            body: '{{ input }}',
            then: { enqueue: { service: 'vault', operation: 'audit', input: { copy: '{{ input.email }}' } } },
          },
          reject: { method: 'POST', path: '/reject', body: '{{ input }}' },
          audit: { method: 'POST', path: '/audit', body: '{{ input }}' },
        },
      },
    },
  };
}

/** 201 echoing the input back (as a created record), but 400 naming it on /reject. */
function answer(downstream: Downstream): void {
  downstream.script((request) => {
    const sent = JSON.parse(request.body === '' ? 'null' : request.body) as unknown;
    return request.url === '/reject'
      ? { status: 400, body: { error: `refused: ${JSON.stringify(sent)}` } }
      : { status: 201, body: { id: 'x', created: sent } };
  });
}

/** The vault service on a fresh prefix, its answering downstream and a worker with the keyring. */
async function startVault(): Promise<{
  downstream: Downstream;
  prefix: string;
  ferry: Awaited<ReturnType<typeof createTestFerry>>;
}> {
  const downstream = await startDownstream();
  answer(downstream);
  const prefix = uniquePrefix();
  const ferry = await createTestFerry(redis, {
    services: services(downstream.url),
    prefix,
    pool: { keyring },
  });
  return { downstream, prefix, ferry };
}

async function readStream(url: string): Promise<string> {
  const response = await fetch(url, {
    headers: { authorization: `Bearer ${TOKENS.reader}` },
    signal: AbortSignal.timeout(15_000),
  });
  expect(response.status).toBe(200);
  // The server ends a finished job's stream after its terminal event.
  return response.text();
}

describe('sensitive: true', () => {
  it('delivers the plaintext and stores, shows and logs it nowhere', async () => {
    const { downstream, prefix, ferry } = await startVault();
    const api = await startTestApi({
      redisUrl: redis.url,
      prefix,
      config: ferry.config,
      secretsKey: `k1:${KEY}`,
    });
    const secret = `ada-${randomBytes(6).toString('hex')}@example.com`;
    const note = `Ünïcode note ${randomBytes(6).toString('hex')} with "quotes" & spaces`;
    const meta = `order-${randomBytes(6).toString('hex')}`;
    const rejected = `bob-${randomBytes(6).toString('hex')}@example.com`;

    const accepted = await api.request('POST', '/v1/jobs', {
      token: TOKENS.writer,
      body: {
        service: 'vault',
        operation: 'create',
        tenant: 'acme',
        input: { email: secret, note },
        metadata: { ref: meta },
      },
    });
    expect(accepted.status).toBe(202);
    const id = accepted.body.id as string;
    const bad = await ferry.producer.enqueue({
      service: 'vault',
      operation: 'reject',
      tenant: 'acme',
      input: { email: rejected },
      idempotencyKey: `reject-${randomBytes(4).toString('hex')}`,
    });

    const done = await ferry.producer.waitFor('vault', id, { timeoutMs: 20_000, follow: true });
    expect(done.state).toBe('completed');
    expect(done.chain).toHaveLength(2);
    const audit = done.chain[1]!;
    const failed = await ferry.producer.waitFor('vault', bad.id, { timeoutMs: 20_000 });
    expect(failed.state).toBe('dead_lettered');

    // The downstream got every input intact, the follow-up's too (it was sealed for its own job).
    const bodies = (path: string): unknown[] =>
      downstream.requests.filter((r) => r.url === path).map((r) => JSON.parse(r.body) as unknown);
    expect(bodies('/things')).toEqual([{ email: secret, note }]);
    expect(bodies('/audit')).toEqual([{ copy: secret }]);
    expect(bodies('/reject')).toEqual([{ email: rejected }]);

    // What is stored: the placeholder and an envelope, no metadata, nothing in the result.
    for (const [jobId, operation] of [
      [id, 'create'],
      [audit.jobId, 'audit'],
    ] as const) {
      const stored = JSON.parse((await redis.client.hget(`${prefix}:{vault}:${jobId}`, 'data'))!) as Record<
        string,
        unknown
      >;
      expect(stored, operation).toMatchObject({ input: SEALED_PLACEHOLDER, tenant: 'acme' });
      expect(stored.sealed).toMatch(/^fs1\.k1\./);
      expect(stored).not.toHaveProperty('metadata');
    }

    // Every view: `[sealed]`, `sealed: true`, no metadata.
    const views = {
      job: await api.request('GET', `/v1/jobs/vault/${id}`, { token: TOKENS.reader }),
      audit: await api.request('GET', `/v1/jobs/vault/${audit.jobId}`, { token: TOKENS.reader }),
      failed: await api.request('GET', `/v1/jobs/vault/${bad.id}`, { token: TOKENS.reader }),
      deadLetters: await api.request('GET', '/v1/dead-letters?includeInput=true', { token: TOKENS.admin }),
      deadLetter: await api.request('GET', `/v1/dead-letters/${failed.deadLetterId!}`, {
        token: TOKENS.admin,
      }),
      board: await api.request('GET', '/admin/queues/api/queues?activeQueue=%7Bvault%7D&status=completed', {
        token: TOKENS.admin,
      }),
      boardJob: await api.request('GET', `/admin/queues/api/queues/%7Bvault%7D/${id}`, {
        token: TOKENS.admin,
      }),
      boardDeadLetters: await api.request(
        'GET',
        '/admin/queues/api/queues?activeQueue=%7Bdead-letter%7D&status=paused',
        { token: TOKENS.admin },
      ),
    };
    for (const [name, view] of Object.entries(views)) expect(view.status, name).toBe(200);
    expect(views.job.body).toMatchObject({ state: 'completed', sealed: true });
    expect(views.job.body).not.toHaveProperty('metadata');
    expect(views.job.body.result).not.toHaveProperty('metadata');
    expect(views.deadLetter.body).toMatchObject({ input: SEALED_PLACEHOLDER, sealed: true });
    expect(JSON.stringify(views.deadLetter.body)).not.toContain('fs1.');
    expect(views.boardJob.body.job.data.input).toBe(SEALED_PLACEHOLDER);
    const sse = await readStream(`${api.url}/v1/jobs/vault/${id}/events`);
    expect(sse).toContain('event: completed');

    const places: Record<string, string> = {
      ...(await redisAtRest(redis)),
      ...Object.fromEntries(Object.entries(views).map(([name, view]) => [`API ${name}`, view.text])),
      'API SSE stream': sse,
      'worker logs': ferry.logs.join('\n'),
      'API logs': api.logs.join('\n'),
    };
    const hits = [
      ...findSecretForms('input', secretForms(secret), places),
      ...findSecretForms('input note', secretForms(note), places),
      ...findSecretForms('metadata', secretForms(meta), places),
      ...findSecretForms('dead-lettered input', secretForms(rejected), places),
    ];
    expect(hits).toEqual([]);
    await api.close();
    await downstream.close();
  });

  it('refuses an envelope copied into another tenant’s job (ValidationError dead letter, no call)', async () => {
    const { downstream, prefix, ferry } = await startVault();
    const raw = rawJobs(redis.url, prefix);
    const own = await ferry.producer.enqueue({
      service: 'vault',
      operation: 'create',
      tenant: 'acme',
      input: { email: 'copied@example.com' },
      delayMs: 60_000,
    });
    const envelope = JSON.parse((await redis.client.hget(`${prefix}:{vault}:${own.id}`, 'data'))!) as {
      sealed: string;
    };
    const copy = await raw.add('vault', 'create', {
      input: SEALED_PLACEHOLDER,
      sealed: envelope.sealed,
      tenant: 'globex',
    });
    const view = await ferry.producer.waitFor('vault', copy, { timeoutMs: 20_000 });
    expect(view.state).toBe('dead_lettered');
    expect(view.lastError).toMatchObject({ type: 'ValidationError' });
    expect(view.lastError!.message).toMatch(/^sealed: does not open for service "vault" tenant "globex"/);
    expect(downstream.requests).toEqual([]);
    await downstream.close();
  });

  it('refuses an envelope copied into an operation of the same service that is not sensitive', async () => {
    // A raw producer (Redis access, no key) copies a sensitive operation's envelope into a job of another
    // operation of the same service and tenant: it opened there (the seal binds service and tenant), and that
    // operation's `then` or `onFailure` copied the input into a queue that is not sealed.
    const downstream = await startDownstream();
    answer(downstream);
    const prefix = uniquePrefix();
    const ferry = await createTestFerry(redis, {
      services: {
        services: {
          mixed: {
            baseUrl: downstream.url,
            timeoutMs: 5_000,
            retry: { attempts: 1 },
            operations: {
              create: { method: 'POST', path: '/things', body: '{{ input }}', sensitive: true },
              note: {
                method: 'POST',
                path: '/note',
                body: { n: 1 },
                then: {
                  enqueue: { service: 'plain', operation: 'log', input: { copy: '{{ input.email }}' } },
                },
                onFailure: [
                  { enqueue: { service: 'plain', operation: 'log', input: { copy: '{{ input.email }}' } } },
                ],
              },
            },
          },
          plain: {
            baseUrl: downstream.url,
            retry: { attempts: 1 },
            operations: { log: { method: 'POST', path: '/log', body: '{{ input }}' } },
          },
        },
      },
      prefix,
      pool: { keyring },
    });
    const raw = rawJobs(redis.url, prefix);
    const secret = `moved-${randomBytes(6).toString('hex')}@example.com`;
    const own = await ferry.producer.enqueue({
      service: 'mixed',
      operation: 'create',
      tenant: 'acme',
      input: { email: secret },
      delayMs: 60_000,
    });
    const envelope = JSON.parse((await redis.client.hget(`${prefix}:{mixed}:${own.id}`, 'data'))!) as {
      sealed: string;
    };
    const copy = await raw.add('mixed', 'note', {
      input: SEALED_PLACEHOLDER,
      sealed: envelope.sealed,
      tenant: 'acme',
    });
    const view = await ferry.producer.waitFor('mixed', copy, { timeoutMs: 20_000, follow: true });
    expect(view.state).toBe('dead_lettered');
    expect(view.lastError).toMatchObject({ type: 'ValidationError', field: 'sealed' });
    expect(downstream.requests).toEqual([]);
    const hits = findSecretForms('sealed input', secretForms(secret), {
      'Redis values': await dumpRedis(redis.client, `${prefix}:*`),
    });
    expect(hits).toEqual([]);
    await downstream.close();
  });

  it('keeps a sealed number out of what the downstream echoes back (result body and error)', async () => {
    const { downstream, prefix, ferry } = await startVault();
    // A card or account number sent as a JSON number: the downstream echoes it as a number, and in text.
    const account = 4_000_000_000_000 + randomBytes(4).readUInt32BE(0);
    const created = await ferry.producer.enqueue({
      service: 'vault',
      operation: 'create',
      tenant: 'acme',
      input: { account },
    });
    const refused = await ferry.producer.enqueue({
      service: 'vault',
      operation: 'reject',
      tenant: 'acme',
      input: { account },
    });
    expect((await ferry.producer.waitFor('vault', created.id, { timeoutMs: 20_000 })).state).toBe(
      'completed',
    );
    expect((await ferry.producer.waitFor('vault', refused.id, { timeoutMs: 20_000 })).state).toBe(
      'dead_lettered',
    );
    const sent = downstream.requests.filter((r) => r.url === '/things' || r.url === '/reject');
    expect(sent.map((r) => JSON.parse(r.body) as unknown)).toEqual([{ account }, { account }]);
    const stored = await dumpRedis(redis.client, `${prefix}:*`);
    expect(stored).toContain('[redacted]');
    const hits = findSecretForms('sealed number', secretForms(String(account)), {
      'Redis values': stored,
      'worker logs': ferry.logs.join('\n'),
    });
    expect(hits).toEqual([]);
    await downstream.close();
  });

  // `sealed: null` or a string that is no envelope, beside a plaintext input: the job is sealed all the same.
  it.each([
    ['null', null],
    ['a string but no envelope', 'not-an-envelope'],
  ])('seals a raw producer’s plaintext job whose `sealed` is %s before its first call', async (_, sealed) => {
    const { downstream, prefix, ferry } = await startVault();
    const raw = rawJobs(redis.url, prefix);
    const value = `raw-${randomBytes(6).toString('hex')}@example.com`;
    const id = await raw.add('vault', 'reject', {
      input: { email: value },
      metadata: { m: value },
      tenant: 'acme',
      sealed,
    } as unknown as JobData);
    const view = await ferry.producer.waitFor('vault', id, { timeoutMs: 20_000 });
    expect(view.state).toBe('dead_lettered');
    expect(downstream.requests.map((r) => JSON.parse(r.body) as unknown)).toEqual([{ email: value }]);
    // The AOF has the raw producer's own write; Ferry wrote nothing new in plaintext (not in the dead letter,
    // the job's history or its error).
    const hits = findSecretForms('raw input', secretForms(value), {
      'Redis values': await dumpRedis(redis.client, `${prefix}:*`),
    });
    expect(hits).toEqual([]);
    await downstream.close();
  });

  it('seals every job of a batch (POST /v1/jobs/batch)', async () => {
    const { downstream, prefix, ferry } = await startVault();
    const api = await startTestApi({
      redisUrl: redis.url,
      prefix,
      config: ferry.config,
      secretsKey: `k1:${KEY}`,
    });
    const values = [0, 1].map((i) => `batch${i}-${randomBytes(6).toString('hex')}@example.com`);
    const batch = await api.request('POST', '/v1/jobs/batch', {
      token: TOKENS.writer,
      body: {
        jobs: values.map((email) => ({
          service: 'vault',
          operation: 'reject',
          tenant: 'acme',
          input: { email },
        })),
      },
    });
    expect(batch.status).toBe(200);
    expect(batch.body.accepted).toBe(2);
    for (const { id } of batch.body.results as { id: string }[]) {
      expect((await ferry.producer.waitFor('vault', id, { timeoutMs: 20_000 })).state).toBe('dead_lettered');
      const stored = JSON.parse((await redis.client.hget(`${prefix}:{vault}:${id}`, 'data'))!) as Record<
        string,
        unknown
      >;
      expect(stored.input).toBe(SEALED_PLACEHOLDER);
    }
    expect(downstream.requests.map((r) => (JSON.parse(r.body) as { email: string }).email).sort()).toEqual(
      [...values].sort(),
    );
    const stored = await dumpRedis(redis.client, `${prefix}:*`);
    const hits = values.flatMap((value) =>
      findSecretForms('batch input', secretForms(value), { 'Redis values': stored }),
    );
    expect(hits).toEqual([]);
    await api.close();
    await downstream.close();
  });

  it('refuses to enqueue a sensitive job without a keyring, writing nothing', async () => {
    const prefix = uniquePrefix();
    const ferry = await createTestFerry(redis, {
      services: services('http://127.0.0.1:9'),
      prefix,
      pool: { keyring },
      start: false,
    });
    const { Producer } = await import('../../src/producer/producer.ts');
    const producer = new Producer({ connection: redis.url, prefix, services: ferry.config.services });
    await expect(
      producer.enqueue({ service: 'vault', operation: 'create', input: { email: 'x@example.com' } }),
    ).rejects.toMatchObject({ type: 'ConfigurationError' });
    await producer.close();
    // No job, no index, no event. A queue's `meta` key is left out: the test Ferry's own (unstarted) worker
    // side writes its queues' version there when it likes (a loaded run saw `{dead-letter}:meta`).
    const keys = await redis.client.keys(`${prefix}:*`);
    expect(keys.filter((key) => !key.endsWith(':meta'))).toEqual([]);
  });
});

describe('the API and a sensitive operation', () => {
  it('does not start without FERRY_SECRETS_KEY', async () => {
    const config = parseServicesConfig(services('http://127.0.0.1:9'), { env: {} });
    const connection = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    const eventsConnection = new Redis(redis.url, { maxRetriesPerRequest: null });
    try {
      const env = readEnv({ FERRY_PREFIX: uniquePrefix() });
      const runtime = { env, config, logger: createLogger({ level: 'silent' }), scrubber: new Scrubber() };
      await expect(
        buildFerryApi(runtime, {
          connection,
          eventsConnection,
          tokens: TokenSet.parse(TOKEN_CONFIG, 'test'),
        }),
      ).rejects.toMatchObject({
        type: 'ConfigurationError',
        message:
          'services.vault.operations.create is sensitive (sealed input), and FERRY_SECRETS_KEY is not set: set it (ferry secrets keygen)',
      });
    } finally {
      connection.disconnect();
      eventsConnection.disconnect();
    }
  });
});

describe('services file: sensitive', () => {
  it('refuses a follow-up or fallback from a sensitive operation into one that is not, at its path', () => {
    const doc = {
      services: {
        vault: {
          baseUrl: 'http://127.0.0.1:1',
          sensitive: true,
          fallback: { service: 'plain' },
          operations: {
            create: {
              method: 'POST',
              path: '/a',
              then: { enqueue: { service: 'plain', operation: 'create', input: '{{ input }}' } },
            },
          },
        },
        plain: {
          baseUrl: 'http://127.0.0.1:2',
          operations: { create: { method: 'POST', path: '/b' } },
        },
      },
    };
    expect(servicesFileIssues(() => parseServicesConfig(doc, { env: {} }))).toEqual(
      expect.arrayContaining([
        'services.vault.operations.create.then.enqueue: vault.create is sensitive (sealed input), and plain.create is not: its follow-up would be stored in plaintext; mark plain.create sensitive: true',
        'services.vault.fallback.service: vault.create is sensitive (sealed input), and plain.create is not: a job moved there would be stored in plaintext; mark it sensitive: true',
      ]),
    );
  });

  it('needs FERRY_SECRETS_KEY only in a process that serves a sensitive operation', () => {
    const config = parseServicesConfig(
      {
        services: {
          vault: {
            baseUrl: 'http://127.0.0.1:1',
            sensitive: true,
            operations: { a: { method: 'POST', path: '/a' } },
          },
          plain: { baseUrl: 'http://127.0.0.1:2', operations: { a: { method: 'POST', path: '/a' } } },
        },
      },
      { env: {} },
    );
    expect(() => requireSealKey(config, undefined)).toThrow(/^services\.vault\.operations\.a is sensitive/);
    expect(() => requireSealKey(config, undefined, ['plain'])).not.toThrow();
    expect(() => requireSealKey(config, keyring, ['vault'])).not.toThrow();
  });

  it('lets an operation opt out of its service’s sensitive: true, and inherit it otherwise', () => {
    const config = parseServicesConfig(
      {
        services: {
          vault: {
            baseUrl: 'http://127.0.0.1:1',
            sensitive: true,
            operations: {
              a: { method: 'POST', path: '/a' },
              b: { method: 'GET', path: '/b', sensitive: false },
            },
          },
        },
      },
      { env: {} },
    );
    const operations = config.services.get('vault')!.operations;
    expect(operations.get('a')!.sensitive).toBe(true);
    expect(operations.get('b')!.sensitive).toBe(false);
  });
});
