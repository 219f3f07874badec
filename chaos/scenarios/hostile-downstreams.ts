/**
 * Hostile downstreams, one scenario each: a call that never answers, a body dripped one byte at a time, a
 * 1 GiB body (streamed by the server, never buffered), connection resets, redirects (to metadata, loops,
 * elsewhere), a gzip bomb, and a 429 with a Retry-After of days. For each: the worker's peak RSS stays under
 * `RSS_LIMIT_BYTES`, every job ends classified (a dead letter of the expected type, or completed), nothing
 * is lost, and every repeat of a call carries the job's one Idempotency-Key.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createGzip } from 'node:zlib';

import { type CountingDownstream, type DownstreamHandler, reply, startDownstream } from '../downstream.ts';
import { SERVICE, servicesDoc, startWorker, uniquePrefix, workerEnv, writeServicesFile } from '../ferry.ts';
import { type AcceptedJob, enqueueDirectly, settleAndCount } from '../jobs.ts';
import { withLab } from '../lab.ts';
import { startRedisServer } from '../redis.ts';
import { describeSettled, formatMiB, formatMs, lostNote, settledRow } from '../rows.ts';
import type { Scenario, ScenarioRow } from '../scenario.ts';
/** A worker that buffers a hostile body shows it here: a 1 GiB body or a 1 GiB bomb cannot fit. */
export const RSS_LIMIT_BYTES = 320 * 1024 * 1024;
const MAX_RESPONSE_BYTES = 1024 * 1024;
const GIB = 1024 * 1024 * 1024;

interface Context {
  smoke: boolean;
  downstream: CountingDownstream;
  /** Figures the handler measured, for the notes. */
  figures: Record<string, number>;
}

interface Hostility {
  name: string;
  /** What the downstream does. */
  handler(context: Context): Promise<DownstreamHandler> | DownstreamHandler;
  /** Operations to enqueue, one per job, round robin (default `call`). */
  operations?: readonly string[];
  /** Extra service settings (e.g. `retry`). */
  service?: Record<string, unknown>;
  /** Dead-letter types that are right for this hostility; any other is not ok. */
  deadLetterTypes: readonly string[];
  /** Whether a job may end completed. */
  mayComplete: boolean;
  /** Further checks: a note per failed promise (empty = all held), plus figures for the notes. */
  check?(context: Context, jobs: readonly AcceptedJob[]): { failures: string[]; notes: string[] };
}

const never: DownstreamHandler = () => undefined;

function streamBytes(res: ServerResponse, total: number, onWritten: (bytes: number) => void): void {
  const chunk = Buffer.alloc(64 * 1024, 'x');
  let written = 0;
  const pump = (): void => {
    while (written < total && !res.destroyed) {
      const size = Math.min(chunk.length, total - written);
      written += size;
      onWritten(size);
      if (!res.write(size === chunk.length ? chunk : chunk.subarray(0, size))) {
        res.once('drain', pump);
        return;
      }
    }
    if (!res.destroyed) res.end();
  };
  pump();
}

const bombs = new Map<number, Promise<Buffer>>();

/** gzip of `size` zero bytes (about 1/1000 of it), made once per size by streaming, never held whole. */
function gzipBomb(size: number): Promise<Buffer> {
  let bomb = bombs.get(size);
  if (bomb === undefined) {
    bomb = new Promise<Buffer>((resolve, reject) => {
      const gzip = createGzip({ level: 9 });
      const out: Buffer[] = [];
      gzip.on('data', (data: Buffer) => out.push(data));
      gzip.on('end', () => resolve(Buffer.concat(out)));
      gzip.on('error', reject);
      const zeros = Buffer.alloc(1024 * 1024);
      let left = size;
      const pump = (): void => {
        while (left > 0) {
          left -= zeros.length;
          if (!gzip.write(zeros)) {
            gzip.once('drain', pump);
            return;
          }
        }
        gzip.end();
      };
      pump();
    });
    bombs.set(size, bomb);
  }
  return bomb;
}

function json(res: ServerResponse, status: number, headers: Record<string, string> = {}): void {
  reply(res, { status, headers, body: '{"ok":true}' });
}

