import type { Channel, ChannelModel, ConsumeMessage, Options } from 'amqplib'
import type { FastifyBaseLogger } from 'fastify'
import { TopicIndex } from '../client/topic-index.js'
import { BrokerUnavailableError, ClosedError } from '../errors.js'
import type { ResolvedBrokerOptions, ResolvedHistoryOptions } from '../options.js'
import { AmqpHistory, type AmqpHistoryOptions } from './amqp-history.js'
import { streamOffset } from './amqp-message.js'
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
/** No delivery for this long at `last`: the probe has read to the stream's end (a delivery follows the consume's answer within a few ms). */
const QUIET_MS = 50
/** A stream published to without pause is never quiet: the probe's end is then the newest offset it read by this time. */
const PROBE_MS = 1000
/** The probe acks as it reads; the prefetch only spares it a round trip per message of the last chunk. */
const PROBE_PREFETCH = 1000

/** What the history needs from the bus, read when needed. */
export type BusHooks = Pick<AmqpHistoryOptions, 'connection' | 'head' | 'limits'>

/** Memory for the newest messages, read by replays instead of the stream: at most this much, and at most the retention's bytes. */
const RECENT_BYTES = 32 * 1024 * 1024

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
    const recentBytes = Math.min(RECENT_BYTES, options.maxBytes)
    this.history = new AmqpHistory({ ...bus, head: () => this.head, stream: this.name, vhost: vhostOf(broker.url ?? ''), timeoutMs, recentBytes })
  }

  /** The newest offset the live path took, or, before it took any, the stream's end when the instance first consumed it. */
  get head (): number {
    return Math.max(this.#head(), this.#start.end)
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
    const offset = await this.#start.offset(model, this.name, this.#head())
    log.debug({ stream: this.name, offset }, 'event socket: consuming the history stream')
    return [this.name, { arguments: { 'x-stream-offset': offset } }]
  }

  /** The live consumer took `delivery`: kept for the replays that start from recent offsets. */
  readonly taken = (delivery: ConsumeMessage): void => { this.history.recent.append(delivery) }

  /** The live consumer runs. */
  started (): void {
    this.routes.running()
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

/**
 * Where the live consumer starts on each connection, so that an outage
 * loses nothing and repeats nothing, and the first start delivers nothing
 * published before it but everything after.
 */
export class StreamStart {
  #end: number | undefined

  /** The stream's newest offset when the instance first consumed it (-1 while unknown, or if it was empty). */
  get end (): number {
    return this.#end ?? -1
  }

  /** The `x-stream-offset` of the live consumer on a new connection, given the newest offset it took so far. */
  async offset (model: ChannelModel, stream: string, head: number): Promise<number | string> {
    // Learnt once, before the first consumer: until then the stream's end is unknown.
    this.#end ??= await newestOffset(model, stream)
    const newest = Math.max(head, this.#end)
    // RabbitMQ waits at an offset past the end. With no offset known the
    // stream was empty when probed, so anything in it now came later.
    return newest >= 0 ? newest + 1 : 'first'
  }
}

/**
 * The newest offset in the stream (-1 if empty), read by a consumer of its
 * own at `last` (the start of the last chunk) until no delivery comes for
 * QUIET_MS. What it reads is acked and not delivered: it was published
 * before the instance started. Rejects when its channel closes meanwhile,
 * so that a connection lost mid-probe is not taken for an empty stream.
 */
async function newestOffset (model: ChannelModel, stream: string): Promise<number> {
  const channel = await model.createChannel()
  // A refusal also rejects the operation it answers, which is where it is handled.
  channel.on('error', () => {})
  let newest = -1
  let settled = false
  let quiet: NodeJS.Timeout | undefined
  let bound: NodeJS.Timeout | undefined
  let settle!: (error?: Error) => void
  const done = new Promise<void>((resolve, reject) => {
    settle = (error) => {
      settled = true
      clearTimeout(quiet)
      clearTimeout(bound)
      if (error === undefined) resolve()
      else reject(error)
    }
  })
  done.catch(() => {}) // awaited below, unless the consume failed first
  const lost = (): void => settle(new BrokerUnavailableError(`the channel closed while the end of ${stream} was read`))
  const wait = (): void => {
    clearTimeout(quiet)
    quiet = setTimeout(settle, QUIET_MS)
  }
  channel.on('close', lost)
  try {
    await channel.prefetch(PROBE_PREFETCH)
    await channel.consume(stream, (delivery) => {
      if (settled) return // the channel is closing: newest is given already
      if (delivery === null) return lost() // the broker cancelled it: the stream was deleted
      newest = Math.max(newest, streamOffset(delivery) ?? -1)
      channel.ack(delivery)
      wait()
    }, { arguments: { 'x-stream-offset': 'last' } })
    wait()
    bound = setTimeout(settle, PROBE_MS)
    await done
    return newest
  } finally {
    channel.removeListener('close', lost)
    settle()
    await channel.close().catch(() => {})
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
