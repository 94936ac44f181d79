import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { WebSocket } from 'ws'
import { CloseCode } from './client/close-codes.js'
import { ConnectionsByUser } from './by-user.js'
import { OutboundEvent, type Format } from './codec.js'
import { Connection, type ConnectionHost } from './connection.js'
import { Deadlines } from './deadlines.js'
import { FlushQueue } from './flush-queue.js'
import { SummarizedLog } from './log-summary.js'
import { Subscriptions } from './subscriptions.js'
import type { StreamHost } from './outbound.js'
import { ReplaySlots, type ReplayHost } from './replay.js'
import { CONTROL_PREFIX } from './topics.js'
import { PROBE_PREFIX } from './probe.js'
import { isValidSub, parseRevocation, REVOKE_KEY, revocationMessage, type Revocation, type Revocations } from './revocations.js'
import type { Admission } from './handshake.js'
import type { VerifyToken } from './tokens.js'
import type { Bus, BusHealth, BusHistory, BusMessage, Deliver } from './bus/types.js'
import type { EventSocketUser, ResolvedOptions } from './options.js'
import type { Metrics } from './metrics.js'

export interface EventSocketStats {
  /** Open connections. */
  connections: number
  /** Subscriptions held, summed over connections. */
  subscriptions: number
  /** Distinct patterns bound to the bus. */
  patterns: number
  /** Events this instance published. */
  eventsPublished: number
  /** Events the bus delivered to this instance. */
  eventsIn: number
  /** Event frames written to sockets. */
  eventsOut: number
  /** Events waiting behind full windows, summed over connections. */
  pending: number
  /** Connections closed with 4008. */
  slowConsumerCloses: number
  /** Events dropped as malformed: broker messages that are not valid events (docs/rabbitmq.md), and events that could not be encoded for a format (counted once per format). */
  eventsDropped: number
  /** History on: replays holding a slot (reading), and waiting for one (`history.maxReplays`); absent with history off. */
  replays?: { reading: number, waiting: number }
  broker: BusHealth
}

export interface EventSocketHealth {
  /** 'ok' when the bus is up; 'degraded' while it reconnects; 'down' when it is unusable. */
  status: 'ok' | 'degraded' | 'down'
  connections: number
  broker: BusHealth
}

/** All the connections of this instance, and the routing of bus events to them. */
export class Hub implements ConnectionHost {
  readonly options: ResolvedOptions
  readonly log: FastifyBaseLogger
  readonly #bus: Bus
  readonly #verify: VerifyToken
  readonly #revocations: Revocations
  readonly #connections = new Set<Connection>()
  /** The same connections by user: a revocation (which anyone able to publish on the exchange can send) costs that user's connections, not all. */
  readonly #connectionsBySub = new ConnectionsByUser<Connection>()
  readonly subscriptions: Subscriptions<Connection>
  readonly #flushes: FlushQueue
  /** Undefined when metrics are off. */
  readonly #metrics: Metrics | undefined
  readonly streams: StreamHost
  readonly #heartbeat: NodeJS.Timeout
  readonly deadlines = new Deadlines<Connection>((connection) => connection.deadlineReached())
  readonly replays: ReplayHost | undefined
  /** The bus's history, when the history option is on. */
  readonly #history: BusHistory | undefined
  #shuttingDown = false
  #shutdown: Promise<void> | undefined
  #lastConnectionEnded: (() => void) | undefined
  #counters = { eventsPublished: 0, eventsIn: 0, eventsOut: 0, slowConsumerCloses: 0, eventsDropped: 0 }
  readonly #encodeFailures: SummarizedLog
  readonly #badControlMessages: SummarizedLog
  /** The bus's delivery callback: one event, to every local connection holding a matching pattern. */
  readonly deliver: Deliver
  /** Handlers of control keys other modules own (the delivery probe's), by routing key. */
  readonly controls = new Map<string, (message: BusMessage) => void>()

