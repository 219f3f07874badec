/**
 * Issue 13, items 1 and 2, end to end: an API key sent in the query string (form-encoded: `!'()~` and space
 * become `%21 %27 %28 %29 %7E +`) and a password with a double space, echoed back by a real downstream on
 * 127.0.0.1 in every way the attack found: a 404 page echoing the URL, a `Location` header kept in a result,
 * an error page where the key straddles the 300-character excerpt, a result where it straddles the 64 KiB cap,
 * an error page echoing the password (whose excerpt collapses whitespace). A real redis-server, a real worker
 * pool and the API, composed as `ferry dev` composes them (the worker's log lines scrubbed as loadRuntime's).
 *
 * Then every Redis key and value, every log line and every API answer (jobs, the dead-letter list and each
 * dead letter) is searched for each value in every encoding (test/helpers/secret-forms.ts, written apart from
 * the scrubber) and for each start of it of 8 characters or more. Nothing may be found.
 */
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';

import { describe, expect, it, onTestFinished } from 'vitest';

import type { Runtime } from '../../src/cli/runtime.ts';
import { readEnv } from '../../src/core/env.ts';
import { createLogger } from '../../src/core/logger.ts';
import { parseServicesConfig } from '../../src/core/services/load.ts';
import { Scrubber } from '../../src/secrets/scrub.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { startFerryStack } from '../helpers/ferry-stack.ts';
import { dumpRedis, startRedis, uniquePrefix } from '../helpers/redis.ts';
import { findSecretForms, secretAndPrefixForms } from '../helpers/secret-forms.ts';

const redis = await startRedis();
const ADMIN = `admin-${randomBytes(12).toString('hex')}`;
/** Every character the encoders disagree about, then a random part (so nothing else can contain it). */
const KEY = `k3y!'()~ +/=é*${randomBytes(9).toString('hex')}`;
const PASSWORD = `correct  horse  ${randomBytes(6).toString('hex')}`;
const RESULT_CAP = 64 * 1024;
const EXCERPT_CHARS = 300;

type Mode = 'url-404' | 'location' | 'excerpt-key' | 'excerpt-url' | 'capped' | 'password';

