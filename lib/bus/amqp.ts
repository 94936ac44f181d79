import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { connect } from 'amqplib'
import type { Channel, ChannelModel, ConfirmChannel, RecoveringChannelModel } from 'amqplib'
import type { FastifyBaseLogger } from 'fastify'
import { BadOptionError, BrokerUnavailableError, ClosedError } from '../errors.js'
import type { ResolvedBrokerOptions } from '../options.js'
import { Bindings } from './amqp-bindings.js'
import { Consumer } from './amqp-consumer.js'
import { ConfirmPublisher } from './amqp-publisher.js'
import type { Bus, BusHealth, BusMessage, BusState, Deliver } from './types.js'

// The RabbitMQ bus (docs/rabbitmq.md). amqplib's recovery reconnects with
// backoff and calls setup() on every connection; setup declares the
// topology, reconciles the bindings, starts consuming and resumes publishing.
// One connection holds a plain channel (topology and consuming) and a
// confirm channel (publishing); losing either drops the whole connection,
// so that there is one way back: recovery.

/** Connection attempts that hang (no RST, no answer) give up after this. */
const CONNECT_TIMEOUT_MS = 5000
/** start() gives up after publishTimeoutMs, capped below Fastify's 10 s plugin timeout so that our error, not avvio's, reaches the user. */
const MAX_START_MS = 8000

interface Link {
  model: ChannelModel
  channel: Channel
  confirm: ConfirmChannel
  consumerTag: string | undefined
  lost: boolean
}

export function createAmqpBus (options: ResolvedBrokerOptions, log: FastifyBaseLogger): Bus {
  return new AmqpBus(options, log)
}

class AmqpBus implements Bus {
  readonly kind = 'amqp'
  private state: BusState = 'connecting'
  private lastError: string | undefined
  private connection: RecoveringChannelModel | undefined
  private link: Link | undefined
  private consumer: Consumer | undefined
  private closing: Promise<void> | undefined
  private readonly url: string
  /** One queue per instance, named for operators; it outlives a connection (x-expires), not the instance (deleted on close). */
  private readonly queue: string
  private readonly bindings: Bindings
  private readonly publisher: ConfirmPublisher

  constructor (private readonly options: ResolvedBrokerOptions, private readonly log: FastifyBaseLogger) {
    if (options.url === undefined) throw new BadOptionError('broker.url', 'is required by the amqp bus')
    this.url = options.url
    this.queue = `${options.queuePrefix}.${hostname()}.${process.pid}.${randomBytes(4).toString('hex')}`
    // A subscription waits for its binding as long as a publish waits for its confirm.
    this.bindings = new Bindings(options.exchange, this.queue, options.publishTimeoutMs)
    this.publisher = new ConfirmPublisher({
      exchange: options.exchange,
      timeoutMs: options.publishTimeoutMs,
      maxBuffered: options.maxBufferedPublishes
    })
  }

  async start (deliver: Deliver): Promise<void> {
    if (this.closed) throw new ClosedError()
    this.consumer = new Consumer(deliver, this.log, 2 * this.options.prefetch, (channel) => this.dropConnection(channel))
    const connection = await connect(this.url, {
      noDelay: true, // amqplib leaves Nagle on, which holds small publishes and acks back ~40 ms
      timeout: CONNECT_TIMEOUT_MS,
      clientProperties: { connection_name: `fastify-event-socket ${this.queue}` },
      recovery: {
        initialDelay: this.options.reconnectInitialDelayMs,
        maxDelay: this.options.reconnectMaxDelayMs,
        maxRetries: Infinity,
        waitForConnect: false,
        setup: (model: ChannelModel) => this.setup(model)
      }
    })
    this.connection = connection
    this.watch(connection)
    const startMs = Math.min(this.options.publishTimeoutMs, MAX_START_MS)
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<never>((resolve, reject) => {
      timer = setTimeout(() => reject(new BrokerUnavailableError(
        `no connection to ${redact(this.url)} within ${startMs} ms (${this.lastError ?? 'no answer'})`
      )), startMs)
    })
    try {
      await Promise.race([connection.waitForConnect(), deadline])
    } catch (error) {
      if (this.closed) throw new ClosedError()
      this.closing = this.shutdown(error as Error)
      await this.closing
      throw error
    } finally {
      clearTimeout(timer)
    }
  }

  publish (message: BusMessage): Promise<void> {
    return this.publisher.publish(message)
  }

  async bind (pattern: string): Promise<void> {
    if (this.closed) throw new ClosedError()
    await this.bindings.bind(pattern)
  }

  async unbind (pattern: string): Promise<void> {
    if (this.closed) return
    await this.bindings.unbind(pattern)
  }

  // A getter, not a field test: TypeScript would keep narrowing `state` across awaits.
  private get closed (): boolean {
    return this.state === 'closed'
  }

  health (): BusHealth {
    return {
      kind: 'amqp',
      state: this.state,
      buffered: this.publisher.buffered,
      unconfirmed: this.publisher.unconfirmed,
      ...(this.lastError === undefined ? {} : { lastError: this.lastError })
    }
  }

