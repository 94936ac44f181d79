import type { Scrape } from './prom-text.js'

// The series of a scrape with their labels, for the attacks on label
// cardinality: whatever a client or publisher sends must never add one.

export interface Series {
  /** The family's name (a histogram's, for its `_bucket`, `_sum` and `_count` samples). */
  family: string
  /** The sample's own name. */
  sample: string
  /** Its labels, without a histogram bucket's `le` (the one label the library adds). */
  labels: Record<string, string>
}

export function seriesOf (metrics: Scrape): Series[] {
  const series: Series[] = []
  for (const [family, { type }] of metrics.families) {
    for (const sample of type === 'histogram' ? [`${family}_bucket`, `${family}_sum`, `${family}_count`] : [family]) {
      for (const { labels } of metrics.samples(sample)) {
        const { le, ...rest } = labels
        series.push({ family, sample, labels: type === 'histogram' ? rest : labels })
      }
    }
  }
  return series
}

/** `sample{"label":"value"}` for every series that has labels, sorted. */
export function labelSets (metrics: Scrape): string[] {
  return seriesOf(metrics).filter(({ labels }) => Object.keys(labels).length > 0).map(({ sample, labels }) => `${sample}${JSON.stringify(labels)}`).sort()
}
