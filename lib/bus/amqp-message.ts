import type { ConsumeMessage, Options } from 'amqplib'
import type { BusMessage } from './types.js'

// How a BusMessage maps onto an AMQP message, both ways. The payload is the
// JSON the core encoded once at publish; it travels as the body untouched.

/** Header with the exact publish time in ms; the AMQP `timestamp` property only holds seconds. */
const TIME_HEADER = 'evsock-time'

export function publishOptions (message: BusMessage): Options.Publish {
  return {
    messageId: message.id,
    // AMQP timestamps are POSIX seconds; tools (management UI, shovels) read them so.
    timestamp: Math.floor(message.time / 1000),
    contentType: 'application/json',
    headers: { [TIME_HEADER]: message.time },
    // Transient: every queue it lands in is one instance's queue, which does not
    // outlive the broker either, so writing it to disk would only cost throughput.
    deliveryMode: 1
  }
}

/** The BusMessage of a delivery, or undefined when it lacks an id (not published through this plugin). */
export function fromDelivery (delivery: ConsumeMessage): BusMessage | undefined {
  const { messageId, timestamp, headers } = delivery.properties as { messageId?: unknown, timestamp?: unknown, headers?: Record<string, unknown> }
  if (typeof messageId !== 'string' || messageId === '') return undefined
  const exact = headers?.[TIME_HEADER]
  const time = typeof exact === 'number' ? exact : typeof timestamp === 'number' ? timestamp * 1000 : Date.now()
  return { id: messageId, topic: delivery.fields.routingKey, time, payload: delivery.content }
}
