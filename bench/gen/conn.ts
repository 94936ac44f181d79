// One load-generator socket: a raw TCP client that does the WebSocket
// handshake itself and then only walks frame headers, so counting a frame
// costs a few operations and the generator does not become the bottleneck it
// would be with a full WebSocket client parsing every message. Payloads are
// looked at only during the handshake and, in latency runs, for the timestamp.
import { connect, type Socket } from 'node:net'
import type { RecordableHistogram } from 'node:perf_hooks'
import { OP_CLOSE, OP_PING, clientFrame, readHeader, textFrame, timestampOf } from '../lib/frames.js'
import { nowNs } from '../lib/payload.js'

export type Proto = 'ws' | 'sio' | 'evsock'

export interface ConnSpec {
  port: number
  proto: Proto
  /** JWT (sio and evsock). */
  token?: string
  /** Subscription topic (evsock) or room (sio); none for a connection that only handshakes. */
  topic?: string
  /** Offer permessage-deflate. */
  compression?: boolean
  /** evsock only: send a cumulative ack once this many events are unacknowledged (0: never). */
  ackEvery?: number
}

/** What each protocol does between the upgrade and the first event. */
interface Opening {
  path: string
  headers: string
  /** Sent on the first frame from the server. */
  reply?: string
  /** Frames before the events: the connection is ready after them. */
  frames: number
  /** The last of those frames must start with this, or the connection failed. */
  expect?: string
}

function opening (spec: ConnSpec): Opening {
  switch (spec.proto) {
    case 'ws':
      return { path: '/', headers: '', frames: 0 }
    case 'sio':
      // Engine.IO open packet, then our namespace connect with the auth payload, answered by "40{sid}".
      return {
        path: '/socket.io/?EIO=4&transport=websocket',
        headers: '',
        reply: '40' + JSON.stringify({ token: spec.token, room: spec.topic }),
        frames: 2,
        expect: '40'
      }
    case 'evsock':
      // hello, then the answer to our sub.
      return {
        path: '/events',
        headers: `Authorization: Bearer ${spec.token ?? ''}\r\n`,
        ...(spec.topic === undefined
          ? { frames: 1, expect: '{"op":"hello"' }
          : { reply: JSON.stringify({ op: 'sub', id: 1, topic: spec.topic }), frames: 2, expect: '{"op":"ok"' })
      }
  }
}

const HEADERS_END = Buffer.from('\r\n\r\n')
const EVENT_START = Buffer.from('{"op":"event"')

interface Waiter<T> {
  resolve: (value: T) => void
  reject: (err: Error) => void
}

export class Conn {
  /** Events received (frames after the opening ones); for evsock also the last `seq`. */
  events = 0
  /** Close code the server sent, if it closed. */
  closeCode: number | undefined
  private readonly socket: Socket
  private readonly opening: Opening
  private readonly ackEvery: number
  private acked = 0
  private frames = 0
  private upgraded = false
  /** Bytes of a frame that did not fit in the last chunk, when its payload is needed. */
  private partial: Buffer | undefined
  /** Payload bytes still to skip of a frame counted already. */
  private skip = 0
  private settle: ((err?: Error) => void) | undefined
  /** Set to record each event's one-way latency, in microseconds. */
  latency: RecordableHistogram | undefined
  /** The answer to a `sub` sent after the opening, awaited. */
  private answer: Waiter<string> | undefined
  /** Resolved once `events` reaches `target`. */
  private target = Infinity
  private reaching: Waiter<void> | undefined

  constructor (private readonly spec: ConnSpec) {
    this.opening = opening(spec)
    // Only the plugin's protocol has acks; the other servers would take one for a bad frame.
    this.ackEvery = spec.proto === 'evsock' ? spec.ackEvery ?? 0 : 0
    this.socket = connect({ port: spec.port, host: '127.0.0.1', noDelay: true })
  }

