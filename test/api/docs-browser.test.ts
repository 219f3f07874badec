/**
 * /docs (Swagger UI) in a real browser (Debian chromium via playwright-core). A browser only asks for
 * credentials when it understands the challenge: one `WWW-Authenticate: Bearer …, Basic …` header was ignored
 * by Chromium, which showed the raw JSON 401 and never took the credentials. One challenge per header, Basic
 * first, and Chromium answers it: with credentials Swagger UI renders, without them the auth path fails the
 * navigation (headless Chromium has nobody to ask).
 */
import { request as httpRequest } from 'node:http';

import { describe, expect, it } from 'vitest';

import { parseServicesConfig } from '../../src/core/services/load.ts';
import { startTestApi, TOKENS } from '../helpers/api.ts';
import { launchChromium, newLocalContext } from '../helpers/chromium.ts';
import { oneService } from '../helpers/ferry.ts';
import { startRedis, uniquePrefix } from '../helpers/redis.ts';

const redis = await startRedis();

async function startApi(): Promise<string> {
  const config = parseServicesConfig(oneService('http://127.0.0.1:9'), { env: {} });
  const api = await startTestApi({ redisUrl: redis.url, prefix: uniquePrefix(), config });
  return api.url;
}

/** The raw header lines of a response (fetch's Headers joins repeated ones into one value). */
function rawHeaders(url: string): Promise<{ status: number; headers: [string, string][] }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(url, (response) => {
      const pairs: [string, string][] = [];
      for (let i = 0; i < response.rawHeaders.length; i += 2)
        pairs.push([response.rawHeaders[i]!.toLowerCase(), response.rawHeaders[i + 1]!]);
      response.resume();
      response.once('end', () => resolve({ status: response.statusCode ?? 0, headers: pairs }));
    });
    request.once('error', reject);
    request.end();
  });
}

describe('/docs in Chromium', () => {
  it('answers without credentials with two challenges, Basic first, each in its own header', async () => {
    const url = await startApi();
    for (const path of ['/docs', '/docs/json', '/docs/static/index.html']) {
      const { status, headers } = await rawHeaders(`${url}${path}`);
      expect(status, path).toBe(401);
      expect(
        headers.filter(([name]) => name === 'www-authenticate').map(([, value]) => value),
        path,
      ).toEqual(['Basic realm="ferry", charset="UTF-8"', 'Bearer realm="ferry"']);
    }
    // Elsewhere a Basic password is never taken, so never asked for.
    const { headers } = await rawHeaders(`${url}/v1/services`);
    expect(headers.filter(([name]) => name === 'www-authenticate')).toEqual([
      ['www-authenticate', 'Bearer realm="ferry"'],
    ]);
  });

  it('without credentials, takes the HTTP-auth path: the navigation fails, no JSON shown', async () => {
    // First, so a machine without chromium fails at once, saying how to install it.
    const browser = await launchChromium();
    const url = await startApi();

    // Without credentials Chromium treats the 401 as an auth challenge (a desktop browser would prompt); with
    // a challenge it cannot parse it would render the JSON body instead.
    const anonymous = await newLocalContext(browser);
    const page = await anonymous.newPage();
    const challenge = page.waitForResponse(`${url}/docs`);
    await expect(page.goto(`${url}/docs`, { waitUntil: 'domcontentloaded' })).rejects.toThrow(
      /ERR_INVALID_AUTH_CREDENTIALS/,
    );
    const challenged = await challenge;
    expect(challenged.status()).toBe(401);
    expect(
      (await challenged.headersArray())
        .filter(({ name }) => name.toLowerCase() === 'www-authenticate')
        .map(({ value }) => value),
    ).toEqual(['Basic realm="ferry", charset="UTF-8"', 'Bearer realm="ferry"']);
  });

  it('with credentials, answers the challenge: Swagger UI renders the document', async () => {
    const browser = await launchChromium();
    const url = await startApi();
    // Any user name, the token as password: the browser sends them only once challenged with Basic.
    const reader = await newLocalContext(browser, {
      httpCredentials: { username: 'ops', password: TOKENS.reader },
    });
    const docs = await reader.newPage();
    const opened = await docs.goto(`${url}/docs`, { waitUntil: 'domcontentloaded' });
    expect(opened?.status()).toBe(200);
    await docs.locator('.swagger-ui .info .title').getByText('Ferry API').waitFor({ timeout: 20_000 });
    await docs.getByText('/v1/jobs', { exact: true }).first().waitFor({ timeout: 20_000 });
    expect(await docs.content()).not.toContain('UnauthorizedError');
  });
});
