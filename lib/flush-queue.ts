import { SharedFrames } from './framers.js'

// Streams with frames to write, flushed together once this turn of the event
// loop is over. setImmediate, not nextTick: events published across awaits in
// the same turn (a route handler's publishes) still leave in one write per socket.

export interface Flushable {
  flush (): void
  /** Its flush threw; the others are flushed all the same. */
  flushFailed (err: unknown): void
}

export class FlushQueue {
  #due: Flushable[] = []
  /** The frames the streams of this turn share; forgotten once they are written. */
  readonly frames = new SharedFrames()
  /** Told when a flush of every due stream is over (metrics time deliveries to it). */
  readonly #flushed: (() => void) | undefined

  constructor (flushed?: () => void) {
    this.#flushed = flushed
  }

  /** Some stream has frames to write at the end of this turn. */
  get scheduled (): boolean {
    return this.#due.length > 0
  }

  /**
   * Called when a stream's outbox opens; a stream flushed early (at close)
   * may come twice, and its second flush finds nothing to write.
   */
  schedule (stream: Flushable): void {
    if (this.#due.push(stream) === 1) setImmediate(this.flushAll)
  }

  readonly flushAll = (): void => {
    const due = this.#due
    this.#due = []
    for (const stream of due) {
      // One socket's failure must not leave the others' frames unwritten.
      try {
        stream.flush()
      } catch (err) {
        stream.flushFailed(err)
      }
    }
    this.frames.clear()
    this.#flushed?.()
  }
}
