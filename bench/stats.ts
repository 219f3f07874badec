/** Summary statistics the benches share: the median of a side's runs and a distribution-free interval. */

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * A distribution-free interval of at least 95% confidence for the median of `values`: the k-th smallest and
 * the k-th largest, with k the largest for which Binomial(n, 1/2) puts at most 2.5% below k (n = 24: the 7th
 * and 18th, 97.7%). It says how far the median of the per-round ratios could move by the luck of the rounds
 * alone; it does not cover the drift between whole runs, which on a VM can be larger. None below 6 values.
 */
export function medianInterval(values: readonly number[]): [number, number] | undefined {
  const n = values.length;
  let k = 0;
  let below = 0; // P(X < j) for X ~ Binomial(n, 1/2)
  let term = 0.5 ** n; // P(X = j)
  for (let j = 0; j < n; j++) {
    below += term;
    if (below > 0.025) break;
    k = j + 1;
    term = (term * (n - j)) / (j + 1);
  }
  if (k === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return [sorted[k - 1]!, sorted[n - k]!];
}

/** `95% interval 0.86-1.00`, or why there is none. */
export function formatInterval(values: readonly number[]): string {
  const interval = medianInterval(values);
  return interval === undefined
    ? 'no 95% interval below 6 rounds'
    : `95% interval ${interval.map((value) => value.toFixed(2)).join('-')}`;
}