const HOSTILITIES: readonly Hostility[] = [
  {
    name: 'hostile-hang',
    handler: () => never,
    deadLetterTypes: ['TimeoutError'],
    mayComplete: false,
  },
  {
    name: 'hostile-drip',
    handler: () => (_req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"drip":"');
      const timer = setInterval(() => {
        if (res.destroyed) clearInterval(timer);
        else res.write('x');
      }, 100);
      res.on('close', () => clearInterval(timer));
    },
    deadLetterTypes: ['TimeoutError'],
    mayComplete: false,
  },
  {
    name: 'hostile-1gb-body',
    handler: ({ figures }) => {
      figures.bytesSent = 0;
      return (_req, res, call) => {
        // Half with Content-Length (refusable before reading), half chunked (must be cut while reading).
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (call.index % 2 === 0) headers['content-length'] = String(GIB);
        res.writeHead(200, headers);
        streamBytes(res, GIB, (bytes) => {
          figures.bytesSent! += bytes;
        });
      };
    },
    deadLetterTypes: ['ResponseTooLargeError'],
    mayComplete: false,
    check: ({ figures, downstream }) => {
      const perCall = (figures.bytesSent ?? 0) / Math.max(1, downstream.calls.length);
      return {
        // The server stops when the worker hangs up; a worker reading everything would take all 1 GiB.
        failures: perCall > 256 * 1024 * 1024 ? [`the worker read ${formatMiB(perCall)} per call`] : [],
        notes: [`server sent ${formatMiB(perCall)} per call of 1 GiB before the worker hung up`],
      };
    },
  },
  {
    name: 'hostile-reset',
    handler: () => (req, res, call) => {
      // `/once`: reset on the first call only (completes on the retry); otherwise reset every call.
      if (call.path.endsWith('/once') && call.nth > 1) json(res, 200);
      else req.socket.destroy();
    },
    operations: ['call', 'once'],
    service: {},
    deadLetterTypes: ['NetworkError'],
    mayComplete: true,
    check: (_context, jobs) => ({
      failures: [],
      notes: [`${Math.ceil(jobs.length / 2)} jobs reset once, the rest always`],
    }),
  },
  {
    name: 'hostile-redirect',
    handler:
      ({ downstream }) =>
      (_req, res, call) => {
        const targets = [
          [301, 'http://169.254.169.254/latest/meta-data/iam/security-credentials/'],
          [302, '/elsewhere'],
          [307, call.path],
          [308, `${downstream.url}/elsewhere`],
        ] as const;
        const [status, location] = targets[call.index % targets.length]!;
        if (res.destroyed) return;
        res.writeHead(status, { location, 'content-type': 'text/plain' });
        res.end('moved');
      },
    deadLetterTypes: ['ClientError'],
    mayComplete: false,
    check: ({ downstream }) => {
      const followed = downstream.calls.filter((call) => call.path.startsWith('/elsewhere')).length;
      return {
        failures: followed > 0 ? [`${followed} redirects followed`] : [],
        notes: ['301 to metadata, 302, 307 loop, 308: none followed'],
      };
    },
  },
  {
    name: 'hostile-gzip-bomb',
    handler: async ({ smoke, figures }) => {
      const size = smoke ? 64 * 1024 * 1024 : GIB;
      const bomb = await gzipBomb(size);
      figures.bombBytes = bomb.length;
      figures.bombExpands = size;
      return (_req, res, call) => {
        if (res.destroyed) return;
        res.writeHead(200, {
          'content-type': call.index % 2 === 0 ? 'application/json' : 'text/plain',
          'content-encoding': 'gzip',
          'content-length': String(bomb.length),
        });
        res.end(bomb);
      };
    },
    deadLetterTypes: ['ResponseTooLargeError'],
    mayComplete: true,
    check: ({ figures }) => ({
      failures: [],
      notes: [
        `${formatMiB(figures.bombBytes ?? 0)} gzip expanding to ${formatMiB(figures.bombExpands ?? 0)}`,
      ],
    }),
  },
  {
    name: 'hostile-retry-after',
    handler:
      ({ figures }) =>
      (_req, res, call) => {
        if (call.nth === 1) {
          figures.firstRefusalAt ??= Date.now();
          // Seconds (27 h) or an HTTP date years ahead: both far past the service's cap.
          const retryAfter = call.index % 2 === 0 ? '99999' : new Date(Date.now() + 3e11).toUTCString();
          json(res, 429, { 'retry-after': retryAfter });
          return;
        }
        figures.firstRetryAt ??= Date.now();
        json(res, 200);
      },
    service: { retry: { attempts: 3, backoff: { delayMs: 50, maxDelayMs: 200 }, maxRetryAfterMs: 2_000 } },
    deadLetterTypes: [],
    mayComplete: true,
    check: ({ figures }, jobs) => {
      const heldMs =
        figures.firstRetryAt === undefined || figures.firstRefusalAt === undefined
          ? undefined
          : figures.firstRetryAt - figures.firstRefusalAt;
      return {
        failures: jobs.length === 0 ? ['no job'] : [],
        notes: [
          `Retry-After 99999 s and a date years ahead, cap retry.maxRetryAfterMs 2 s: held ${formatMs(heldMs)}`,
        ],
      };
    },
  },
];

