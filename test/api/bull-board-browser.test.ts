/**
 * Bull Board in a real browser (Debian chromium via playwright-core): an admin opens /admin/queues with the
 * token as Basic password and sees every service queue and dead-letter; anyone else gets the 401 (or 403).
 * Saves test/artifacts/bull-board.png and bull-board-dead-letter.png for a human to look at, and (committed,
 * issue #18) bull-board-service-queue.png (no refused button), bull-board-failed-job.png (an error without a
 * stack) and bull-board-local-only.png (a page that loaded nothing from another host). A run writes the committed
 * three under test/artifacts/run/ (ignored), so `npm test` leaves the tree clean; FERRY_UPDATE_SCREENSHOTS=1
 * writes them over the committed copies.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { DEFAULT_BULL_BOARD_PATH } from '../../src/api/bull-board.ts';
import { DEAD_LETTER_QUEUE } from '../../src/core/queue-layout.ts';
import { startTestApi, TOKENS } from '../helpers/api.ts';
import { launchChromium, newLocalContext } from '../helpers/chromium.ts';
import { startDownstream } from '../helpers/downstream.ts';
import { createTestFerry } from '../helpers/ferry.ts';
import { startRedis } from '../helpers/redis.ts';

const redis = await startRedis();
const ARTIFACTS = join(import.meta.dirname, '..', 'artifacts');
/** Where the committed screenshots go: over the committed copies only when asked. */
const COMMITTED = process.env.FERRY_UPDATE_SCREENSHOTS === '1' ? ARTIFACTS : join(ARTIFACTS, 'run');
const SERVICES = ['crm', 'billing'] as const;

/**
 * Ferry with real jobs (two completed, one dead-lettered after a 500) and the API with the board mounted as
 * cli/ mounts it; returns the board's URL. Everything closes when the test finishes.
 */
async function startBoardWithJobs(): Promise<{ boardUrl: string; failedId: string }> {
  const downstream = await startDownstream((request) =>
    request.url.startsWith('/fail')
      ? { status: 500, body: { error: 'down' } }
      : { status: 200, body: { ok: true } },
  );
  const service = {
    baseUrl: downstream.url,
    timeoutMs: 2_000,
    retry: { attempts: 1, backoff: { delayMs: 20, maxDelayMs: 50 } },
    operations: {
      createContact: { method: 'POST', path: '/contacts', body: '{{ input }}' },
      fail: { method: 'POST', path: '/fail', body: '{{ input }}' },
    },
  };
  const ferry = await createTestFerry(redis, {
    services: { services: Object.fromEntries(SERVICES.map((name) => [name, service])) },
  });
  const requests = [
    { service: 'crm', operation: 'createContact', input: { email: 'a@b.c' } },
    { service: 'billing', operation: 'createContact', input: { email: 'd@e.f' } },
    { service: 'crm', operation: 'fail', input: { email: 'x@y.z' } },
  ];
  const jobs = await ferry.producer.enqueueMany(requests);
  const views = await Promise.all(
    jobs.map((job, i) => ferry.producer.waitFor(requests[i]!.service, job.id, { timeoutMs: 10_000 })),
  );
  expect(views.map((view) => view.state)).toEqual(['completed', 'completed', 'dead_lettered']);

  // The API as `ferry api` builds it: Bull Board is mounted with the admin authorizer.
  const api = await startTestApi({ redisUrl: redis.url, prefix: ferry.prefix, config: ferry.config });
  return { boardUrl: `${api.url}${DEFAULT_BULL_BOARD_PATH}`, failedId: jobs[2]!.id };
}

