/** Types for parse-prometheus-text-format 1.1 (it ships none): the shapes its README documents. */
declare module 'parse-prometheus-text-format' {
  namespace parsePrometheusTextFormat {
    /** One sample of a family; values stay strings, as in the text (`"+Inf"`, `"1.5e3"`). */
    interface Sample {
      labels?: Record<string, string>;
      /** Counters, gauges, untyped. */
      value?: string;
      /** Histograms: cumulative count per `le` upper bound, `"+Inf"` included. */
      buckets?: Record<string, string>;
      /** Summaries. */
      quantiles?: Record<string, string>;
      /** Histograms and summaries. */
      count?: string;
      sum?: string;
    }

    interface Family {
      name: string;
      help: string;
      type: 'COUNTER' | 'GAUGE' | 'HISTOGRAM' | 'SUMMARY' | 'UNTYPED';
      metrics: Sample[];
    }
  }

  /** Parses the Prometheus text exposition format; throws on a malformed line. */
  function parsePrometheusTextFormat(text: string): parsePrometheusTextFormat.Family[];

  export = parsePrometheusTextFormat;
}
