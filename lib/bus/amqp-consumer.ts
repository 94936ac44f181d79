import type { Channel, ConsumeMessage } from 'amqplib'
import type { FastifyBaseLogger } from 'fastify'
import { SummarizedLog } from '../log-summary.js'
import { defaultEventLimits } from '../publish.js'
import { fromDelivery } from './amqp-message.js'
import type { Deliver } from './types.js'

// Hands deliveries to the core and acks them. `deliver` enqueues
// synchronously, so a message is acked once it returns; acks are cumulative,
// one per event-loop turn, instead of one frame per message.

export class Consumer {
  private channel: Channel | undefined
  private unacked: ConsumeMessage | undefined
  private ackScheduled = false
  // Ids of the latest deliveries. The broker redelivers only what was unacked
  // when a connection dropped, at most `prefetch` messages, all recent; the
  // core already has those, so they are acked and not delivered twice.
  private readonly recentIds: string[] = []
  private readonly recent = new Set<string>()
  private readonly dropLog: SummarizedLog

  constructor (
    private readonly deliver: Deliver,
    private readonly log: FastifyBaseLogger,
    private readonly memory: number,
    /** Called when the broker cancels the consumer (its queue was deleted). */
    private readonly onCancel: (channel: Channel) => void
  ) {
    this.dropLog = new SummarizedLog(log, 'warn', 'event socket: dropped a broker message that is not a valid event (see docs/rabbitmq.md, foreign messages)')
  }

  attach (channel: Channel): void {
    this.channel = channel
    this.unacked = undefined
  }

  detach (channel: Channel): void {
    if (this.channel !== channel) return
    this.channel = undefined
    this.unacked = undefined
  }

  onMessage (channel: Channel, delivery: ConsumeMessage | null): void {
    if (channel !== this.channel) return
    if (delivery === null) {
      this.onCancel(channel)
      return
    }
    this.handle(delivery)
    this.unacked = delivery
    if (!this.ackScheduled) {
      this.ackScheduled = true
      setImmediate(() => this.flush())
    }
  }

  /** Acks everything delivered so far. */
  flush (): void {
    this.ackScheduled = false
    const delivery = this.unacked
    if (this.channel === undefined || delivery === undefined) return
    this.unacked = undefined
    try {
      this.channel.ack(delivery, true)
    } catch {
      // The channel closed in between; the broker redelivers, and `recent` catches the repeats.
    }
  }

  private handle (delivery: ConsumeMessage): void {
    const message = fromDelivery(delivery, this.deliver.limits ?? defaultEventLimits)
    if (typeof message === 'string') {
      // Acked like the rest: redelivered, it would fail the same way forever.
      this.dropLog.report({ reason: message, topic: delivery.fields.routingKey, bytes: delivery.content.length })
      this.deliver.dropped?.(message)
      return
    }
    if (delivery.fields.redelivered && this.recent.has(message.id)) return
    this.remember(message.id)
    try {
      this.deliver(message)
    } catch (error) {
      // Acked anyway: redelivering a message the core cannot take would loop.
      this.log.error({ err: error, id: message.id, topic: message.topic }, 'event socket: delivering a broker message failed')
    }
  }

  private remember (id: string): void {
    this.recent.add(id)
    this.recentIds.push(id)
    if (this.recentIds.length > this.memory) this.recent.delete(this.recentIds.shift() as string)
  }
}
