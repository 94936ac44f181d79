import { randomBytes, randomInt } from 'node:crypto'
import { hostname } from 'node:os'
import { connect } from 'amqplib'
import type { Channel, ChannelModel, ConfirmChannel, RecoveringChannelModel } from 'amqplib'
import type { FastifyBaseLogger } from 'fastify'
import { BadOptionError, BrokerUnavailableError, ClosedError } from '../errors.js'
import type { ResolvedBrokerOptions, ResolvedHistoryOptions } from '../options.js'
import { defaultEventLimits } from '../publish.js'
import { Bindings, declareInstanceQueue } from './amqp-bindings.js'
import { Consumer } from './amqp-consumer.js'
import type { AmqpHistory } from './amqp-history.js'
import { NodeRotation, nodeUrls } from './amqp-nodes.js'
import { ConfirmPublisher } from './amqp-publisher.js'
import { redact, type Role, type Session, type Side } from './amqp-session.js'
import { HistoryStream, type LocalRoutes } from './amqp-stream.js'
import type { Bus, BusHealth, BusMessage, BusState, Deliver } from './types.js'

// The RabbitMQ bus (docs/rabbitmq.md). Two connections, as RabbitMQ
// advises: a resource alarm blocks every connection that publishes, and a
// blocked connection stops reading, so acks, binds and consuming on the same
// connection would stall with it. One connection holds the confirm channel
// (publishing); the other a plain channel (topology, bindings, consuming).
// amqplib's recovery reconnects each with backoff and calls its setup on
// every connection. A channel that dies alone drops its whole connection, so
// that there is one way back: recovery.
//
// With history on, the consumer connection reads the history stream instead
// of an instance queue, routing is local (amqp-stream.ts), and the stream
// is read again by the history's cursors (amqp-history.ts).

/** Connection attempts that hang (no RST, no answer) give up after this. */
const CONNECT_TIMEOUT_MS = 5000
/** start() gives up after publishTimeoutMs, capped below Fastify's 10 s plugin timeout so that our error, not avvio's, reaches the user. */
const MAX_START_MS = 8000

export function createAmqpBus (options: ResolvedBrokerOptions, log: FastifyBaseLogger, history?: ResolvedHistoryOptions): Bus {
  return new AmqpBus(options, log, history)
}

