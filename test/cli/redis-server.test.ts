/** startPrivateRedis (what `ferry dev` and the test harness start) when its port is taken. */
import { once } from 'node:events';
import { createServer } from 'node:net';

import { describe, expect, it, onTestFinished } from 'vitest';

import { RedisPortInUseError, startPrivateRedis } from '../../src/cli/redis-server.ts';
import { registerCleanup } from '../helpers/cleanup.ts';
import { tempDir } from '../helpers/processes.ts';

async function takenPort(): Promise<number> {
  // Holds the port; a connection to it (startPrivateRedis's readiness probe) is dropped at once.
  const holder = createServer((socket) => socket.destroy());
  holder.listen(0, '127.0.0.1');
  await once(holder, 'listening');
  onTestFinished(() => new Promise<void>((resolve) => holder.close(() => resolve())));
  return (holder.address() as { port: number }).port;
}

describe('startPrivateRedis', () => {
  it('a port given and taken: RedisPortInUseError naming it', async () => {
    const port = await takenPort();
    const dir = await tempDir('ferry-port');
    const error = await startPrivateRedis({ dir, port, appendfsync: 'no' }).then(
      () => undefined,
      (failure: unknown) => failure,
    );
    expect(error).toBeInstanceOf(RedisPortInUseError);
    expect((error as RedisPortInUseError).port).toBe(port);
    expect((error as Error).message).toContain(`127.0.0.1:${port}: address already in use`);
  });

  it('a cluster bus port taken: the error names that port, so the caller can pick another', async () => {
    const busPort = await takenPort();
    const dir = await tempDir('ferry-bus-port');
    const error = await startPrivateRedis({
      dir,
      appendfsync: 'no',
      extraArgs: ['--cluster-enabled', 'yes', '--cluster-port', String(busPort)],
    }).then(
      (server) => {
        registerCleanup(() => server.kill());
        return undefined;
      },
      (failure: unknown) => failure,
    );
    expect(error).toBeInstanceOf(RedisPortInUseError);
    expect((error as RedisPortInUseError).port).toBe(busPort);
  });
});
