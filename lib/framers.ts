import type { WebSocket } from 'ws'
import { OutboundEvent, type Format } from './codec.js'
import { headerLength, writeHeader } from './ws-frame.js'

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

export function framerFor (socket: WebSocket, format: Format): Framer {
  const tcp = socket.extensions === '' ? tcpOf(socket) : undefined
  return tcp === undefined ? new SendFramer(socket, format) : new DirectFramer(tcp, format)
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

  constructor (tcp: TcpSocket, format: Format) {
    this.#tcp = tcp
    this.#format = format
    this.#binary = format === 'msgpack'
  }

  write (entries: readonly OutboxEntry[], first: number): number {
    const format = this.#format
    let length = 0
    let seq = first
    for (const entry of entries) {
      length += entry instanceof OutboundEvent ? entry.frameLength(format, seq++) : headerLength(entry.length) + entry.length
    }
    const batch = Buffer.allocUnsafe(length)
    let at = 0
    seq = first
    for (const entry of entries) {
      if (entry instanceof OutboundEvent) {
        at = entry.writeFrame(batch, at, format, seq++)
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
