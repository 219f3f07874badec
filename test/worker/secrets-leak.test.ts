/** Secret values never reach Redis (job data, results, dead letters), logs or error messages. */
import { describe, expect, it } from 'vitest';

import { Scrubber } from '../../src/secrets/scrub.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, oneService } from '../helpers/ferry.ts';
import { dumpRedis, startRedis } from '../helpers/redis.ts';

const redis = await startRedis();
const TOKEN = 'tok_live_5f2a9c81d7e64b03';
const PASSWORD = 'pw-0c7e1b9a44';

/** A scrubber that has seen `secret`, as a worker's has once it resolved it. */
function scrubberFor(secret: string): Scrubber {
  const scrubber = new Scrubber();
  scrubber.add(secret);
  return scrubber;
}

function forms(value: string): string[] {
  return [value, Buffer.from(value).toString('base64'), encodeURIComponent(value)];
}

describe('secret values never leak', () => {
  it('through echoed credentials in results, errors, dead letters, Redis and logs', async () => {
    // A downstream that echoes what it was sent (several real APIs do, in errors especially).
    const downstream = await startDownstream((request, index) => {
      const echo = { youSent: request.headers.authorization, query: request.url };
      // Location echoes the query string, API key and all: headers kept in a result are scrubbed too.
      return index % 3 === 2
        ? { status: 201, body: echo, headers: { location: request.url } }
        : { status: index % 3 === 0 ? 500 : 400, body: echo };
    });
    const env = { FERRY_SECRET_CRM_TOKEN: TOKEN, FERRY_SECRET_CRM_PASSWORD: PASSWORD };
    const ferry = await createTestFerry(redis, {
      env,
      services: {
        services: {
          bearer: {
            ...(oneService(downstream.url) as { services: { svc: object } }).services.svc,
            auth: { type: 'bearer', token: '{{ secrets.crm_token }}' },
          },
          basic: {
            ...(oneService(downstream.url) as { services: { svc: object } }).services.svc,
            auth: { type: 'basic', username: 'apiuser', password: '{{ secrets.crm_password }}' },
          },
          query: {
            ...(oneService(downstream.url) as { services: { svc: object } }).services.svc,
            auth: { type: 'apiKey', query: 'api_key', value: '{{ secrets.crm_token }}' },
          },
        },
      },
    });
    const jobs = await Promise.all(
      ['bearer', 'basic', 'query'].flatMap((service) =>
        Array.from({ length: 4 }, (_, i) =>
          ferry.producer
            .enqueue({ service, operation: 'create', input: { i } })
            .then((job) => ({ service, job })),
        ),
      ),
    );
    const views = await Promise.all(
      jobs.map(({ service, job }) => ferry.producer.waitFor(service, job.id, { timeoutMs: 10_000 })),
    );
    // The workload really mixed outcomes, and the downstream really received the secrets.
    expect(new Set(views.map((v) => v.state))).toEqual(new Set(['completed', 'dead_lettered']));
    expect(downstream.requests.some((r) => r.headers.authorization === `Bearer ${TOKEN}`)).toBe(true);

    const stored = await dumpRedis(redis.client, `${ferry.prefix}:*`);
    const logs = ferry.logs.join('\n');
    const viewsText = JSON.stringify(views);
    // The events streams the API's SSE reads: a retry's event carries the error a 500 echoed, scrubbed.
    const events = (
      await Promise.all(
        ['bearer', 'basic', 'query'].map((service) =>
          redis.client.xrange(`${ferry.prefix}:{${service}}:events`, '-', '+'),
        ),
      )
    ).flat();
    const retrying = events.filter(([, fields]) => fields[1] === 'ferry:job:retrying');
    expect(retrying.some(([, fields]) => fields.join(' ').includes('[redacted]'))).toBe(true);
    const eventsText = JSON.stringify(events);
    expect(stored).toContain('[redacted]');
    for (const secret of [TOKEN, PASSWORD, `apiuser:${PASSWORD}`]) {
      for (const form of forms(secret)) {
        expect(stored).not.toContain(form);
        expect(logs).not.toContain(form);
        expect(viewsText).not.toContain(form);
        expect(eventsText).not.toContain(form);
      }
    }
  });
});