  close (): Promise<void> {
    this.closing ??= this.shutdown(new ClosedError())
    return this.closing
  }

  private async setup (model: ChannelModel): Promise<void> {
    // amqplib listens for the connection's errors only once setup succeeded; unheard, an 'error' would crash the process.
    model.on('error', (error: Error) => { this.lastError = error.message })
    const channel = await model.createChannel()
    const confirm = await model.createConfirmChannel()
    const link: Link = { model, channel, confirm, consumerTag: undefined, lost: false }
    model.on('close', (error?: Error) => this.lose(link, error))
    for (const each of [channel, confirm]) {
      // A channel error (the broker refused an operation) is followed by its close.
      each.on('error', (error: Error) => { this.lastError = error.message })
      // Deferred: when the connection closes, amqplib closes its channels first
      // and only then reports the connection's close with the reason, which should win.
      each.on('close', () => queueMicrotask(() => this.lose(link)))
    }
    const { exchange, maxQueueLength, prefetch, reconnectMaxDelayMs } = this.options
    await channel.assertExchange(exchange, 'topic', { durable: true })
    await channel.assertQueue(this.queue, {
      // Durable, but holding transient messages: RabbitMQ 4 deprecates transient
      // non-exclusive queues, and the definition is all a restart keeps.
      durable: true,
      // Not exclusive, not auto-delete: the queue must survive a dropped
      // connection, or events confirmed to a publisher would vanish with it.
      maxLength: maxQueueLength,
      // Drop the oldest rather than nack publishers: one stalled instance must not fail every publish.
      overflow: 'drop-head',
      // A crashed instance's queue goes away by itself, long after any reconnect would have come back.
      expires: Math.max(60_000, 12 * reconnectMaxDelayMs)
    })
    await this.bindings.attach(channel)
    await channel.prefetch(prefetch)
    const consumer = this.consumer as Consumer
    consumer.attach(channel)
    link.consumerTag = (await channel.consume(this.queue, (delivery) => consumer.onMessage(channel, delivery))).consumerTag
    // Either the bus was closed meanwhile or a channel died: amqplib closes this connection and, unless closed, retries.
    if (this.closed) throw new ClosedError()
    if (link.lost) throw new BrokerUnavailableError('a channel closed while the connection was being set up')
    this.link = link
    this.publisher.attach(confirm)
    this.transition('up')
  }

  private watch (connection: RecoveringChannelModel): void {
    connection.on('connect-failed', (error: Error) => {
      this.lastError = error.message
      this.log.warn({ err: error, url: redact(this.url) }, 'event socket: broker connection attempt failed')
    })
    connection.on('reconnect-scheduled', ({ attempt, delay }: { attempt: number, delay: number }) => {
      this.log.debug({ attempt, delay }, 'event socket: broker reconnect scheduled')
    })
    connection.on('error', (error: Error) => { this.lastError = error.message })
    connection.on('blocked', (reason: string) => {
      this.lastError = `blocked: ${reason}`
      this.log.warn({ reason }, 'event socket: the broker blocks publishing (resource alarm); publishes wait and may time out')
    })
    connection.on('unblocked', () => this.log.info('event socket: the broker unblocked publishing'))
  }

  /** Forgets a connection whose connection or channel closed; publishes in flight on it fail, the next ones wait for recovery. */
  private lose (link: Link, error?: Error): void {
    if (link.lost) return
    link.lost = true
    if (error !== undefined) this.lastError = error.message
    this.bindings.detach(link.channel)
    this.consumer?.detach(link.channel)
    this.publisher.detach(link.confirm)
    if (this.link !== link) return
    this.link = undefined
    if (this.closed) return
    this.transition('down')
    link.model.close().catch(() => {}) // a channel can die alone; recovery starts only when the connection closes
  }

  private dropConnection (channel: Channel): void {
    const link = this.link
    if (link?.channel !== channel) return
    this.lastError = `the broker cancelled the consumer of ${this.queue}`
    this.lose(link)
  }

  private transition (next: BusState): void {
    const previous = this.state
    if (previous === next || previous === 'closed') return
    this.state = next
    const context = { previous, state: next, queue: this.queue, patterns: this.bindings.size }
    if (next === 'up') this.log.info(context, 'event socket: broker connection up')
    else if (next === 'down') {
      this.log.warn({ ...context, lastError: this.lastError, buffered: this.publisher.buffered }, 'event socket: broker connection lost; reconnecting')
    } else this.log.info(context, 'event socket: broker connection closed')
  }

  private async shutdown (error: Error): Promise<void> {
    const link = this.link
    this.transition('closed')
    this.bindings.close(error)
    const confirmed = this.publisher.close(error)
    if (link?.consumerTag !== undefined) await link.channel.cancel(link.consumerTag).catch(() => {})
    this.consumer?.flush()
    await confirmed
    // Nobody will consume it again; x-expires would remove it too, later.
    if (link !== undefined) await link.channel.deleteQueue(this.queue).catch(() => {})
    this.link = undefined
    await this.connection?.close()
  }
}

/** The URL without its password, for logs and errors. */
function redact (url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password !== '') parsed.password = '***'
    return parsed.toString()
  } catch {
    return 'the broker'
  }
}
