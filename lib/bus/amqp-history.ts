import { createHash } from 'node:crypto'
import type { RecoveringChannelModel } from 'amqplib'
import { BrokerUnavailableError, ClosedError } from '../errors.js'
import type { EventLimits } from '../publish.js'
import { StreamCursor } from './amqp-cursor.js'
import { streamOffset } from './amqp-message.js'
import { StreamReader } from './amqp-stream-reader.js'
import type { BusHistory, HistoryCursor } from './types.js'

// The RabbitMQ bus's history (docs/rabbitmq.md, history stream): the stream
// every instance reads live, read again from any retained offset by cursors
// on channels of their own. Offsets are the stream's: one total order, the
// same on every instance, increasing, not contiguous (RabbitMQ spends some on
// its own records).

/** The longest offset in base 36 that is a safe integer (2^53 needs 11 digits). */
const POSITION = /^([0-9a-f]{6})-(0|[1-9a-z][0-9a-z]{0,10})$/

export interface AmqpHistoryOptions {
  stream: string
  /** The vhost, so that two deployments' streams of one name tell their positions apart. */
  vhost: string
  connection: () => RecoveringChannelModel | undefined
  /** Bounds the probe of the oldest offset and a cursor's wait for the broker. */
  timeoutMs: number
  head: () => number
  limits: () => EventLimits
}

export class AmqpHistory implements BusHistory {
  readonly #cursors = new Set<StreamCursor>()
  readonly #options: AmqpHistoryOptions
  readonly #tag: string
  /** The probe in flight, shared by every caller meanwhile. */
  #oldest: { promise: Promise<number>, stop: (error: Error) => void } | undefined
  #closed = false

  constructor (options: AmqpHistoryOptions) {
    this.#options = options
    this.#tag = createHash('sha256').update(`${options.vhost}\0${options.stream}`).digest('hex').slice(0, 6)
  }

  get head (): number {
    return this.#options.head()
  }

  oldest (): Promise<number> {
    if (this.#closed) return Promise.reject(new ClosedError())
    this.#oldest ??= this.#probe()
    return this.#oldest.promise
  }

  read (from: number): HistoryCursor {
    const { connection, stream, timeoutMs, limits } = this.#options
    // RabbitMQ refuses a negative offset; the oldest retained message is what such a read means.
    const cursor = new StreamCursor({ connection, stream, from: Math.max(0, from), timeoutMs, limits: limits(), onClose: (closed) => this.#cursors.delete(closed) })
    this.#cursors.add(cursor)
    if (this.#closed) cursor.close()
    return cursor
  }

  format (offset: number): string {
    return `${this.#tag}-${offset.toString(36)}`
  }

  parse (pos: string): number | undefined {
    if (typeof pos !== 'string') return undefined
    const match = POSITION.exec(pos)
    if (match === null || match[1] !== this.#tag) return undefined
    const offset = Number.parseInt(match[2] as string, 36)
    // Canonical only: one offset, one position.
    return Number.isSafeInteger(offset) && this.format(offset) === pos ? offset : undefined
  }

  /** Closes every cursor and the probe in flight: their callers get FST_EVSOCK_CLOSED. */
  close (): void {
    this.#closed = true
    this.#oldest?.stop(new ClosedError())
    for (const cursor of [...this.#cursors]) cursor.close()
  }

  /** The first delivery of a consumer at `first` is the oldest retained message. */
  #probe (): { promise: Promise<number>, stop: (error: Error) => void } {
    const { connection, stream, timeoutMs } = this.#options
    let settle!: (offset: number | Error) => void
    const promise = new Promise<number>((resolve, reject) => {
      settle = (result) => {
        clearTimeout(timer)
        reader.stop()
        if (this.#oldest?.promise === promise) this.#oldest = undefined
        if (result instanceof Error) reject(result)
        else resolve(result)
      }
    })
    const timer = setTimeout(() => settle(new BrokerUnavailableError(`the oldest offset of ${stream} was not read within ${timeoutMs} ms`)), timeoutMs)
    const reader = new StreamReader({
      connection,
      stream,
      prefetch: 1,
      offset: () => 'first',
      onDelivery: (channel, delivery) => {
        const offset = streamOffset(delivery)
        if (offset !== undefined) settle(offset)
      }
    })
    return { promise, stop: settle }
  }
}
