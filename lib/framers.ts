import type { WebSocket } from 'ws'
import { OutboundEvent, type Format } from './codec.js'

// How the frames of one turn reach the socket, chosen once per socket.
// Without per-message compression they are framed here and written to the TCP
// socket in one buffer; with it, ws must frame (and deflate) each payload, so
// it is given the payloads and nothing is framed here. A framer holds no
// socket: one of each kind and format serves every socket of an instance.

/** An event, or a control message already encoded (no WebSocket header). */
export type OutboxEntry = OutboundEvent | Buffer

export interface Framer {
  /** Writes `entries` to `socket`, the events among them numbered from `seq`; returns how many events were written. */
  write (socket: WebSocket, entries: readonly OutboxEntry[], seq: number): number
}

/**
 * The frames of this turn's events, shared by the sockets they go to. Sockets
 * that subscribed together number their events alike, so in a fan-out most of
 * them are sent the same events with the same seqs: the bytes of the turn are
 * built once and the same buffer is written to each, as a bare `ws` server
 * writes one pre-framed buffer (for several events, one buffer of all their
 * frames, where a buffer per socket cost an allocation and a copy of every
 * byte per socket: past 4 KB, Buffer's pool, an allocation of its own each).
 * Kept for one turn (FlushQueue clears it), so that it never outlives the
 * writes it serves.
 */
export class SharedFrames {
  /**
   * By format, then by the first event of the run they frame; a run that
   * differs from the one kept replaces it. One map per format: with one for
   * both, sockets of the two formats interleaved (as they connect) evicted
   * each other's runs, and every socket built its own.
   */
  readonly #runs: Record<Format, Map<OutboundEvent, { seq: number, events: OutboundEvent[], bytes: Buffer }>> = { json: new Map(), msgpack: new Map() }
  /** The framers of the sockets that take whole frames, one per format, sharing these frames. */
  readonly direct: Record<Format, Framer> = { json: new DirectFramer('json', this), msgpack: new DirectFramer('msgpack', this) }

  /** The frames of `events`, numbered from `seq`, in `format`: the buffer built for an earlier socket of this turn, or a new one (then kept in its place). */
  frames (events: readonly OutboundEvent[], format: Format, seq: number): Buffer {
    const first = events[0] as OutboundEvent
    const runs = this.#runs[format]
    const kept = runs.get(first)
    if (kept !== undefined && kept.seq === seq && sameEvents(kept.events, events)) return kept.bytes
    const bytes = frameAll(events, format, seq)
    runs.set(first, { seq, events: events.slice(), bytes })
    return bytes
  }

  clear (): void {
    this.#runs.json.clear()
    this.#runs.msgpack.clear()
  }
}

function sameEvents (a: readonly OutboundEvent[], b: readonly OutboundEvent[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** How many of `entries` are events (the rest are control messages). */
function eventsIn (entries: readonly OutboxEntry[]): number {
  let events = 0
  for (const entry of entries) if (entry instanceof OutboundEvent) events++
  return events
}

/** The whole frames of `entries` in one buffer, the events among them numbered from `seq`. */
function frameAll (entries: readonly OutboxEntry[], format: Format, seq: number): Buffer {
  let length = 0
  let next = seq
  for (const entry of entries) {
    const payloadLength = entry instanceof OutboundEvent ? entry.payloadLength(format, next++) : entry.length
    length += headerLength(payloadLength) + payloadLength
  }
  const bytes = Buffer.allocUnsafe(length)
  let at = 0
  next = seq
  for (const entry of entries) {
    if (entry instanceof OutboundEvent) {
      at = writeEventFrame(bytes, at, entry, format, next++)
    } else {
      at = writeHeader(bytes, at, format === 'msgpack', entry.length)
      at += entry.copy(bytes, at)
    }
  }
  return bytes
}

export function framerFor (socket: WebSocket, format: Format, shared: SharedFrames): Framer {
  return socket.extensions === '' && tcpOf(socket) !== undefined ? shared.direct[format] : sendFramers[format]
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

/** The TCP socket of a socket that framerFor gave the direct framer: checked there once, not at every write. */
const tcpOfDirect = (socket: WebSocket): TcpSocket => (socket as unknown as { _socket: TcpSocket })._socket

/** One buffer and one write per turn: a write per frame costs more than building the frames. */
class DirectFramer implements Framer {
  readonly #format: Format
  readonly #shared: SharedFrames

  constructor (format: Format, shared: SharedFrames) {
    this.#format = format
    this.#shared = shared
  }

  write (socket: WebSocket, entries: readonly OutboxEntry[], first: number): number {
    const events = eventsIn(entries)
    // Events only, the common case: their frames may be another socket's already.
    const bytes = events === entries.length
      ? this.#shared.frames(entries as readonly OutboundEvent[], this.#format, first)
      : frameAll(entries, this.#format, first)
    // Without compression ws's sender never queues, so this write stays in
    // order with the pings and the close frame ws writes itself.
    tcpOfDirect(socket).write(bytes)
    return events
  }
}

class SendFramer implements Framer {
  readonly #format: Format
  readonly #options: { binary: boolean }

  constructor (format: Format) {
    this.#format = format
    this.#options = { binary: format === 'msgpack' }
  }

  write (socket: WebSocket, entries: readonly OutboxEntry[], first: number): number {
    let seq = first
    for (const entry of entries) {
      socket.send(entry instanceof OutboundEvent ? entry.payload(this.#format, seq++) : entry, this.#options)
    }
    return seq - first
  }
}

const sendFramers: Record<Format, Framer> = { json: new SendFramer('json'), msgpack: new SendFramer('msgpack') }

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
