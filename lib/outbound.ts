import { WebSocket } from 'ws'
import { controlMessage, type Format, type OutboundEvent } from './codec.js'
import { framerFor, type Framer, type OutboxEntry } from './framers.js'
import { PendingQueue } from './pending-queue.js'
import type { FlushQueue } from './flush-queue.js'
import type { ResolvedOptions } from './options.js'

// What one socket is sent (docs/protocol.md section 3): events numbered by
// `seq` within the ack window, the queue behind a full window, and the outbox
// of this turn of the event loop, written through the socket's framer.

export type StreamLimits = Pick<ResolvedOptions, 'window' | 'maxPendingEvents' | 'maxPendingBytes' | 'maxBufferedBytes'> & Partial<Pick<ResolvedOptions, 'history'>>

/** What stops a stream: a peer that cannot keep up, or a write that threw. */
export type StreamFault = { slow: string } | { failed: unknown }

/**
 * Who is told of a fault: the connection itself, not a closure over it, which
 * would cost every connection a function and a context.
 */
export interface StreamOwner {
  faulted (fault: StreamFault): void
}

/** Shared by every stream of an instance. */
export interface StreamHost {
  readonly flushes: FlushQueue
  /** Event frames were written (for stats). */
  sent (count: number): void
  /** A stream is being closed as a slow consumer, `discarded` events waiting behind its window (for stats). */
  slowConsumer (discarded: number): void
  /** The window filled: an event waits behind it (for metrics). */
  stalled? (): void
}

/** Whether an ack moved the window, was old news, or names a seq never sent. */
export type AckResult = 'moved' | 'stale' | 'unsent'

export class OutboundStream {
  readonly #socket: WebSocket
  readonly #format: Format
  readonly #limits: StreamLimits
  readonly #host: StreamHost
  readonly #owner: StreamOwner
  readonly #framer: Framer
  /** Last `seq` written, and last `seq` the client acknowledged. */
  #sent = 0
  #acked = 0
  /** Events behind a full window; created when the window first fills. */
  #pending: PendingQueue | undefined
  /** Entries of this turn, in order; the events among them carry seqs from `#outboxSeq` on. */
  #outbox: OutboxEntry[] | undefined
  #outboxSeq = 0
  #stopped = false
  /** History on: the offset of each event in the window, by seq modulo the window, for `ackedOffset`. */
  readonly #offsets: Float64Array | undefined
  #ackedOffset = -1
  /** The replay waiting for the window to have room (history on). */
  #roomWaiter: ((open: boolean) => void) | undefined

  constructor (socket: WebSocket, format: Format, limits: StreamLimits, host: StreamHost, owner: StreamOwner) {
    this.#socket = socket
    this.#format = format
    this.#limits = limits
    this.#host = host
    this.#owner = owner
    this.#framer = framerFor(socket, format, host.flushes.frames)
    if (limits.history !== undefined) this.#offsets = new Float64Array(limits.window)
  }

  /** Offset of the last event the client acknowledged (history on), or -1. */
  get ackedOffset (): number {
    return this.#ackedOffset
  }

  /** Nothing waits behind the window: what was pushed has been sent (or is in this turn's outbox). */
  get idle (): boolean {
    return this.#pending === undefined
  }

  /**
   * Resolves true once an event pushed now would be sent at once rather than
   * queued, false if the stream stopped first. One waiter at a time: the
   * connection's replay, which reads the history no faster than the client acks.
   */
  whenRoom (): Promise<boolean> {
    if (this.#stopped) return Promise.resolve(false)
    if (this.hasRoom) return Promise.resolve(true)
    return new Promise((resolve) => { this.#roomWaiter = resolve })
  }

  /** An event pushed now would be sent at once. */
  get hasRoom (): boolean {
    return this.#pending === undefined && this.#sent - this.#acked < this.#limits.window
  }

  /** Events waiting behind the window. */
  get pendingCount (): number {
    return this.#pending?.length ?? 0
  }

  /** Sends `event` now if the window allows, or queues it; a full queue makes this a slow consumer. */
  push (event: OutboundEvent): void {
    if (this.#stopped) return
    if (this.#pending === undefined && this.#sent - this.#acked < this.#limits.window) {
      this.#sendEvent(event)
      return
    }
    if (this.#pending === undefined) this.#host.stalled?.()
    const pending = (this.#pending ??= new PendingQueue())
    pending.push(event)
    if (pending.length > this.#limits.maxPendingEvents || pending.bytes > this.#limits.maxPendingBytes) {
      this.#slow('pending queue overflowed')
    }
  }

  /** A control message, in order with the events. */
  control (message: Record<string, unknown>): void {
    if (this.#stopped) return
    this.#enqueue(controlMessage(this.#format, message), this.#sent + 1)
  }

  ack (seq: number): AckResult {
    if (seq > this.#sent) return 'unsent'
    if (seq <= this.#acked) return 'stale'
    this.#acked = seq
    if (this.#offsets !== undefined) this.#ackedOffset = this.#offsets[seq % this.#limits.window] as number
    this.#drain()
    if (this.#roomWaiter !== undefined && this.hasRoom) this.#wake(true)
    return 'moved'
  }

  get lastSent (): number {
    return this.#sent
  }

  /** Writes this turn's frames; the flush queue calls it at the end of the turn. */
  flush (): void {
    const outbox = this.#outbox
    if (outbox === undefined) return
    this.#outbox = undefined
    // After our close frame nothing may follow; a peer's close made the socket unwritable.
    if (this.#stopped || this.#socket.readyState !== WebSocket.OPEN) return
    this.#host.sent(this.#framer.write(this.#socket, outbox, this.#outboxSeq))
    // The window bounds events, not bytes: a peer that stopped reading at the
    // TCP level would otherwise pile its frames up in our memory.
    if (this.#socket.bufferedAmount > this.#limits.maxBufferedBytes) this.#slow('socket buffer overflowed')
  }

  flushFailed (err: unknown): void {
    this.#owner.faulted({ failed: err })
  }

  /** Nothing more is sent; what waits is dropped. Flush first to keep this turn's frames. */
  stop (): void {
    this.#stopped = true
    this.#pending = undefined
    this.#wake(false)
  }

  #wake (open: boolean): void {
    const waiter = this.#roomWaiter
    this.#roomWaiter = undefined
    waiter?.(open)
  }

  #slow (why: string): void {
    this.#host.slowConsumer(this.pendingCount)
    this.#owner.faulted({ slow: why })
  }

  #sendEvent (event: OutboundEvent): void {
    this.#sent++
    if (this.#offsets !== undefined) this.#offsets[this.#sent % this.#limits.window] = event.offset
    this.#enqueue(event, this.#sent)
  }

  #enqueue (entry: OutboxEntry, seq: number): void {
    if (this.#outbox === undefined) {
      this.#outbox = []
      this.#outboxSeq = seq
      this.#host.flushes.schedule(this)
    }
    this.#outbox.push(entry)
  }

  #drain (): void {
    const pending = this.#pending
    if (pending === undefined) return
    while (pending.length > 0 && this.#sent - this.#acked < this.#limits.window && !this.#stopped) {
      this.#sendEvent(pending.shift()!)
    }
    if (pending.length === 0 && this.#pending === pending) this.#pending = undefined
  }
}
