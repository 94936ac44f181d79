import type { WebSocket } from 'ws'
import { OutboundEvent, type Format } from './codec.js'

// How the frames of one turn reach the socket, chosen once per socket.
// Without per-message compression they are framed here and written to the TCP
// socket in one buffer; with it, ws must frame (and deflate) each payload, so
// it is given the payloads and nothing is framed here.

/** An event, or a control message already encoded (no WebSocket header). */
export type OutboxEntry = OutboundEvent | Buffer

export interface Framer {
  /** Writes `entries`, the events among them numbered from `seq`; returns how many events were written. */
  write (entries: readonly OutboxEntry[], seq: number): number
}

/**
 * Whole frames of this turn's events, shared by the sockets they go to. Sockets
 * that subscribed together number their events alike, so in a fan-out of one
 * event most of them get the same frame, down to its `seq`: it is built once
 * and the same buffer is written to each, as a bare `ws` server writes one
 * pre-framed buffer. Kept for one turn (FlushQueue clears it), so that it
 * never outlives the writes it serves.
 */
export class SharedFrames {
  readonly #frames = new Map<OutboundEvent, { format: Format, seq: number, frame: Buffer }>()

  /** `event`'s frame with `seq` in `format`: the one built for an earlier socket of this turn, or a new one (then kept in its place). */
  frame (event: OutboundEvent, format: Format, seq: number): Buffer {
    const kept = this.#frames.get(event)
    if (kept !== undefined && kept.seq === seq && kept.format === format) return kept.frame
    const payloadLength = event.payloadLength(format, seq)
    const frame = Buffer.allocUnsafe(headerLength(payloadLength) + payloadLength)
    writeEventFrame(frame, 0, event, format, seq)
    this.#frames.set(event, { format, seq, frame })
    return frame
  }

  clear (): void {
    this.#frames.clear()
  }
}

export function framerFor (socket: WebSocket, format: Format, shared: SharedFrames): Framer {
  const tcp = socket.extensions === '' ? tcpOf(socket) : undefined
  return tcp === undefined ? new SendFramer(socket, format) : new DirectFramer(tcp, format, shared)
}

interface TcpSocket {
  write (chunk: Buffer): boolean
}

// ws keeps its net.Socket private; writing whole frames to it saves ws
// framing each payload a second time. Absent (a future ws), ws.send is used.
function tcpOf (socket: WebSocket): TcpSocket | undefined {
  const tcp = (socket as unknown as { _socket?: Partial<TcpSocket> })._socket
  return typeof tcp?.write === 'function' ? tcp as TcpSocket : undefined
}

/** One buffer and one write per turn: a write per frame costs more than building the frames. */
class DirectFramer implements Framer {
  readonly #tcp: TcpSocket
  readonly #format: Format
  readonly #binary: boolean
  readonly #shared: SharedFrames

  constructor (tcp: TcpSocket, format: Format, shared: SharedFrames) {
    this.#tcp = tcp
    this.#format = format
    this.#binary = format === 'msgpack'
    this.#shared = shared
  }

  write (entries: readonly OutboxEntry[], first: number): number {
    const format = this.#format
    // One event this turn, the common case: its frame may be another socket's already.
    const only = entries.length === 1 ? entries[0] : undefined
    if (only instanceof OutboundEvent) {
      this.#tcp.write(this.#shared.frame(only, format, first))
      return 1
    }
    let length = 0
    let seq = first
    for (const entry of entries) {
      const payloadLength = entry instanceof OutboundEvent ? entry.payloadLength(format, seq++) : entry.length
      length += headerLength(payloadLength) + payloadLength
    }
    const batch = Buffer.allocUnsafe(length)
    let at = 0
    seq = first
    for (const entry of entries) {
      if (entry instanceof OutboundEvent) {
        at = writeEventFrame(batch, at, entry, format, seq++)
      } else {
        at = writeHeader(batch, at, this.#binary, entry.length)
        at += entry.copy(batch, at)
      }
    }
    // Without compression ws's sender never queues, so this write stays in
    // order with the pings and the close frame ws writes itself.
    this.#tcp.write(batch)
    return seq - first
  }
}

class SendFramer implements Framer {
  readonly #socket: WebSocket
  readonly #format: Format
  readonly #options: { binary: boolean }

  constructor (socket: WebSocket, format: Format) {
    this.#socket = socket
    this.#format = format
    this.#options = { binary: format === 'msgpack' }
  }

  write (entries: readonly OutboxEntry[], first: number): number {
    let seq = first
    for (const entry of entries) {
      this.#socket.send(entry instanceof OutboundEvent ? entry.payload(this.#format, seq++) : entry, this.#options)
    }
    return seq - first
  }
}

/** Writes `event`'s whole frame with `seq` into `target` at `at`; returns the offset after it. */
export function writeEventFrame (target: Buffer, at: number, event: OutboundEvent, format: Format, seq: number): number {
  at = writeHeader(target, at, format === 'msgpack', event.payloadLength(format, seq))
  return event.writePayload(target, at, format, seq)
}

// WebSocket framing (RFC 6455 section 5.2) for frames this server sends:
// final, unmasked, text or binary.

const FIN_TEXT = 0x81
const FIN_BINARY = 0x82

/** Bytes of the header in front of a payload of `payloadLength` bytes. */
function headerLength (payloadLength: number): number {
  return payloadLength < 126 ? 2 : payloadLength < 0x10000 ? 4 : 10
}

/** Writes a header at `at` of `target`; returns where the payload starts. */
function writeHeader (target: Buffer, at: number, binary: boolean, payloadLength: number): number {
  target[at] = binary ? FIN_BINARY : FIN_TEXT
  if (payloadLength < 126) {
    target[at + 1] = payloadLength
    return at + 2
  }
  if (payloadLength < 0x10000) {
    target[at + 1] = 126
    target.writeUInt16BE(payloadLength, at + 2)
    return at + 4
  }
  target[at + 1] = 127
  target.writeUInt32BE(Math.floor(payloadLength / 0x100000000), at + 2)
  target.writeUInt32BE(payloadLength >>> 0, at + 6)
  return at + 10
}
