import type { Channel } from 'amqplib'
import { BrokerUnavailableError, ClosedError } from '../errors.js'
import type { ResolvedBrokerOptions } from '../options.js'
import { TopicIndex } from '../client/topic-index.js'
import { deadline, Signal } from './amqp-signal.js'

// The routing keys of one instance's queue. `wanted` is what the caller
// asked for; `bound` is what may exist on the broker. The queue outlives a
// connection, so both survive reconnects, and recovery reconciles them on the
// new channel: bind every wanted key, unbind whatever is no longer wanted.
//
// A pattern is bound under its broker key: the pattern cut after its first
// `#` (`a.*.#.b.c` binds `a.*.#`). RabbitMQ's topic exchange walks the words
// after a `#` from every split of the topic, (topic words × those words) per
// publish and per binding, tens of ms for a long pattern; a key ending in its
// `#` costs it linear time. The key routes more than the pattern, so
// deliveries are filtered here, exactly, before the core sees them; several
// patterns may share one key, which stays bound while any of them is wanted.
//
// `bind` resolves only once the key is bound on the broker: a socket told
// `ok` must receive what other instances publish from then on. Without a
// channel (or when the channel dies under the bind) it waits for recovery's
// next successful `attach`, bounded by `timeoutMs`.

/** The instance queue: one per instance, bound to what its sockets want. */
export async function declareInstanceQueue (channel: Channel, queue: string, { maxQueueLength, reconnectMaxDelayMs, queueType }: ResolvedBrokerOptions): Promise<void> {
  await channel.assertQueue(queue, {
    // A quorum queue lives on a majority of the cluster's nodes, not on the one
    // node it was declared on, so a node's death loses none of its confirmed events.
    ...(queueType === 'quorum' ? { arguments: { 'x-queue-type': 'quorum' } } : {}),
    // Durable, but holding transient messages: RabbitMQ 4 deprecates transient
    // non-exclusive queues, and the definition is all a restart keeps.
    durable: true,
    // Not exclusive, not auto-delete: the queue must survive a dropped
    // connection, or events confirmed to a publisher would vanish with it.
    maxLength: maxQueueLength,
    // Drop the oldest rather than nack publishers: one stalled instance must not fail every publish.
    overflow: 'drop-head',
    // A crashed instance's queue goes away by itself, long after any reconnect would have come back.
    expires: Math.max(60_000, 12 * reconnectMaxDelayMs)
  })
}

/** The binding that routes `pattern` at linear cost on RabbitMQ: `pattern` up to and including its first `#`. */
export function brokerKey (pattern: string): string {
  const words = pattern.split('.')
  const hash = words.indexOf('#')
  return hash === -1 || hash === words.length - 1 ? pattern : words.slice(0, hash + 1).join('.')
}

export class Bindings {
  readonly #exchange: string
  readonly #queue: string
  readonly #timeoutMs: number
  /** Wanted patterns by broker key. */
  readonly #wanted = new Map<string, Set<string>>()
  readonly #bound = new Set<string>()
  /** Every wanted pattern, consulted only while some pattern's key is wider than itself. */
  readonly #exact = new TopicIndex<true>()
  #widened = 0
  #channel: Channel | undefined
  // One operation at a time: a channel runs one RPC at a time anyway, and a
  // bind and an unbind of the same key must reach the broker in order.
  #tail: Promise<void> = Promise.resolve()
  #nextAttach = new Signal()
  #closed = false

  constructor (exchange: string, queue: string, timeoutMs: number) {
    this.#exchange = exchange
    this.#queue = queue
    this.#timeoutMs = timeoutMs
  }

  /** Wanted patterns. */
  get size (): number {
    return this.#exact.patternCount
  }

  /** Whether a delivery on `topic` matches a wanted pattern, not only the wider key it was routed by. */
  accepts (topic: string): boolean {
    if (this.#widened === 0) return true
    return this.#exact.matches(topic)
  }

  /** Resolves once bound on the broker; rejects with FST_EVSOCK_BROKER_UNAVAILABLE when that did not happen within `timeoutMs`. */
  bind (pattern: string): Promise<void> {
    if (this.#closed) return Promise.reject(new ClosedError())
    const key = brokerKey(pattern)
    let patterns = this.#wanted.get(key)
    if (patterns === undefined) this.#wanted.set(key, patterns = new Set())
    if (!patterns.has(pattern)) {
      patterns.add(pattern)
      this.#exact.add(pattern, true)
      if (key !== pattern) this.#widened++
    }
    // Queued even when the key was wanted already: it resolves once that key's bind is done.
    // The wait for recovery is outside the queue: attach() runs through the queue too.
    const done = this.#enqueue(() => this.#sync(key)).then(([recovery]) => recovery)
    return deadline(done, this.#timeoutMs, () => new BrokerUnavailableError(`the binding of ${pattern} was not made within ${this.#timeoutMs} ms`))
  }

  /** Resolves once unbound, or at once while disconnected: recovery unbinds it, and nothing is promised about a pattern nobody wants. */
  async unbind (pattern: string): Promise<void> {
    const key = brokerKey(pattern)
    const patterns = this.#wanted.get(key)
    if (patterns?.delete(pattern) !== true) return
    this.#exact.remove(pattern, true)
    if (key !== pattern) this.#widened--
    if (patterns.size > 0) return
    this.#wanted.delete(key)
    await this.#enqueue(() => this.#sync(key))
  }

  /** Reconciles the queue's bindings on the channel of a new connection. Rejects when the broker refuses, which fails the recovery setup (and so retries it). */
  attach (channel: Channel): Promise<void> {
    this.#channel = channel
    return this.#enqueue(async () => {
      // Bound again even when `bound` says so: the queue may be new (it expired, or the broker restarted); binding is idempotent.
      for (const key of this.#wanted.keys()) {
        this.#bound.add(key)
        await channel.bindQueue(this.#queue, this.#exchange, key)
      }
      for (const key of this.#bound) {
        if (this.#wanted.has(key)) continue
        await channel.unbindQueue(this.#queue, this.#exchange, key)
        this.#bound.delete(key)
      }
      const attached = this.#nextAttach
      this.#nextAttach = new Signal()
      attached.resolve()
    })
  }

  detach (channel: Channel): void {
    if (this.#channel === channel) this.#channel = undefined
  }

  /** Fails the binds still waiting for a connection. */
  close (error: Error): void {
    this.#closed = true
    this.#nextAttach.reject(error)
  }

  /** Makes the broker match `wanted` for one key; returns, boxed, what to wait for when that needs the next connection. */
  async #sync (key: string): Promise<[Promise<void> | undefined]> {
    const channel = this.#channel
    // Taken before any await: the attach that resolves it is queued behind this operation.
    const recovery = this.#nextAttach.promise
    if (channel === undefined) return [this.#wanted.has(key) ? recovery : undefined]
    try {
      if (this.#wanted.has(key)) {
        if (this.#bound.has(key)) return [undefined]
        // Recorded first: if the reply is lost with the connection, the binding may still exist.
        this.#bound.add(key)
        await channel.bindQueue(this.#queue, this.#exchange, key)
      } else if (this.#bound.has(key)) {
        await channel.unbindQueue(this.#queue, this.#exchange, key)
        this.#bound.delete(key)
      }
      return [undefined]
    } catch {
      // The channel died under the operation (the broker closes it on any
      // refusal); recovery's attach() finishes the job on the next connection,
      // and a bind is not done until then.
      return [this.#wanted.has(key) ? recovery : undefined]
    }
  }

  #enqueue<T> (operation: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(operation)
    this.#tail = result.then(() => {}, () => {})
    return result
  }
}