  constructor (options: ResolvedOptions, log: FastifyBaseLogger, bus: Bus, verify: VerifyToken, revocations: Revocations, metrics?: Metrics) {
    this.options = options
    this.#metrics = metrics
    this.#flushes = new FlushQueue(metrics?.flushed)
    this.log = log
    this.#bus = bus
    this.#verify = verify
    this.#revocations = revocations
    this.subscriptions = new Subscriptions(bus, log)
    this.streams = {
      flushes: this.#flushes,
      sent: (count) => { this.#counters.eventsOut += count; this.#metrics?.written(count) },
      slowConsumer: (discarded) => { this.#counters.slowConsumerCloses++; this.#metrics?.slowConsumer(discarded) },
      stalled: () => { this.#metrics?.stalled() }
    }
    this.#encodeFailures = new SummarizedLog(log, 'error', 'event socket: an event could not be encoded; dropped for that format')
    if (options.history !== undefined) {
      // The options check refused a bus without history; the built-in buses keep one when asked.
      this.#history = bus.history as BusHistory
      this.replays = { history: this.#history, slots: new ReplaySlots(options.history.maxReplays), encodeFailed: this.#encodeFailed }
    }
    this.#badControlMessages = new SummarizedLog(log, 'warn', 'event socket: dropped an invalid control message')
    this.deliver = Object.assign((message: BusMessage) => { this.#deliver(message) }, {
      limits: { maxEventBytes: options.maxEventBytes, maxEventDepth: options.maxEventDepth },
      dropped: () => { this.#counters.eventsDropped++; this.#metrics?.dropped('malformed') }
    })
    // One interval for every connection rather than a timer each.
    this.#heartbeat = setInterval(() => {
      for (const connection of this.#connections) connection.heartbeat()
    }, options.heartbeatMs)
    this.#heartbeat.unref()
  }

  get connectionCount (): number {
    return this.#connections.size
  }

  /** Shutdown has begun: sockets are closing with 1001 and no new event can reach them. */
  get shuttingDown (): boolean {
    return this.#shuttingDown
  }

  accept (socket: WebSocket, request: FastifyRequest, { user, format }: Admission): void {
    if (this.#shuttingDown) {
      socket.close(CloseCode.GoingAway, 'server shutting down')
      return
    }
    // A revocation that landed while this handshake awaited the app's own hooks found no connection to close.
    if (this.#revocations.refuses(user)) {
      socket.close(CloseCode.TokenExpired, 'token revoked')
      return
    }
    const connection = new Connection(this, socket, request, user, format)
    this.#connections.add(connection)
    this.#connectionsBySub.add(user.sub, connection)
    connection.debug({ format }, 'event socket opened')
  }

  #deliver (message: BusMessage): void {
    // Before the index: a client holding `#` matches every routing key, and
    // must never be sent the plugin's own control messages.
    if (message.topic.startsWith(CONTROL_PREFIX)) {
      this.#control(message)
      return
    }
    this.#counters.eventsIn++
    const receivedAt = this.#metrics?.received()
    const offset = message.offset
    const event = new OutboundEvent(message, this.#encodeFailed, offset === undefined || this.#history === undefined ? undefined : this.#history.format(offset))
    const outer = this.#delivering
    this.#delivering = event
    try {
      this.subscriptions.match(message.topic, this.#pushDelivering)
    } finally {
      this.#delivering = outer
    }
    if (receivedAt !== undefined) this.#metrics?.fannedOut(receivedAt, this.#flushes.scheduled)
  }

  /** The event `#deliver` is handing out, so that one bound callback serves every event rather than a closure each. */
  #delivering: OutboundEvent | undefined
  readonly #pushDelivering = (connection: Connection): void => {
    const event = this.#delivering as OutboundEvent
    if (event.encodes(connection.format)) connection.push(event)
  }

  readonly #encodeFailed = (event: OutboundEvent, format: Format, err: unknown): void => {
    this.#counters.eventsDropped++
    this.#metrics?.dropped('unencodable')
    this.#encodeFailures.report({ err, id: event.id, topic: event.topic, format })
  }

  published (): void {
    this.#counters.eventsPublished++
    this.#metrics?.published()
  }

  verify (token: string, request: FastifyRequest): Promise<EventSocketUser> {
    return this.#verify(token, request)
  }

  ended (connection: Connection): void {
    this.subscriptions.removeAll(connection)
    this.#connections.delete(connection)
    this.#connectionsBySub.delete(connection.user.sub, connection)
    if (this.#connections.size === 0) this.#lastConnectionEnded?.()
  }

  stats (): EventSocketStats {
    let pending = 0
    for (const connection of this.#connections) pending += connection.pendingCount
    return {
      connections: this.#connections.size,
      subscriptions: this.subscriptions.count,
      patterns: this.subscriptions.patternCount,
      ...this.#counters,
      pending,
      ...(this.replays === undefined ? {} : { replays: { reading: this.replays.slots.reading, waiting: this.replays.slots.waiting } }),
      broker: this.#bus.health()
    }
  }

  health (): EventSocketHealth {
    const broker = this.#bus.health()
    const status = broker.state === 'up' ? 'ok' : broker.state === 'connecting' ? 'degraded' : 'down'
    return { status, connections: this.#connections.size, broker }
  }

  /**
   * Revokes `sub`'s tokens issued up to now on every instance: applied here at
   * once, then published to the others (and back to this one, harmlessly).
   * Resolves with how many local connections it closed once the bus has the
   * control message; rejects with the bus's error otherwise.
   */
  async revoke (sub: string): Promise<number> {
    if (!isValidSub(sub)) throw new TypeError('sub must be a non-empty string')
    const revocation = { sub, at: Date.now() }
    const closed = this.#applyRevocation(revocation)
    await this.#bus.publish(revocationMessage(revocation))
    return closed
  }

  #control (message: BusMessage): void {
    const handler = this.controls.get(message.topic)
    if (handler !== undefined) {
      handler(message)
      return
    }
    // Another instance's probe, brought in by a binding as wide as `#`: expected, and nothing to do.
    if (message.topic.startsWith(PROBE_PREFIX)) return
    const revocation = message.topic === REVOKE_KEY ? parseRevocation(message) : 'unknown control routing key'
    if (typeof revocation === 'string') {
      this.#badControlMessages.report({ topic: message.topic, id: message.id, problem: revocation })
      return
    }
    const closed = this.#applyRevocation(revocation)
    if (closed > 0) this.log.info({ user: revocation.sub, closed }, 'event socket: closed the connections of a revoked user')
  }

  /** Records the revocation and closes the local connections whose token it covers; returns how many. */
  #applyRevocation (revocation: Revocation): number {
    this.#revocations.add(revocation)
    let closed = 0
    for (const connection of this.#connectionsBySub.of(revocation.sub)) {
      if (!this.#revocations.refuses(connection.user)) continue
      connection.close(CloseCode.TokenExpired, 'token revoked')
      closed++
    }
    return closed
  }

  /** Closes every connection with 1001 and resolves once all are gone. */
  shutdown (): Promise<void> {
    // preClose and onClose both call this; the second call waits for the first.
    this.#shutdown ??= this.#shutDown()
    return this.#shutdown
  }

  async #shutDown (): Promise<void> {
    this.#shuttingDown = true
    clearInterval(this.#heartbeat)
    this.deadlines.close()
    if (this.#connections.size > 0) {
      const allEnded = new Promise<void>((resolve) => { this.#lastConnectionEnded = resolve })
      for (const connection of this.#connections) connection.close(CloseCode.GoingAway, 'server shutting down')
      await allEnded
    }
    this.#flushes.flushAll()
  }
}
