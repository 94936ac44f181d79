import { randomBytes } from 'node:crypto'
import { ClosedError } from '../errors.js'
import type { ResolvedHistoryOptions } from '../options.js'
import { QueueWindow } from '../queue-window.js'
import { makeRoom, type EventRoom } from './retained-event.js'
import type { BusHistory, BusMessage, HistoryCursor } from './types.js'

// The in-process bus's history: every published message, in publish order,
// bounded by bytes and age. One process is the whole deployment here, so its
// offsets are meaningless to the next process: positions carry an epoch drawn
// at start, and a position of an earlier run is not one this history issued.

interface Retained {
  readonly message: BusMessage & { offset: number }
  /** The message's own bytes (topic, id, payload), what `maxBytes` bounds. */
  readonly bytes: number
  /**
   * Made when a replay first reads the message. The frames it keeps are not
   * counted in `maxBytes`: that bound is the retention clients resume
   * within, which must not shrink because other clients resumed.
   */
  room?: EventRoom
}

export class MemoryHistory implements BusHistory {
  readonly #epoch = randomBytes(4).toString('hex')
  readonly #limits: ResolvedHistoryOptions
  /** Retained messages, oldest first: a message's sequence number in it is its offset. */
  readonly #log = new QueueWindow<Retained>()
  #bytes = 0
  /** Cursors waiting for the next message. */
  readonly #waiting = new Set<() => void>()
  /** Open cursors, closed with the bus. */
  readonly #cursors = new Set<HistoryCursor>()
  #closed = false

  constructor (limits: ResolvedHistoryOptions) {
    this.#limits = limits
  }

  get head (): number {
    return this.#log.end - 1
  }

  async oldest (): Promise<number> {
    this.#trim(Date.now())
    return this.#log.first
  }

  async retains (offset: number): Promise<boolean> {
    return await this.oldest() <= offset
  }

  /** Gives `message` the next offset and retains it; returns it with its offset. */
  append (message: BusMessage): BusMessage & { offset: number } {
    const retained = { message: { ...message, offset: this.#log.end }, bytes: message.payload.length + message.topic.length + message.id.length }
    this.#log.push(retained)
    this.#bytes += retained.bytes
    this.#trim(message.time)
    for (const wake of this.#waiting) wake()
    this.#waiting.clear()
    return retained.message
  }

  /** Closes every open cursor (the bus is closing). */
  close (): void {
    this.#closed = true
    for (const cursor of this.#cursors) cursor.close()
  }

  read (from: number): HistoryCursor {
    let next = Math.max(0, from)
    let closed = this.#closed
    let wake: (() => void) | undefined
    const history = this
    const cursor: HistoryCursor = {
      async next (): Promise<BusMessage> {
        for (;;) {
          if (closed) throw new ClosedError()
          // Retention may have dropped it meanwhile: the oldest retained comes next.
          next = Math.max(next, history.#log.first)
          const found = history.#at(next)
          if (found !== undefined) {
            next++
            return found
          }
          await new Promise<void>((resolve) => {
            wake = resolve
            history.#waiting.add(resolve)
          })
        }
      },
      close (): void {
        closed = true
        history.#cursors.delete(cursor)
        if (wake === undefined) return
        history.#waiting.delete(wake)
        wake()
      }
    }
    if (!closed) this.#cursors.add(cursor)
    return cursor
  }

  format (offset: number): string {
    return `${this.#epoch}-${offset.toString(36)}`
  }

  parse (pos: string): number | undefined {
    const dash = pos.indexOf('-')
    if (dash === -1 || pos.slice(0, dash) !== this.#epoch) return undefined
    const digits = pos.slice(dash + 1)
    if (!/^(0|[1-9a-z][0-9a-z]*)$/.test(digits) || digits.length > 11) return undefined
    const offset = parseInt(digits, 36)
    // Beyond the head it was never issued.
    return offset <= this.head ? offset : undefined
  }

  #at (offset: number): BusMessage | undefined {
    const retained = this.#log.at(offset)
    if (retained === undefined) return undefined
    retained.room ??= makeRoom(retained.message)
    return retained.message
  }

  #trim (now: number): void {
    const { maxBytes, maxAgeMs } = this.#limits
    // The newest message always stays: a position must remain resumable right after it was issued.
    while (this.#log.length > 1) {
      const oldest = this.#log.oldest as Retained
      if (this.#bytes <= maxBytes && now - oldest.message.time <= maxAgeMs) break
      this.#bytes -= oldest.bytes
      this.#log.shift()
    }
  }
}
