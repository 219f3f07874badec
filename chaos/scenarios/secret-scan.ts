/**
 * secret-scan: secret values that encode differently on the wire (a space, `!'()~+/=`, a double space, a
 * quote, a backslash, non-ASCII) are planted in the encrypted store (over the API) and in the environment, for
 * services that send them as a bearer token, HTTP Basic password, API-key header and API-key query parameter.
 * A downstream echoes everything it was sent (headers, URL, body) in 2xx bodies, 4xx and 5xx pages, redirects
 * and `Location` headers, in an error whose whitespace gets collapsed, and right at the cut of the result cap
 * (64 Ki chars) and of the error excerpt (300 chars). Jobs run through `ferry api` and `ferry worker`; some end
 * dead-lettered. Then every Redis key of every type, every file in the Redis dir (the AOF, `appendonly yes`),
 * every log line of both processes and every API answer collected (job, events, dead letters, metrics,
 * status, a secret test) is searched for every secret in every encoding: raw, JSON-escaped (also with
 * `\\u` escapes), `encodeURIComponent`, form (`URLSearchParams`), whitespace-collapsed, base64 and base64url
 * at the three byte alignments, and any prefix of 8 characters or more. Hits must be 0. The encodings are
 * written here, not imported from src/secrets/scrub.ts: the scan is the oracle.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

import type { Redis } from 'ioredis';

import { generateMasterKey } from '../../src/secrets/crypto.ts';
import { answering, type DownstreamRequest, type Reply, startDownstream } from '../downstream.ts';
import { startApi, startWorker, stopProcess, workerEnv, writeServicesFile } from '../ferry.ts';
import { jsonRequest, type RawAnswer, rawRequest, settleJobs } from '../http.ts';
import { mapLimit, Random, withLab } from '../lab.ts';
import { redisClient, startRedisServer } from '../redis.ts';
import { scenarioRow } from '../rows.ts';
import type { Scenario, ScenarioOptions, ScenarioRow } from '../scenario.ts';

const ADMIN = `scan-admin-${'a'.repeat(24)}`;
/** Characters after which the result body is cut, and after which the error excerpt is. */
const RESULT_CUT = 64 * 1024;
const EXCERPT_CUT = 300;
/** A prefix this long is already the secret: a cut-off secret must not keep it. */
const MIN_PREFIX = 8;

export interface Needle {
  encoding: string;
  text: string;
}

/**
 * Every form a secret can take on the wire or in storage, except prefixes (found by the scan itself). base64:
 * the secret's bytes after 0, 1 or 2 other bytes encode differently; only the characters that depend on the
 * secret's bytes alone are kept, so the form is found whatever came before or after it.
 */
