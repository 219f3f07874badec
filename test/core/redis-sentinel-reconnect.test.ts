/**
 * A Sentinel connection that ioredis ends by itself connects again (core/redis.ts reconnectAfterStrandedEnd):
 * the failover detector's disconnect landing while a reconnect asks the Sentinels where the master is left the
 * client in `end` for good (seen in a loaded run of test/e2e/sentinel-failover.test.ts). Real Sentinels; the
 * race is forced by disconnecting the connector at that moment, as the detector does.
 */
import type { Redis } from 'ioredis';
import { describe, expect, it, onTestFinished } from 'vitest';

import { createRedisConnection, type RedisClient } from '../../src/core/redis.ts';
import { startSentinels } from '../helpers/redis-sentinel.ts';

const deployment = await startSentinels();

interface Connector {
  disconnect(): void;
}

function sentinelConnection(): Redis {
  const connection = createRedisConnection(
    {
      sentinels: deployment.sentinels.map(({ port }) => ({ host: '127.0.0.1', port })),
      sentinelName: deployment.masterName,
      password: deployment.password,
    },
    'worker',
  ) as RedisClient as Redis;
  connection.on('error', () => undefined);
  onTestFinished(() => connection.disconnect());
  return connection;
}

/** While the next reconnect asks the Sentinels, disconnects the connector, as the failover detector does. */
function strandNextReconnect(connection: Redis): void {
  connection.once('connecting', () => {
    setImmediate(() => (connection as unknown as { connector: Connector }).connector.disconnect());
  });
  connection.disconnect(true);
}

describe('a Sentinel connection', () => {
  it('that ioredis ends during a reconnect connects again, and so does its duplicate', async () => {
    const connection = sentinelConnection();
    expect(await connection.ping()).toBe('PONG');
    const ended = new Promise((resolve) => connection.once('end', resolve));
    strandNextReconnect(connection);
    await ended;
    // ioredis alone stays in `end` here: every command fails with "Connection is closed".
    await expect.poll(() => connection.status).toBe('ready');
    expect(await connection.ping()).toBe('PONG');

    const duplicate = connection.duplicate();
    duplicate.on('error', () => undefined);
    onTestFinished(() => duplicate.disconnect());
    expect(await duplicate.ping()).toBe('PONG');
    const duplicateEnded = new Promise((resolve) => duplicate.once('end', resolve));
    strandNextReconnect(duplicate);
    await duplicateEnded;
    await expect.poll(() => duplicate.status).toBe('ready');
  });

  it('closed by its owner stays closed', async () => {
    const quitted = sentinelConnection();
    const disconnected = sentinelConnection();
    const twin = sentinelConnection();
    for (const connection of [quitted, disconnected, twin]) expect(await connection.ping()).toBe('PONG');
    await quitted.quit();
    disconnected.disconnect();
    await expect.poll(() => [quitted.status, disconnected.status]).toEqual(['end', 'end']);
    // A positive sign that a stranded end's pause has passed since: a twin stranded now is back.
    const twinEnded = new Promise((resolve) => twin.once('end', resolve));
    strandNextReconnect(twin);
    await twinEnded;
    await expect.poll(() => twin.status).toBe('ready');
    expect([quitted.status, disconnected.status]).toEqual(['end', 'end']);
  });
});
