import { randomUUID } from 'node:crypto'
import { BadEventIdError, BadTopicError, NotSerializableError, PayloadTooLargeError, TooDeepError } from './errors.js'
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

/** What an event may weigh: checked at `publish`, and again on what arrives from the broker. */
export interface EventLimits {
  maxEventBytes: number
  maxEventDepth: number
}

export const defaultEventLimits: Readonly<EventLimits> = { maxEventBytes: 200 * 1024, maxEventDepth: 64 }

// `{"op":"event","seq":4294967295,"topic":"","id":"","data":}` plus the quotes
// JSON may add: what an event frame holds besides its topic, id and data.
const FRAME_OVERHEAD = 64

/** Validates and encodes an event once, into the message every bus carries. */
export function toBusMessage (topic: string, data: unknown, options: PublishOptions | undefined, limits: EventLimits): BusMessage {
  const problem = topicProblem(topic)
  if (problem !== undefined) throw new BadTopicError(topic, problem)
  const id = options?.id ?? randomUUID()
  if (!isEventId(id)) throw new BadEventIdError()
  let json: string | undefined
  try {
    json = JSON.stringify(data)
  } catch (err) {
    throw new NotSerializableError((err as Error).message)
  }
  if (json === undefined) throw new NotSerializableError(`${typeof data} has no JSON form`)
  const payload = Buffer.from(json)
  const size = eventBytes(topic, id, payload)
  if (size > limits.maxEventBytes) throw new PayloadTooLargeError(size, limits.maxEventBytes)
  // Checked on the JSON rather than on `data`, so that what toJSON methods return counts too.
  if (nestedDeeperThan(payload, limits.maxEventDepth)) throw new TooDeepError(limits.maxEventDepth)
  return { id, topic, time: Date.now(), payload }
}

// With the `u` flag a surrogate pair is one code point: this matches lone halves only.
const LONE_SURROGATE = /[\ud800-\udfff]/u
// The id travels as the AMQP messageId, a shortstr.
const MAX_ID_BYTES = 255

/**
 * 128 UTF-16 units of `€` are 384 bytes, past what AMQP can carry (the
 * publish failed as BROKER_UNAVAILABLE), and a lone surrogate reaches
 * subscribers as U+FFFD, another id than the one `publish` returned.
 */
export function isEventId (id: unknown): id is string {
  return typeof id === 'string' && id.length > 0 && id.length <= 128 &&
    Buffer.byteLength(id) <= MAX_ID_BYTES && !LONE_SURROGATE.test(id)
}

/** The size `maxEventBytes` bounds: about the bytes of the event's JSON frame. */
export function eventBytes (topic: string, id: string, payload: Buffer): number {
  return payload.length + Buffer.byteLength(topic) + Buffer.byteLength(id) + FRAME_OVERHEAD
}

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_ARRAY = 0x5b
const CLOSE_ARRAY = 0x5d
const OPEN_OBJECT = 0x7b
const CLOSE_OBJECT = 0x7d

/**
 * Whether the JSON in `json` nests arrays and objects more than `max` deep.
 * One pass over the bytes, no recursion and no parse: the MessagePack encoder
 * recurses per level, so its limit has to be enforced before it runs. The
 * input is assumed to be JSON; on anything else the answer is meaningless
 * (the broker path parses it as well).
 */
export function nestedDeeperThan (json: Buffer, max: number): boolean {
  // Each level takes an opening and a closing byte.
  if (json.length <= 2 * max) return false
  let depth = 0
  const end = json.length
  for (let at = 0; at < end; at++) {
    const byte = json[at]
    if (byte === QUOTE) {
      at = closingQuote(json, at)
      if (at < 0) return false
    } else if (byte === OPEN_ARRAY || byte === OPEN_OBJECT) {
      if (++depth > max) return true
    } else if (byte === CLOSE_ARRAY || byte === CLOSE_OBJECT) {
      depth--
    }
  }
  return false
}

// Strings are most of a typical event's bytes: indexOf skips them natively.
function closingQuote (json: Buffer, opening: number): number {
  let at = json.indexOf(QUOTE, opening + 1)
  while (at > 0) {
    let backslashes = 0
    while (json[at - 1 - backslashes] === BACKSLASH) backslashes++
    if (backslashes % 2 === 0) return at
    at = json.indexOf(QUOTE, at + 1)
  }
  return -1
}
