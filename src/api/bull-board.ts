/**
 * Bull Board at `/admin/queues` (DESIGN §6, §8): every service queue and `{dead-letter}`, shown by their
 * display names, behind the `admin` scope.
 *
 * Auth. Browsers cannot send bearer tokens, so the board takes the admin token as the password of HTTP Basic
 * auth (any user name) as well as `Authorization: Bearer` for curl; without valid credentials it answers 401
 * with a Basic challenge, so the browser prompts. The guard is an onRequest hook of an encapsulated context
 * that holds Bull Board and nothing else: it covers the HTML, the static assets and the board's /api routes,
 * and costs the API's other routes nothing.
 *
 * What operators may do: read. Ferry owns retries, holds and dead letters, so every queue is `readOnlyMode`:
 * Bull Board ties all its action buttons to that one switch (`allowRetries`/`allowCompletedRetries` hide only
 * the retry buttons; clean all, delete, edit, promote, add, rate limit and pause stay), and a button that always
 * answers 403 is a bug. Pausing and resuming a service queue, the one action Ferry allows, belongs to
 * `ferry queues pause|resume` and `/v1/queues/:service/pause`. `readOnlyMode` is also enforced by Bull Board's
 * server for most routes, but not all of them, so Ferry's own guard stays: `handlerHooks.before` refuses every
 * request that is not a GET with 403 (deny by default, so a route a later Bull Board adds is refused too):
 * retrying a failed job would run a job whose dead letter already exists (a second delivery path beside
 * replay), promoting skips Ferry's backoff and holds, releasing or changing a rate limit breaks a
 * whole-service hold (DESIGN §8), clean / empty / obliterate / remove lose jobs without a dead letter, add /
 * edit bypass the enqueue validation, and the dead-letter queue stays paused (nothing consumes it).
 */
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import type { BeforeHookResult, ControllerHandlerReturnType, HookContext } from '@bull-board/api/typings/app';
import { FastifyAdapter } from '@bull-board/fastify';
import type { Queue } from 'bullmq';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

import { formatFailedReason, parseFailedReason } from '../core/failed-reason.ts';
import { completedAttempt, type JobResult, usedAttempts } from '../core/job.ts';
import { displayQueueName, serviceFromQueueName } from '../core/queue-layout.ts';
import { storedDeliveryStateSchema, withDecodedHistory } from '../core/stored-history.ts';
import { decodeStoredResult } from '../core/stored-result.ts';
import { tokenFromHeader, type TokenSet } from './auth.ts';
import { ForbiddenError, toErrorResponse, UnauthorizedError, UnavailableError } from './errors.ts';

export const DEFAULT_BULL_BOARD_PATH = '/admin/queues';

/** The answer of a Bull Board authorizer: `ok` lets the request through, the others are 401 and 403. */
export type AdminAccess = 'ok' | 'unauthenticated' | 'forbidden';

export interface BullBoardOptions {
  /** BullMQ queues to show: every service queue `{svc}` and `{dead-letter}`. The caller closes them. */
  queues: readonly Queue[];
  /** Where the board is mounted. Default `/admin/queues`. */
  basePath?: string;
  /**
   * Decides every request to the board (page, assets, API). `ok` only for an `admin` token that is not
   * limited to services or tenants: the board shows every tenant's jobs. `createAdminAuthorizer` is the
   * one to use; the parameter exists so the board does not own the token list.
   */
  authorize: (request: FastifyRequest) => AdminAccess | Promise<AdminAccess>;
  /** False while Redis is down: the board's API then answers 503 + Retry-After, like the rest of the API. */
  isRedisReady?: () => boolean;
}

/** The Basic challenge's realm: a browser shows it in its prompt. */
const REALM = 'Ferry admin';

/**
 * The authorizer for the board: the token from `Authorization` (Bearer, or Basic with the token as password),
 * looked up in constant time by the TokenSet; `ok` for an unrestricted `admin` token.
 */
export function createAdminAuthorizer(tokens: TokenSet): (request: FastifyRequest) => AdminAccess {
  return (request) => {
    const token = tokenFromHeader(request.headers.authorization);
    const principal = token === undefined ? undefined : tokens.authenticate(token);
    if (principal === undefined) return 'unauthenticated';
    const isUnrestrictedAdmin =
      principal.scopes.has('admin') && principal.services === undefined && principal.tenants === undefined;
    return isUnrestrictedAdmin ? 'ok' : 'forbidden';
  };
}

