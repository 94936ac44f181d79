import type { Channel, ConsumeMessage } from 'amqplib'
import type { FastifyBaseLogger } from 'fastify'
import { SummarizedLog } from '../log-summary.js'
import { defaultEventLimits } from '../publish.js'
import { fromDelivery, streamOffset } from './amqp-message.js'
import type { Deliver } from './types.js'

// Hands deliveries to the core and acks them. `deliver` enqueues
// synchronously, so a message is acked once it returns; acks are cumulative,
// one per event-loop turn, instead of one frame per message.
//
// From the history stream (`stream`), each delivery carries its offset:
// `head` follows it, whatever becomes of the message, and a consumer resumed
// at head + 1 skips what it had already (RabbitMQ starts a stream consumer at
// the start of the chunk holding the offset asked for).

/** Why a delivery without an offset is dropped on the stream path. */
const NOT_A_STREAM = 'no x-stream-offset header: the history queue is not a stream (docs/rabbitmq.md, history stream)'

export interface ConsumerOptions {
  deliver: Deliver
  log: FastifyBaseLogger
  /** Ids remembered against redeliveries. */
  memory: number
  /** Whether a delivery's topic is wanted; the broker key it came by may be wider than the patterns (amqp-bindings.ts). */
  accepts: (topic: string) => boolean
  /** Called when the broker cancels the consumer (its queue was deleted). */
  onCancel: (channel: Channel) => void
  /** Consumes the history stream: deliveries carry their offset, redeliveries are told by it. */
  stream?: boolean
}

export class Consumer {
  #channel: Channel | undefined
  #unacked: ConsumeMessage | undefined
  #ackScheduled = false
  #head = -1
  // Ids of the latest deliveries. The broker redelivers only what was unacked
  // when a connection dropped, at most `prefetch` messages, all recent; the
  // core already has those, so they are acked and not delivered twice.
  readonly #recentIds: string[] = []
  readonly #recent = new Set<string>()
  readonly #dropLog: SummarizedLog
  readonly #options: ConsumerOptions

  constructor (options: ConsumerOptions) {
    this.#options = options
    this.#dropLog = new SummarizedLog(options.log, 'warn', 'event socket: dropped a broker message that is not a valid event (see docs/rabbitmq.md, foreign messages)')
  }

  /** Offset of the newest stream message taken, valid or not, wanted or not (-1 before the first). */
  get head (): number {
    return this.#head
  }

  attach (channel: Channel): void {
    this.#channel = channel
    this.#unacked = undefined
  }

  detach (channel: Channel): void {
    if (this.#channel !== channel) return
    this.#channel = undefined
    this.#unacked = undefined
  }

  onMessage (channel: Channel, delivery: ConsumeMessage | null): void {
    if (channel !== this.#channel) return
    if (delivery === null) {
      this.#options.onCancel(channel)
      return
    }
    this.#handle(delivery)
    this.#unacked = delivery
    if (!this.#ackScheduled) {
      this.#ackScheduled = true
      setImmediate(() => this.flush())
    }
  }

  /** Acks everything delivered so far. */
  flush (): void {
    this.#ackScheduled = false
    const delivery = this.#unacked
    if (this.#channel === undefined || delivery === undefined) return
    this.#unacked = undefined
    try {
      this.#channel.ack(delivery, true)
    } catch {
      // The channel closed in between; the broker redelivers, and `recent` catches the repeats.
    }
  }

  #handle (delivery: ConsumeMessage): void {
    const { deliver, log, stream = false } = this.#options
    const offset = stream ? streamOffset(delivery) : undefined
    if (offset !== undefined) {
      if (offset <= this.#head) return
      this.#head = offset
      // Every event of the stream comes to every instance: what no pattern wants is not worth checking.
      if (!this.#options.accepts(delivery.fields.routingKey)) return
    }
    const message = stream && offset === undefined ? NOT_A_STREAM : fromDelivery(delivery, deliver.limits ?? defaultEventLimits)
    if (typeof message === 'string') {
      // Acked like the rest: redelivered, it would fail the same way forever.
      this.#dropLog.report({ reason: message, topic: delivery.fields.routingKey, bytes: delivery.content.length })
      deliver.dropped?.(message)
      return
    }
    if (offset !== undefined) message.offset = offset
    else {
      if (!this.#options.accepts(message.topic)) return
      if (delivery.fields.redelivered && this.#recent.has(message.id)) return
      this.#remember(message.id)
    }
    try {
      deliver(message)
    } catch (error) {
      // Acked anyway: redelivering a message the core cannot take would loop.
      log.error({ err: error, id: message.id, topic: message.topic }, 'event socket: delivering a broker message failed')
    }
  }

  #remember (id: string): void {
    this.#recent.add(id)
    this.#recentIds.push(id)
    if (this.#recentIds.length > this.#options.memory) this.#recent.delete(this.#recentIds.shift() as string)
  }
}
