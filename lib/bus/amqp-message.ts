import { isUtf8 } from 'node:buffer'
import type { ConsumeMessage, Options } from 'amqplib'
import { eventBytes, isEventId, nestedDeeperThan, type EventLimits } from '../publish.js'
import { CONTROL_PREFIX, topicProblem } from '../topics.js'
import { traceContext, type BusMessage } from './types.js'

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
    headers: { [TIME_HEADER]: message.time, ...message.trace },
    // Transient: every queue it lands in is one instance's queue, which does not
    // outlive the broker either, so writing it to disk would only cost throughput.
    // (The history stream, with history on, writes every message whatever its mode.)
    deliveryMode: 1
  }
}

/**
 * The BusMessage of a delivery, or why it is not one. Anyone with access to
 * the exchange can publish to it, so a delivery is held to what `publish`
 * guarantees: the core splices the body into JSON frames as it is and
 * encodes it to MessagePack by recursion, so a body that is not UTF-8 JSON
 * within the limits would break a client's stream or the process.
 */
export function fromDelivery (delivery: ConsumeMessage, limits: EventLimits): BusMessage | string {
  const { messageId, timestamp, headers } = delivery.properties as { messageId?: unknown, timestamp?: unknown, headers?: Record<string, unknown> }
  if (!isEventId(messageId)) return 'messageId is not a string of 1 to 128 characters (not published by this plugin)'
  const topic = delivery.fields.routingKey
  if (!topic.startsWith(CONTROL_PREFIX)) {
    const problem = topicProblem(topic)
    if (problem !== undefined) return `routing key is not a valid topic: ${problem}`
  }
  const payload = delivery.content
  const size = eventBytes(topic, messageId, payload)
  if (size > limits.maxEventBytes) return `event of ${size} bytes is over maxEventBytes (${limits.maxEventBytes})`
  if (!isUtf8(payload)) return 'body is not UTF-8'
  if (nestedDeeperThan(payload, limits.maxEventDepth)) return `body is nested deeper than maxEventDepth (${limits.maxEventDepth})`
  try {
    JSON.parse(payload.toString('utf8'))
  } catch {
    return 'body is not JSON'
  }
  const exact = headers?.[TIME_HEADER]
  const time = typeof exact === 'number' ? exact : typeof timestamp === 'number' ? timestamp * 1000 : Date.now()
  const message: BusMessage = { id: messageId, topic, time, payload }
  // The W3C Trace Context headers, as other AMQP producers and consumers carry them.
  const trace = traceContext(headers?.traceparent, headers?.tracestate)
  if (trace !== undefined) message.trace = trace
  return message
}

/** The offset RabbitMQ stamps on a delivery from a stream (`x-stream-offset`), or undefined for a delivery from any other queue. */
export function streamOffset (delivery: ConsumeMessage): number | undefined {
  const offset = (delivery.properties.headers as Record<string, unknown> | undefined)?.['x-stream-offset']
  return typeof offset === 'number' && Number.isSafeInteger(offset) && offset >= 0 ? offset : undefined
}
