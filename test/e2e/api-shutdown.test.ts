/**
 * `ferry api` on SIGTERM (docs/operations.md § Shutdown): exits 0 within 10 s whatever Redis does — up,
 * SIGKILLed, SIGSTOPped — also after SSE was used (issue 13: with a job event stream opened once and Redis
 * down, it never exited, even after the client left: BullMQ's QueueEvents.close() waited for ever).
 */
import { type IncomingMessage, request as httpRequest } from 'node:http';

import { describe, expect, it } from 'vitest';

import { registerCleanup } from '../helpers/cleanup.ts';
import { spawnFerry, withTimeout, writeServicesFile } from '../helpers/processes.ts';
import { uniquePrefix } from '../helpers/redis.ts';
import { EXIT_BOUND_MS, killableRedis, type RedisState, terminateAndTime } from '../helpers/shutdown.ts';

const SERVICE = 'svc';
const TOKEN = 'shutdown-bound-token-0123456789abc';

describe.each<RedisState>(['up', 'SIGKILLed', 'SIGSTOPped'])('SIGTERM while Redis is %s', (state) => {
  it('ferry api exits 0 within 10 s after an SSE subscription', { timeout: 60_000 }, async () => {
    const redis = await killableRedis();
    const services = await writeServicesFile({
      services: {
        [SERVICE]: { baseUrl: 'http://127.0.0.1:9', operations: { op: { method: 'POST', path: '/' } } },
      },
    });
    const api = spawnFerry(['api'], {
      env: {
        REDIS_URL: redis.url,
        FERRY_SERVICES: services,
        FERRY_PREFIX: uniquePrefix(),
        FERRY_API_TOKENS: JSON.stringify([{ name: 'ops', token: TOKEN, scopes: ['admin'] }]),
        PORT: '0',
        LOG_FORMAT: 'json',
      },
    });
    const line = await api.waitForLine(/Ferry API listening on/, { timeoutMs: 20_000 });
    const url = /(http:\/\/127\.0\.0\.1:\d+)/.exec(line)![1]!;
    const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
    const enqueued = await fetch(`${url}/v1/jobs`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ service: SERVICE, operation: 'op' }),
    });
    expect(enqueued.status).toBe(202);
    const { id } = (await enqueued.json()) as { id: string };
    // The job's event stream, read until its `queued` event: the service's QueueEvents is running.
    const sse = await openEventStream(`${url}/v1/jobs/${SERVICE}/${id}/events`, headers);
    await sse.received(/event: queued/);
    // The client leaves (the reported case: the API still never exited); while Redis is paused it stays.
    if (state !== 'SIGSTOPped') sse.leave();
    await redis.put(state);

    const { ms, code } = await terminateAndTime(api);
    expect(code, api.output()).toBe(0);
    expect(ms, api.output()).toBeLessThan(EXIT_BOUND_MS);
    expect(api.countLogs((entry) => entry.msg === 'shut down cleanly')).toBe(1);
    await redis.recover();
  });
});

/** An SSE client on its own connection (no agent): `leave()` closes it as a browser tab would. */
async function openEventStream(
  url: string,
  headers: Record<string, string>,
): Promise<{ received(match: RegExp): Promise<void>; leave(): void }> {
  let text = '';
  const waiters: (() => void)[] = [];
  const request = httpRequest(url, { headers: { ...headers, accept: 'text/event-stream' }, agent: false });
  request.on('error', () => undefined);
  registerCleanup(async () => void request.destroy());
  const response = await new Promise<IncomingMessage>((resolve, reject) => {
    request.once('response', resolve);
    request.once('error', reject);
    request.end();
  });
  expect(response.statusCode).toBe(200);
  response.on('error', () => undefined);
  response.on('data', (chunk: Buffer) => {
    text += chunk.toString('utf8');
    for (const wake of waiters.splice(0)) wake();
  });
  return {
    async received(match) {
      const wait = async (): Promise<void> => {
        while (!match.test(text)) await new Promise<void>((resolve) => waiters.push(resolve));
      };
      await withTimeout(wait(), 15_000, () => `no ${String(match)} on the event stream: ${text}`);
    },
    leave() {
      request.destroy();
    },
  };
}
