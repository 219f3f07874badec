import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, readFile } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import { join } from 'node:path';

export interface PrivateRedisOptions {
  /** Directory for the AOF and the log; created if missing. */
  dir: string;
  /** Port to listen on; 0 (default) picks a free one. */
  port?: number;
  /** `always` loses no acknowledged job if Redis crashes (DESIGN §8); `no` is for throwaway test servers. */
  appendfsync?: 'always' | 'everysec' | 'no';
  /** redis-server binary. Defaults to `FERRY_REDIS_SERVER` or `redis-server` on PATH. */
  binary?: string;
  /** More `--name value` arguments, after Ferry's own (a later one wins): cluster mode, replicaof. */
  extraArgs?: readonly string[];
}

export interface PrivateRedis {
  readonly url: string;
  readonly port: number;
  readonly process: ChildProcess;
  /** Stops the server (SIGTERM, then SIGKILL after 5 s). */
  stop(): Promise<void>;
  /** Kills the server at once, as a crash would. */
  kill(): Promise<void>;
}

export class RedisServerNotInstalledError extends Error {
  override readonly name = 'RedisServerNotInstalledError';
}

export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  server.close();
  if (address === null || typeof address === 'string') throw new Error('could not pick a free port');
  return address.port;
}

/**
 * redis-server could not listen on `port`: taken between the pick and its bind (another process's listener, or
 * an outgoing connection's local port), or never free.
 */
export class RedisPortInUseError extends Error {
  readonly port: number;

  constructor(port: number, message: string) {
    super(message);
    this.name = 'RedisPortInUseError';
    this.port = port;
  }
}

/** Picks of a free port tried before a start gives up (each pick can be taken before redis-server binds it). */
const PORT_PICKS = 3;

/**
 * Starts a redis-server that only this process uses, bound to 127.0.0.1, and waits until it answers. A port it
 * picked itself (no `port` given) and found taken by the time redis-server bound it is picked again.
 */
export async function startPrivateRedis(options: PrivateRedisOptions): Promise<PrivateRedis> {
  await mkdir(options.dir, { recursive: true });
  for (let pick = 1; ; pick++) {
    const port = options.port || (await freePort());
    try {
      return await startOn(options, port);
    } catch (error) {
      const ours = !options.port && error instanceof RedisPortInUseError && error.port === port;
      if (!ours || pick === PORT_PICKS) throw error;
    }
  }
}

async function startOn(options: PrivateRedisOptions, port: number): Promise<PrivateRedis> {
  const binary = options.binary ?? process.env.FERRY_REDIS_SERVER ?? 'redis-server';
  const fsync = options.appendfsync ?? 'always';
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    options.dir,
    '--save',
    '',
    '--appendonly',
    fsync === 'no' ? 'no' : 'yes',
    '--appendfsync',
    fsync === 'no' ? 'everysec' : fsync,
    '--maxmemory-policy',
    'noeviction',
    '--logfile',
    join(options.dir, 'redis.log'),
    ...(options.extraArgs ?? []),
  ];
  const child = spawn(binary, args, { stdio: 'ignore' });
  // Once the child failed to start or exited, stop polling its port: the poll's timers would otherwise keep
  // the process alive for the whole timeout after the error was reported.
  const gaveUp = new AbortController();
  const spawnError = new Promise<never>((_, reject) => {
    child.once('error', (error: NodeJS.ErrnoException) => {
      gaveUp.abort();
      reject(
        error.code === 'ENOENT'
          ? new RedisServerNotInstalledError(
              `redis-server was not found (looked for "${binary}"). Install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or set REDIS_URL to a running Redis.`,
            )
          : error,
      );
    });
    child.once('exit', (code) => {
      gaveUp.abort();
      reject(
        new Error(
          `redis-server exited with code ${code} before it was ready (see ${join(options.dir, 'redis.log')})`,
        ),
      );
    });
  });
  spawnError.catch(() => undefined);
  try {
    await Promise.race([waitForPort(port, 10_000, gaveUp.signal), spawnError]);
  } catch (error) {
    // Never leave behind a server that did not become ready.
    child.kill('SIGKILL');
    throw (await portInUse(options.dir)) ?? error;
  }
  child.removeAllListeners('exit');

  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (signal: NodeJS.Signals): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  };
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    process: child,
    stop: () => stop('SIGTERM'),
    kill: () => stop('SIGKILL'),
  };
}

/** The RedisPortInUseError a server that exited at start-up logged, if that is why it exited. */
async function portInUse(dir: string): Promise<RedisPortInUseError | undefined> {
  const log = await readFile(join(dir, 'redis.log'), 'utf8').catch(() => '');
  // "Could not create server TCP listening socket 127.0.0.1:34573: bind: Address already in use"
  const lines = log.trimEnd().split('\n').slice(-5).join('\n');
  const taken = /listening socket [^\s]*:(\d+): bind: Address already in use/.exec(lines);
  if (taken === null) return undefined;
  return new RedisPortInUseError(
    Number(taken[1]),
    `redis-server could not listen on 127.0.0.1:${taken[1]}: address already in use (see ${join(dir, 'redis.log')})`,
  );
}

async function waitForPort(port: number, timeoutMs: number, signal: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (signal.aborted) return;
    if (await answersPing(port)) return;
    if (Date.now() > deadline)
      throw new Error(`redis-server did not answer on port ${port} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once('error', () => done(false));
    socket.connect(port, '127.0.0.1', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')));
  });
}

/**
 * Stops the private redis-server a killed `ferry dev` left running on `dir` (its lock recorded the port), so
 * that no two servers append to one AOF. Only a server that says its data directory is `dir` is stopped
 * (SHUTDOWN: it writes and fsyncs its AOF first); whatever else now listens on that port is left alone.
 * Resolves true when one was stopped.
 */
export async function stopLeftoverRedis(port: number, dir: string): Promise<boolean> {
  const [{ Redis }, { realpath }] = await Promise.all([import('ioredis'), import('node:fs/promises')]);
  const client = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    connectTimeout: 1_000,
    commandTimeout: 2_000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const [, serverDir] = (await client.config('GET', 'dir')) as [string, string];
    const wanted = await realpath(dir).catch(() => dir);
    if (serverDir !== wanted && serverDir !== dir) return false;
    await client.shutdown().catch(() => undefined);
  } catch {
    // Nothing listens there any more (or it is not a Redis): nothing to stop.
    return false;
  } finally {
    client.disconnect();
  }
  const deadline = Date.now() + 10_000;
  while (await answersPing(port)) {
    if (Date.now() > deadline) throw new Error(`the redis-server left running on port ${port} did not stop`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return true;
}
