/**
 * Debian's `chromium`, driven by playwright-core, for the tests that need a real browser (Bull Board). No
 * browser is downloaded: the system binary is used, and a missing one fails the test with how to install it,
 * never a silent skip.
 */
import { access, constants } from 'node:fs/promises';

import { type Browser, type BrowserContext, type BrowserContextOptions, chromium } from 'playwright-core';

import { registerCleanup } from './cleanup.ts';

export const CHROMIUM_PATH = '/usr/bin/chromium';

/**
 * `--no-sandbox`: CI and containers run as root, where Chromium's sandbox refuses to start. The rest keep a
 * test run quiet and offline: no GPU, no QUIC, no first-run UI, no background fetches, updates or sync.
 */
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Launches headless Chromium with a fresh temporary profile (playwright creates one per launch and deletes it
 * on close); closed when the test (or file) finishes.
 */
export async function launchChromium(): Promise<Browser> {
  try {
    await access(CHROMIUM_PATH, constants.X_OK);
  } catch {
    throw new Error(
      `${CHROMIUM_PATH} not found: this test drives Debian's chromium. Install it with ` +
        '`sudo apt-get install -y --no-install-recommends chromium`, or run .ci/run, which installs it.',
    );
  }
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
  registerCleanup(() => browser.close());
  return browser;
}

/**
 * A browser context that reaches only 127.0.0.1: anything else (Bull Board's page links Google Fonts) is
 * aborted, so a test neither depends on the internet nor waits for it. Closed with its browser.
 */
export async function newLocalContext(
  browser: Browser,
  options: BrowserContextOptions = {},
): Promise<BrowserContext> {
  const context = await browser.newContext(options);
  await context.route(
    (url) => url.hostname !== '127.0.0.1',
    (route) => route.abort('blockedbyclient'),
  );
  return context;
}
