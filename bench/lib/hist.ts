// Latency histograms: perf_hooks.createHistogram (HDR, built into Node),
// recorded in microseconds.
import type { RecordableHistogram } from 'node:perf_hooks'

export interface LatencySummary {
  count: number
  /** Microseconds. */
  p50: number
  p99: number
  p999: number
  max: number
}

/** `perMicrosecond`: the histogram's units in one microsecond (1000 for one recorded in nanoseconds). */
export function summarize (histogram: RecordableHistogram, perMicrosecond = 1): LatencySummary {
  return {
    count: histogram.count,
    p50: histogram.percentile(50) / perMicrosecond,
    p99: histogram.percentile(99) / perMicrosecond,
    p999: histogram.percentile(99.9) / perMicrosecond,
    max: histogram.max / perMicrosecond
  }
}

/** Several generators' summaries as one: counts add up, percentiles take the worst (a bound, not a merge). */
export function worst (summaries: LatencySummary[]): LatencySummary {
  return {
    count: summaries.reduce((sum, s) => sum + s.count, 0),
    p50: Math.max(...summaries.map((s) => s.p50)),
    p99: Math.max(...summaries.map((s) => s.p99)),
    p999: Math.max(...summaries.map((s) => s.p999)),
    max: Math.max(...summaries.map((s) => s.max))
  }
}
