/**
 * A process's own metrics server, no token (`ferry worker` always unless FERRY_METRICS_PORT=0; `ferry api` and
 * `ferry dev` when FERRY_METRICS_PORT is set): GET /metrics in the Prometheus text format, GET /healthz "ok"
 * (the process is up), GET /readyz (Redis answers a PING within READY_PING_TIMEOUT_MS: 200 "ready", else 503
 * "unavailable" with Retry-After), 404 for anything else. Plain node:http: a worker has no Fastify, and three
 * routes need none.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

import { ConfigurationError } from '../core/errors.ts';
import type { Logger } from '../core/logger.ts';
import type { RedisClient } from '../core/redis.ts';
import type { MetricsResponse } from '../metrics/metrics.ts';

export interface MetricsServerOptions {
  /** FERRY_METRICS_HOST */
  host: string;
  /** FERRY_METRICS_PORT; 0 here picks a free port (the CLI does not start the server at all for 0). */
  port: number;
  metrics: { render(): Promise<MetricsResponse> };
  /** Whether the process can serve (GET /readyz); see redisReadiness. Without it, /readyz is a 404. */
  ready?: () => Promise<boolean>;
  /** Whose server it is, in the port-in-use message ("worker's", "API's"). Default "worker's". */
  owner?: string;
  logger?: Logger;
}

/** How long /readyz waits for Redis's PONG before it answers 503. */
export const READY_PING_TIMEOUT_MS = 1_000;
/** Retry-After of a 503 from /readyz, in seconds (the API's own). */
const READY_RETRY_AFTER_SECONDS = 5;

/**
 * Readiness for the metrics server: Redis answers a PING within `timeoutMs`. Concurrent probes share one PING
 * (the server needs no token, so anyone may call it), and a connection that is not `ready` answers at once.
 */
export function redisReadiness(
  connection: RedisClient,
  timeoutMs = READY_PING_TIMEOUT_MS,
): () => Promise<boolean> {
  let pinging: Promise<boolean> | undefined;
  const ping = async (): Promise<boolean> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        connection.ping().then((answer) => answer === 'PONG'),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), timeoutMs);
        }),
      ]);
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  };
  return () => {
    if (connection.status !== 'ready') return Promise.resolve(false);
    pinging ??= ping().finally(() => {
      pinging = undefined;
    });
    return pinging;
  };
}

export interface MetricsServer {
  /** `http://host:port`, the port as bound. */
  readonly url: string;
  /** Stops listening and closes open connections (a scraper's keep-alive one too). Idempotent. */
  close(): Promise<void>;
}

/**
 * Listens on `host:port`. A port in use (or any other listen failure) rejects with a ConfigurationError naming
 * FERRY_METRICS_PORT / FERRY_METRICS_HOST, so `ferry worker` fails start-up with one clear line.
 */
export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const { host, port, metrics, ready, logger } = options;
  const server = createServer((request, response) => {
    handle(request, response, metrics, ready).catch((error: unknown) => {
      logger?.error({ err: error }, 'metrics: could not render');
      if (!response.headersSent) response.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
      response.end('could not render metrics\n');
    });
  });
  // A scrape is one small request: no reason to keep a slow client's socket for Node's 5 minutes.
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  try {
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error): void => {
        server.off('listening', onListening);
        reject(error);
      };
      const onListening = (): void => {
        server.off('error', onError);
        resolve();
      };
      server.once('error', onError);
      server.once('listening', onListening);
      server.listen(port, host);
    });
  } catch (error) {
    throw listenError(error, host, port, options.owner ?? "worker's");
  }
  server.on('error', (error) => logger?.error({ err: error }, 'metrics server error'));
  const address = server.address();
  const boundPort = address !== null && typeof address === 'object' ? address.port : port;
  const hostInUrl = host.includes(':') ? `[${host}]` : host;
  let closed: Promise<void> | undefined;
  return {
    url: `http://${hostInUrl}:${boundPort}`,
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closed;
    },
  };
}

async function handle(
  request: IncomingMessage,
  response: ServerResponse,
  metrics: { render(): Promise<MetricsResponse> },
  ready: (() => Promise<boolean>) | undefined,
): Promise<void> {
  const path = (request.url ?? '/').split('?', 1)[0];
  const routes = ready === undefined ? ['/metrics', '/healthz'] : ['/metrics', '/healthz', '/readyz'];
  if (path === undefined || !routes.includes(path)) {
    response.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
    response.end(`not found: this server has GET ${routes.join(', GET ')}\n`);
    return;
  }
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    response.writeHead(405, { 'content-type': 'text/plain; charset=utf-8', allow: 'GET, HEAD' });
    response.end('method not allowed\n');
    return;
  }
  let status = 200;
  const headers: Record<string, string> = {};
  let answer: MetricsResponse;
  if (path === '/healthz') answer = { contentType: 'text/plain; charset=utf-8', body: 'ok' };
  else if (path === '/readyz') {
    const isReady = await ready!();
    if (!isReady) {
      status = 503;
      headers['retry-after'] = String(READY_RETRY_AFTER_SECONDS);
    }
    answer = { contentType: 'text/plain; charset=utf-8', body: isReady ? 'ready' : 'unavailable' };
  } else answer = await metrics.render();
  const { contentType, body } = answer;
  response.writeHead(status, {
    ...headers,
    'content-type': contentType,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  response.end(request.method === 'HEAD' ? undefined : body);
}

function listenError(error: unknown, host: string, port: number, owner: string): ConfigurationError {
  const code = (error as NodeJS.ErrnoException).code;
  const where = `${host}:${port}`;
  const message =
    code === 'EADDRINUSE'
      ? `FERRY_METRICS_PORT: ${where} is already in use; set FERRY_METRICS_PORT to a free port, or to 0 to turn the ${owner} metrics server off`
      : code === 'EACCES'
        ? `FERRY_METRICS_PORT: not allowed to listen on ${where} (ports below 1024 need privileges); pick another port`
        : code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' || code === 'EAI_AGAIN'
          ? `FERRY_METRICS_HOST: cannot listen on ${where}: no such local address (${code})`
          : `FERRY_METRICS_PORT: cannot listen on ${where}: ${(error as Error).message}`;
  return new ConfigurationError(message, { cause: error });
}