export function encodingsOf(secret: string): Needle[] {
  const needles: Needle[] = [{ encoding: 'raw', text: secret }];
  const add = (encoding: string, text: string): void => {
    if (text.length >= MIN_PREFIX && !needles.some((needle) => needle.text === text))
      needles.push({ encoding, text });
  };
  const json = (text: string): string => JSON.stringify(text).slice(1, -1);
  const asciiJson = (text: string): string =>
    json(text).replace(
      /[\u007f-\uffff]/g,
      (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
    );
  const collapsed = secret.replace(/\s+/g, ' ');
  // A JSON string inside a JSON string (a message in a stored job) is escaped twice.
  for (const [label, text] of [
    ['', secret],
    ['whitespace-collapsed', collapsed],
  ] as const) {
    const wrap = (encoding: string): string => (label === '' ? encoding : `${encoding}(${label})`);
    if (label !== '') add(label, text);
    add(wrap('json'), json(text));
    add(wrap('json-ascii'), asciiJson(text));
    add(wrap('json-in-json'), json(json(text)));
  }
  add('uri', encodeURIComponent(secret));
  add('form', new URLSearchParams({ v: secret }).toString().slice(2));
  const bytes = Buffer.from(secret, 'utf8');
  for (const lead of [0, 1, 2]) {
    const padded = Buffer.concat([Buffer.alloc(lead), bytes]);
    const start = Math.ceil((lead * 8) / 6);
    const end = Math.floor(((lead + bytes.length) * 8) / 6);
    add(`base64@${lead}`, padded.toString('base64').slice(start, end));
    add(`base64url@${lead}`, padded.toString('base64url').slice(start, end));
  }
  return needles;
}

export interface Hit {
  secret: string;
  where: string;
  encoding: string;
}

/**
 * Every occurrence of each secret in `text`. An occurrence of the secret's first 8 characters is one hit,
 * named by the longest form that starts there (`raw`, `uri`, …) or `prefix(n)` with the length kept; base64
 * forms are searched on their own.
 */
export function scanText(
  text: string,
  where: string,
  secrets: readonly { name: string; needles: Needle[] }[],
): Hit[] {
  const hits: Hit[] = [];
  // A place is named by a key, a log message or a route: never let a secret through in its name.
  for (const secret of secrets)
    where = where.split(secret.needles[0]!.text.slice(0, MIN_PREFIX)).join('[secret]');
  for (const secret of secrets) {
    const raw = secret.needles[0]!.text;
    const head = raw.slice(0, MIN_PREFIX);
    for (let at = text.indexOf(head); at >= 0; at = text.indexOf(head, at + 1)) {
      const form = secret.needles
        .filter((needle) => !needle.encoding.startsWith('base64') && text.startsWith(needle.text, at))
        .sort((a, b) => b.text.length - a.text.length)[0];
      let encoding = form?.encoding;
      if (encoding === undefined) {
        let length = MIN_PREFIX;
        while (length < raw.length && text[at + length] === raw[length]) length++;
        encoding = `prefix(${length}/${raw.length})`;
      }
      hits.push({ secret: secret.name, where, encoding });
    }
    for (const needle of secret.needles) {
      if (!needle.encoding.startsWith('base64')) continue;
      for (let at = text.indexOf(needle.text); at >= 0; at = text.indexOf(needle.text, at + 1)) {
        hits.push({ secret: secret.name, where, encoding: needle.encoding });
      }
    }
  }
  return hits;
}

/** A secret value: random, with the characters that encode differently, the double space after 12. */
function plantValue(random: Random, withQuote: boolean): string {
  return `${random.word(12)} !'()~+/=  é${random.word(6)}${withQuote ? '"\\' : ''}ü${random.word(6)}`;
}

/** What the downstream echoes: the credential as it arrived, whatever the auth type. */
function credentialOf(request: DownstreamRequest): string {
  const auth = request.headers.authorization ?? '';
  if (auth.startsWith('Bearer ')) return auth.slice('Bearer '.length);
  if (auth.startsWith('Basic ')) {
    const decoded = Buffer.from(auth.slice('Basic '.length), 'base64').toString('utf8');
    return decoded.slice(decoded.indexOf(':') + 1);
  }
  const header = request.headers['x-api-key'];
  if (typeof header === 'string') return Buffer.from(header, 'latin1').toString('utf8');
  return new URL(request.url, 'http://downstream').searchParams.get('api_key') ?? '';
}

function echo(request: DownstreamRequest): string {
  return JSON.stringify({
    method: request.method,
    url: request.url,
    headers: request.headers,
    body: request.body,
  });
}

function answerFor(request: DownstreamRequest): Reply {
  let input: { mode?: string; pad?: number } = {};
  try {
    input = JSON.parse(request.body) as typeof input;
  } catch {
    // No body: the default answer.
  }
  const pad = input.pad ?? 10;
  const credential = credentialOf(request);
  const headerSafe = (text: string): string => Buffer.from(text, 'utf8').toString('latin1');
  switch (input.mode) {
    case 'notfound':
      return {
        status: 404,
        headers: { 'content-type': 'text/html' },
        body: `<html><body><h1>Not Found</h1><p>${request.method} ${request.url}</p><pre>${echo(request)}</pre></body></html>`,
      };
    case 'fail':
      return { status: 503, body: echo(request) };
    case 'redirect':
      return { status: 302, headers: { location: headerSafe(request.url) }, body: echo(request) };
    case 'spaces':
      return {
        status: 400,
        headers: { 'content-type': 'text/plain' },
        body: `refused credential:  ${credential}  end`,
      };
    case 'cut-result':
      return {
        status: 200,
        headers: { 'content-type': 'text/plain' },
        body: `${'x'.repeat(RESULT_CUT - pad)}${credential}${'y'.repeat(64)}`,
      };
    case 'cut-excerpt':
      return {
        status: 422,
        headers: { 'content-type': 'text/plain' },
        body: `${'x'.repeat(EXCERPT_CUT - pad)}${credential}${'y'.repeat(64)}`,
      };
    default:
      return { status: 201, headers: { location: headerSafe(request.url) }, body: echo(request) };
  }
}

export interface SecretScanReport {
  seed: number;
  hits: Hit[];
  enqueued: number;
  completed: number;
  deadLettered: number;
  lost: number;
  serverErrors: number;
  /** How much was searched, so a scan of nothing cannot pass. */
  searched: { redisKeys: number; files: number; logLines: number; answers: number; bytes: number };
}

async function redisTexts(client: Redis): Promise<{ where: string; text: string }[]> {
  const out: { where: string; text: string }[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'COUNT', 500);
    cursor = next;
    for (const key of keys) {
      const type = await client.type(key);
      let value: unknown;
      if (type === 'string') value = await client.get(key);
      else if (type === 'hash') value = await client.hgetall(key);
      else if (type === 'list') value = await client.lrange(key, 0, -1);
      else if (type === 'set') value = await client.smembers(key);
      else if (type === 'zset') value = await client.zrange(key, '0', '-1', 'WITHSCORES');
      else if (type === 'stream') value = await client.xrange(key, '-', '+');
      // Values as stored: a string as is, the rest flattened (JSON.stringify would escape them once more).
      const parts: string[] = [key];
      const flatten = (item: unknown): void => {
        if (typeof item === 'string') parts.push(item);
        else if (Array.isArray(item)) item.forEach(flatten);
        else if (item !== null && typeof item === 'object') Object.entries(item).forEach(flatten);
      };
      flatten(value);
      out.push({
        where: `redis ${type} ${key.replace(/[^\x20-\x7e]/g, '?').slice(0, 80)}`,
        text: parts.join('\n'),
      });
    }
  } while (cursor !== '0');
  return out;
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir)) {
    const path = join(dir, entry);
    if ((await stat(path)).isDirectory()) out.push(...(await filesUnder(path)));
    else out.push(path);
  }
  return out;
}

