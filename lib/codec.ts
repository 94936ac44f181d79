import { Packr, Unpackr } from 'msgpackr'
import { frame as wsFrame, headerLength, writeHeader } from './ws-frame.js'
import type { BusMessage } from './bus/types.js'

// The two wire formats of PROTOCOL.md section 2. An event's body (topic, id,
// data, pos) is encoded once per format, lazily, the first time a connection
// of that format receives it; each connection then only writes the small
// envelope in front of it (`op` and its own `seq`).

export type Format = 'json' | 'msgpack'

export const subprotocols: Readonly<Record<string, Format>> = {
  'evsock.v1.json': 'json',
  'evsock.v1.msgpack': 'msgpack'
}

export const BEARER_PREFIX = 'bearer.'

// Plain maps on both sides: records are a msgpackr extension other decoders lack.
const packr = new Packr({ useRecords: false, variableMapSize: true })
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' })

/** One outbound event, shared by every connection it goes to. */
export class OutboundEvent {
  readonly topic: string
  readonly id: string
  /** Bytes of the data as JSON, used to bound pending queues. */
  readonly size: number
  readonly #message: BusMessage
  #jsonBody: Buffer | undefined
  #msgpackBody: Buffer | undefined

  constructor (message: BusMessage) {
    this.#message = message
    this.topic = message.topic
    this.id = message.id
    this.size = message.payload.length
  }

  /**
   * The whole WebSocket frame for one connection: header, a fresh envelope
   * with its `seq`, then the shared body, built in one allocation.
   */
  frame (format: Format, seq: number): Buffer {
    return format === 'json' ? this.#jsonFrame(seq) : this.#msgpackFrame(seq)
  }

  #jsonFrame (seq: number): Buffer {
    // The payload already is JSON, so it is spliced in as bytes, never re-parsed.
    this.#jsonBody ??= Buffer.concat([
      Buffer.from(`,"topic":${JSON.stringify(this.topic)},"id":${JSON.stringify(this.id)},"data":`),
      this.#message.payload,
      CLOSE_BRACE
    ])
    const head = `{"op":"event","seq":${seq}`
    const payloadLength = head.length + this.#jsonBody.length
    const frame = Buffer.allocUnsafe(headerLength(payloadLength) + payloadLength)
    const at = writeHeader(frame, false, payloadLength)
    frame.write(head, at, 'latin1')
    this.#jsonBody.copy(frame, at + head.length)
    return frame
  }

  #msgpackFrame (seq: number): Buffer {
    // A map's entries are concatenated key/value encodings after its header, so
    // the body is a packed {topic, id, data} without its one-byte fixmap header.
    this.#msgpackBody ??= packr.pack({
      topic: this.topic,
      id: this.id,
      data: JSON.parse(this.#message.payload.toString('utf8')) as unknown
    }).subarray(1)
    const seqLength = msgpackUintLength(seq)
    const payloadLength = MSGPACK_HEAD.length + seqLength + this.#msgpackBody.length
    const frame = Buffer.allocUnsafe(headerLength(payloadLength) + payloadLength)
    const at = writeHeader(frame, true, payloadLength)
    MSGPACK_HEAD.copy(frame, at)
    writeMsgpackUint(frame, at + MSGPACK_HEAD.length, seq)
    this.#msgpackBody.copy(frame, at + MSGPACK_HEAD.length + seqLength)
    return frame
  }
}

const CLOSE_BRACE = Buffer.from('}')
// fixmap of 5 entries, "op": "event", "seq": (the uint follows)
const MSGPACK_HEAD = Buffer.from([0x85, 0xa2, 0x6f, 0x70, 0xa5, 0x65, 0x76, 0x65, 0x6e, 0x74, 0xa3, 0x73, 0x65, 0x71])

function msgpackUintLength (value: number): number {
  return value < 0x80 ? 1 : value < 0x10000 ? 3 : value < 0x100000000 ? 5 : 9
}

function writeMsgpackUint (target: Buffer, at: number, value: number): void {
  if (value < 0x80) {
    target[at] = value
  } else if (value < 0x10000) {
    target[at] = 0xcd
    target.writeUInt16BE(value, at + 1)
  } else if (value < 0x100000000) {
    target[at] = 0xce
    target.writeUInt32BE(value, at + 1)
  } else {
    target[at] = 0xcf
    target.writeBigUInt64BE(BigInt(value), at + 1)
  }
}

/** A control message (hello, ok, error, expiring) as a whole WebSocket frame. */
export function controlFrame (format: Format, message: Record<string, unknown>): Buffer {
  return format === 'json'
    ? wsFrame(Buffer.from(JSON.stringify(message)), false)
    : wsFrame(packr.pack(message), true)
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
