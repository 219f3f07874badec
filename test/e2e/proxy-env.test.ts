/**
 * `ferry worker` reads HTTPS_PROXY / HTTP_PROXY / NO_PROXY from its environment (issue 17 item 1): calls go
 * through a local CONNECT proxy that requires credentials, and the credentials appear in none of its output.
 */
import { describe, expect, it, onTestFinished } from 'vitest';

import { Producer } from '../../src/producer/index.ts';
import { startConnectProxy } from '../helpers/connect-proxy.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { startWorker, workerEnv, writeServicesFile } from '../helpers/processes.ts';
import { dumpRedis, startRedis, uniquePrefix } from '../helpers/redis.ts';
import { findSecretForms, secretForms } from '../helpers/secret-forms.ts';

const redis = await startRedis();

describe('ferry worker with a proxy in its environment', () => {
  it('tunnels through HTTP_PROXY, skips NO_PROXY hosts, and never prints the proxy password', async () => {
    const user = 'ops';
    const password = 'env-proxy-pw-4d1a7c';
    const proxy = await startConnectProxy({ user, password });
    const proxied = await startDownstream();
    const direct = await startDownstream();
    const service = (baseUrl: string) => ({
      baseUrl,
      timeoutMs: 5_000,
      retry: { attempts: 2, backoff: { delayMs: 50, maxDelayMs: 100 } },
      operations: { send: { method: 'POST', path: '/messages', body: '{{ input }}' } },
    });
    const prefix = uniquePrefix();
    const servicesFile = await writeServicesFile({
      services: { proxied: service(proxied.url), direct: service(direct.url) },
    });
    const proxyUrl = `http://${user}:${password}@127.0.0.1:${proxy.port}`;
    const worker = await startWorker(
      workerEnv({
        redisUrl: redis.url,
        servicesFile,
        prefix,
        extra: { HTTP_PROXY: proxyUrl, NO_PROXY: `127.0.0.1:${new URL(direct.url).port}` },
      }),
    );
    const producer = new Producer({ connection: redis.url, prefix });
    onTestFinished(() => producer.close());
    const a = await producer.enqueue({ service: 'proxied', operation: 'send', input: { n: 1 } });
    const b = await producer.enqueue({ service: 'direct', operation: 'send', input: { n: 2 } });
    expect((await producer.waitFor('proxied', a.id, { timeoutMs: 15_000 })).state).toBe('completed');
    expect((await producer.waitFor('direct', b.id, { timeoutMs: 15_000 })).state).toBe('completed');
    expect(proxy.tunnels).toBe(1);
    expect(proxy.targets).toEqual([`127.0.0.1:${new URL(proxied.url).port}`]);
    expect(direct.requests).toHaveLength(1);
    const output = [...worker.stdout, ...worker.stderr].join('\n');
    expect(output).toContain('downstream calls go through a forward proxy');
    const places = { output, redis: await dumpRedis(redis.client, `${prefix}:*`) };
    expect([
      ...findSecretForms('password', secretForms(password), places),
      ...findSecretForms('user:password', secretForms(`${user}:${password}`), places),
    ]).toEqual([]);
  });
});
