import { randomUUID } from 'node:crypto'
import { BadEventIdError, BadTopicError, NotSerializableError, PayloadTooLargeError } from './errors.js'
import { topicProblem } from './topics.js'
import type { BusMessage } from './bus/types.js'

export interface PublishOptions {
  /** The event's id; default a random UUID. Give one to make retries recognisable to subscribers. */
  id?: string
}

export interface PublishResult {
  id: string
}

export type Publish = (topic: string, data: unknown, options?: PublishOptions) => Promise<PublishResult>

// `{"op":"event","seq":4294967295,"topic":"","id":"","data":}` plus the quotes
// JSON may add: what an event frame holds besides its topic, id and data.
const FRAME_OVERHEAD = 64

/** Validates and encodes an event once, into the message every bus carries. */
export function toBusMessage (topic: string, data: unknown, options: PublishOptions | undefined, maxEventBytes: number): BusMessage {
  const problem = topicProblem(topic)
  if (problem !== undefined) throw new BadTopicError(topic, problem)
  const id = options?.id ?? randomUUID()
  if (typeof id !== 'string' || id.length === 0 || id.length > 128) throw new BadEventIdError()
  let json: string | undefined
  try {
    json = JSON.stringify(data)
  } catch (err) {
    throw new NotSerializableError((err as Error).message)
  }
  if (json === undefined) throw new NotSerializableError(`${typeof data} has no JSON form`)
  const payload = Buffer.from(json)
  const size = payload.length + Buffer.byteLength(topic) + Buffer.byteLength(id) + FRAME_OVERHEAD
  if (size > maxEventBytes) throw new PayloadTooLargeError(size, maxEventBytes)
  return { id, topic, time: Date.now(), payload }
}
