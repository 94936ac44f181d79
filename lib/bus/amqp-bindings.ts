import type { Channel } from 'amqplib'

// The routing patterns of one instance's queue. `wanted` is what the caller
// asked for; `bound` is what may exist on the broker. The queue outlives a
// connection, so both survive reconnects, and recovery reconciles them on the
// new channel: bind every wanted pattern, unbind whatever is no longer wanted.

export class Bindings {
  private readonly wanted = new Set<string>()
  private readonly bound = new Set<string>()
  private channel: Channel | undefined
  // One operation at a time: a channel runs one RPC at a time anyway, and a
  // bind and an unbind of the same pattern must reach the broker in order.
  private tail: Promise<void> = Promise.resolve()

  constructor (private readonly exchange: string, private readonly queue: string) {}

  get size (): number {
    return this.wanted.size
  }

  /** Resolves once bound, or at once while disconnected (recovery binds it). */
  bind (pattern: string): Promise<void> {
    this.wanted.add(pattern)
    return this.enqueue(() => this.sync(pattern))
  }

  unbind (pattern: string): Promise<void> {
    this.wanted.delete(pattern)
    return this.enqueue(() => this.sync(pattern))
  }

  /** Reconciles the queue's bindings on the channel of a new connection. Rejects when the broker refuses, which fails the recovery setup (and so retries it). */
  attach (channel: Channel): Promise<void> {
    this.channel = channel
    return this.enqueue(async () => {
      // Bound again even when `bound` says so: the queue may be new (it expired, or the broker restarted); binding is idempotent.
      for (const pattern of this.wanted) {
        this.bound.add(pattern)
        await channel.bindQueue(this.queue, this.exchange, pattern)
      }
      for (const pattern of this.bound) {
        if (this.wanted.has(pattern)) continue
        await channel.unbindQueue(this.queue, this.exchange, pattern)
        this.bound.delete(pattern)
      }
    })
  }

  detach (channel: Channel): void {
    if (this.channel === channel) this.channel = undefined
  }

  private async sync (pattern: string): Promise<void> {
    const channel = this.channel
    if (channel === undefined) return
    try {
      if (this.wanted.has(pattern)) {
        if (this.bound.has(pattern)) return
        // Recorded first: if the reply is lost with the connection, the binding may still exist.
        this.bound.add(pattern)
        await channel.bindQueue(this.queue, this.exchange, pattern)
      } else if (this.bound.has(pattern)) {
        await channel.unbindQueue(this.queue, this.exchange, pattern)
        this.bound.delete(pattern)
      }
    } catch {
      // The channel died under the operation (the broker closes it on any
      // refusal); recovery's attach() finishes the job on the next connection.
    }
  }

  private enqueue (operation: () => Promise<void>): Promise<void> {
    const result = this.tail.then(operation)
    this.tail = result.catch(() => {})
    return result
  }
}
