import type { OutboundEvent } from './codec.js'
import { QueueWindow } from './queue-window.js'

/** Events waiting behind a full ack window, oldest first, with their bytes counted. */
export class PendingQueue {
  readonly #events = new QueueWindow<OutboundEvent>()
  bytes = 0

  get length (): number {
    return this.#events.length
  }

  push (event: OutboundEvent): void {
    this.#events.push(event)
    this.bytes += event.size
  }

  shift (): OutboundEvent | undefined {
    const event = this.#events.shift()
    if (event !== undefined) this.bytes -= event.size
    return event
  }
}
