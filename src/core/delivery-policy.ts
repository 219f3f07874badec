/**
 * What happens to a job after a run: the delivery decision, as pure functions (issue 16). Nothing here touches
 * Redis, a clock or a random source of its own: the worker and `ferry retry-plan` import the same functions.
 */
import type { FailureRule } from './services/types.ts';

/** What a rule's `when` is matched against: the final error of a dead-lettered job. */
export interface FailureFacts {
  readonly type: string;
  readonly status?: number | undefined;
}

/**
 * The index of the first rule whose `when` matches, or undefined. A rule without `when` matches anything; a
 * `when` with both lists needs both to match; a `status` list never matches an error without a status.
 */
export function matchFailureRule(rules: readonly FailureRule[], error: FailureFacts): number | undefined {
  for (let index = 0; index < rules.length; index++) {
    const when = rules[index]?.when;
    if (when === undefined) return index;
    if (when.errorTypes !== undefined && !when.errorTypes.includes(error.type)) continue;
    if (when.statuses !== undefined && (error.status === undefined || !when.statuses.includes(error.status)))
      continue;
    return index;
  }
  return undefined;
}
