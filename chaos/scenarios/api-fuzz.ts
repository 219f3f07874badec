/**
 * api-fuzz: thousands of generated request bodies (seeded) against a real `ferry api` over a real Redis, with
 * a real worker delivering what was accepted: mutated valid jobs (wrong types, huge strings, nesting thousands
 * of levels deep, huge metadata, unicode and control characters, `__proto__`/`constructor` keys, duplicate
 * keys), invalid JSON, wrong content types, batches of all of these, idempotency keys with CR/LF/NUL, and ids
 * such as `events`, `meta` or `../x` on the job, cancel and events routes.
 *
 * The promises: no 5xx and no request left unanswered; what must be refused is refused (an idempotency key
 * with CR/LF/NUL, a body nested 1,000+ levels, 1 MiB of metadata, a job id Ferry could not have made); every
 * accepted job ends completed or dead-lettered; and the API still answers a valid request afterwards.
 */
import { answering, startDownstream } from '../downstream.ts';
import { startApi, startWorker, stopProcess, workerEnv, writeServicesFile } from '../ferry.ts';
import { countStates, jsonRequest, type RawRequest, rawRequest, settleJobs } from '../http.ts';
import { mapLimit, Random, withLab } from '../lab.ts';
import { startRedisServer } from '../redis.ts';
import { scenarioRow } from '../rows.ts';
import type { Scenario, ScenarioOptions, ScenarioRow } from '../scenario.ts';

const WRITER = `fuzz-writer-${'w'.repeat(24)}`;
const READER = `fuzz-reader-${'r'.repeat(24)}`;
const SERVICES = ['alpha', 'beta'] as const;
/** BullMQ's own key names under a queue: no Ferry job can have one of these ids. */
const INTERNAL_IDS = [
  'events',
  'meta',
  'id',
  'marker',
  'delayed',
  'wait',
  'paused',
  'active',
  'completed',
  'failed',
  'prioritized',
  'stalled',
  'limiter',
  'repeat',
  'pc',
  'de',
  'stalled-check',
  'waiting-children',
];
/** Path segments (already as sent on the wire) that are no job id either. */
const HOSTILE_IDS = [
  '../x',
  '..%2Fx',
  '%2E%2E%2Fx',
  '..',
  '.',
  'a%00b',
  '%00',
  'a:b',
  '%3A',
  '%25',
  '%ZZ',
  '%F0%9F%92%A9',
  '__proto__',
  'constructor',
  'toString',
  'x'.repeat(600),
  '-1',
  'idem-',
  'dl-',
  'a%0D%0Ab',
];

/** What a generated request is, and what the API must do with it. */
interface Case {
  category: string;
  request: RawRequest;
  /** A 2xx would break a promise (the job must be refused). */
  mustRefuse: boolean;
  /** For POST /v1/jobs/batch: the items that must be refused, by index. */
  refuseItems?: ReadonlySet<number>;
  /** For POST /v1/jobs/batch: each item's service as the server parses it (the last of duplicate keys). */
  itemServices?: readonly (string | undefined)[];
  batch: boolean;
}

export interface ApiFuzzReport {
  seed: number;
  bodies: number;
  idProbes: number;
  /** 5xx answers, by category. */
  serverErrors: Record<string, number>;
  /** Requests that got no answer (reset, refused, timed out), by category. */
  unanswered: Record<string, number>;
  /** 2xx answers (or accepted batch items) to what must be refused, by category. */
  acceptedButMustRefuse: Record<string, number>;
  enqueued: number;
  completed: number;
  deadLettered: number;
  /** Accepted with a (fuzzed) delay still pending at the end, then cancelled: not lost. */
  delayedCancelled: number;
  lost: number;
  /** A valid request after the barrage got a 2xx, and /healthz a 200. */
  responsive: boolean;
  apiPeakRssMiB: number | undefined;
  apiExitedEarly: boolean;
}

const total = (counts: Record<string, number>): number => Object.values(counts).reduce((a, b) => a + b, 0);

