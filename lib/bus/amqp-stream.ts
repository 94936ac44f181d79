import type { Channel, ChannelModel, Options } from 'amqplib'
import type { FastifyBaseLogger } from 'fastify'
import { TopicIndex } from '../client/topic-index.js'
import { BrokerUnavailableError, ClosedError } from '../errors.js'
import type { ResolvedBrokerOptions, ResolvedHistoryOptions } from '../options.js'
import { AmqpHistory, type AmqpHistoryOptions } from './amqp-history.js'
import { vhostOf } from './amqp-session.js'
import { deadline, Signal } from './amqp-signal.js'

// The live path with history on (docs/rabbitmq.md, history stream): every
// instance consumes the one stream that every published event lands in,
// instead of a queue of its own. Routing is then local: the broker sends
// everything, and the instance keeps what its bound patterns match.

/** Segments retention may drop: small enough that `maxBytes` is kept within about an eighth, never so small that the stream is made of tiny files. */
const MIN_SEGMENT_BYTES = 64 * 1024
/** RabbitMQ's own default segment size. */
const MAX_SEGMENT_BYTES = 500_000_000
/**
 * How far before its first start an instance resumes when the connection
 * dropped before it took any message: it knows no offset yet, only a time,
 * and the broker's clock may be behind its own. Only a quiet stream leaves
 * an instance without any message, so the messages read again are few.
 */
const CLOCK_MARGIN_S = 30

/** What the history needs from the bus, read when needed. */
export type BusHooks = Pick<AmqpHistoryOptions, 'connection' | 'head' | 'limits'>

/** The history side of the bus: the stream, its declaration, where the live path reads it from, the local routes. */
export class HistoryStream {
  readonly name: string
  readonly routes: LocalRoutes
  readonly history: AmqpHistory
  readonly #start = new StreamStart()
  readonly #exchange: string
  readonly #options: ResolvedHistoryOptions
  readonly #log: FastifyBaseLogger
  readonly #head: () => number
  #refusalLogged = false

  constructor (broker: ResolvedBrokerOptions, options: ResolvedHistoryOptions, log: FastifyBaseLogger, bus: BusHooks) {
    this.#exchange = broker.exchange
    this.#options = options
    this.#log = log
    this.#head = bus.head
    this.name = `${broker.exchange}.history`
    const timeoutMs = broker.publishTimeoutMs
    this.routes = new LocalRoutes(timeoutMs)
    this.history = new AmqpHistory({ ...bus, stream: this.name, vhost: vhostOf(broker.url ?? ''), timeoutMs })
  }

  /** Declares the stream and binds it to every topic; returns what the live consumer consumes, after the newest offset it took. */
  async declare (model: ChannelModel, channel: Channel): Promise<[string, Options.Consume]> {
    const log = this.#log
    await declareStream(model, this.name, this.#options, (error) => {
      const context = { err: error, stream: this.name }
      const message = 'event socket: the history stream exists with other arguments; its own retention (or a policy\'s) applies'
      // Once per instance: it meets the same refusal on every reconnect.
      if (this.#refusalLogged) log.debug(context, message)
      else log.warn(context, message)
      this.#refusalLogged = true
    })
    await channel.bindQueue(this.name, this.#exchange, '#')
    return [this.name, this.#start.options(this.#head())]
  }

  /** The live consumer runs. */
  started (): void {
    this.routes.running()
    this.#start.started()
  }
}

export function streamArguments (history: ResolvedHistoryOptions): Record<string, unknown> {
  return {
    'x-queue-type': 'stream',
    // RabbitMQ reads the age with a unit (Y M D h m s); seconds are its finest.
    'x-max-age': `${Math.max(1, Math.ceil(history.maxAgeMs / 1000))}s`,
    'x-max-length-bytes': history.maxBytes,
    // Retention drops whole segments, and never the one being written: with
    // RabbitMQ's 500 MB default a small maxBytes would never be applied.
    'x-stream-max-segment-size-bytes': Math.min(MAX_SEGMENT_BYTES, Math.max(MIN_SEGMENT_BYTES, Math.floor(history.maxBytes / 8)))
  }
}

/**
 * Declares the stream on a channel of its own: a stream that exists with
 * other arguments (an earlier configuration, an operator's policy) is
 * refused with 406, which closes the channel; that is reported to
 * `onRefused` and is no failure (the existing stream's retention applies),
 * so that a changed option cannot stop every instance from connecting.
 */
export async function declareStream (model: ChannelModel, name: string, history: ResolvedHistoryOptions, onRefused: (error: Error) => void): Promise<void> {
  const channel = await model.createChannel()
  // The refusal also rejects the declaration, which is where it is handled.
  channel.on('error', () => {})
  try {
    await channel.assertQueue(name, { durable: true, arguments: streamArguments(history) })
  } catch (error) {
    if ((error as { code?: unknown }).code !== 406) throw error
    onRefused(error as Error)
    return
  }
  await channel.close()
}

/** Where the live consumer starts on each connection, so that an outage loses nothing and repeats nothing. */
export class StreamStart {
  #startedAt: number | undefined

  /** The consume options on a new connection, given the newest offset taken so far. */
  options (head: number): Options.Consume {
    return { arguments: { 'x-stream-offset': this.#offset(head) } }
  }

  /** The consumer runs: from now on, what is published is read, outages included. */
  started (): void {
    this.#startedAt ??= Date.now()
  }

  #offset (head: number): unknown {
    if (head >= 0) return head + 1
    // The first start: what was published before it is not this instance's to deliver.
    if (this.#startedAt === undefined) return 'next'
    return { '!': 'timestamp', value: Math.floor(this.#startedAt / 1000) - CLOCK_MARGIN_S }
  }
}

/**
 * The patterns bound on an instance that reads the stream: kept here, not
 * on the broker. A pattern is in place as soon as the stream consumer has
 * run once, since from then on every message is read, outages included.
 */
export class LocalRoutes {
  readonly #index = new TopicIndex<true>()
  readonly #running = new Signal()
  readonly #timeoutMs: number
  #closed = false

  constructor (timeoutMs: number) {
    this.#timeoutMs = timeoutMs
  }

  get size (): number {
    return this.#index.patternCount
  }

  accepts (topic: string): boolean {
    return this.#index.matches(topic)
  }

  async bind (pattern: string): Promise<void> {
    if (this.#closed) throw new ClosedError()
    this.#index.add(pattern, true)
    await deadline(this.#running.promise, this.#timeoutMs, () => new BrokerUnavailableError(`the history stream was not consumed within ${this.#timeoutMs} ms`))
  }

  async unbind (pattern: string): Promise<void> {
    this.#index.remove(pattern, true)
  }

  running (): void {
    this.#running.resolve()
  }

  close (error: Error): void {
    this.#closed = true
    this.#running.reject(error)
  }
}
