import type { Channel, ConsumeMessage, RecoveringChannelModel } from 'amqplib'
import { BrokerUnavailableError, ClosedError } from '../errors.js'
import type { EventLimits } from '../publish.js'
import { fromDelivery, streamOffset } from './amqp-message.js'
import { StreamReader } from './amqp-stream-reader.js'
import type { BusMessage, HistoryCursor, SkippedMessage } from './types.js'

// A reader of the history stream from one offset on (BusHistory.read). The
// broker sends at most `prefetch` messages ahead of what the caller took:
// messages are acked as they are handed out (one cumulative ack per
// event-loop turn), so the caller's pace is the read's. What is not a valid
// event (the live path drops it) is handed out as skipped, with its offset.
// Across a reconnect the cursor
// consumes again after the last offset it received.

/** Messages read ahead of the caller at most (on each channel: after a reconnect, what the old one delivered is still handed out first). */
const PREFETCH = 128

export interface CursorOptions {
  connection: () => RecoveringChannelModel | undefined
  stream: string
  from: number
  /** Longest the cursor waits for the broker to be back before `next` rejects. */
  timeoutMs: number
  limits: EventLimits
  onClose: (cursor: StreamCursor) => void
}

interface Entry {
  message: BusMessage | SkippedMessage
  delivery: ConsumeMessage
  channel: Channel
}

export class StreamCursor implements HistoryCursor {
  readonly #buffer: Entry[] = []
  /** The newest offset received, valid or not: a new consume starts after it. */
  #last: number
  /** The newest delivery handed out or skipped, to ack (cumulatively) on its channel. */
  #unacked: { channel: Channel, delivery: ConsumeMessage } | undefined
  #ackScheduled = false
  #waiting: { resolve: (message: BusMessage | SkippedMessage) => void, reject: (error: Error) => void } | undefined
  #failure: Error | undefined
  #closed = false
  #timer: NodeJS.Timeout | undefined
  readonly #reader: StreamReader
  readonly #options: CursorOptions

  constructor (options: CursorOptions) {
    this.#options = options
    this.#last = options.from - 1
    this.#arm()
    this.#reader = new StreamReader({
      connection: options.connection,
      stream: options.stream,
      prefetch: PREFETCH,
      offset: () => this.#last + 1,
      onDelivery: (channel, delivery) => this.#receive(channel, delivery),
      onState: (consuming) => {
        if (consuming) clearTimeout(this.#timer)
        else this.#arm()
      }
    })
  }

  next (): Promise<BusMessage | SkippedMessage> {
    if (this.#closed) return Promise.reject(new ClosedError())
    const entry = this.#buffer.shift()
    if (entry !== undefined) {
      this.#handOut(entry)
      return Promise.resolve(entry.message)
    }
    if (this.#failure !== undefined) return Promise.reject(this.#failure)
    return new Promise((resolve, reject) => { this.#waiting = { resolve, reject } })
  }

  close (): void {
    if (this.#closed) return
    this.#closed = true
    clearTimeout(this.#timer)
    this.#buffer.length = 0
    this.#reader.stop()
    this.#waiting?.reject(new ClosedError())
    this.#waiting = undefined
    this.#options.onClose(this)
  }

  /** Bounds the wait for a channel that consumes: past it the cursor fails, once what it holds is handed out. */
  #arm (): void {
    clearTimeout(this.#timer)
    const { timeoutMs, stream } = this.#options
    this.#timer = setTimeout(() => {
      this.#failure = new BrokerUnavailableError(`the history stream ${stream} could not be read for ${timeoutMs} ms`)
      this.#reader.stop()
      this.#waiting?.reject(this.#failure)
      this.#waiting = undefined
    }, timeoutMs)
  }

  #receive (channel: Channel, delivery: ConsumeMessage): void {
    if (this.#closed || channel !== this.#reader.channel) return
    const offset = streamOffset(delivery)
    // Before `from` (a consume starts at the start of the chunk holding it), or received before a reconnect.
    if (offset === undefined || offset <= this.#last) return this.#skip(channel, delivery)
    this.#last = offset
    const checked = fromDelivery(delivery, this.#options.limits)
    const message = typeof checked === 'string' ? { offset, skipped: checked } : Object.assign(checked, { offset })
    const entry = { message, delivery, channel }
    const waiting = this.#waiting
    if (waiting === undefined) {
      this.#buffer.push(entry)
      return
    }
    this.#waiting = undefined
    this.#handOut(entry)
    waiting.resolve(message)
  }

  #handOut ({ delivery, channel }: Entry): void {
    // Everything before it on its channel was handed out or skipped: one cumulative ack covers them.
    if (channel === this.#reader.channel) this.#ackLater(channel, delivery)
  }

  #skip (channel: Channel, delivery: ConsumeMessage): void {
    // A cumulative ack would also ack the buffered messages before it, and let the broker send past them.
    // The buffer holds older channels' messages first, so its last entry tells whether it holds any of this one.
    if (this.#buffer.at(-1)?.channel === channel) ack(channel, delivery, false)
    else this.#ackLater(channel, delivery)
  }

  #ackLater (channel: Channel, delivery: ConsumeMessage): void {
    this.#unacked = { channel, delivery }
    if (this.#ackScheduled) return
    this.#ackScheduled = true
    setImmediate(() => {
      this.#ackScheduled = false
      const unacked = this.#unacked
      this.#unacked = undefined
      // A delivery tag means nothing on another channel; a lost channel's deliveries need no ack.
      if (unacked !== undefined && unacked.channel === this.#reader.channel) ack(unacked.channel, unacked.delivery, true)
    })
  }
}

function ack (channel: Channel, delivery: ConsumeMessage, multiple: boolean): void {
  try {
    channel.ack(delivery, multiple)
  } catch {
    // The channel closed in between.
  }
}
