import { Packr, Unpackr } from 'msgpackr'
import { subprotocols, type Format } from './client/protocol.js'
import type { BusMessage } from './bus/types.js'

// The two wire formats of docs/protocol.md section 2. An event's body (topic, id,
// data) is encoded once per format, the first time a connection of that
// format takes it; each connection then only writes the small envelope in
// front of it (`op` and its own `seq`). WebSocket framing is lib/framers.ts's.

export type { Format }

/** Format by subprotocol name; the names are the client's, so both sides read them from one place. */
export const formatsBySubprotocol: ReadonlyMap<string, Format> = new Map(
  Object.entries(subprotocols).map(([format, name]) => [name, format as Format])
)

// Plain maps on both sides: records are a msgpackr extension other decoders lack.
const packr = new Packr({ useRecords: false, variableMapSize: true })
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' })

const JSON_HEAD = Buffer.from('{"op":"event","seq":')
// fixmap of 5 entries, "op": "event", "seq": (the uint follows)
const MSGPACK_HEAD = Buffer.from([0x85, 0xa2, 0x6f, 0x70, 0xa5, 0x65, 0x76, 0x65, 0x6e, 0x74, 0xa3, 0x73, 0x65, 0x71])
// The same with 6 entries, for events that carry `pos`.
const MSGPACK_HEAD_WITH_POS = Buffer.from([0x86, ...MSGPACK_HEAD.subarray(1)])

/** Told, once per event and format, that the event has no frame in that format. */
export type EncodeFailed = (event: OutboundEvent, format: Format, error: unknown) => void

/** One outbound event, shared by every connection it goes to. */
export class OutboundEvent {
  readonly topic: string
  readonly id: string
  /** Bytes of the data as JSON, used to bound pending queues. */
  readonly size: number
  /** The event's place in the history (history on), else -1. */
  readonly offset: number
  /** The client-facing form of `offset` (history on). */
  readonly pos: string | undefined
  readonly #message: BusMessage
  readonly #encodeFailed: EncodeFailed | undefined
  readonly #encoded: ((bytes: number) => void) | undefined
  // undefined: not encoded yet; null: encoding failed.
  #jsonBody: Buffer | null | undefined
  #msgpackBody: Buffer | null | undefined

  /** `encoded` is told the bytes of each frame body encoded (the RabbitMQ history's recent events count them: lib/bus/retained-event.ts). */
  constructor (message: BusMessage, encodeFailed?: EncodeFailed, pos?: string, encoded?: (bytes: number) => void) {
    this.#message = message
    this.#encodeFailed = encodeFailed
    this.#encoded = encoded
    this.topic = message.topic
    this.id = message.id
    this.size = message.payload.length
    this.offset = message.offset ?? -1
    this.pos = pos
  }

  /**
   * Whether the event has a frame in `format`, encoding its body the first
   * time. Asked before a connection takes the event, so that a failure drops
   * the event for that format before it gets a `seq`, rather than throwing
   * later in the flush where it would stop every socket's writes.
   */
  encodes (format: Format): boolean {
    if (format === 'json') {
      if (this.#jsonBody === undefined) this.#jsonBody = this.#encode(format, () => this.#encodeJson())
      return this.#jsonBody !== null
    }
    if (this.#msgpackBody === undefined) this.#msgpackBody = this.#encode(format, () => this.#encodeMsgpack())
    return this.#msgpackBody !== null
  }

  /** Bytes of this event's message with `seq` (the WebSocket header is the framer's). */
  payloadLength (format: Format, seq: number): number {
    return this.#envelopeLength(format, seq) + this.#body(format).length
  }

  /** Writes the message with `seq` into `target` at `at`; returns the offset after it. */
  writePayload (target: Buffer, at: number, format: Format, seq: number): number {
    if (format === 'json') {
      at += JSON_HEAD.copy(target, at)
      at = writeDecimal(target, at, seq)
    } else {
      at += this.#msgpackHead.copy(target, at)
      at = writeMsgpackUint(target, at, seq)
    }
    return at + this.#body(format).copy(target, at)
  }

  /** The message with `seq` on its own. */
  payload (format: Format, seq: number): Buffer {
    const payload = Buffer.allocUnsafe(this.payloadLength(format, seq))
    this.writePayload(payload, 0, format, seq)
    return payload
  }

  #envelopeLength (format: Format, seq: number): number {
    return format === 'json' ? JSON_HEAD.length + decimalDigits(seq) : this.#msgpackHead.length + msgpackUintLength(seq)
  }

  get #msgpackHead (): Buffer {
    return this.pos === undefined ? MSGPACK_HEAD : MSGPACK_HEAD_WITH_POS
  }