function bump(counts: Record<string, number>, key: string, by = 1): void {
  counts[key] = (counts[key] ?? 0) + by;
}

/** Job bodies as raw JSON text, so duplicate keys and `__proto__` reach the server as written. */
class Generator {
  readonly #random: Random;
  #counter = 0;

  constructor(random: Random) {
    this.#random = random;
  }

  #validFields(): Record<string, unknown> {
    const r = this.#random;
    const n = this.#counter++;
    const fields: Record<string, unknown> = {
      service: r.pick(SERVICES),
      operation: 'op',
      input: { n, word: r.word(r.int(0, 24)), list: [1, 'two', null, true] },
    };
    if (r.chance(0.5)) fields.idempotencyKey = `fuzz-${n}-${r.word(6)}`;
    else if (r.chance(0.1)) fields.idempotencyKey = 'fuzz-shared-key';
    if (r.chance(0.4)) fields.tenant = r.pick(['acme', 'globex', 'initech']);
    if (r.chance(0.3)) fields.metadata = { source: 'fuzz', n };
    if (r.chance(0.2)) fields.priority = r.int(0, 10);
    return fields;
  }

  /** One job as raw JSON, its category, and whether it must be refused. */
  job(allowHuge: boolean): { text: string; category: string; mustRefuse: boolean } {
    const r = this.#random;
    const fields = this.#validFields();
    const json = (): string => JSON.stringify(fields);
    const roll = r.next();
    if (roll < 0.12) return { text: json(), category: 'valid', mustRefuse: false };
    if (roll < 0.27) {
      const field = r.pick([
        'service',
        'operation',
        'idempotencyKey',
        'tenant',
        'delayMs',
        'priority',
        'metadata',
        'input',
      ]);
      const wrong: unknown[] = [123, -1, 1.5, 1e300, null, true, [], {}, '', '10', [1, 2], { a: 1 }];
      fields[field] = r.pick(wrong);
      if (r.chance(0.2)) fields[`extra${r.int(0, 9)}`] = 1;
      return { text: json(), category: 'wrong-type', mustRefuse: false };
    }
    if (roll < 0.37) {
      const field = r.pick(['service', 'operation', 'idempotencyKey', 'tenant', 'input', 'inputKey']);
      const size =
        allowHuge && r.chance(0.1) ? r.pick([2_000_000, 4_000_000]) : r.pick([1_000, 10_000, 300_000]);
      const huge = 'A'.repeat(size);
      if (field === 'input') fields.input = { huge };
      else if (field === 'inputKey') fields.input = { [huge]: 1 };
      else fields[field] = huge;
      return { text: json(), category: 'huge-string', mustRefuse: false };
    }
    if (roll < 0.45) {
      const depth = r.pick([64, 100, 1_000, 5_000, 10_000, 20_000]);
      const array = r.chance(0.5);
      const nested = array
        ? `${'['.repeat(depth)}1${']'.repeat(depth)}`
        : `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
      const where = r.pick(['input', 'metadata']);
      const base = { ...fields };
      delete base[where];
      const text = `${JSON.stringify(base).slice(0, -1)},"${where}":${where === 'metadata' ? `{"deep":${nested}}` : nested}}`;
      return {
        text,
        category: `deep-nesting-${depth >= 1_000 ? '1000+' : '<1000'}`,
        mustRefuse: depth >= 1_000,
      };
    }
    if (roll < 0.5) {
      const big = allowHuge && r.chance(0.3);
      const metadata: Record<string, unknown> = {};
      if (r.chance(0.5)) metadata.blob = 'M'.repeat(big ? 1024 * 1024 : 64 * 1024);
      else for (let i = 0; i < (big ? 40_000 : 2_000); i++) metadata[`k${i}`] = i;
      fields.metadata = metadata;
      return { text: json(), category: big ? 'huge-metadata-1MiB' : 'metadata-64KiB', mustRefuse: big };
    }
    if (roll < 0.6) {
      const samples = [
        '\u0000',
        '\u0001\u0002\u001f',
        '\u2028\u2029',
        '\u202eevil',
        '\u200b',
        '💩🚀',
        'Ω≈ç√∫',
        '\ud800',
        '\udfff\ud800',
        'ﬀ',
        'e\u0301',
        '\t\r\n',
        '\u007f',
        '\uffff',
      ];
      const sample = r.pick(samples);
      const field = r.pick([
        'service',
        'operation',
        'tenant',
        'idempotencyKey',
        'input',
        'inputKey',
        'metadata',
      ]);
      if (field === 'input') fields.input = { text: `x${sample}y` };
      else if (field === 'inputKey') fields.input = { [`k${sample}`]: sample };
      else if (field === 'metadata') fields.metadata = { [sample]: sample };
      else if (field === 'idempotencyKey')
        fields.idempotencyKey = `u-${this.#counter}-${sample.replace(/[\r\n\0]/g, '')}`;
      else fields[field] = `${String(fields[field] ?? 'x')}${sample}`;
      return { text: json(), category: 'unicode', mustRefuse: false };
    }
    if (roll < 0.67) {
      const payload = r.pick([
        '"__proto__":{"polluted":true}',
        '"constructor":{"prototype":{"polluted":true}}',
        '"__proto__":null',
        '"prototype":{"x":1}',
      ]);
      const where = r.pick(['top', 'input', 'metadata']);
      const text =
        where === 'top'
          ? `{${payload},${json().slice(1)}`
          : `${JSON.stringify({ ...fields, [where]: undefined }).slice(0, -1)},"${where}":{${payload}}}`;
      return { text, category: 'proto-keys', mustRefuse: false };
    }
    if (roll < 0.73) {
      const key = r.pick(['service', 'operation', 'input', 'tenant', 'idempotencyKey', 'metadata']);
      const value = r.pick(['"alpha"', '"nope"', '1', '{"a":1}', '"x\\u0000"', 'null']);
      return {
        text: `${json().slice(0, -1)},"${key}":${value}}`,
        category: 'duplicate-keys',
        mustRefuse: false,
      };
    }
    if (roll < 0.83) {
      const key = r.pick([
        'a\r\nX-Injected: 1',
        'a\rb',
        'a\nb',
        'a\u0000b',
        '\u0000',
        '\r\n',
        'key\r\n\r\nGET / HTTP/1.1',
      ]);
      fields.idempotencyKey = `${key}-${this.#counter}`;
      return { text: json(), category: 'idempotency-key-control-chars', mustRefuse: true };
    }
    const invalid = r.pick([
      '',
      '{',
      '{"service":',
      '{"service":"alpha","operation":"op",}',
      'NaN',
      "{'service':'alpha'}",
      '\ufeff{"service":"alpha","operation":"op"}',
      'null',
      '[]',
      '"string"',
      '123',
      'true',
      '{"service":"alpha","operation":"op"}garbage',
      '1'.repeat(100_000),
      '{"service":"alpha","operation":"op","input":1e999999}',
      '{"service":"alpha","operation":"op","input":"\\ud83d"}',
      '{"service":"alpha","operation":"op","input":"\\x41"}',
      '\u0000\u0001\u0002',
      '{"service":"alpha","operation":"op"}\u0000',
    ]);
    return { text: invalid, category: 'invalid-json', mustRefuse: false };
  }

  /** One request: a single job or a batch, with a content type that is usually right. */
  next(allowHuge: boolean): Case {
    const r = this.#random;
    if (r.chance(0.2)) return this.#batch(allowHuge);
    const job = this.job(allowHuge);
    let contentType: string | undefined = 'application/json';
    let category = job.category;
    let mustRefuse = job.mustRefuse;
    if (r.chance(0.1)) {
      contentType = r.pick([
        'text/plain',
        'application/x-www-form-urlencoded',
        'multipart/form-data; boundary=x',
        'application/json; charset=utf-16',
        'application/json; charset=latin1',
        undefined,
        'application/JSON',
        'application/json-patch+json',
        'application/vnd.api+json',
        '*/*',
        'application/json;;;',
        '',
        'text/html',
        'application/xml',
      ]);
      category = `content-type(${job.category})`;
      // A body that is not application/json may be refused whatever it holds (415).
      mustRefuse = job.mustRefuse;
    }
    const body = r.chance(0.02) ? Buffer.from([0xff, 0xfe, 0x00, 0xc3, 0x28]) : job.text;
    if (typeof body !== 'string') category = 'invalid-utf8';
    return {
      category,
      batch: false,
      mustRefuse: typeof body === 'string' ? mustRefuse : false,
      request: {
        method: 'POST',
        path: '/v1/jobs',
        headers: {
          authorization: `Bearer ${WRITER}`,
          ...(contentType === undefined ? {} : { 'content-type': contentType }),
        },
        body,
      },
    };
  }

  #batch(allowHuge: boolean): Case {
    const r = this.#random;
    const envelope = r.next();
    let text: string;
    let category = 'batch';
    const refuseItems = new Set<number>();
    const itemServices: (string | undefined)[] = [];
    if (envelope < 0.15) {
      text = r.pick([
        '{}',
        '{"jobs":{}}',
        '{"jobs":[]}',
        '{"jobs":"x"}',
        '{"jobs":[{"service":"alpha","operation":"op"}],"atomic":"yes"}',
        '{"jobs":[{"service":"alpha","operation":"op"}],"extra":1}',
        '[]',
        '{"jobs":null}',
        `{"jobs":[${Array.from({ length: 1001 }, () => '{"service":"alpha","operation":"op"}').join(',')}]}`,
      ]);
      category = 'batch-envelope';
    } else {
      const count = r.int(1, 20);
      const items: string[] = [];
      for (let i = 0; i < count; i++) {
        const job = this.job(allowHuge && r.chance(0.2));
        // Invalid JSON inside an array breaks the whole body, which is its own category above.
        const text = job.category === 'invalid-json' ? JSON.stringify(this.#validFields()) : job.text;
        if (job.mustRefuse && job.category !== 'invalid-json') refuseItems.add(i);
        items.push(text);
        itemServices.push(serviceOf(text));
      }
      const atomic = r.pick(['', ',"atomic":true', ',"atomic":false']);
      text = `{"jobs":[${items.join(',')}]${atomic}}`;
    }
    return {
      category,
      batch: true,
      mustRefuse: false,
      refuseItems,
      itemServices,
      request: {
        method: 'POST',
        path: '/v1/jobs/batch',
        headers: { authorization: `Bearer ${WRITER}`, 'content-type': 'application/json' },
        body: text,
      },
    };
  }
}

