import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';

import { listenOnFreePort } from './listen.ts';

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** The body's bytes exactly as received (a signature is checked over these). */
  raw: Buffer;
  at: number;
}

/** What the fake service does with one request. */
export interface Step {
  status?: number;
  body?: unknown;
  headers?: Record<string, string>;
  /** Wait before answering. */
  delayMs?: number;
  /** Destroy the socket without answering (connection reset). */
  reset?: boolean;
  /** Send headers, then the body one byte per `dripMs` (slow drip). */
  dripMs?: number;
  /** Send this many bytes of body. */
  bodyBytes?: number;
}

export type Script = (request: RecordedRequest, index: number) => Step;

export interface Downstream {
  readonly url: string;
  readonly requests: RecordedRequest[];
  /** Replaces how the server answers; `index` counts every request so far (0-based). */
  script(script: Script): void;
  close(): Promise<void>;
}

/** A scripted external service on 127.0.0.1:0 that records every request (undici's standalone-server pattern). */
export async function startDownstream(
  initial: Script = () => ({ status: 200, body: { ok: true } }),
): Promise<Downstream> {
  let script = initial;
  const requests: RecordedRequest[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const recorded: RecordedRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: raw.toString('utf8'),
        raw,
        at: Date.now(),
      };
      const index = requests.push(recorded) - 1;
      const step = script(recorded, index);
      const run = (): void => answer(res, step);
      if (step.delayMs !== undefined && step.delayMs > 0) setTimeout(run, step.delayMs);
      else run();
    });
  });
  const { url, close } = await listenOnFreePort(server);
  return {
    url,
    requests,
    script(next) {
      script = next;
    },
    close,
  };
}

function answer(res: ServerResponse, step: Step): void {
  if (res.destroyed) return;
  if (step.reset === true) {
    res.socket?.destroy();
    return;
  }
  const status = step.status ?? 200;
  if (step.dripMs !== undefined) {
    res.writeHead(status, { 'content-type': 'text/plain', ...step.headers });
    const timer = setInterval(() => {
      if (res.destroyed) clearInterval(timer);
      else res.write('x');
    }, step.dripMs);
    res.on('close', () => clearInterval(timer));
    return;
  }
  if (step.bodyBytes !== undefined) {
    res.writeHead(status, { 'content-type': 'text/plain', ...step.headers });
    res.end(Buffer.alloc(step.bodyBytes, 'x'));
    return;
  }
  const body =
    step.body === undefined ? '' : typeof step.body === 'string' ? step.body : JSON.stringify(step.body);
  res.writeHead(status, {
    'content-type': typeof step.body === 'string' ? 'text/plain' : 'application/json',
    ...step.headers,
  });
  res.end(body);
}

/**
 * A script that fails each job's first `input.fails` calls with a 500, then answers 200: the job is told apart by
 * its Idempotency-Key (the same on every attempt), and its JSON body is its input.
 */
export function failsThenSucceeds(): Script {
  const calls = new Map<string, number>();
  return (request) => {
    const key = String(request.headers['idempotency-key']);
    const n = (calls.get(key) ?? 0) + 1;
    calls.set(key, n);
    const { fails } = JSON.parse(request.body) as { fails: number };
    return n <= fails ? { status: 500, body: { error: 'boom' } } : { status: 200, body: { ok: n } };
  };
}
