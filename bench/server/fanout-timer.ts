// Server-side fan-out time: from the moment an event reaches the server off
// its bus to the end of the socket writes for it. The plugin measures exactly
// this for its `evsock_delivery_seconds` histogram (docs/metrics.md); bare
// `ws` is timed around its own write loop, from the publish call (its "bus")
// to the last write. Recorded in nanoseconds: a write loop over 100 sockets
// takes a few hundred microseconds.
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks'
import { summarize, type LatencySummary } from '../lib/hist.js'

export class FanoutTimer {
  #histogram: RecordableHistogram = createHistogram()

  /** One event's fan-out took `ms` milliseconds. */
  record (ms: number): void {
    this.#histogram.record(Math.max(1, Math.round(ms * 1e6)))
  }

  /** Forgets what was recorded: the next summary covers a measurement window only. */
  reset (): void {
    this.#histogram = createHistogram()
  }

  /** Microseconds. */
  summary (): LatencySummary {
    return summarize(this.#histogram, 1000)
  }
}
