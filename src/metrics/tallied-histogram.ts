/**
 * A prom-client Histogram whose series come from DurationTally counts (made on the hot path, see
 * delivery-tally.ts) instead of from `observe()`.
 *
 * prom-client has no public way to set a histogram's buckets. Its Registry renders a histogram through
 * `getForPromString()` when the metric has one, and `Histogram.get()` (getMetricsAsJSON) goes through it too
 * (prom-client 15: lib/registry.js `getMetricsAsString`, lib/histogram.js `get`), so this one method replaces
 * the source of both. The values it returns have prom-client's own shape (`setValuePair` in lib/histogram.js);
 * test/metrics parses the rendered text with a real Prometheus parser, so a change there fails a test.
 */
import { Histogram, type HistogramConfiguration } from 'prom-client';

import type { DurationTally } from './delivery-tally.ts';

export interface TalliedSeries<T extends string> {
  labels: Record<T, string>;
  tally: DurationTally;
}

interface ValuePair {
  labels: Record<string, string | number>;
  sharedLabels: Record<string, string>;
  value: number;
  metricName: string;
}

export interface TalliedHistogramConfiguration<T extends string> extends HistogramConfiguration<T> {
  buckets: number[];
  /** The series to render now; read at every scrape. */
  series: () => Iterable<TalliedSeries<T>>;
}

export class TalliedHistogram<T extends string> extends Histogram<T> {
  readonly #name: string;
  readonly #help: string;
  readonly #buckets: readonly number[];
  readonly #series: () => Iterable<TalliedSeries<T>>;

  constructor(config: TalliedHistogramConfiguration<T>) {
    const { series, ...histogram } = config;
    super(histogram);
    this.#name = config.name;
    this.#help = config.help;
    this.#buckets = [...config.buckets];
    this.#series = series;
  }

  /** Called by prom-client's Registry (text format) and by Histogram.get() (JSON). */
  async getForPromString(): Promise<{
    name: string;
    help: string;
    type: 'histogram';
    values: ValuePair[];
    aggregator: 'sum';
  }> {
    const bucket = `${this.#name}_bucket`;
    const values: ValuePair[] = [];
    for (const { labels, tally } of this.#series()) {
      let cumulative = 0;
      for (let i = 0; i < this.#buckets.length; i++) {
        cumulative += tally.counts[i]!;
        values.push({
          labels: { le: this.#buckets[i]! },
          sharedLabels: labels,
          value: cumulative,
          metricName: bucket,
        });
      }
      values.push(
        { labels: { le: '+Inf' }, sharedLabels: labels, value: tally.count, metricName: bucket },
        { labels: {}, sharedLabels: labels, value: tally.sumMs / 1000, metricName: `${this.#name}_sum` },
        { labels: {}, sharedLabels: labels, value: tally.count, metricName: `${this.#name}_count` },
      );
    }
    return { name: this.#name, help: this.#help, type: 'histogram', values, aggregator: 'sum' };
  }
}
