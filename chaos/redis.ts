/**
 * A private redis-server for one scenario (src/cli/redis-server.ts starts it, as `ferry dev` does) that can be
 * killed, paused and restarted on its port and AOF, and plain clients for reading it.
 */
import { Redis } from 'ioredis';

import { type PrivateRedis, startPrivateRedis } from '../src/cli/redis-server.ts';
import { type Lab, track } from './lab.ts';

export interface ChaosRedisOptions {
  /** `always` for the durability scenarios and the AOF scan; `no` (AOF off) for scenarios that never restart. */
  appendfsync?: 'always' | 'no';
}

export interface ChaosRedis {
  readonly url: string;
  readonly port: number;
  /** Its `--dir`: the AOF directory (`appendonlydir/`) and redis.log. */
  readonly dir: string;
  /** The current server process (a restart replaces it). */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** SIGKILL, as a crash would; resolves once it is gone. */
  kill9(): Promise<void>;
  /** SIGSTOP / SIGCONT: a hung Redis that keeps its connections open. */
  pause(): void;
  resume(): void;
  /** Starts the server again on the same port and directory (it loads its AOF) and waits until it answers. */
  restart(): Promise<void>;
  /** SIGTERM (continued first if paused); resolves once it is gone. */
  stop(): Promise<void>;
}

/** Starts a private redis-server on a free 127.0.0.1 port in a temp dir of the lab, stopped at cleanup. */
export async function startRedisServer(lab: Lab, options: ChaosRedisOptions = {}): Promise<ChaosRedis> {
  const dir = await lab.tempDir('redis');
  const appendfsync = options.appendfsync ?? 'no';
  const launch = async (port?: number): Promise<PrivateRedis> => {
    const started = await startPrivateRedis({ dir, appendfsync, ...(port === undefined ? {} : { port }) });
    track(started.process);
    return started;
  };
  let current = await launch();
  const isRunning = (): boolean => current.process.exitCode === null && current.process.signalCode === null;
  const server: ChaosRedis = {
    url: current.url,
    port: current.port,
    dir,
    get pid() {
      return current.process.pid;
    },
    get running() {
      return isRunning();
    },
    async kill9() {
      await current.kill();
    },
    pause() {
      if (isRunning()) current.process.kill('SIGSTOP');
    },
    resume() {
      if (isRunning()) current.process.kill('SIGCONT');
    },
    async restart() {
      if (isRunning()) throw new Error('redis-server is still running');
      current = await launch(server.port);
    },
    async stop() {
      if (isRunning()) current.process.kill('SIGCONT');
      await current.stop();
    },
  };
  lab.defer(() => server.stop());
  return server;
}

/** A plain client for reading state (fails fast while Redis is down). Closed at cleanup. */
export function redisClient(lab: Lab, url: string): Redis {
  const client = new Redis(url, { maxRetriesPerRequest: 1, commandTimeout: 5_000 });
  client.on('error', () => undefined);
  lab.defer(() => client.disconnect());
  return client;
}
