/**
 * Services, breakers, queues and readiness over real HTTP; the OpenAPI document served at /docs/json checked by
 * a real OpenAPI validator.
 */
import { validate } from '@readme/openapi-parser';
import { Queue } from 'bullmq';
import { describe, expect, it } from 'vitest';

import { breakerKey, serviceQueueName } from '../../src/core/queue-layout.ts';
import { startTestApi, type TestApi, TOKENS } from '../helpers/api.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry, type TestFerry } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();
const SECRET = 'sk_live_services_route_secret_value';

async function setup(): Promise<{ ferry: TestFerry; api: TestApi }> {
  const downstream = await startDownstream();
  const ferry = await createTestFerry(redis, {
    start: false,
    env: { FERRY_SECRET_CRM_KEY: SECRET },
    services: {
      services: {
        crm: {
          baseUrl: `${downstream.url}/v2`,
          auth: { type: 'bearer', token: '{{ secrets.crm_key }}' },
          rateLimit: { max: 5, perMs: 1000 },
          tenantConcurrency: 3,
          operations: { createContact: { method: 'POST', path: '/contacts', body: '{{ input }}' } },
        },
        billing: {
          baseUrl: downstream.url,
          operations: { charge: { method: 'POST', path: '/charges/{{ input.id }}' } },
        },
      },
    },
  });
  const api = await startTestApi({ redisUrl: redis.url, prefix: ferry.prefix, config: ferry.config });
  return { ferry, api };
}

describe('GET /v1/services', () => {
  it('lists the configured services with their operations and limits, never a secret value', async () => {
    const { api } = await setup();
    const response = await api.request('GET', '/v1/services', { token: TOKENS.reader });
    expect(response.status).toBe(200);
    const crm = (response.body.services as { name: string }[]).find((s) => s.name === 'crm');
    expect(crm).toMatchObject({
      name: 'crm',
      baseUrl: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+\/v2$/),
      auth: { type: 'bearer' },
      secretNames: ['crm_key'],
      rateLimit: { max: 5, perMs: 1000 },
      tenantConcurrency: 3,
      operations: [{ name: 'createContact', method: 'POST', path: '/contacts' }],
    });
    expect(response.text).not.toContain(SECRET);
    // Unset: absent.
    const billing = (response.body.services as { name: string }[]).find((s) => s.name === 'billing');
    expect(billing).not.toHaveProperty('tenantConcurrency');
  });

  it('shows a service-limited token only its services', async () => {
    const { api } = await setup();
    const response = await api.request('GET', '/v1/services', { token: TOKENS.otherService });
    expect(response.body.services).toEqual([]);
  });
});

describe('GET /v1/breakers', () => {
  it('reads each breaker from the state every worker shares, and the service hold', async () => {
    const { api, ferry } = await setup();
    const now = Date.now();
    await ferry.connection.set(
      breakerKey(ferry.prefix, 'crm'),
      JSON.stringify({ openedAtMs: now, untilMs: now + 60_000 }),
      'PX',
      120_000,
    );
    const queue = new Queue(serviceQueueName('billing'), {
      connection: ferry.connection,
      prefix: ferry.prefix,
    });
    await queue.rateLimit(30_000);
    await queue.close();
    const response = await api.request('GET', '/v1/breakers', { token: TOKENS.reader });
    expect(response.status).toBe(200);
    const byService = Object.fromEntries(
      (response.body.breakers as { service: string; heldForMs: number }[]).map((b) => [b.service, b]),
    );
    expect(byService.crm).toEqual({
      service: 'crm',
      state: 'open',
      openedAt: now,
      openUntil: now + 60_000,
      heldForMs: 0,
    });
    expect(byService.billing).toMatchObject({ service: 'billing', state: 'closed' });
    expect(byService.billing!.heldForMs).toBeGreaterThan(25_000);
  });

  it('says halfOpen once the open period is over and the probe has not closed it yet', async () => {
    const { api, ferry } = await setup();
    const now = Date.now();
    await ferry.connection.set(
      breakerKey(ferry.prefix, 'crm'),
      JSON.stringify({ openedAtMs: now - 60_000, untilMs: now - 1 }),
      'PX',
      60_000,
    );
    const response = await api.request('GET', '/v1/breakers', { token: TOKENS.reader });
    expect(response.body.breakers).toContainEqual(
      expect.objectContaining({ service: 'crm', state: 'halfOpen' }),
    );
  });
});