/** The `service` a job's JSON text names as JSON.parse reads it (the last of duplicate keys wins). */
function serviceOf(text: string): string | undefined {
  try {
    const service = (JSON.parse(text) as { service?: unknown }).service;
    return typeof service === 'string' ? service : undefined;
  } catch {
    return undefined;
  }
}

/** GET, DELETE and events of ids no job can have, on known and unknown services. */
function idProbes(smoke: boolean): Case[] {
  const services = smoke ? ['alpha', 'nope'] : ['alpha', 'nope', '__proto__', 'constructor', '%00', 'ALPHA'];
  const cases: Case[] = [];
  for (const service of services) {
    for (const id of [...INTERNAL_IDS, ...HOSTILE_IDS]) {
      const internal = INTERNAL_IDS.includes(id);
      for (const [method, suffix, token] of [
        ['GET', '', READER],
        ['DELETE', '', WRITER],
        ['GET', '/events', READER],
      ] as const) {
        cases.push({
          category: `id-${method}${suffix}${internal ? '-internal' : ''}`,
          batch: false,
          // An id Ferry could not have made is a 404, never a job (`meta` answered a fake one).
          mustRefuse: true,
          request: {
            method,
            path: `/v1/jobs/${service}/${id}${suffix}`,
            headers: { authorization: `Bearer ${token}` },
            ...(suffix === '' ? {} : { streamMs: 200 }),
            timeoutMs: 15_000,
          },
        });
      }
    }
  }
  return cases;
}