describe('a query-string API key and a password with a double space, echoed back', () => {
  it('leave no encoding of them, nor any start of them, in Redis, logs or API answers', async () => {
    const prefix = uniquePrefix();
    const downstream = await startDownstream((request) => {
      const { mode, at } = JSON.parse(request.body || '{}') as { mode: Mode; at: number };
      const url = request.url;
      switch (mode) {
        case 'url-404':
          return {
            status: 404,
            body: `<html><body><h1>Not Found</h1><p>No route for POST ${url}</p></body></html>`,
          };
        case 'location':
          return { status: 201, body: { ok: true }, headers: { location: `http://partner.test${url}` } };
        case 'excerpt-key':
          // The key runs across the excerpt's 300th character (after "downstream answered 422: ").
          return { status: 422, body: `${'e'.repeat(at)}${KEY} and more text after it` };
        case 'excerpt-url':
          return { status: 422, body: `${'u'.repeat(at)}${url} and more text after it` };
        case 'capped':
          return { status: 200, body: `${'c'.repeat(at)}${KEY}${'d'.repeat(200)}` };
        case 'password': {
          const basic = Buffer.from((request.headers.authorization ?? '').slice(6), 'base64').toString();
          const password = basic.slice(basic.indexOf(':') + 1);
          return { status: 422, body: `<p>Login failed.\n\n  The password\n  ${password}\n  is wrong.</p>` };
        }
        default:
          return { status: 500, body: 'unexpected mode' };
      }
    });
    onTestFinished(() => downstream.close());

    const common = {
      baseUrl: downstream.url,
      retry: { attempts: 1 },
      breaker: { volumeThreshold: 1000 },
      operations: { call: { method: 'POST', path: '/things', body: '{{ input }}' } },
    };
    const config = parseServicesConfig(
      {
        services: {
          keyed: { ...common, auth: { type: 'apiKey', query: 'api_key', value: '{{ secrets.wire_key }}' } },
          basic: {
            ...common,
            auth: { type: 'basic', username: 'api-user', password: '{{ secrets.wire_password }}' },
          },
        },
      },
      { env: {} },
    );
    const vars = {
      FERRY_PREFIX: prefix,
      FERRY_SECRET_WIRE_KEY: KEY,
      FERRY_SECRET_WIRE_PASSWORD: PASSWORD,
    };
    const env = readEnv(vars);
    const logs: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        for (const line of chunk.toString('utf8').split('\n')) if (line !== '') logs.push(line);
        callback();
      },
    });
    // As loadRuntime builds them: one scrubber for the process, the logger's lines scrubbed by it.
    const scrubber = new Scrubber();
    const logger = createLogger({ level: 'debug', destination, scrub: (line) => scrubber.scrub(line) });
    const runtime: Runtime = { env, logger, config, scrubber };

    const { pool, answers, call } = await startFerryStack(redis, {
      runtime,
      processEnv: vars,
      adminToken: ADMIN,
    });
    await pool.start();

    const inputs: { service: string; mode: Mode; at: number }[] = [
      { service: 'keyed', mode: 'url-404', at: 0 },
      { service: 'keyed', mode: 'location', at: 0 },
      // The excerpt is the body's first 300 characters: the key starts 1 to 33 characters before its end.
      ...[1, 8, 12, 20, 33].map((before) => ({
        service: 'keyed',
        mode: 'excerpt-key' as const,
        at: EXCERPT_CHARS - before,
      })),
      ...[10, 30, 60].map((before) => ({
        service: 'keyed',
        mode: 'excerpt-url' as const,
        at: EXCERPT_CHARS - before - '/things?api_key='.length,
      })),
      ...[1, 9, 20].map((before) => ({ service: 'keyed', mode: 'capped' as const, at: RESULT_CAP - before })),
      { service: 'basic', mode: 'password', at: 0 },
    ];
    const jobs: { service: string; mode: Mode; id: string }[] = [];
    for (const { service, mode, at } of inputs) {
      const answer = (await call('POST', '/v1/jobs', {
        service,
        operation: 'call',
        input: { mode, at },
      })) as {
        id: string;
      };
      jobs.push({ service, mode, id: answer.id });
    }
    const views = new Map<string, { state: string; result?: { headers?: Record<string, string> } }>();
    for (const job of jobs) {
      await expect
        .poll(
          async () => ((await call('GET', `/v1/jobs/${job.service}/${job.id}`)) as { state: string }).state,
          { timeout: 20_000, interval: 100 },
        )
        .toMatch(/^(completed|dead_lettered)$/);
      views.set(
        job.id,
        (await call('GET', `/v1/jobs/${job.service}/${job.id}`)) as {
          state: string;
          result?: { headers?: Record<string, string> };
        },
      );
    }
    const list = (await call('GET', '/v1/dead-letters?includeInput=true&limit=100')) as {
      items: { id: string }[];
    };
    for (const item of list.items) await call('GET', `/v1/dead-letters/${encodeURIComponent(item.id)}`);
    await pool.close({ deadlineMs: 2_000 });

    // The scenario really happened: the key went out form-encoded, was echoed, and the answers were kept.
    const sent = new URLSearchParams([['api_key', KEY]]).toString();
    expect(sent).toContain('%21%27%28%29%7E+');
    expect(downstream.requests.filter((r) => r.url.endsWith(sent))).toHaveLength(jobs.length - 1);
    const byMode = (mode: Mode) => jobs.filter((job) => job.mode === mode).map((job) => views.get(job.id)!);
    expect(byMode('location')[0]!.state).toBe('completed');
    expect(byMode('location')[0]!.result?.headers?.location).toBe(
      'http://partner.test/things?api_key=[redacted]',
    );
    expect(byMode('capped').every((view) => view.state === 'completed')).toBe(true);
    for (const mode of ['url-404', 'excerpt-key', 'excerpt-url', 'password'] as const)
      expect(byMode(mode).every((view) => view.state === 'dead_lettered')).toBe(true);
    expect(list.items).toHaveLength(1 + 5 + 3 + 1);

    const places = {
      redis: await dumpRedis(redis.client),
      logs: logs.join('\n'),
      'api answers': answers.join('\n'),
    };
    expect(places.redis.length).toBeGreaterThan(3 * RESULT_CAP);
    expect(places.logs).toContain('[redacted]');
    expect(places['api answers']).toContain('[redacted]');
    const hits = [
      ...findSecretForms('key', secretAndPrefixForms(KEY, 8), places),
      ...findSecretForms('password', secretAndPrefixForms(PASSWORD, 8), places),
    ];
    expect(hits).toEqual([]);
  }, 60_000);
});
