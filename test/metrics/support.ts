/**
 * Reading /metrics output the way Prometheus would: through a real text-format parser
 * (parse-prometheus-text-format), then looking samples up by exact name and labels.
 *
 * That parser folds every series of a labelled histogram into one label-less sample (its flattenMetrics; open
 * issue https://github.com/yunyu/parse-prometheus-text-format/issues/13, unmerged fix in PR #8). So
 * histograms are also read the way Prometheus stores classic histograms, as plain `_bucket{le}`, `_sum` and
 * `_count` series: the same text with the histogram families' HELP and TYPE lines left out, parsed again.
 */
import parsePrometheusTextFormat from 'parse-prometheus-text-format';

export type Family = parsePrometheusTextFormat.Family;
export type Sample = parsePrometheusTextFormat.Sample;

type Labels = Record<string, string>;

export class Scrape {
  readonly text: string;
  /** Every family, as typed in the text. */
  readonly families: ReadonlyMap<string, Family>;
  /** Histogram families' samples as separate `_bucket`, `_sum` and `_count` series. */
  readonly #classic: ReadonlyMap<string, Sample[]>;

  constructor(text: string) {
    this.text = text;
    const families = parsePrometheusTextFormat(text);
    this.families = new Map(families.map((family) => [family.name, family]));
    const histograms = new Set(families.filter((f) => f.type === 'HISTOGRAM').map((f) => f.name));
    const untyped = text
      .split('\n')
      .filter((line) => {
        const meta = /^# (?:HELP|TYPE) (\S+)/.exec(line);
        return meta === null || !histograms.has(meta[1]!);
      })
      .join('\n');
    const classic = new Map<string, Sample[]>();
    for (const family of parsePrometheusTextFormat(untyped)) {
      if (
        !family.name.endsWith('_bucket') &&
        !family.name.endsWith('_sum') &&
        !family.name.endsWith('_count')
      )
        continue;
      classic.set(family.name, [...(classic.get(family.name) ?? []), ...family.metrics]);
    }
    this.#classic = classic;
  }

  family(name: string): Family | undefined {
    return this.families.get(name);
  }

  type(name: string): Family['type'] | undefined {
    return this.families.get(name)?.type;
  }

  /** Samples of `name` whose labels include every one of `labels`. */
  samples(name: string, labels: Labels = {}): Sample[] {
    return matching(this.families.get(name)?.metrics ?? [], labels);
  }

  /** The value of the one sample of `name` with exactly these labels; undefined when there is none. */
  value(name: string, labels: Labels = {}): number | undefined {
    const sample = exactly(name, this.families.get(name)?.metrics ?? [], labels);
    return sample?.value === undefined ? undefined : Number(sample.value);
  }

  /** The histogram series of `name` with exactly these labels (besides `le`); undefined when there is none. */
  histogram(
    name: string,
    labels: Labels,
  ): { count: number; sum: number; buckets: Record<string, number> } | undefined {
    const count = exactly(name, this.#classic.get(`${name}_count`) ?? [], labels);
    const sum = exactly(name, this.#classic.get(`${name}_sum`) ?? [], labels);
    if (count === undefined || sum === undefined) return undefined;
    const buckets: Record<string, number> = {};
    for (const sample of matching(this.#classic.get(`${name}_bucket`) ?? [], labels)) {
      const { le, ...rest } = sample.labels ?? {};
      if (le !== undefined && Object.keys(rest).length === Object.keys(labels).length)
        buckets[le] = Number(sample.value);
    }
    return { count: Number(count.value), sum: Number(sum.value), buckets };
  }
}

function matching(samples: Sample[], labels: Labels): Sample[] {
  return samples.filter((sample) =>
    Object.entries(labels).every(([key, value]) => sample.labels?.[key] === value),
  );
}

function exactly(name: string, samples: Sample[], labels: Labels): Sample | undefined {
  const found = matching(samples, labels).filter(
    (sample) => Object.keys(sample.labels ?? {}).length === Object.keys(labels).length,
  );
  if (found.length > 1)
    throw new Error(`${name}: ${found.length} samples with labels ${JSON.stringify(labels)}`);
  return found[0];
}

/** GET `url` and parse the body; the response's status and content type come along for assertions. */
export async function scrapeUrl(
  url: string,
): Promise<{ status: number; contentType: string | null; scrape: Scrape }> {
  const response = await fetch(url);
  const text = await response.text();
  return {
    status: response.status,
    contentType: response.headers.get('content-type'),
    scrape: new Scrape(text),
  };
}
