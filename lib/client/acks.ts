// Cumulative, batched acknowledgements for one connection (docs/protocol.md
// section 4). Handlers may finish out of order (async ones), so the ack only
// ever covers the contiguous run of processed events from the start.

export class AckTracker {
  readonly #threshold: number
  readonly #delayMs: number
  readonly #send: (seq: number) => void
  /** Every event up to and including this seq is processed. */
  #processed = 0
  /** Processed events past a gap, waiting for the gap to close. */
  readonly #ahead = new Set<number>()
  #acked = 0
  #timer: ReturnType<typeof setTimeout> | undefined
  #stopped = false

  /** `window` is the hello's; an ack is due once half of it is processed and unacknowledged, or after `delayMs` idle. */
  constructor (window: number, delayMs: number, send: (seq: number) => void) {
    this.#threshold = Math.max(1, Math.floor(window / 2))
    this.#delayMs = delayMs
    this.#send = send
  }

  /** Marks event `seq` as processed and sends or schedules the ack it makes due. */
  processed (seq: number): void {
    if (this.#stopped) return
    this.#ahead.add(seq)
    while (this.#ahead.delete(this.#processed + 1)) this.#processed++
    if (this.#processed - this.#acked >= this.#threshold) this.#flush()
    else if (this.#processed > this.#acked) this.#timer ??= setTimeout(() => { this.#flush() }, this.#delayMs)
  }

  /** The connection is gone: its seqs mean nothing to the next one. */
  stop (): void {
    this.#stopped = true
    clearTimeout(this.#timer)
  }

  #flush (): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    if (this.#processed <= this.#acked) return
    this.#acked = this.#processed
    this.#send(this.#acked)
  }
}