describe('Bull Board in Chromium', () => {
  it('shows an admin the service queues and dead-letter', { timeout: 60_000 }, async () => {
    // First, so a machine without chromium fails at once, saying how to install it.
    const browser = await launchChromium();
    const { boardUrl } = await startBoardWithJobs();

    const admin = await newLocalContext(browser, {
      httpCredentials: { username: 'admin', password: TOKENS.admin },
      viewport: { width: 1280, height: 800 },
    });
    const page = await admin.newPage();
    const opened = await page.goto(boardUrl, { waitUntil: 'domcontentloaded' });
    expect(opened?.status()).toBe(200);
    // The page renders from the board's API, which the browser calls with the same Basic credentials: each
    // queue appears twice, in the side menu and as an overview card (with its job count).
    for (const name of [...SERVICES, 'dead-letter']) {
      await expect.poll(() => page.getByText(name, { exact: true }).count(), { timeout: 20_000 }).toBe(2);
    }
    await page.getByText('2 Jobs').waitFor({ state: 'visible', timeout: 20_000 });
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'bull-board.png'), fullPage: true });
    // Display names everywhere (cards and side menu), never the hash-tagged queue names.
    for (const queueName of ['{crm}', '{billing}', DEAD_LETTER_QUEUE]) {
      expect(await page.getByText(queueName).count(), queueName).toBe(0);
    }

    // The dead-letter queue's page lists the dead letter, named <service>.<operation>.
    await page.goto(`${boardUrl}/queue/${encodeURIComponent(DEAD_LETTER_QUEUE)}`, {
      waitUntil: 'domcontentloaded',
    });
    await page.getByText('crm.fail').first().waitFor({ state: 'visible', timeout: 20_000 });
    await page.screenshot({ path: join(ARTIFACTS, 'bull-board-dead-letter.png'), fullPage: true });
  });

  it('shows a service queue without the buttons Ferry refuses', { timeout: 60_000 }, async () => {
    const browser = await launchChromium();
    const { boardUrl, failedId } = await startBoardWithJobs();
    const admin = await newLocalContext(browser, {
      httpCredentials: { username: 'admin', password: TOKENS.admin },
      viewport: { width: 1280, height: 800 },
    });
    const page = await admin.newPage();
    /** The accessible name of every button on the page (text, or aria-label / title for icon buttons). */
    const buttonNames = (): Promise<string[]> =>
      page
        .locator('button, [role="button"], [role="menuitem"]')
        .evaluateAll((nodes) =>
          nodes.map((node) =>
            [node.getAttribute('aria-label'), node.getAttribute('title'), node.textContent]
              .filter((text) => text !== null && text.trim() !== '')
              .join(' | '),
          ),
        );
    // The actions Ferry refuses (Bull Board's en-US labels), on the queue's page and on a job's.
    const refused =
      /clean|retry|promote|pause|resume|add job|empty|obliterate|duplicate|update data|reschedule|priority|concurrency|rate limit|delete|remove|edit/i;
    await mkdir(COMMITTED, { recursive: true });

    const crm = encodeURIComponent('{crm}');
    await page.goto(`${boardUrl}/queue/${crm}?status=failed`, { waitUntil: 'load' });
    await page.getByText('fail', { exact: true }).first().waitFor({ state: 'visible', timeout: 20_000 });
    await page.screenshot({ path: join(COMMITTED, 'bull-board-service-queue.png') });
    const onQueue = await buttonNames();
    expect(onQueue.length).toBeGreaterThan(0);
    expect(onQueue.filter((name) => refused.test(name))).toEqual([]);

    await page.goto(`${boardUrl}/queue/${crm}/${failedId}`, { waitUntil: 'load' });
    await page.getByText('fail', { exact: true }).first().waitFor({ state: 'visible', timeout: 20_000 });
    const onJob = await buttonNames();
    expect(onJob.length).toBeGreaterThan(0);
    expect(onJob.filter((name) => refused.test(name))).toEqual([]);
  });

  it("shows a failed job's error without BullMQ's wrapper or a stack", { timeout: 60_000 }, async () => {
    const browser = await launchChromium();
    const { boardUrl, failedId } = await startBoardWithJobs();
    const admin = await newLocalContext(browser, {
      httpCredentials: { username: 'admin', password: TOKENS.admin },
      viewport: { width: 1280, height: 800 },
    });
    const page = await admin.newPage();
    const crm = encodeURIComponent('{crm}');
    for (const url of [`${boardUrl}/queue/${crm}?status=failed`, `${boardUrl}/queue/${crm}/${failedId}`]) {
      await page.goto(url, { waitUntil: 'load' });
      // A failed job opens on its Error tab.
      const error = page.getByText(/^ServerError: downstream answered 500/);
      await error.first().waitFor({ state: 'visible', timeout: 20_000 });
      const text = await page.locator('body').innerText();
      expect(text, url).not.toContain('UnrecoverableError');
      // No stack frame, no server path.
      expect(text, url).not.toMatch(/\bat \S+ \(|\.ts:\d+|node_modules|node:internal/);
    }
    await mkdir(COMMITTED, { recursive: true });
    await page.screenshot({ path: join(COMMITTED, 'bull-board-failed-job.png') });
  });

  it('loads nothing from a host other than Ferry', { timeout: 60_000 }, async () => {
    const browser = await launchChromium();
    const { boardUrl } = await startBoardWithJobs();
    const admin = await newLocalContext(browser, {
      httpCredentials: { username: 'admin', password: TOKENS.admin },
      viewport: { width: 1280, height: 800 },
    });
    // Every request of the context, the aborted ones included (newLocalContext aborts other hosts).
    const requested: string[] = [];
    admin.on('request', (request) => requested.push(request.url()));
    const page = await admin.newPage();
    await page.goto(boardUrl, { waitUntil: 'load' });
    await page.getByText('2 Jobs').waitFor({ state: 'visible', timeout: 20_000 });
    await page.goto(`${boardUrl}/queue/${encodeURIComponent('{crm}')}?status=failed`, { waitUntil: 'load' });
    await page.getByText('fail', { exact: true }).first().waitFor({ state: 'visible', timeout: 20_000 });
    await mkdir(COMMITTED, { recursive: true });
    await page.screenshot({ path: join(COMMITTED, 'bull-board-local-only.png') });

    const origin = new URL(boardUrl).origin;
    expect(requested.length).toBeGreaterThan(3);
    expect(requested.filter((url) => !url.startsWith(`${origin}/`))).toEqual([]);
  });

  it('shows anyone else the refusal, never the board', { timeout: 60_000 }, async () => {
    const browser = await launchChromium();
    const { boardUrl } = await startBoardWithJobs();

    // No credentials: the browser gets the 401 with a Basic challenge. A desktop browser would prompt; headless
    // Chromium has nobody to ask, so the navigation fails.
    const anonymous = await newLocalContext(browser);
    const page = await anonymous.newPage();
    const challenge = page.waitForResponse(boardUrl);
    await expect(page.goto(boardUrl, { waitUntil: 'domcontentloaded' })).rejects.toThrow(
      /ERR_INVALID_AUTH_CREDENTIALS/,
    );
    const challenged = await challenge;
    expect(challenged.status()).toBe(401);
    expect(challenged.headers()['www-authenticate']).toBe('Basic realm="Ferry admin", charset="UTF-8"');

    // A wrong token (challenged again: Chromium then shows the 401), or a token without admin (403).
    const refusals: readonly [string, number, string][] = [
      [TOKENS.wrong, 401, 'UnauthorizedError'],
      [TOKENS.reader, 403, 'ForbiddenError'],
    ];
    for (const [password, status, type] of refusals) {
      const context = await newLocalContext(browser, { httpCredentials: { username: 'admin', password } });
      const refused = await context.newPage();
      const response = await refused.goto(boardUrl, { waitUntil: 'domcontentloaded' });
      expect(response?.status()).toBe(status);
      expect(await refused.content()).toContain(type);
      expect(await refused.getByText('dead-letter', { exact: true }).count()).toBe(0);
    }
  });
});