function hostileScenario(hostility: Hostility): Scenario {
  return {
    name: hostility.name,
    run: ({ smoke, log }) =>
      withLab(hostility.name, log, async (lab): Promise<ScenarioRow> => {
        const redis = await startRedisServer(lab);
        const downstream = await startDownstream(lab);
        const context: Context = { smoke, downstream, figures: {} };
        downstream.handle(await hostility.handler(context));
        const prefix = uniquePrefix();
        const servicesFile = await writeServicesFile(
          lab,
          servicesDoc(
            downstream.url,
            {
              timeoutMs: smoke ? 1_000 : 2_000,
              maxResponseBytes: MAX_RESPONSE_BYTES,
              retry: { attempts: 2, backoff: { delayMs: 50, maxDelayMs: 200 } },
              ...hostility.service,
            },
            { once: { method: 'POST', path: '/jobs/{{ job.id }}/once', body: '{{ input }}' } },
          ),
        );
        const worker = await startWorker(lab, workerEnv({ redisUrl: redis.url, servicesFile, prefix }));
        const startRss = await worker.peakRssBytes();
        const operations = hostility.operations ?? ['call'];
        const count = smoke ? 4 : 12;
        const jobs = await enqueueDirectly(
          redis.url,
          prefix,
          Array.from({ length: count }, (_, n) => ({
            service: SERVICE,
            operation: operations[n % operations.length]!,
            input: { n },
          })),
        );
        const { accounting, calls } = await settleAndCount(
          lab,
          { redisUrl: redis.url, prefix, calls: downstream.calls, timeoutMs: smoke ? 25_000 : 60_000 },
          jobs,
        );
        const peakRss = await worker.peakRssBytes();
        const extra = hostility.check?.(context, jobs) ?? { failures: [], notes: [] };
        const warnings = worker.countLogs(
          (entry) => (entry.level ?? 0) >= 40 && /retry-after/i.test(JSON.stringify(entry)),
        );
        if (hostility.name === 'hostile-retry-after')
          extra.notes.push(`${warnings} warnings naming Retry-After`);
        const wrongTypes = Object.keys(accounting.deadLetterTypes).filter(
          (type) => !hostility.deadLetterTypes.includes(type),
        );
        const failures = [
          ...extra.failures,
          ...(wrongTypes.length > 0 ? [`dead letters of the wrong type: ${wrongTypes.join(', ')}`] : []),
          ...(!hostility.mayComplete && accounting.completed > 0
            ? [`${accounting.completed} completed`]
            : []),
          ...(peakRss > RSS_LIMIT_BYTES
            ? [`worker RSS ${formatMiB(peakRss)} over ${formatMiB(RSS_LIMIT_BYTES)}`]
            : []),
          ...(worker.running ? [] : [`worker exited: ${worker.tail(3)}`]),
        ];
        const types = Object.entries(accounting.deadLetterTypes)
          .map(([type, n]) => `${n} ${type}`)
          .join(', ');
        const notes = [
          ...failures.map((failure) => `FAILED: ${failure}`),
          `worker RSS peak ${formatMiB(peakRss)} (at start ${formatMiB(startRss)})`,
          ...(types === '' ? [] : [`dead letters: ${types}`]),
          ...extra.notes,
          ...lostNote(accounting),
        ];
        log(`settled: ${describeSettled(accounting)}; ${notes.join('; ')}`);
        return settledRow(hostility.name, accounting, calls, {
          notes: notes.join('; '),
          ok:
            failures.length === 0 &&
            accounting.enqueued > 0 &&
            accounting.lost === 0 &&
            calls.duplicatesWithDifferingKeys === 0,
        });
      }),
  };
}

const scenarios: Scenario[] = HOSTILITIES.map(hostileScenario);

export default scenarios;
