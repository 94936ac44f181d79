import type { Channel } from 'amqplib'
import { BrokerUnavailableError, ClosedError } from '../errors.js'

// The routing patterns of one instance's queue. `wanted` is what the caller
// asked for; `bound` is what may exist on the broker. The queue outlives a
// connection, so both survive reconnects, and recovery reconciles them on the
// new channel: bind every wanted pattern, unbind whatever is no longer wanted.
//
// `bind` resolves only once the binding exists on the broker: a socket told
// `ok` must receive what other instances publish from then on. Without a
// channel (or when the channel dies under the bind) it waits for recovery's
// next successful `attach`, bounded by `timeoutMs`.

export class Bindings {
  private readonly wanted = new Set<string>()
  private readonly bound = new Set<string>()
  private channel: Channel | undefined
  // One operation at a time: a channel runs one RPC at a time anyway, and a
  // bind and an unbind of the same pattern must reach the broker in order.
  private tail: Promise<void> = Promise.resolve()
  private nextAttach = new Signal()
  private closed = false

  constructor (private readonly exchange: string, private readonly queue: string, private readonly timeoutMs: number) {}

  get size (): number {
    return this.wanted.size
  }

  /** Resolves once bound on the broker; rejects with FST_EVSOCK_BROKER_UNAVAILABLE when that did not happen within `timeoutMs`. */
  bind (pattern: string): Promise<void> {
    if (this.closed) return Promise.reject(new ClosedError())
    this.wanted.add(pattern)
    // The wait for recovery is outside the queue: attach() runs through the queue too.
    const done = this.enqueue(() => this.sync(pattern)).then(([recovery]) => recovery)
    return deadline(done, this.timeoutMs, () => new BrokerUnavailableError(`the binding of ${pattern} was not made within ${this.timeoutMs} ms`))
  }

  /** Resolves once unbound, or at once while disconnected: recovery unbinds it, and nothing is promised about a pattern nobody wants. */
  async unbind (pattern: string): Promise<void> {
    this.wanted.delete(pattern)
    await this.enqueue(() => this.sync(pattern))
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
      const attached = this.nextAttach
      this.nextAttach = new Signal()
      attached.resolve()
    })
  }

  detach (channel: Channel): void {
    if (this.channel === channel) this.channel = undefined
  }

  /** Fails the binds still waiting for a connection. */
  close (error: Error): void {
    this.closed = true
    this.nextAttach.reject(error)
  }

  /** Makes the broker match `wanted` for one pattern; returns, boxed, what to wait for when that needs the next connection. */
  private async sync (pattern: string): Promise<[Promise<void> | undefined]> {
    const channel = this.channel
    // Taken before any await: the attach that resolves it is queued behind this operation.
    const recovery = this.nextAttach.promise
    if (channel === undefined) return [this.wanted.has(pattern) ? recovery : undefined]
    try {
      if (this.wanted.has(pattern)) {
        if (this.bound.has(pattern)) return [undefined]
        // Recorded first: if the reply is lost with the connection, the binding may still exist.
        this.bound.add(pattern)
        await channel.bindQueue(this.queue, this.exchange, pattern)
      } else if (this.bound.has(pattern)) {
        await channel.unbindQueue(this.queue, this.exchange, pattern)
        this.bound.delete(pattern)
      }
      return [undefined]
    } catch {
      // The channel died under the operation (the broker closes it on any
      // refusal); recovery's attach() finishes the job on the next connection,
      // and a bind is not done until then.
      return [this.wanted.has(pattern) ? recovery : undefined]
    }
  }

  private enqueue<T> (operation: () => Promise<T>): Promise<T> {
    const result = this.tail.then(operation)
    this.tail = result.then(() => {}, () => {})
    return result
  }
}

/** A promise settled from outside, never reported as unhandled. */
class Signal {
  readonly promise: Promise<void>
  resolve!: () => void
  reject!: (error: Error) => void

  constructor () {
    this.promise = new Promise<void>((resolve, reject) => {
      this.resolve = resolve
      this.reject = reject
    })
    this.promise.catch(() => {})
  }
}

function deadline<T> (work: Promise<T>, ms: number, error: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<never>((resolve, reject) => { timer = setTimeout(() => reject(error()), ms) })
  return Promise.race([work, expired]).finally(() => clearTimeout(timer))
}
