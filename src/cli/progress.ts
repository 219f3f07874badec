/**
 * Progress of long work (replay, purge). On a TTY: one line redrawn in place (`\r`, fitted to the terminal's
 * width) with a bar, count, percentage, rate and ETA. Elsewhere (a pipe, a file, --json): one JSON line per
 * update on stdout, `{"done":…,"total":…,"rate":…,"etaMs":…}`, at most every `intervalMs`, for scripts.
 * And Ctrl-C: the first one aborts the work cleanly, a second one exits at once with 130.
 */

export interface ProgressUpdate {
  done: number;
  /** Undefined while the total is not known yet (a running count). */
  total?: number;
  /** Extra fields for the JSON line and the end of the TTY line (e.g. `failed: 2`). */
  extra?: Record<string, number | string>;
}

export interface Progress {
  update(update: ProgressUpdate): void;
  /** Draws the last state (always, whatever the interval) and ends the TTY line. */
  finish(update?: ProgressUpdate): void;
}

export interface ProgressOptions {
  /** Default process.stdout; a TTY says so with `isTTY` (and its width with `columns`). */
  stream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** Force JSON lines even on a TTY (`--json`). */
  json?: boolean;
  /** Shortest time between two draws, in ms; default 100 (TTY) / 1000 (JSON lines). */
  intervalMs?: number;
  now?: () => number;
}

const BAR_WIDTH = 30;

export function createProgress(options: ProgressOptions = {}): Progress {
  const stream = options.stream ?? process.stdout;
  const tty = stream.isTTY === true && options.json !== true;
  const now = options.now ?? (() => performance.now());
  const intervalMs = options.intervalMs ?? (tty ? 100 : 1000);
  const startedAt = now();
  let lastDraw = -Infinity;
  let last: ProgressUpdate = { done: 0 };
  let drawn = false;

  const draw = (update: ProgressUpdate): void => {
    const elapsedMs = now() - startedAt;
    const rate = elapsedMs > 0 ? (update.done * 1000) / elapsedMs : 0;
    const etaMs =
      update.total !== undefined && rate > 0
        ? Math.round(((update.total - update.done) / rate) * 1000)
        : undefined;
    if (tty) {
      stream.write(`\r${formatLine(update, rate, etaMs, stream.columns ?? 80)}\x1b[K`);
      drawn = true;
    } else {
      const line: Record<string, unknown> = { done: update.done, total: update.total ?? null };
      line.rate = Math.round(rate * 10) / 10;
      line.etaMs = etaMs ?? null;
      Object.assign(line, update.extra);
      stream.write(`${JSON.stringify(line)}\n`);
    }
    lastDraw = now();
  };

  return {
    update(update) {
      last = update;
      if (now() - lastDraw >= intervalMs) draw(update);
    },
    finish(update) {
      draw(update ?? last);
      if (tty && drawn) stream.write('\n');
    },
  };
}

/** The TTY line, cut to `columns`: `[=====>    ] 120/400 30% 57.2/s ETA 5s  failed: 1`. */
export function formatLine(
  update: ProgressUpdate,
  rate: number,
  etaMs: number | undefined,
  columns: number,
): string {
  const { done, total } = update;
  const parts: string[] = [];
  if (total !== undefined && total > 0) {
    const ratio = Math.min(done / total, 1);
    const filled = Math.round(ratio * BAR_WIDTH);
    const bar = `${'='.repeat(Math.max(filled - 1, 0))}${filled > 0 ? (ratio >= 1 ? '=' : '>') : ''}`;
    parts.push(`[${bar.padEnd(BAR_WIDTH)}]`, `${done}/${total}`, `${Math.floor(ratio * 100)}%`);
  } else {
    parts.push(`${done}${total === 0 ? '/0' : ''}`);
  }
  parts.push(`${rate.toFixed(1)}/s`);
  parts.push(`ETA ${etaMs === undefined ? '?' : formatDuration(etaMs)}`);
  for (const [key, value] of Object.entries(update.extra ?? {})) parts.push(`${key}: ${value}`);
  let line = parts.join(' ');
  // Without the bar when it does not fit, then cut: a wrapped line would not be redrawn in place.
  if (line.length > columns - 1 && parts[0]?.startsWith('[') === true) line = parts.slice(1).join(' ');
  return line.slice(0, Math.max(columns - 1, 10));
}

/** 950 → "950ms", 3_500 → "3.5s", 65_000 → "1m05s", 7_200_000 → "2h00m". */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 10_000) return `${Number((ms / 1000).toFixed(1))}s`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
}

/**
 * The first Ctrl-C (SIGINT) aborts `controller` (the work stops cleanly: what is in flight finishes) and says
 * so on stderr; a second one exits at once with 130. Returns a function that removes the handler.
 */
export function abortOnInterrupt(
  controller: AbortController,
  what = 'stopping',
  stderr: NodeJS.WritableStream = process.stderr,
): () => void {
  let count = 0;
  const onSignal = (): void => {
    count += 1;
    if (count === 1) {
      stderr.write(`\ninterrupted: ${what} after the work in flight (Ctrl-C again to exit now)\n`);
      controller.abort(new Error('interrupted'));
    } else {
      process.exit(130);
    }
  };
  process.on('SIGINT', onSignal);
  return () => {
    process.off('SIGINT', onSignal);
  };
}