describe('queues', () => {
  it('lists counts, pauses and resumes a service queue (admin), 404 naming an unknown service', async () => {
    const { api, ferry } = await setup();
    await ferry.producer.enqueue({ service: 'crm', operation: 'createContact', input: {} });
    const list = await api.request('GET', '/v1/queues', { token: TOKENS.reader });
    expect(list.body.queues).toContainEqual({
      service: 'crm',
      paused: false,
      counts: expect.objectContaining({ waiting: 1, active: 0, delayed: 0, failed: 0, completed: 0 }),
    });
    const paused = await api.request('POST', '/v1/queues/crm/pause', { token: TOKENS.admin });
    expect(paused.body).toEqual({ service: 'crm', paused: true });
    const queue = new Queue(serviceQueueName('crm'), { connection: ferry.connection, prefix: ferry.prefix });
    expect(await queue.isPaused()).toBe(true);
    const resumed = await api.request('POST', '/v1/queues/crm/resume', { token: TOKENS.admin });
    expect(resumed.body).toEqual({ service: 'crm', paused: false });
    expect(await queue.isPaused()).toBe(false);
    await queue.close();
    const unknown = await api.request('POST', '/v1/queues/nope/pause', { token: TOKENS.admin });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.message).toContain('"nope"');
  });
});

describe('health', () => {
  it('/healthz needs no token; /readyz checks Redis and the services file', async () => {
    const { api } = await setup();
    const health = await api.request('GET', '/healthz');
    expect(health.body).toEqual({ status: 'ok' });
    const ready = await api.request('GET', '/readyz', { token: TOKENS.reader });
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual({ status: 'ready', redis: 'up', services: 2 });
  });

  it('answers unknown routes with 404 in the API error shape', async () => {
    const { api } = await setup();
    const response = await api.request('GET', '/v1/nothing', { token: TOKENS.admin });
    expect(response.status).toBe(404);
    expect(response.body.error.type).toBe('NotFoundError');
  });
});

describe('OpenAPI', () => {
  it('serves a document that a real OpenAPI validator accepts, with every /v1 route in it', async () => {
    const { api } = await setup();
    const response = await api.request('GET', '/docs/json', { token: TOKENS.reader });
    expect(response.status).toBe(200);
    const document = response.body as { openapi: string; paths: Record<string, Record<string, unknown>> };
    expect(document.openapi).toBe('3.1.0');
    const result = await validate(structuredClone(document) as never);
    expect(result.valid ? [] : result.errors).toEqual([]);
    expect(result.valid).toBe(true);
    const documented = new Set(
      Object.entries(document.paths).flatMap(([path, operations]) =>
        Object.keys(operations).map((method) => `${method.toUpperCase()} ${path}`),
      ),
    );
    const v1Routes = api.routes
      .filter((route) => / \/v1\//.test(route) && !route.startsWith('HEAD '))
      .map((route) => route.replace(/:(\w+)/g, '{$1}'));
    expect(v1Routes.length).toBeGreaterThan(5);
    expect(v1Routes.filter((route) => !documented.has(route))).toEqual([]);
    // The enqueue body is the Producer's schema.
    const enqueue = document.paths['/v1/jobs']!.post as {
      requestBody: {
        content: Record<string, { schema: { required: string[]; properties: Record<string, unknown> } }>;
      };
    };
    const schema = enqueue.requestBody.content['application/json']!.schema;
    expect(schema.required).toEqual(['service', 'operation']);
    expect(Object.keys(schema.properties)).toEqual(
      expect.arrayContaining([
        'service',
        'operation',
        'input',
        'idempotencyKey',
        'tenant',
        'delayMs',
        'priority',
        'metadata',
      ]),
    );
  });
});