  #body (format: Format): Buffer {
    if (!this.encodes(format)) throw new Error(`event ${this.id} has no ${format} frame`)
    return (format === 'json' ? this.#jsonBody : this.#msgpackBody) as Buffer
  }

  #encode (format: Format, encode: () => Buffer): Buffer | null {
    let body: Buffer
    try {
      body = encode()
    } catch (error) {
      this.#encodeFailed?.(this, format, error)
      return null
    }
    this.#encoded?.(body.length)
    return body
  }

  // The payload is spliced in as bytes, never re-parsed: it is JSON because
  // `publish` made it so, or the broker consumer checked it (amqp-message.ts).
  #encodeJson (): Buffer {
    return Buffer.concat([
      Buffer.from(`,"topic":${JSON.stringify(this.topic)},"id":${JSON.stringify(this.id)},${this.pos === undefined ? '' : `"pos":${JSON.stringify(this.pos)},`}"data":`),
      this.#message.payload,
      CLOSE_BRACE
    ])
  }

  // A map's entries are concatenated key/value encodings after its header, so
  // the body is a packed {topic, id, (pos,) data} without its one-byte fixmap header.
  // msgpackr recurses per level of the data: maxEventDepth keeps it far from
  // the stack's end, and #encode catches what gets through anyway.
  #encodeMsgpack (): Buffer {
    const data = JSON.parse(this.#message.payload.toString('utf8')) as unknown
    const body = this.pos === undefined ? { topic: this.topic, id: this.id, data } : { topic: this.topic, id: this.id, pos: this.pos, data }
    return packr.pack(body).subarray(1)
  }
}

const CLOSE_BRACE = Buffer.from('}')

function decimalDigits (value: number): number {
  let digits = 1
  while (value >= 10) {
    value = Math.floor(value / 10)
    digits++
  }
  return digits
}

// Digits written in place: no string per frame.
function writeDecimal (target: Buffer, at: number, value: number): number {
  const end = at + decimalDigits(value)
  for (let i = end - 1; i >= at; i--) {
    target[i] = 0x30 + (value % 10)
    value = Math.floor(value / 10)
  }
  return end
}

function msgpackUintLength (value: number): number {
  return value < 0x80 ? 1 : value < 0x10000 ? 3 : value < 0x100000000 ? 5 : 9
}

function writeMsgpackUint (target: Buffer, at: number, value: number): number {
  if (value < 0x80) {
    target[at] = value
    return at + 1
  }
  if (value < 0x10000) {
    target[at] = 0xcd
    target.writeUInt16BE(value, at + 1)
    return at + 3
  }
  if (value < 0x100000000) {
    target[at] = 0xce
    target.writeUInt32BE(value, at + 1)
    return at + 5
  }
  target[at] = 0xcf
  target.writeBigUInt64BE(BigInt(value), at + 1)
  return at + 9
}

/** A control message (hello, ok, error, expiring), encoded; the framer adds the WebSocket header. */
export function controlMessage (format: Format, message: Record<string, unknown>): Buffer {
  return format === 'json' ? Buffer.from(JSON.stringify(message)) : packr.pack(message)
}

/** Decodes one inbound frame; throws on anything that is not a well-formed frame of the connection's format. */
export function decodeMessage (format: Format, data: Buffer, isBinary: boolean): unknown {
  if (format === 'json') {
    if (isBinary) throw new TypeError('binary frame on a JSON connection')
    return JSON.parse(data.toString('utf8'))
  }
  if (!isBinary) throw new TypeError('text frame on a MessagePack connection')
  return unpackr.unpack(data)
}
