import type { OutboundEvent } from './codec.js'

/** Events waiting behind a full ack window, oldest first, with their bytes counted. */
export class PendingQueue {
  #events: Array<OutboundEvent | undefined> = []
  #head = 0
  bytes = 0

  get length (): number {
    return this.#events.length - this.#head
  }

  push (event: OutboundEvent): void {
    this.#events.push(event)
    this.bytes += event.size
  }

  shift (): OutboundEvent | undefined {
    const event = this.#events[this.#head]
    if (event === undefined) return undefined
    this.#events[this.#head++] = undefined
    this.bytes -= event.size
    // Compact now and then, so a long-lived queue does not keep its drained prefix.
    if (this.#head > 1024 && this.#head * 2 > this.#events.length) {
      this.#events = this.#events.slice(this.#head)
      this.#head = 0
    }
    return event
  }
}
