/**
 * The fake external service for the benches, run in its own process so its CPU is not the worker's.
 *
 *   node --import tsx bench/downstream.ts [--latency <ms>]     (or BENCH_LATENCY_MS; default 5)
 *
 * Listens on 127.0.0.1:0 and prints the port (one line, digits only) on stdout. Every request except
 * `GET /stats` is read to the end and answered `200 application/json` with a small body after `latency` ms
 * (0: at once, no timer). `GET /stats` answers `{ requests, authorized, cpuUs }`: requests answered so far (stats calls
 * excluded), how many of them carried `Authorization: Bearer $FERRY_SECRET_BENCH_TOKEN` (when that variable is
 * set), and this process's CPU time, so a bench can check that every job made exactly one authenticated call
 * and see what the downstream cost. Exits on SIGTERM/SIGINT, and, when started with an IPC channel (as the benches
 * start it), as soon as that channel closes: a parent that dies leaves no server behind.
 */
import { createServer } from 'node:http';
import type { Socket } from 'node:net';

import { BENCH_TOKEN_ENV } from './throughput-spec.ts';

function readLatency(): number {
  const args = process.argv.slice(2);
  const at = args.indexOf('--latency');
  const raw = at >= 0 ? args[at + 1] : process.env.BENCH_LATENCY_MS;
  const latency = raw === undefined ? 5 : Number(raw);
  if (!Number.isFinite(latency) || latency < 0) {
    process.stderr.write(`downstream: --latency must be a number of ms >= 0 (got ${String(raw)})\n`);
    process.exit(2);
  }
  return latency;
}

const latencyMs = readLatency();
const token = process.env[BENCH_TOKEN_ENV];
const expectedAuthorization = token === undefined ? undefined : `Bearer ${token}`;
let requests = 0;
let authorized = 0;
const sockets = new Set<Socket>();

const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/stats') {
    const cpu = process.cpuUsage();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ requests, authorized, cpuUs: cpu.user + cpu.system }));
    return;
  }
  let received = 0;
  req.on('data', (chunk: Buffer) => {
    received += chunk.length;
  });
  req.on('end', () => {
    requests += 1;
    if (expectedAuthorization !== undefined && req.headers.authorization === expectedAuthorization)
      authorized += 1;
    const body = JSON.stringify({ id: `r${requests}`, ok: true, received });
    const answer = (): void => {
      if (res.destroyed) return;
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    if (latencyMs > 0) setTimeout(answer, latencyMs);
    else answer();
  });
});
// Keep-alive sockets must survive the pauses between runs (preloading the next batch of jobs).
server.keepAliveTimeout = 120_000;
server.headersTimeout = 130_000;
server.on('connection', (socket) => {
  sockets.add(socket);
  socket.on('close', () => sockets.delete(socket));
});

function shutdown(): void {
  for (const socket of sockets) socket.destroy();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1_000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (process.send !== undefined) process.on('disconnect', shutdown);

server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('downstream: no address');
  process.stdout.write(`${address.port}\n`);
});
