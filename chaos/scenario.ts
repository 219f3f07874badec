/**
 * The contract between `npm run chaos` (chaos/run.ts) and each scenario in chaos/scenarios/. A scenario module
 * default-exports one `Scenario` (or an array of them); the runner finds them by reading the folder, so adding a
 * scenario touches no list.
 */

/** One line of the table the runner prints and docs/reliability.md records. */
export interface ScenarioRow {
  scenario: string;
  /** Jobs accepted (2xx from the API, or added by the producer). */
  enqueued: number;
  /** Jobs that ended completed. */
  completed: number;
  /** Jobs that ended with a dead letter. */
  deadLettered: number;
  /** Accepted jobs that ended neither completed nor dead-lettered once the scenario settled. */
  lost: number;
  /** Downstream calls beyond the first for one job (at-least-once repeats). */
  duplicateCalls: number;
  /** Jobs whose repeated calls carried more than one distinct Idempotency-Key (must be 0). */
  duplicatesWithDifferingKeys: number;
  /** 5xx answers Ferry gave (to fuzzed or hostile input, or while Redis was up). */
  serverErrors: number;
  /** Planted secret values found anywhere searched, in any encoding. */
  secretHits: number;
  /** From the fault's end to the first job completed after it; null when the scenario has no fault. */
  recoverMs: number | null;
  /** Anything else the scenario checked and must report (exit times, codes), one short line. */
  notes?: string;
  /** Whether every promise the scenario checks held; the runner exits 1 when any row is false. */
  ok: boolean;
}

export interface ScenarioOptions {
  /** The short version that `npm test` runs: fewer jobs, shorter faults, same checks. */
  smoke: boolean;
  /** Seed for every random choice; the runner logs it so a failing run can be repeated. */
  seed: number;
  /** Progress lines for a human; never the table. */
  log: (line: string) => void;
}

export interface Scenario {
  /** Unique, kebab-case: `worker-kill-loop`, `api-fuzz`. */
  name: string;
  run(options: ScenarioOptions): Promise<ScenarioRow>;
}