export async function runSecretScan(options: ScenarioOptions): Promise<SecretScanReport> {
  const rounds = options.smoke ? 1 : 3;
  options.log(`secret-scan: seed ${options.seed}, ${rounds} round(s)`);
  return withLab('secret-scan', options.log, async (lab) => {
    const random = new Random(options.seed);
    const planted = {
      bearer_token: plantValue(random, true),
      basic_password: plantValue(random, false),
      header_key: plantValue(random, true),
      query_key: plantValue(random, false),
      query_key_staged: plantValue(random, false),
    };
    const redis = await startRedisServer(lab, { appendfsync: 'always' });
    const downstream = await startDownstream(lab, answering(answerFor));
    const common = {
      baseUrl: downstream.url,
      timeoutMs: 5_000,
      retry: { attempts: 2, backoff: { delayMs: 20, maxDelayMs: 50 } },
      breaker: { volumeThreshold: 1_000 },
      operations: { call: { method: 'POST', path: '/echo', body: '{{ input }}' } },
    };
    const services: Record<string, unknown> = {
      bearer: { ...common, auth: { type: 'bearer', token: '{{ secrets.bearer_token }}' } },
      basic: {
        ...common,
        auth: { type: 'basic', username: 'api-user', password: '{{ secrets.basic_password }}' },
      },
      apikeyheader: {
        ...common,
        auth: { type: 'apiKey', header: 'X-API-Key', value: '{{ secrets.header_key }}' },
      },
      apikeyquery: {
        ...common,
        auth: { type: 'apiKey', query: 'api_key', value: '{{ secrets.query_key }}' },
      },
    };
    const servicesFile = await writeServicesFile(lab, { services });
    const prefix = `scan${options.seed}`;
    const env = {
      FERRY_SECRETS_KEY: generateMasterKey(),
      FERRY_SECRET_BEARER_TOKEN: planted.bearer_token,
      FERRY_SECRET_HEADER_KEY: planted.header_key,
    };
    const api = await startApi(lab, {
      redisUrl: redis.url,
      servicesFile,
      prefix,
      tokens: [{ name: 'admin', token: ADMIN, scopes: ['admin'] }],
      extra: env,
    });
    const answers: { where: string; answer: RawAnswer }[] = [];
    let serverErrors = 0;
    const call = async (
      where: string,
      method: string,
      path: string,
      body?: unknown,
    ): Promise<RawAnswer & { json: unknown }> => {
      const answer = await jsonRequest(api.port, method, path, ADMIN, body);
      answers.push({ where, answer });
      if (answer.status >= 500) serverErrors++;
      return answer;
    };
    for (const key of ['basic_password', 'query_key'] as const) {
      const set = await call('answer PUT secret', 'PUT', `/v1/secrets/${key}`, { value: planted[key] });
      if (set.status !== 201) throw new Error(`PUT /v1/secrets/${key} answered ${set.status}`);
    }
    const worker = await startWorker(
      lab,
      workerEnv({ redisUrl: redis.url, servicesFile, prefix, extra: env }),
    );

    // Every service's events, live, for the whole run.
    const streams = new AbortController();
    const liveEvents = Object.keys(services).map((service) =>
      rawRequest(api.port, {
        method: 'GET',
        path: `/v1/events?service=${service}`,
        headers: { authorization: `Bearer ${ADMIN}` },
        streamMs: 10 * 60_000,
        timeoutMs: 10 * 60_000,
        signal: streams.signal,
      }),
    );

    const jobs: { service: string; id: string }[] = [];
    for (let round = 0; round < rounds; round++) {
      const inputs: { mode: string; pad?: number }[] = [
        { mode: 'ok' },
        { mode: 'notfound' },
        { mode: 'fail' },
        { mode: 'redirect' },
        { mode: 'spaces' },
      ];
      const pads = round === 0 ? [4, 12, 20, 30] : [random.int(1, 40), random.int(1, 40)];
      for (const pad of pads) inputs.push({ mode: 'cut-result', pad }, { mode: 'cut-excerpt', pad });
      for (const service of Object.keys(services)) {
        for (const input of inputs) {
          const answer = await call('answer POST job', 'POST', '/v1/jobs', {
            service,
            operation: 'call',
            input,
          });
          if (answer.status === 202) jobs.push({ service, id: (answer.json as { id: string }).id });
        }
      }
    }
    options.log(`secret-scan: ${jobs.length} jobs enqueued`);
    const states = await settleJobs(api.port, ADMIN, jobs, options.smoke ? 30_000 : 90_000);

    // A secret test: the staged value of query_key on a call whose 404 page echoes the URL.
    await call('answer POST secret stage', 'POST', '/v1/secrets/query_key/stage', {
      value: planted.query_key_staged,
    });
    await call('answer POST secret test', 'POST', '/v1/secrets/query_key/test', {
      service: 'apikeyquery',
      operation: 'call',
      input: { mode: 'notfound' },
    });

    await mapLimit(jobs, 4, async (job) => {
      await call('answer GET job', 'GET', `/v1/jobs/${job.service}/${job.id}`);
      const events = await rawRequest(api.port, {
        method: 'GET',
        path: `/v1/jobs/${job.service}/${job.id}/events`,
        headers: { authorization: `Bearer ${ADMIN}` },
        streamMs: 3_000,
      });
      answers.push({ where: 'answer GET job events', answer: events });
    });
    const deadLetterIds = new Set<string>();
    for (const service of Object.keys(services)) {
      const list = await call(
        'answer GET dead letters',
        'GET',
        `/v1/dead-letters?service=${service}&includeInput=true&limit=500`,
      );
      for (const item of (list.json as { items?: { id: string }[] } | undefined)?.items ?? [])
        deadLetterIds.add(item.id);
    }
    for (const id of deadLetterIds)
      await call('answer GET dead letter', 'GET', `/v1/dead-letters/${encodeURIComponent(id)}`);
    for (const path of [
      '/metrics',
      '/v1/status',
      '/v1/secrets',
      '/v1/services',
      '/v1/breakers',
      '/v1/queues',
    ]) {
      await call(`answer GET ${path}`, 'GET', path);
    }
    streams.abort();
    for (const [i, stream] of (await Promise.all(liveEvents)).entries()) {
      answers.push({ where: `answer GET /v1/events (${Object.keys(services)[i]})`, answer: stream });
    }
    await stopProcess(worker);
    await stopProcess(api.process);
    // Everything Redis wrote reaches the AOF before the scan reads it (appendfsync always).

    const secrets = Object.entries(planted).map(([name, value]) => ({ name, needles: encodingsOf(value) }));
    const hits: Hit[] = [];
    let bytes = 0;
    const scan = (text: string, where: string): void => {
      bytes += text.length;
      hits.push(...scanText(text, where, secrets));
    };
    const keys = await redisTexts(redisClient(lab, redis.url));
    for (const { where, text } of keys) scan(text, where);
    const files = await filesUnder(redis.dir);
    for (const file of files) scan(await readFile(file, 'utf8'), `file ${file.slice(redis.dir.length + 1)}`);
    let logLines = 0;
    for (const [name, process] of [
      ['api', api.process],
      ['worker', worker],
    ] as const) {
      for (const line of [...process.stdout, ...process.stderr]) {
        logLines++;
        let message = '';
        try {
          message = String((JSON.parse(line) as { msg?: unknown }).msg ?? '');
        } catch {
          // Not JSON: the line itself names it.
        }
        scan(line, `log ${name} "${message.slice(0, 40)}"`);
      }
    }
    for (const { where, answer } of answers) {
      scan(`${answer.status} ${JSON.stringify(answer.headers)}\n${answer.text}`, where);
    }
    const completed = [...states.values()].filter((state) => state === 'completed').length;
    const deadLettered = [...states.values()].filter((state) => state === 'dead_lettered').length;
    return {
      seed: options.seed,
      hits,
      enqueued: jobs.length,
      completed,
      deadLettered,
      lost: jobs.length - completed - deadLettered,
      serverErrors,
      searched: { redisKeys: keys.length, files: files.length, logLines, answers: answers.length, bytes },
    };
  });
}

