/**
 * The local demo service `ferry dev` starts so the first run does something visible: an echo endpoint, one
 * that fails twice per idempotency key before it succeeds, and one that always refuses the request.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';

export interface DemoService {
  readonly url: string;
  close(): Promise<void>;
}

export async function startDemoService(port = 0): Promise<DemoService> {
  const failures = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const key = String(req.headers['idempotency-key'] ?? '');
      const send = (status: number, payload: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(payload));
      };
      if (req.url?.startsWith('/echo') === true)
        return send(200, { received: safeJson(body), idempotencyKey: key });
      if (req.url?.startsWith('/flaky') === true) {
        const seen = (failures.get(key) ?? 0) + 1;
        failures.set(key, seen);
        return seen <= 2
          ? send(503, { error: `flaky: failure ${seen} of 2` })
          : send(200, { ok: true, after: seen });
      }
      if (req.url?.startsWith('/reject') === true)
        return send(422, { error: 'the demo service rejects this on purpose' });
      send(404, { error: 'not found' });
    });
  });
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const actual = typeof address === 'object' && address !== null ? address.port : port;
  return {
    url: `http://127.0.0.1:${actual}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}