export async function runApiFuzz(options: ScenarioOptions): Promise<ApiFuzzReport> {
  const bodies = options.smoke ? 300 : 2_000;
  options.log(`api-fuzz: seed ${options.seed}, ${bodies} bodies`);
  return withLab('api-fuzz', options.log, async (lab) => {
    const random = new Random(options.seed);
    const redis = await startRedisServer(lab);
    const downstream = await startDownstream(
      lab,
      answering(() => ({ status: 200, body: '{"ok":true}' })),
    );
    const operations = { op: { method: 'POST', path: '/things', body: '{{ input }}' } };
    const service = {
      baseUrl: downstream.url,
      concurrency: 20,
      timeoutMs: 5_000,
      retry: { attempts: 2, backoff: { delayMs: 50, maxDelayMs: 200 } },
      operations,
    };
    const servicesFile = await writeServicesFile(lab, { services: { alpha: service, beta: service } });
    const prefix = `fuzz${options.seed}`;
    const tokens = [
      { name: 'writer', token: WRITER, scopes: ['jobs:write'] },
      { name: 'reader', token: READER, scopes: ['jobs:read'] },
    ];
    const api = await startApi(lab, { redisUrl: redis.url, servicesFile, prefix, tokens });
    await startWorker(lab, workerEnv({ redisUrl: redis.url, servicesFile, prefix }));

    const generator = new Generator(random);
    const cases: Case[] = [];
    for (let i = 0; i < bodies; i++) cases.push(generator.next(true));
    const probes = idProbes(options.smoke);
    const serverErrors: Record<string, number> = {};
    const unanswered: Record<string, number> = {};
    const acceptedButMustRefuse: Record<string, number> = {};
    const accepted = new Map<string, { service: string | undefined; id: string }>();
    let peak = 0;
    const sampleRss = async (): Promise<void> => {
      peak = Math.round((await api.process.peakRssBytes()) / 1024 / 1024);
    };

    let done = 0;
    const started = Date.now();
    await mapLimit([...cases, ...probes], 6, async (item) => {
      const answer = await rawRequest(api.port, { timeoutMs: 30_000, ...item.request });
      if (++done % 250 === 0) {
        await sampleRss();
        options.log(`api-fuzz: ${done} requests, ${Math.round((Date.now() - started) / 1000)} s`);
      }
      if (answer.status === 0) {
        bump(unanswered, item.category);
        return;
      }
      if (answer.status >= 500) bump(serverErrors, `${item.category} ${answer.status}`);
      const ok = answer.status >= 200 && answer.status < 300;
      if (ok && item.mustRefuse) bump(acceptedButMustRefuse, item.category);
      if (!ok || item.category.startsWith('id-')) return;
      let json: unknown;
      try {
        json = JSON.parse(answer.text);
      } catch {
        return;
      }
      if (!item.batch) {
        const { id, service } = json as { id?: unknown; service?: unknown };
        if (typeof id === 'string') {
          accepted.set(`${String(service)}/${id}`, {
            service: typeof service === 'string' ? service : undefined,
            id,
          });
        }
        return;
      }
      const results = (json as { results?: { index: number; status: number; id?: string }[] }).results ?? [];
      for (const result of results) {
        if (result.status < 200 || result.status >= 300 || result.id === undefined) continue;
        if (item.refuseItems?.has(result.index) === true) bump(acceptedButMustRefuse, 'batch-item');
        const service = item.itemServices?.[result.index];
        accepted.set(`${service ?? '?'}/${result.id}`, { service, id: result.id });
      }
    });
    await sampleRss();
    options.log(`api-fuzz: ${done} requests answered or given up; ${accepted.size} jobs accepted`);

    // A valid request after the barrage, and liveness.
    const after = await jsonRequest(api.port, 'POST', '/v1/jobs', WRITER, {
      service: 'alpha',
      operation: 'op',
      input: { after: true },
    });
    const health = await rawRequest(api.port, { method: 'GET', path: '/healthz', timeoutMs: 10_000 });
    const responsive = after.status >= 200 && after.status < 300 && health.status === 200;
    if (responsive) {
      const id = (after.json as { id: string }).id;
      accepted.set(`alpha/${id}`, { service: 'alpha', id });
    }

    // Every accepted job names a service (a valid job must); one that does not is counted as lost below.
    const jobs = [...accepted.values()].flatMap((job) =>
      job.service === undefined ? [] : [{ service: job.service, id: job.id }],
    );
    const apiExitedEarly = !api.process.running;
    const states = apiExitedEarly
      ? new Map<string, string>()
      : await settleJobs(api.port, READER, jobs, options.smoke ? 20_000 : 120_000);
    let delayedCancelled = 0;
    for (const [key, state] of states) {
      if (state !== 'delayed' && state !== 'prioritized' && state !== 'waiting') continue;
      const [name, ...rest] = key.split('/');
      const cancel = await rawRequest(api.port, {
        method: 'DELETE',
        path: `/v1/jobs/${name}/${encodeURIComponent(rest.join('/'))}`,
        headers: { authorization: `Bearer ${WRITER}` },
      });
      if (state === 'delayed' && cancel.status === 204) delayedCancelled++;
    }
    const completed = countStates(states, 'completed');
    const deadLettered = countStates(states, 'dead_lettered');
    // An accepted id whose service could not be found is lost too.
    const enqueued = accepted.size;
    await sampleRss();
    await stopProcess(api.process);
    return {
      seed: options.seed,
      bodies,
      idProbes: probes.length,
      serverErrors,
      unanswered,
      acceptedButMustRefuse,
      enqueued,
      completed,
      deadLettered,
      delayedCancelled,
      lost: enqueued - completed - deadLettered - delayedCancelled,
      responsive,
      apiPeakRssMiB: peak === 0 ? undefined : peak,
      apiExitedEarly,
    };
  });
}