/** `where (encoding) ×count` for each place, most hits first. */
export function summarizeHits(hits: readonly Hit[]): string[] {
  const counts = new Map<string, number>();
  for (const hit of hits) {
    const key = `${hit.secret} in ${hit.where} (${hit.encoding})`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].sort((a, b) => b[1] - a[1]).map(([key, count]) => `${key} x${count}`);
}

export function secretScanRow(report: SecretScanReport): ScenarioRow {
  const places = summarizeHits(report.hits);
  const s = report.searched;
  const notes = [
    `seed ${report.seed}; searched ${s.redisKeys} keys, ${s.files} files, ${s.logLines} log lines, ${s.answers} answers`,
    ...(places.length > 0
      ? [
          `hits: ${places.slice(0, 12).join('; ')}${places.length > 12 ? `; …${places.length - 12} more places` : ''}`,
        ]
      : []),
  ];
  return scenarioRow({
    scenario: 'secret-scan',
    enqueued: report.enqueued,
    completed: report.completed,
    deadLettered: report.deadLettered,
    lost: report.lost,
    serverErrors: report.serverErrors,
    secretHits: report.hits.length,
    notes: notes.join('; '),
    ok: report.hits.length === 0 && report.lost === 0 && report.serverErrors === 0,
  });
}

const scenario: Scenario = {
  name: 'secret-scan',
  async run(options) {
    return secretScanRow(await runSecretScan(options));
  },
};

export default scenario;