/** Mounts Bull Board on `app` under `basePath`, guarded by `authorize`. Call before `app.ready()`. */
export function registerBullBoard(app: FastifyInstance, options: BullBoardOptions): void {
  const basePath = (options.basePath ?? DEFAULT_BULL_BOARD_PATH).replace(/\/+$/, '');
  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(basePath);
  createBullBoard({
    queues: options.queues.map(toAdapter),
    serverAdapter,
    options: {
      uiConfig: { boardTitle: 'Ferry', hideDocsLink: true },
      handlerHooks: { before: refuseUnsafeActions, after: shownJobs },
    },
  });

  const staticPrefix = `${basePath}/static/`;
  const apiPrefix = `${basePath}/api/`;
  app.register(async (scope) => {
    scope.addHook('onRequest', async (request, reply) => {
      const access = await options.authorize(request);
      switch (access) {
        case 'ok':
          // Job data is not for any cache; the fingerprinted assets may be cached.
          if (!request.url.startsWith(staticPrefix)) void reply.header('cache-control', 'no-store');
          // The board's API would answer a 500 with ioredis's message: say what the rest of the API says.
          if (options.isRedisReady?.() === false && request.url.startsWith(apiPrefix)) {
            return refuse(reply, new UnavailableError('Redis is unavailable; retry later'));
          }
          return;
        case 'unauthenticated':
          void reply.header('www-authenticate', `Basic realm="${REALM}", charset="UTF-8"`);
          return refuse(
            reply,
            new UnauthorizedError(
              'Bull Board needs an admin token: as the password of HTTP Basic auth (any user name) or as a Bearer token',
            ),
          );
        case 'forbidden':
          return refuse(
            reply,
            new ForbiddenError(
              'Bull Board needs a token with the admin scope, not limited to services or tenants',
            ),
          );
        default:
          return assertNever(access);
      }
    });
    // Operators' actions (pause, resume, and refused attempts) leave a trace.
    scope.addHook('onResponse', async (request, reply) => {
      if (request.method !== 'GET' && request.method !== 'HEAD') {
        request.log.info(
          { method: request.method, url: request.url, statusCode: reply.statusCode },
          'Bull Board action',
        );
      }
    });
    // Bull Board's page (ui/dist/index.ejs) links a stylesheet on Google Fonts, and no option removes it: an
    // operator's browser would tell a third party each time it opens the board. The page is rewritten
    // without any stylesheet from another host; the board's CSS falls back to system fonts. Its scripts,
    // styles and icons are all served from `static/` by Ferry.
    scope.addHook('onSend', async (_request, reply, payload) => {
      const type = reply.getHeader('content-type');
      if (typeof payload !== 'string' || typeof type !== 'string' || !type.startsWith('text/html')) {
        return payload;
      }
      return withoutExternalStylesheets(payload);
    });
    await scope.register(serverAdapter.registerPlugin(), { prefix: basePath });
  });
}