const summary = (counts: Record<string, number>): string =>
  Object.entries(counts)
    .map(([key, count]) => `${key} ${count}`)
    .join(', ');

export function apiFuzzRow(report: ApiFuzzReport): ScenarioRow {
  const serverErrors = total(report.serverErrors);
  const unanswered = total(report.unanswered);
  const mustRefuse = total(report.acceptedButMustRefuse);
  const notes = [
    `seed ${report.seed}; ${report.bodies} bodies + ${report.idProbes} id probes`,
    `API peak RSS ${report.apiPeakRssMiB ?? '?'} MiB`,
    report.responsive ? 'responsive after' : 'NOT responsive after',
    ...(serverErrors > 0 ? [`5xx: ${summary(report.serverErrors)}`] : []),
    ...(unanswered > 0 ? [`unanswered: ${summary(report.unanswered)}`] : []),
    ...(mustRefuse > 0 ? [`accepted but must refuse: ${summary(report.acceptedButMustRefuse)}`] : []),
    ...(report.delayedCancelled > 0 ? [`${report.delayedCancelled} delayed jobs cancelled`] : []),
    ...(report.apiExitedEarly ? ['API process exited during the run'] : []),
  ];
  return scenarioRow({
    scenario: 'api-fuzz',
    enqueued: report.enqueued,
    completed: report.completed,
    deadLettered: report.deadLettered,
    lost: report.lost,
    serverErrors,
    notes: notes.join('; '),
    ok:
      serverErrors === 0 &&
      unanswered === 0 &&
      mustRefuse === 0 &&
      report.lost === 0 &&
      report.responsive &&
      !report.apiExitedEarly,
  });
}

const scenario: Scenario = {
  name: 'api-fuzz',
  async run(options) {
    return apiFuzzRow(await runApiFuzz(options));
  },
};

export default scenario;
