import type { Channel, ConsumeMessage, RecoveringChannelModel } from 'amqplib'

// One consumer of the history stream on a channel of its own, kept alive
// across reconnects: when its channel is lost (the connection dropped, or the
// broker cancelled the consumer) it consumes again on a new channel once the
// connection is back, from where `offset()` then says. Used by the history's
// cursors and by the probe of its oldest offset, never by the live path,
// whose channel belongs to the connection's setup.

/** Pause before trying again when opening a channel failed on a connection that was going away. */
const RETRY_MS = 50

export interface StreamReaderOptions {
  /** The consumer connection; undefined before the bus started. */
  connection: () => RecoveringChannelModel | undefined
  stream: string
  /** Unacked deliveries at most (streams require a prefetch). */
  prefetch: number
  /** The `x-stream-offset` to consume from, asked before each (re)consume. */
  offset: () => unknown
  onDelivery: (channel: Channel, delivery: ConsumeMessage) => void
  /** Consuming (true), or its channel lost and waiting to consume again (false). */
  onState?: (consuming: boolean) => void
}

export class StreamReader {
  #channel: Channel | undefined
  #attaching = false
  #stopped = false
  readonly #options: StreamReaderOptions

  constructor (options: StreamReaderOptions) {
    this.#options = options
    this.#attach().catch(() => {}) // it catches its own failures; nothing reaches here
  }

  /** The channel consuming now; deliveries from another one can no longer be acked. */
  get channel (): Channel | undefined {
    return this.#channel
  }

  /** Cancels by closing the channel: what was delivered and not acked goes back to the stream, which keeps it anyway. */
  stop (): void {
    this.#stopped = true
    const channel = this.#channel
    this.#channel = undefined
    channel?.close().catch(() => {})
  }

  async #attach (): Promise<void> {
    if (this.#attaching) return
    this.#attaching = true
    try {
      while (!this.#stopped) {
        if (await this.#consume()) return
      }
    } finally {
      this.#attaching = false
    }
  }

  /** One attempt; true once consuming (or stopped meanwhile). */
  async #consume (): Promise<boolean> {
    const { connection, stream, prefetch, offset, onDelivery, onState } = this.#options
    let channel: Channel | undefined
    try {
      const model = connection()
      if (model === undefined) throw new Error('the bus has not started')
      // Waits while the connection is down (amqplib's recovery resolves it on the next one).
      const current = channel = await model.createChannel()
      if (this.#stopped) {
        current.close().catch(() => {})
        return true
      }
      // A refusal is followed by the channel's close, which is what is handled.
      current.on('error', () => {})
      current.on('close', () => this.#lose(current))
      await current.prefetch(prefetch)
      this.#channel = current
      await current.consume(stream, (delivery) => {
        if (delivery === null) this.#lose(current) // the broker cancelled it: the stream was deleted
        else onDelivery(current, delivery)
      }, { arguments: { 'x-stream-offset': offset() } })
      // Lost while the consume was answered: #lose left it to this loop.
      if (this.#channel !== current) return false
      onState?.(true)
      return true
    } catch {
      if (channel !== undefined && this.#channel === channel) this.#channel = undefined
      channel?.close().catch(() => {})
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS))
      return false
    }
  }

  #lose (channel: Channel): void {
    if (this.#channel !== channel) return
    this.#channel = undefined
    channel.close().catch(() => {})
    if (this.#stopped) return
    this.#options.onState?.(false)
    this.#attach().catch(() => {}) // it catches its own failures; nothing reaches here
  }
}
