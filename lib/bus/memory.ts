import type { FastifyBaseLogger } from 'fastify'
import { TopicIndex } from '../client/topic-index.js'
import { ClosedError } from '../errors.js'
import type { ResolvedHistoryOptions } from '../options.js'
import { MemoryHistory } from './memory-history.js'
import type { Bus, BusHistory, BusHealth, BusMessage, Deliver } from './types.js'

// The in-process bus: the embedded default for one instance (development,
// tests). It routes like the broker does, through the bound patterns, so that
// both buses look the same to the rest of the plugin. With history on, every
// published message is retained first (memory-history.ts), bound or not.

export class MemoryBus implements Bus {
  readonly kind = 'memory'
  readonly #log: FastifyBaseLogger | undefined
  #bound = new TopicIndex<true>()
  #deliver: Deliver | undefined
  #closed = false
  readonly #history: MemoryHistory | undefined

  constructor (log?: FastifyBaseLogger, history?: ResolvedHistoryOptions) {
    this.#log = log
    if (history !== undefined) this.#history = new MemoryHistory(history)
  }

  get history (): BusHistory | undefined {
    return this.#history
  }

  async start (deliver: Deliver): Promise<void> {
    this.#deliver = deliver
  }

  async publish (message: BusMessage): Promise<void> {
    if (this.#closed || this.#deliver === undefined) throw new ClosedError()
    if (this.#history !== undefined) message = this.#history.append(message)
    if (!this.#bound.matches(message.topic)) return
    try {
      this.#deliver(message)
    } catch (err) {
      // The event is published all the same: its delivery failing here is no failure of the publisher's.
      this.#log?.error({ err, id: message.id, topic: message.topic }, 'event socket: delivering a bus message failed')
    }
  }

  async bind (pattern: string): Promise<void> {
    if (this.#closed) throw new ClosedError()
    this.#bound.add(pattern, true)
  }

  async unbind (pattern: string): Promise<void> {
    this.#bound.remove(pattern, true)
  }

  health (): BusHealth {
    return { kind: 'memory', state: this.#closed ? 'closed' : 'up', buffered: 0, unconfirmed: 0 }
  }

  async close (): Promise<void> {
    this.#closed = true
    this.#history?.close()
  }
}