class AmqpBus implements Bus {
  readonly kind = 'amqp'
  #state: BusState = 'connecting'
  #lastError: string | undefined
  #blocked = false
  #reconnects = 0
  readonly #sides: Record<Role, Side> = {
    publisher: { role: 'publisher', state: 'connecting', connection: undefined, nodes: undefined, session: undefined },
    consumer: { role: 'consumer', state: 'connecting', connection: undefined, nodes: undefined, session: undefined }
  }

  #consumer: Consumer | undefined
  #deliver: Deliver | undefined
  #closing: Promise<void> | undefined
  readonly #options: ResolvedBrokerOptions
  readonly #log: FastifyBaseLogger
  /** The cluster's nodes (one, without a cluster). */
  readonly #nodes: readonly string[]
  /** Where this instance's connections start: instances spread across the nodes. */
  readonly #firstNode: number
  /** One queue per instance, named for operators; it outlives a connection (x-expires), not the instance (deleted on close). */
  readonly #queue: string
  /** The broker's bindings of the instance queue, or, reading the stream, the patterns kept here. */
  readonly #bindings: Bindings | LocalRoutes
  readonly #stream: HistoryStream | undefined
  readonly #publisher: ConfirmPublisher

  constructor (options: ResolvedBrokerOptions, log: FastifyBaseLogger, history: ResolvedHistoryOptions | undefined) {
    this.#options = options
    this.#log = log
    if (options.url === undefined) throw new BadOptionError('broker.url', 'is required by the amqp bus')
    this.#nodes = nodeUrls(options.url)
    this.#firstNode = randomInt(this.#nodes.length)
    this.#queue = `${options.queuePrefix}.${hostname()}.${process.pid}.${randomBytes(4).toString('hex')}`
    // A subscription waits for its binding as long as a publish waits for its confirm.
    const hooks = { connection: () => this.#sides.consumer.connection, head: () => this.#consumer?.head ?? -1, limits: () => this.#deliver?.limits ?? defaultEventLimits }
    this.#stream = history === undefined ? undefined : new HistoryStream(options, history, log, hooks)
    this.#bindings = this.#stream?.routes ?? new Bindings(options.exchange, this.#queue, options.publishTimeoutMs)
    this.#publisher = new ConfirmPublisher({ exchange: options.exchange, timeoutMs: options.publishTimeoutMs, maxBuffered: options.maxBufferedPublishes })
  }

  get history (): AmqpHistory | undefined {
    return this.#stream?.history
  }

  async start (deliver: Deliver): Promise<void> {
    if (this.#closed) throw new ClosedError()
    this.#deliver = deliver
    const accepts = (topic: string): boolean => this.#bindings.accepts(topic)
    const stream = this.#stream !== undefined
    this.#consumer = new Consumer({ deliver, log: this.#log, memory: 2 * this.#options.prefetch, accepts, onCancel: (channel) => this.#dropConsumer(channel), stream, taken: this.#stream?.taken })
    const connections = await Promise.all((['consumer', 'publisher'] as const).map((role) => this.#connect(this.#sides[role])))
    const startMs = this.#startMs
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<never>((resolve, reject) => {
      timer = setTimeout(() => reject(new BrokerUnavailableError(
        `no connection to ${this.#nodes.map(redact).join(' or ')} within ${startMs} ms (${this.#lastError ?? 'no answer'})`
      )), startMs)
    })
    try {
      await Promise.race([Promise.all(connections.map((connection) => connection.waitForConnect())), deadline])
    } catch (error) {
      if (this.#closed) throw new ClosedError()
      this.#closing = this.#shutdown(error as Error)
      await this.#closing
      throw error
    } finally {
      clearTimeout(timer)
    }
  }

  publish (message: BusMessage): Promise<void> {
    return this.#publisher.publish(message)
  }

  async bind (pattern: string): Promise<void> {
    if (this.#closed) throw new ClosedError()
    await this.#bindings.bind(pattern)
  }

  async unbind (pattern: string): Promise<void> {
    if (this.#closed) return
    await this.#bindings.unbind(pattern)
  }

  /** How long start() waits for both connections. */
  get #startMs (): number {
    return Math.min(this.#options.publishTimeoutMs, MAX_START_MS)
  }

  // A getter, not a field test: TypeScript would keep narrowing `state` across awaits.
  get #closed (): boolean {
    return this.#state === 'closed'
  }

  health (): BusHealth {
    return {
      kind: 'amqp',
      state: this.#state,
      reconnects: this.#reconnects,
      buffered: this.#publisher.buffered,
      unconfirmed: this.#publisher.unconfirmed,
      blocked: this.#blocked,
      ...(this.#lastError === undefined ? {} : { lastError: this.#lastError })
    }
  }

  close (): Promise<void> {
    this.#closing ??= this.#shutdown(new ClosedError())
    return this.#closing
  }

  async #connect (side: Side): Promise<RecoveringChannelModel> {
    const nodes = new NodeRotation(this.#nodes, this.#firstNode)
    const connection = await connect(nodes.target, {
      noDelay: true, // amqplib leaves Nagle on, which holds small publishes and acks back ~40 ms
      // With other nodes to try, a node that accepts TCP and never answers must not use up the startup bound alone.
      timeout: this.#nodes.length === 1 ? CONNECT_TIMEOUT_MS : Math.min(CONNECT_TIMEOUT_MS, Math.floor(this.#startMs / 2)),
      clientProperties: { connection_name: `fastify-event-socket ${side.role} ${this.#queue}` },
      recovery: {
        calculateDelay: (attempt: number) => nodes.delayBefore(attempt, this.#options.reconnectInitialDelayMs, this.#options.reconnectMaxDelayMs),
        maxRetries: Infinity,
        waitForConnect: false,
        setup: (model: ChannelModel) => side.role === 'publisher' ? this.#setupPublisher(model) : this.#setupConsumer(model)
      }
    })
    side.connection = connection
    side.nodes = nodes
    this.#watch(side, connection)
    return connection
  }

  /** A session whose channels, when one closes, drop the connection. */
  #open (side: Side, model: ChannelModel, channels: Channel[]): Session {
    const session: Session = { model, channels, consumerTag: undefined, lost: false }
    model.on('close', (error?: Error) => this.#lose(side, session, error))
    for (const channel of channels) {
      // A channel error (the broker refused an operation) is followed by its close.
      channel.on('error', (error: Error) => { this.#lastError = error.message })
      // Deferred: when the connection closes, amqplib closes its channels first
      // and only then reports the connection's close with the reason, which should win.
      channel.on('close', () => queueMicrotask(() => this.#lose(side, session)))
    }
    return session
  }

  /** Ends a setup: fails it when the bus was closed or a channel died meanwhile (amqplib then closes this connection and, unless closed, retries). */
  #ready (side: Side, session: Session): void {
    if (this.#closed) throw new ClosedError()
    if (session.lost) throw new BrokerUnavailableError(`a channel closed while the ${side.role} connection was being set up`)
    side.session = session
    side.state = 'up'
    this.#update(side)
  }

  async #setupPublisher (model: ChannelModel): Promise<void> {
    // amqplib listens for the connection's errors only once setup succeeded; unheard, an 'error' would crash the process.
    model.on('error', (error: Error) => { this.#lastError = error.message })
    const side = this.#sides.publisher
    const confirm = await model.createConfirmChannel()
    const session = this.#open(side, model, [confirm])
    // Declared here too: this connection may come up first, and a publish to a missing exchange kills the channel.
    await confirm.assertExchange(this.#options.exchange, 'topic', { durable: true })
    this.#ready(side, session)
    this.#publisher.attach(confirm)
  }

  async #setupConsumer (model: ChannelModel): Promise<void> {
    model.on('error', (error: Error) => { this.#lastError = error.message })
    const side = this.#sides.consumer
    const channel = await model.createChannel()
    const session = this.#open(side, model, [channel])
    await channel.assertExchange(this.#options.exchange, 'topic', { durable: true })
    const consumer = this.#consumer as Consumer
    const [queue, options] = this.#stream === undefined ? await this.#declareQueue(channel) : await this.#stream.declare(model, channel)
    await channel.prefetch(this.#options.prefetch)
    consumer.attach(channel)
    session.consumerTag = (await channel.consume(queue, (delivery) => consumer.onMessage(channel, delivery), options)).consumerTag
    this.#ready(side, session)
    this.#stream?.started()
  }

  async #declareQueue (channel: Channel): Promise<[string, undefined]> {
    await declareInstanceQueue(channel, this.#queue, this.#options)
    await (this.#bindings as Bindings).attach(channel)
    return [this.#queue, undefined]
  }

  #watch (side: Side, connection: RecoveringChannelModel): void {
    connection.on('connect-failed', (error: Error) => {
      this.#lastError = error.message
      // At warn until the bus first came up (why it does not start); afterwards the loss was logged once, at warn, with the error.
      this.#log[this.#state === 'connecting' ? 'warn' : 'debug']({ err: error, url: side.nodes?.current, connection: side.role }, 'event socket: broker connection attempt failed')
    })
    connection.on('reconnect-scheduled', ({ attempt, delay }: { attempt: number, delay: number }) => {
      // The node that failed may be gone for good: the next attempt tries the next one.
      side.nodes?.advance()
      this.#log.debug({ attempt, delay, connection: side.role, url: side.nodes?.current }, 'event socket: broker reconnect scheduled')
    })
    connection.on('error', (error: Error) => { this.#lastError = error.message })
    // Only the publishing connection matters: the broker blocks connections that publish, and the consumer's never does.
    if (side.role !== 'publisher') return
    connection.on('blocked', (reason: string) => {
      this.#blocked = true
      this.#lastError = `blocked: ${reason}`
      this.#log.warn({ reason }, 'event socket: the broker blocks publishing (resource alarm); publishes wait and may time out, delivery continues')
    })
    connection.on('unblocked', () => {
      this.#blocked = false
      this.#log.info('event socket: the broker unblocked publishing')
    })
  }

  /** Forgets a connection whose connection or channel closed; publishes in flight on it fail, the next ones wait for recovery. */
  #lose (side: Side, session: Session, error?: Error): void {
    if (session.lost) return
    session.lost = true
    if (error !== undefined) this.#lastError = error.message
    for (const channel of session.channels) {
      if (this.#stream === undefined) (this.#bindings as Bindings).detach(channel)
      this.#consumer?.detach(channel)
      this.#publisher.detach(channel as ConfirmChannel)
    }
    if (side.role === 'publisher') this.#blocked = false // a new connection starts unblocked; the broker says so again if not
    if (side.session !== session) return
    side.session = undefined
    if (this.#closed) return
    side.state = 'down'
    this.#update(side)
    session.model.close().catch(() => {}) // a channel can die alone; recovery starts only when the connection closes
  }

  #dropConsumer (channel: Channel): void {
    const session = this.#sides.consumer.session
    if (session?.channels[0] !== channel) return
    this.#lastError = `the broker cancelled the consumer of ${this.#stream?.name ?? this.#queue}`
    this.#lose(this.#sides.consumer, session)
  }

  /** The bus's state from its two connections': down if either is down, connecting until both came up once, else up. */
  #update (side: Side): void {
    const { publisher, consumer } = this.#sides
    const states = [publisher.state, consumer.state]
    const next: BusState = states.includes('down') ? 'down' : states.includes('connecting') ? 'connecting' : 'up'
    this.#transition(next, side)
  }

  #transition (next: BusState, side?: Side): void {
    const previous = this.#state
    if (previous === next || previous === 'closed') return
    this.#state = next
    if (previous === 'down' && next === 'up') this.#reconnects++
    const context = { previous, state: next, connection: side?.role, node: side?.nodes?.current, queue: this.#queue, patterns: this.#bindings.size }
    if (next === 'up') this.#log.info(context, previous === 'down' ? 'event socket: broker connection up again (recovered)' : 'event socket: broker connection up')
    else if (next === 'down') {
      this.#log.warn({ ...context, lastError: this.#lastError, buffered: this.#publisher.buffered }, 'event socket: broker connection lost; reconnecting')
    } else if (next === 'closed') this.#log.info(context, 'event socket: broker connection closed')
  }

  async #shutdown (error: Error): Promise<void> {
    const consuming = this.#sides.consumer.session
    this.#transition('closed')
    this.#bindings.close(error)
    this.#stream?.history.close()
    const confirmed = this.#publisher.close(error)
    if (consuming?.consumerTag !== undefined) await (consuming.channels[0] as Channel).cancel(consuming.consumerTag).catch(() => {})
    this.#consumer?.flush()
    await confirmed
    // Nobody will consume it again; x-expires would remove it too, later. The stream is everyone's: it stays.
    if (consuming !== undefined && this.#stream === undefined) await (consuming.channels[0] as Channel).deleteQueue(this.#queue).catch(() => {})
    for (const side of Object.values(this.#sides)) side.session = undefined
    await Promise.all(Object.values(this.#sides).map((side) => side.connection?.close()))
  }
}
