/**
 * What a Redis Cluster client raises while a master fails over or a slot migrates is "Redis unavailable" to the
 * API: 503 + Retry-After, never a 500. The messages are ioredis 6's own (`built/cluster/index.js`); the first
 * one is what a real master's kill -9 produced (test/cluster/failover.test.ts answered 500 with it before).
 */
import { Cluster } from 'ioredis';
import { describe, expect, it } from 'vitest';

import { toErrorResponse, UNAVAILABLE_RETRY_AFTER_SECONDS } from '../../src/api/errors.ts';
import { freePort } from '../../src/cli/redis-server.ts';

const replyError = (message: string): Error => Object.assign(new Error(message), { name: 'ReplyError' });

describe('cluster errors in the API', () => {
  it.each([
    'Too many Cluster redirections. Last error: ReplyError: MOVED 4714 127.0.0.1:40885',
    'Too many Cluster redirections. Last error: ReplyError: CLUSTERDOWN The cluster is down',
    'Too many Cluster redirections. Last error: ReplyError: TRYAGAIN Multiple keys request during rehashing of slot',
    'Too many Cluster redirections. Last error: Error: Connection is closed.',
    'None of startup nodes is available',
    'Failed to refresh slots cache.',
    'Cluster is ended.',
  ])('answers 503 + Retry-After to %s', (message) => {
    const mapped = toErrorResponse(new Error(message));
    expect(mapped.statusCode).toBe(503);
    expect(mapped.headers).toEqual({ 'retry-after': String(UNAVAILABLE_RETRY_AFTER_SECONDS) });
    expect(mapped.body.error.type).toBe('UnavailableError');
    // The client is told why in general terms, not the node addresses of the cluster.
    expect(mapped.body.error.message).not.toContain('127.0.0.1');
  });

  it.each(['CLUSTERDOWN The cluster is down', 'TRYAGAIN Multiple keys request during rehashing of slot'])(
    'answers 503 to the reply %s',
    (message) => {
      expect(toErrorResponse(replyError(message)).statusCode).toBe(503);
    },
  );

  it('answers 503 to what a real Cluster client raises when no node answers', async () => {
    const port = await freePort();
    const cluster = new Cluster([{ host: '127.0.0.1', port }], {
      enableOfflineQueue: false,
      clusterRetryStrategy: () => null,
    });
    cluster.on('error', () => undefined);
    try {
      const error = await cluster.set('{svc}:k', 'v').then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(Error);
      expect(toErrorResponse(error).statusCode).toBe(503);
    } finally {
      cluster.disconnect();
    }
  });

  it('still answers 500 to an unknown error', () => {
    expect(toErrorResponse(new Error('something else')).statusCode).toBe(500);
    expect(toErrorResponse(replyError('ERR unknown command')).statusCode).toBe(500);
  });
});
