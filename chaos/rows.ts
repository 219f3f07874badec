/** Building a scenario's row of the table: its figures, the notes most rows share, and how they print. */
import type { CallStats } from './downstream.ts';
import type { Accounting } from './jobs.ts';
import type { ScenarioRow } from './scenario.ts';

export function formatMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '-';
  return ms < 10_000 ? `${(ms / 1000).toFixed(2)} s` : `${(ms / 1000).toFixed(1)} s`;
}

export function formatMiB(bytes: number): string {
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KiB`;
  return `${Math.round(bytes / 1024 / 1024)} MiB`;
}

/** A row: every figure the scenario does not give is 0 (recoverMs null). */
export function scenarioRow(
  fields: Partial<ScenarioRow> & Pick<ScenarioRow, 'scenario' | 'ok'>,
): ScenarioRow {
  return {
    enqueued: 0,
    completed: 0,
    deadLettered: 0,
    lost: 0,
    duplicateCalls: 0,
    duplicatesWithDifferingKeys: 0,
    serverErrors: 0,
    secretHits: 0,
    recoverMs: null,
    ...fields,
  };
}

/** The row of a scenario that settled its jobs and counted the downstream's calls. */
export function settledRow(
  scenario: string,
  accounting: Accounting,
  calls: CallStats,
  fields: Partial<ScenarioRow> & Pick<ScenarioRow, 'ok'>,
): ScenarioRow {
  return scenarioRow({
    scenario,
    enqueued: accounting.enqueued,
    completed: accounting.completed,
    deadLettered: accounting.deadLettered,
    lost: accounting.lost,
    duplicateCalls: calls.duplicateCalls,
    duplicatesWithDifferingKeys: calls.duplicatesWithDifferingKeys,
    ...fields,
  });
}

/** The note naming a few lost jobs, when any was lost. */
export function lostNote(accounting: Accounting): string[] {
  return accounting.lostSamples.length > 0 ? [`lost e.g. ${accounting.lostSamples.join('; ')}`] : [];
}

/** The settled figures, for the progress log. */
export function describeSettled(accounting: Accounting): string {
  return JSON.stringify({ ...accounting, outcomes: undefined });
}

/** A row for a scenario that failed to run at all (set-up threw): everything it could not check is not ok. */
export function crashedRow(scenario: string, error: unknown): ScenarioRow {
  const message = error instanceof Error ? error.message : String(error);
  return scenarioRow({
    scenario,
    notes: `scenario crashed: ${message.split('\n')[0]!.slice(0, 200)}`,
    ok: false,
  });
}