/** `<link>` tags that load something from another host (an absolute or protocol-relative URL). */
const EXTERNAL_LINK = /<link\b[^>]*\bhref\s*=\s*["']?(?:[a-z][a-z0-9+.-]*:)?\/\/[^>]*>\s*/gi;

/** The board's HTML without links to other hosts. */
function withoutExternalStylesheets(html: string): string {
  return html.replace(EXTERNAL_LINK, '');
}

function toAdapter(queue: Queue): BullMQAdapter {
  const isServiceQueue = serviceFromQueueName(queue.name) !== undefined;
  const adapter = new BullMQAdapter(queue, {
    // The cards show `displayName`, but the side menu shows the queue name, stripping hash-tag braces only when
    // the queue has a delimiter (ui's menu tree builder). BullMQ forbids ':' in queue names, so nothing splits.
    displayName: displayQueueName(queue.name),
    delimiter: ':',
    // Hides every action button (see the header); the refusal itself is refuseUnsafeActions'.
    readOnlyMode: true,
    ...(isServiceQueue
      ? {}
      : {
          description:
            'Paused on purpose: nothing consumes it. Replay or purge dead letters with ferry dlq or /v1/dead-letters.',
        }),
  });
  // What the board shows of a job's data; Redis keeps the data as it is (the worker and the tools read it).
  adapter.setFormatter('data', isServiceQueue ? shownJobData : shownDeadLetterData);
  return adapter;
}

/** The data each shown data object was made from: the after hook takes a compact result's metadata from it. */
const shownFrom = new WeakMap<object, unknown>();

/** The key under which the board shows Ferry's bookkeeping of a service queue's job (docs/operations.md). */
export const SHOWN_DELIVERY_KEY = 'ferryDelivery';

/**
 * A service queue's job data as the board shows it: the producer's fields (input, tenant, idempotencyKey,
 * metadata, and anything else a raw producer wrote) as they are, and Ferry's own fields under one key,
 * `ferryDelivery`: `attemptsUsed` (as the job API counts them), `history` (the attempt records, a completed
 * job's last run included: see withCompletedRun),
 * `heldMs`, `stalls`, `finalError`, `internalErrors`, `routedTo`, `enqueueId`, `origin` and `sealed: true` in
 * place of a sealed envelope's text. Job data is anyone's to write, so nothing here trusts it: data that is not
 * an object is shown as is, a `ferry` field that is not Ferry's bookkeeping stays where it is, and any surprise
 * shows the data unchanged rather than failing the board's request.
 */
export function shownJobData(data: unknown): unknown {
  try {
    if (!isRecord(data) || Object.hasOwn(data, SHOWN_DELIVERY_KEY)) return data;
    const shown = withDeliverySlot(shownServiceJobData(data));
    shownFrom.set(shown, data);
    return shown;
  } catch {
    return data;
  }
}

/**
 * The shown data objects whose `ferryDelivery` is Ferry's to fill (not a field a raw producer wrote): the
 * after hook adds a completed job's last run there, which the data formatter cannot see (it gets the data
 * only, not the result or `finishedOn`).
 */
const deliverySlots = new WeakSet<Record<string, unknown>>();

function withDeliverySlot(shown: Record<string, unknown>): Record<string, unknown> {
  deliverySlots.add(shown);
  return shown;
}

function shownServiceJobData(data: Record<string, unknown>): Record<string, unknown> {
  const { ferry, enqueueId, origin, sealed, ...producer } = data;
  const state = ferry === undefined ? undefined : storedDeliveryStateSchema.safeParse(ferry);
  const delivery: Record<string, unknown> = {};
  if (state?.success === true) {
    const { attempts, heldMs, stallsSeen, final, internalErrors, routedTo } = state.data;
    delivery.attemptsUsed = usedAttempts(attempts);
    delivery.history = attempts;
    delivery.heldMs = heldMs;
    delivery.stalls = stallsSeen;
    if (final !== undefined) delivery.finalError = final;
    if (internalErrors !== undefined) delivery.internalErrors = internalErrors;
    if (routedTo !== undefined) delivery.routedTo = routedTo;
  } else if (ferry !== undefined) {
    producer.ferry = ferry; // not Ferry's bookkeeping: a raw producer's field, shown as written
  }
  if (enqueueId !== undefined) delivery.enqueueId = enqueueId;
  if (origin !== undefined) delivery.origin = origin;
  if (sealed !== undefined) delivery.sealed = typeof sealed === 'string' ? true : sealed;
  if (Object.keys(delivery).length === 0) return data;
  return { ...producer, [SHOWN_DELIVERY_KEY]: delivery };
}

/**
 * A completed job's history ends with the run that completed it, as in the job API (issue 18): built from its
 * result and `finishedOn` (core/job.ts completedAttempt), never stored.
 */
function withCompletedRun(job: Record<string, unknown>): void {
  const data = job.data;
  if (!isRecord(data) || !deliverySlots.has(data)) return;
  const existing = data[SHOWN_DELIVERY_KEY];
  const delivery: Record<string, unknown> = isRecord(existing) ? existing : {};
  const history = Array.isArray(delivery.history) ? (delivery.history as unknown[]) : [];
  const failed = typeof delivery.attemptsUsed === 'number' ? delivery.attemptsUsed : 0;
  const finishedOn = typeof job.finishedOn === 'number' ? job.finishedOn : undefined;
  const run = completedAttempt(job.returnValue as JobResult | undefined, finishedOn, failed);
  if (run === undefined) return;
  delivery.history = [...history, run];
  delivery.attemptsUsed = failed + 1;
  data[SHOWN_DELIVERY_KEY] = delivery;
}

/**
 * A service queue job's compact result (core/stored-result.ts) as the result's fields (DESIGN §4), so the
 * Result tab reads as it did before issue 20, with the job data's metadata as the job API adds it (never a
 * sealed job's). Here, not in a `returnValue` formatter, which sees the value without the job's data. Anything
 * else (the 0.1.0 object form, a raw worker's value) is shown as it is.
 */
function withDecodedResult(job: Record<string, unknown>): void {
  if (!Array.isArray(job.returnValue)) return;
  const data = isRecord(job.data) ? (shownFrom.get(job.data) ?? job.data) : undefined;
  const result = decodeStoredResult(job.returnValue, data);
  if (result !== undefined) job.returnValue = result;
}

/**
 * A dead letter's data as the board shows it: as stored, but with its history decoded into the attempt
 * records the API shows (core/stored-history.ts; a value that is not a history is shown as stored), and
 * `sealed: true` in place of an envelope's text.
 */
export function shownDeadLetterData(data: unknown): unknown {
  if (!isRecord(data)) return data;
  const shown = withDecodedHistory(data);
  if (typeof shown.sealed !== 'string') return shown;
  return { ...shown, sealed: true };
}

/** Why an action is refused, for the operator who tried it. Anything unlisted gets the general reason. */
const REFUSALS: readonly (readonly [RegExp, string])[] = [
  [
    /\/retry(\/|$)/,
    'Ferry owns retries: a failed job already has its dead letter; replay it with `ferry dlq replay`',
  ],
  [/\/promote$/, "promoting a delayed job skips Ferry's backoff and holds"],
  [
    /\/rate-limit|\/concurrency$/,
    'rate limits come from the services file; holds from breakers and Retry-After',
  ],
  [
    /\/(clean|empty|obliterate)(\/|$)/,
    'removing jobs here loses them; purge dead letters with `ferry dlq purge`',
  ],
  [
    /\/(pause|resume)$/,
    'pause and resume a service queue with `ferry queues pause|resume`; the dead-letter queue stays paused: nothing consumes it',
  ],
];
const GENERAL_REFUSAL = 'Bull Board is read-only in Ferry';

function refuseUnsafeActions({ method, route }: HookContext): BeforeHookResult {
  if (method === 'get') return { allow: true };
  const reason = REFUSALS.find(([pattern]) => pattern.test(route))?.[1] ?? GENERAL_REFUSAL;
  return { allow: false, status: 403, errorKey: 'ERRORS.FORBIDDEN', message: reason };
}

/**
 * A failed job's Error tab shows the job's `stacktrace` when it has one: BullMQ's wrapper
 * (`UnrecoverableError: ServerError: …`) and frames with the server's file paths, which are for logs. Bull
 * Board 9.10.1 has formatters for data, returnValue, name and progress only, so this `after` hook empties the
 * stack of every job the board's API returns (a job's route, and the jobs of the queue listing); the tab then
 * shows `failedReason`, rewritten as Ferry's `<type>: <message>` (a stall BullMQ gave up on reads as
 * Ferry's TimeoutError, as in the job API).
 */
function shownJobs(_context: HookContext, result: ControllerHandlerReturnType): ControllerHandlerReturnType {
  const body: unknown = result.body;
  if (!isRecord(body)) return result;
  if (isRecord(body.job)) shownJob(body.job);
  if (Array.isArray(body.queues)) {
    for (const queue of body.queues as unknown[]) {
      if (isRecord(queue) && Array.isArray(queue.jobs)) {
        for (const job of queue.jobs as unknown[]) if (isRecord(job)) shownJob(job);
      }
    }
  }
  return result;
}

function shownJob(job: Record<string, unknown>): void {
  withDecodedResult(job);
  withCompletedRun(job);
  if (job.stacktrace !== undefined) job.stacktrace = [];
  if (typeof job.failedReason === 'string' && job.failedReason !== '') {
    const stalls = typeof job.stalledCounter === 'number' ? job.stalledCounter : 0;
    job.failedReason = formatFailedReason(parseFailedReason(job.failedReason, stalls));
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function refuse(
  reply: FastifyReply,
  error: UnauthorizedError | ForbiddenError | UnavailableError,
): FastifyReply {
  const { statusCode, body, headers } = toErrorResponse(error);
  if (headers !== undefined) void reply.headers(headers);
  return reply.code(statusCode).send(body);
}

function assertNever(value: never): never {
  throw new Error(`unexpected access decision: ${String(value)}`);
}