describe('Scrubber', () => {
  it.each(['', 'a', 'ab', 'abc', 'user:', 'apiuser:', 'x'.repeat(10)])(
    'finds a secret inside base64 of %j + secret + suffix',
    async (prefix) => {
      const scrubber = scrubberFor(PASSWORD);
      for (const suffix of ['', '!', '!!', '!!!']) {
        const encoded = Buffer.from(`${prefix}${PASSWORD}${suffix}`).toString('base64');
        expect(scrubber.scrub(`Basic ${encoded}`)).toContain('[redacted]');
      }
    },
  );
});

describe('Scrubber.scrubValue', () => {
  it('returns the same value when nothing matched, and rebuilds only what changed', async () => {
    const scrubber = scrubberFor(TOKEN);
    const clean = { a: [1, 'two', { three: null }], b: 'text' };
    expect(scrubber.scrubValue(clean)).toBe(clean);
    const dirty = { keep: clean, list: ['x', `Bearer ${TOKEN}`], [TOKEN]: 1 };
    const scrubbed = scrubber.scrubValue(dirty);
    expect(scrubbed).toEqual({ keep: clean, list: ['x', 'Bearer [redacted]'], '[redacted]': 1 });
    expect(scrubbed.keep).toBe(clean);
    expect(dirty.list[1]).toBe(`Bearer ${TOKEN}`); // the input is never mutated
  });

  it.each<[string, unknown]>([
    ['a key alone', { deep: { [TOKEN]: 1 } }],
    ['a string deep in arrays', { a: [[{ b: ['x', { c: `t=${TOKEN}` }] }]] }],
    ['a bare string', `echo ${TOKEN}`],
    ['an array item', ['x', TOKEN]],
  ])('finds the secret as %s', async (_what, value) => {
    const scrubber = scrubberFor(TOKEN);
    const scrubbed = scrubber.scrubValue(value);
    expect(scrubbed).not.toBe(value);
    expect(JSON.stringify(scrubbed)).not.toContain(TOKEN);
    expect(JSON.stringify(scrubbed)).toContain('[redacted]');
  });

  it('scrubs a secret at the bottom of deeply nested JSON, each level walked once', async () => {
    const scrubber = scrubberFor(TOKEN);
    // A walk that re-scrubbed a changed child would take 2^500 steps here and never finish.
    let body: unknown = { before: 'x', token: TOKEN, after: 'y' };
    for (let i = 0; i < 500; i++) body = { before: i, child: body, after: i };
    const scrubbed = JSON.stringify(scrubber.scrubValue(body));
    expect(scrubbed).not.toContain(TOKEN);
    expect(scrubbed).toContain('{"before":"x","token":"[redacted]","after":"y"}');
    expect(scrubbed.indexOf('"before":499')).toBeLessThan(scrubbed.indexOf('"after":499'));
  });

  it('walks own keys only, like JSON.stringify: an inherited enumerable key is neither scrubbed nor copied', async () => {
    const scrubber = scrubberFor(TOKEN);
    const clean = Object.assign(Object.create({ inherited: TOKEN }) as Record<string, unknown>, { own: 'x' });
    expect(scrubber.scrubValue(clean)).toBe(clean);
    const dirty = Object.assign(Object.create({ inherited: 'y' }) as Record<string, unknown>, {
      a: 1,
      b: TOKEN,
    });
    expect(scrubber.scrubValue(dirty)).toEqual({ a: 1, b: '[redacted]' });
  });

  it("keeps a downstream's __proto__ key as a key, never as a prototype", async () => {
    const scrubber = scrubberFor(TOKEN);
    const body = JSON.parse(`{"__proto__": {"polluted": true}, "token": "${TOKEN}"}`) as Record<
      string,
      unknown
    >;
    const scrubbed = scrubber.scrubValue(body);
    expect(Object.getPrototypeOf(scrubbed)).toBe(Object.prototype);
    expect(Object.keys(scrubbed)).toEqual(['__proto__', 'token']);
    expect(JSON.stringify(scrubbed)).toBe('{"__proto__":{"polluted":true},"token":"[redacted]"}');
  });
});