  /** Resolves when the connection is ready for events. */
  open (): Promise<void> {
    const { path, headers } = this.opening
    const extensions = this.spec.compression === true ? 'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n' : ''
    this.socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${this.spec.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extensions}${headers}\r\n`)
    this.socket.on('data', (chunk: Buffer) => this.upgraded ? this.onData(chunk) : this.onResponse(chunk))
    this.socket.on('close', () => {
      this.settle?.(new Error('closed during the opening'))
      this.answer?.reject(new Error(`closed before the answer to sub (${this.closeCode ?? 'no close frame'})`))
      this.reaching?.reject(new Error(`closed after ${this.events} events (${this.closeCode ?? 'no close frame'})`))
    })
    return new Promise((resolve, reject) => {
      this.settle = (err) => {
        this.settle = undefined
        if (err === undefined) resolve()
        else reject(err)
      }
      this.socket.on('error', (err) => this.settle?.(err))
    })
  }

  /**
   * evsock, opened without a topic: sends `sub` (with `since`, a resume) and
   * resolves with the text of the answer, `ok` or `error`.
   */
  subscribe (topic: string, since?: string): Promise<string> {
    return new Promise((resolve, reject) => {
      this.answer = { resolve, reject }
      this.socket.write(textFrame(JSON.stringify({ op: 'sub', id: 1, topic, ...(since === undefined ? {} : { since }) })))
    })
  }

  /** Resolves once the connection has received `count` events; rejects if it closes first. */
  reached (count: number): Promise<void> {
    if (this.events >= count) return Promise.resolve()
    this.target = count
    return new Promise((resolve, reject) => { this.reaching = { resolve, reject } })
  }

  /** Stops reading: the server's writes pile up in the kernel and then in the server (a slow consumer). */
  pause (): void { this.socket.pause() }

  /** Gone at once, with a reset, so that thousands of short-lived connections leave no TIME_WAIT behind. */
  destroy (): void { this.socket.resetAndDestroy() }

  get closed (): boolean { return this.socket.destroyed || this.closeCode !== undefined }

  private onResponse (chunk: Buffer): void {
    // The 101 arrives in one chunk in practice; the first frames may ride along.
    const end = chunk.indexOf(HEADERS_END)
    const status = chunk.toString('latin1', 9, 12)
    if (end < 0 || status !== '101') {
      this.settle?.(new Error(`handshake refused: ${chunk.toString('latin1', 0, 200).split('\r\n')[0] ?? ''}`))
      this.socket.destroy()
      return
    }
    this.upgraded = true
    if (this.opening.frames === 0) this.settle?.()
    if (end + 4 < chunk.length) this.onData(chunk.subarray(end + 4))
  }

  private onData (chunk: Buffer): void {
    let buffer = chunk
    let offset = 0
    if (this.skip > 0) {
      offset = Math.min(this.skip, chunk.length)
      this.skip -= offset
    }
    if (this.partial !== undefined) {
      buffer = Buffer.concat([this.partial, chunk.subarray(offset)])
      offset = 0
      this.partial = undefined
    }
    const now = this.latency === undefined ? 0 : nowNs()
    while (offset < buffer.length) {
      const header = readHeader(buffer, offset)
      if (header === undefined) break
      const needPayload = header.opcode >= OP_CLOSE || this.frames < this.opening.frames || this.latency !== undefined || this.answer !== undefined
      if (header.end > buffer.length) {
        if (needPayload) break
        this.skip = header.end - buffer.length
        this.onFrame(header.opcode, header.compressed, undefined, now)
        offset = buffer.length
        break
      }
      this.onFrame(header.opcode, header.compressed, needPayload ? buffer.subarray(header.start, header.end) : undefined, now)
      offset = header.end
    }
    if (offset < buffer.length) this.partial = buffer.subarray(offset)
    if (this.ackEvery > 0 && this.events - this.acked >= this.ackEvery) {
      this.acked = this.events
      this.socket.write(textFrame(`{"op":"ack","seq":${this.events}}`))
    }
  }

  private onFrame (opcode: number, compressed: boolean, payload: Buffer | undefined, now: number): void {
    if (opcode === OP_PING) {
      this.socket.write(clientFrame(0xa, payload ?? Buffer.alloc(0)))
      return
    }
    if (opcode === OP_CLOSE) {
      this.closeCode = payload !== undefined && payload.length >= 2 ? payload.readUInt16BE(0) : 1005
      this.settle?.(new Error(`closed by the server during the opening: ${this.closeCode}`))
      this.socket.end()
      return
    }
    if (opcode > OP_CLOSE) return
    if (this.frames < this.opening.frames) {
      this.onOpeningFrame(payload ?? Buffer.alloc(0), compressed)
      return
    }
    if (this.answer !== undefined && payload !== undefined && !payload.subarray(0, EVENT_START.length).equals(EVENT_START)) {
      const answer = this.answer
      this.answer = undefined
      answer.resolve(payload.toString())
      return
    }
    this.events++
    if (this.events === this.target) this.reaching?.resolve()
    if (this.latency !== undefined && payload !== undefined) {
      const t = timestampOf(payload)
      if (t > 0) this.latency.record(Math.max(1, Math.round((now - t) / 1000)))
    }
  }

  /** A compressed opening frame is taken as it comes: the generator does not inflate. */
  private onOpeningFrame (payload: Buffer, compressed: boolean): void {
    this.frames++
    const { reply, frames, expect } = this.opening
    if (this.frames === 1 && reply !== undefined) this.socket.write(textFrame(reply))
    if (this.frames < frames) return
    const text = payload.toString()
    if (expect !== undefined && !compressed && !text.startsWith(expect)) this.settle?.(new Error(`unexpected opening frame: ${text}`))
    else this.settle?.()
  }
}
