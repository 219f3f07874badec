/** Waiting on a condition, never a fixed sleep: the polls every test helper shares. No vitest (benches use it). */

/**
 * Polls `check` every `intervalMs` until it returns a value (not undefined); a check that throws counts as not
 * yet. Rejects naming `what` after `timeoutMs`.
 */
export async function until<T>(
  check: () => Promise<T | undefined>,
  timeoutMs: number,
  what: () => string,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what()}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** `until` for a yes/no condition. */
export async function waitUntil(
  predicate: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  await until(
    async () => ((await predicate()) ? true : undefined),
    timeoutMs,
    () => what,
  );
}
