import { randomInt, randomUUID } from 'node:crypto'
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import { WebSocket, type RawData } from 'ws'
import { controlFrame, decodeMessage, OutboundEvent, type Format } from './codec.js'
import { PendingQueue } from './pending-queue.js'
import type { Deadlines } from './deadlines.js'
import { payloadOf } from './ws-frame.js'
import { CloseCode, type CloseCodeValue } from './client/close-codes.js'
import { parseRequest, type ClientRequest, type ErrorCode, type RequestProblem } from './requests.js'
import { expiresAt } from './tokens.js'
import { TokenRevokedError } from './errors.js'
import type { EventSocketUser, ResolvedOptions } from './options.js'

/** What a connection needs from the instance that holds it. */
export interface ConnectionHost {
  readonly options: ResolvedOptions
  readonly log: FastifyBaseLogger
  /** Adds the connection under `pattern` and resolves once events of it are routed here. */
  subscribe (connection: Connection, pattern: string): Promise<void>
  unsubscribe (connection: Connection, pattern: string): void
  /** Verifies a refreshed token against the connection's upgrade request (what @fastify/jwt's `secret` and `trusted` are given). */
  verify (token: string, request: FastifyRequest): Promise<EventSocketUser>
  /** Calls `connection.flush()` once this turn of the event loop is over, so that its frames leave together. */
  schedule (connection: Connection): void
  /** Event frames were written (for stats). */
  sent (count: number): void
  /** A slow consumer is being closed (for stats). */
  slowConsumerClosed (): void
  closed (connection: Connection): void
  /** Token-lifetime deadlines of every connection, on one timer. */
  readonly deadlines: Deadlines<Connection>
}

// A peer that never answers our close frame is cut off after this long.
const CLOSE_GRACE_MS = 2000
// Error codes that mean the client sent something malformed (they count toward 4002).
const BAD_FRAME_CODES: ReadonlySet<ErrorCode> = new Set(['BAD_REQUEST', 'BAD_TOPIC', 'BAD_ACK'])

/**
 * One WebSocket: its user, subscriptions, ack window, pending queue, rate and
 * bad-frame accounting, and token-expiry timers (docs/protocol.md sections 2 to 5).
 */
export class Connection {
  readonly session = randomUUID()
  readonly format: Format
  readonly socket: WebSocket
  readonly request: FastifyRequest
  readonly subscriptions = new Set<string>()
  /** Answered the last ping; cleared at each heartbeat. */
  alive = true
  /**
   * Payload of the outstanding ping. Only a pong echoing it counts: a peer
   * that never reads cannot see it, so unsolicited pongs do not keep it alive.
   * A random start, so that it cannot be guessed from the heartbeat count.
   */
  #ping = randomInt(2 ** 32)
  /** Waits for the host's end-of-turn flush. */
  scheduled = false
  /** Last `seq` written, and last `seq` the client acknowledged. */
  #sent = 0
  #acked = 0
  /** Events behind a full window; created when the window first fills. */
  #pending: PendingQueue | undefined
  #user: EventSocketUser
  readonly #host: ConnectionHost
  readonly #options: ResolvedOptions
  /** The TCP socket, when frames may be written to it directly (no per-message compression). */
  readonly #tcp: TcpSocket | undefined
  /** Frames of this turn of the event loop, in order; the events among them carry seqs from `#outboxSeq` on. */
  #outbox: Array<OutboundEvent | Buffer> | undefined
  #outboxSeq = 0
  /** Subscribe, unsubscribe and auth waiting their turn: they run one after the other, in arrival order. */
  #requests: Array<Exclude<ClientRequest, { op: 'ack' }>> | undefined
  #rateTokens: number
  #rateCheckedAt = Date.now()
  #badFrames = 0
  #badFramesSince = 0
  /** When the next token-lifetime step is due (the `expiring` notice, then the 4001 close), epoch ms. */
  #deadline: number | undefined
  #graceTimer: NodeJS.Timeout | undefined
  #closing = false

  constructor (host: ConnectionHost, socket: WebSocket, request: FastifyRequest, user: EventSocketUser, format: Format) {
    this.#host = host
    this.#options = host.options
    this.socket = socket
    this.request = request
    this.#user = user
    this.format = format
    this.#rateTokens = host.options.rateBurst
    this.#tcp = socket.extensions === '' ? tcpOf(socket) : undefined
    // Listeners shared by all connections, so that each costs no closures.
    ;(socket as OwnedSocket)[kConnection] = this
    socket.on('message', onMessage)
    socket.on('pong', onPong)
    socket.on('close', onClose)
    this.#write({
      op: 'hello',
      v: 1,
      session: this.session,
      user: user.sub,
      window: this.#options.window,
      maxMessageBytes: this.#options.maxMessageBytes,
      heartbeatMs: this.#options.heartbeatMs,
      expiresAt: expiresAt(user)
    })
    this.#armExpiry()
  }

  get user (): EventSocketUser {
    return this.#user
  }

  /** Events waiting behind the window. */
  get pendingCount (): number {
    return this.#pending?.length ?? 0
  }

  /** Sends `event` now if the window allows, or queues it; a full queue makes this a slow consumer. */
  push (event: OutboundEvent): void {
    if (this.#closing) return
    if (this.pendingCount === 0 && this.#sent - this.#acked < this.#options.window) {
      this.#sendEvent(event)
      return
    }
    const pending = (this.#pending ??= new PendingQueue())
    pending.push(event)
    if (pending.length > this.#options.maxPendingEvents || pending.bytes > this.#options.maxPendingBytes) {
      this.#slowConsumer('pending queue overflowed')
    }
  }

  /** One heartbeat: a connection that did not answer the previous ping is dropped. */
  heartbeat (): void {
    if (!this.alive) {
      this.#host.log.debug({ session: this.session }, 'event socket missed a heartbeat')
      this.socket.terminate()
      return
    }
    this.alive = false
    this.#ping = (this.#ping + 1) >>> 0
    const payload = Buffer.allocUnsafe(4)
    payload.writeUInt32BE(this.#ping)
    this.socket.ping(payload)
  }

  pong (payload: Buffer): void {
    if (payload.length === 4 && payload.readUInt32BE(0) === this.#ping) this.alive = true
  }

  close (code: CloseCodeValue, reason: string): void {
    if (this.#closing) return
    this.flush()
    this.#closing = true
    this.#pending = undefined
    this.socket.close(code, reason)
    this.#graceTimer = setTimeout(() => this.socket.terminate(), CLOSE_GRACE_MS)
  }

  #sendEvent (event: OutboundEvent): void {
    this.#sent++
    this.#enqueue(event, this.#sent)
  }

  #enqueue (entry: OutboundEvent | Buffer, seq: number): void {
    if (this.#outbox === undefined) {
      this.#outbox = []
      this.#outboxSeq = seq
      this.#host.schedule(this)
    }
    this.#outbox.push(entry)
  }

  /**
   * Writes the frames of this turn: one buffer and one write on the direct
   * path, since a write per frame costs more than building the frames.
   */
  flush (): void {
    const outbox = this.#outbox
    if (outbox === undefined) return
    this.#outbox = undefined
    // After our close frame nothing may follow; a peer's close made the socket unwritable.
    if (this.#closing || this.socket.readyState !== WebSocket.OPEN) return
    const { format } = this
    let seq = this.#outboxSeq
    let events = 0
    if (this.#tcp !== undefined) {
      let length = 0
      for (const entry of outbox) length += entry instanceof OutboundEvent ? entry.frameLength(format, seq++) : entry.length
      const batch = Buffer.allocUnsafe(length)
      let at = 0
      seq = this.#outboxSeq
      for (const entry of outbox) {
        if (entry instanceof OutboundEvent) {
          at = entry.writeFrame(batch, at, format, seq++)
          events++
        } else at += entry.copy(batch, at)
      }
      // Without compression ws's sender never queues, so this write stays in
      // order with the pings and the close frame ws writes itself.
      this.#tcp.write(batch)
    } else {
      for (const entry of outbox) {
        const isEvent = entry instanceof OutboundEvent
        this.socket.send(payloadOf(isEvent ? entry.frame(format, seq++) : entry), { binary: format === 'msgpack' })
        if (isEvent) events++
      }
    }
    this.#host.sent(events)
    // The window bounds events, not bytes: a peer that stopped reading at the
    // TCP level would otherwise pile its frames up in our memory.
    if (this.socket.bufferedAmount > this.#options.maxBufferedBytes) this.#slowConsumer('socket buffer overflowed')
  }

  #drain (): void {
    const pending = this.#pending
    if (pending === undefined) return
    while (pending.length > 0 && this.#sent - this.#acked < this.#options.window && !this.#closing) {
      this.#sendEvent(pending.shift()!)
    }
    if (pending.length === 0) this.#pending = undefined
  }

  #slowConsumer (why: string): void {
    this.#host.log.warn({ session: this.session, user: this.#user.sub, pending: this.pendingCount }, `event socket is a slow consumer: ${why}`)
    this.#host.slowConsumerClosed()
    this.close(CloseCode.SlowConsumer, 'slow consumer')
  }

  #write (message: Record<string, unknown>): void {
    if (this.#closing) return
    this.#enqueue(controlFrame(this.format, message), this.#sent + 1)
  }

  /** One inbound WebSocket message. */
  receive (data: RawData, isBinary: boolean): void {
    if (this.#closing) return
    if (!this.#withinRate()) {
      this.close(CloseCode.RateLimited, 'rate limit exceeded')
      return
    }
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer)
    // ws enforces maxPayload when this plugin registered it; an app's own
    // @fastify/websocket may allow more, so the limit is checked here as well.
    if (bytes.length > this.#options.maxMessageBytes) {
      this.close(CloseCode.TooBig, 'frame too large')
      return
    }
    let decoded: unknown
    try {
      decoded = decodeMessage(this.format, bytes, isBinary)
    } catch (err) {
      this.#refuse({ code: 'BAD_REQUEST', message: `unreadable frame: ${(err as Error).message}` })
      return
    }
    const parsed = parseRequest(decoded, this.#options)
    if ('code' in parsed) {
      this.#refuse(parsed)
      return
    }
    if (parsed.op === 'ack') {
      // An ack that moves the window forward is bounded by the events sent, so
      // it gives its token back: a client acking every event is never throttled.
      if (this.#onAck(parsed.seq)) this.#rateTokens = Math.min(this.#options.rateBurst, this.#rateTokens + 1)
      return
    }
    if (this.#requests !== undefined) {
      // Behind a slow async authorize the queue would grow as fast as the
      // rate refills. Bounded by one burst, so that whatever the rate limit
      // admits at once (a whole resubscription after a reconnect) still fits.
      if (this.#requests.length >= this.#options.rateBurst) {
        this.#refuse({ code: 'RATE_LIMITED', message: `more than ${this.#options.rateBurst} requests waiting`, id: parsed.id })
        return
      }
      this.#requests.push(parsed)
      return
    }
    this.#requests = [parsed]
    this.#process(this.#requests).catch(() => {})
  }

  async #process (queue: Array<Exclude<ClientRequest, { op: 'ack' }>>): Promise<void> {
    for (let request = queue.shift(); request !== undefined; request = queue.shift()) {
      try {
        await this.#handle(request)
      } catch (err) {
        this.#host.log.error({ err, session: this.session }, 'event socket request failed')
        this.#refuse({ code: 'INTERNAL', message: 'internal error', id: request.id })
      }
    }
    // Gone once idle: most connections subscribe once and never ask again.
    this.#requests = undefined
  }

  /** Returns true when the ack moved the window forward. */
  #onAck (seq: number): boolean {
    if (seq > this.#sent) {
      this.#refuse({ code: 'BAD_ACK', message: `seq ${seq} was never sent (last sent: ${this.#sent})` })
      return false
    }
    if (seq <= this.#acked) return false
    this.#acked = seq
    this.#drain()
    return true
  }

  async #handle (request: Exclude<ClientRequest, { op: 'ack' }>): Promise<void> {
    if (this.#closing) return
    switch (request.op) {
      case 'sub': return await this.#subscribe(request.id, request.topic, request.since)
      case 'unsub':
        if (this.subscriptions.delete(request.topic)) this.#host.unsubscribe(this, request.topic)
        this.#write({ op: 'ok', id: request.id })
        return
      case 'auth': return await this.#refresh(request.id, request.token)
    }
  }

  async #subscribe (id: number, pattern: string, since: string | undefined): Promise<void> {
    if (this.subscriptions.has(pattern)) {
      this.#write({ op: 'ok', id })
      return
    }
    if (this.subscriptions.size >= this.#options.maxSubscriptions) {
      this.#refuse({ code: 'TOO_MANY_SUBSCRIPTIONS', message: `at most ${this.#options.maxSubscriptions} subscriptions per connection`, id })
      return
    }
    if (!await this.#allowed(pattern)) {
      this.#refuse({ code: 'FORBIDDEN', message: `not allowed to subscribe to ${pattern}`, id })
      return
    }
    if (this.#closing) return
    this.subscriptions.add(pattern)
    try {
      await this.#host.subscribe(this, pattern)
    } catch (err) {
      this.subscriptions.delete(pattern)
      this.#host.unsubscribe(this, pattern)
      // The broker could not be reached in time: the client may retry, nothing here failed.
      if ((err as { code?: unknown }).code !== 'FST_EVSOCK_BROKER_UNAVAILABLE') throw err
      this.#refuse({ code: 'UNAVAILABLE', message: `subscription to ${pattern} not made: ${(err as Error).message}`, id })
      return
    }
    // History is not kept, so a resume point can never be honoured (docs/protocol.md section 6).
    this.#write(since === undefined ? { op: 'ok', id } : { op: 'ok', id, recovered: false })
  }

  async #allowed (pattern: string): Promise<boolean> {
    try {
      return await this.#options.authorize(this.#user, pattern, this.request) === true
    } catch (err) {
      this.#host.log.error({ err, session: this.session, pattern }, 'event socket authorize hook threw; refusing')
      return false
    }
  }

  async #refresh (id: number, token: string): Promise<void> {
    let user: EventSocketUser
    try {
      user = await this.#host.verify(token, this.request)
    } catch (err) {
      if (err instanceof TokenRevokedError) {
        this.close(CloseCode.TokenExpired, 'token revoked')
        return
      }
      this.#refuse({ code: 'BAD_TOKEN', message: (err as Error).message, id })
      return
    }
    if (user.sub !== this.#user.sub) {
      this.#refuse({ code: 'BAD_TOKEN', message: 'the new token is for another user', id })
      return
    }
    if (this.#closing) return
    this.#user = user
    // New claims may take rights away: end the subscriptions they no longer allow.
    for (const pattern of [...this.subscriptions]) {
      if (await this.#allowed(pattern)) continue
      if (this.subscriptions.delete(pattern)) this.#host.unsubscribe(this, pattern)
      this.#refuse({ code: 'FORBIDDEN', message: `subscription ${pattern} ended: no longer allowed`, topic: pattern })
    }
    this.#armExpiry()
    this.#write({ op: 'ok', id, expiresAt: expiresAt(user) })
  }

  #refuse (problem: RequestProblem & { topic?: string }): void {
    const message: Record<string, unknown> = { op: 'error', code: problem.code, message: problem.message }
    if (problem.id !== undefined) message.id = problem.id
    if (problem.topic !== undefined) message.topic = problem.topic
    this.#write(message)
    if (BAD_FRAME_CODES.has(problem.code)) this.#countBadFrame()
  }

  #countBadFrame (): void {
    const now = Date.now()
    if (now - this.#badFramesSince > this.#options.badFrameWindowMs) {
      this.#badFrames = 0
      this.#badFramesSince = now
    }
    if (++this.#badFrames >= this.#options.maxBadFrames) this.close(CloseCode.TooManyBadFrames, 'too many bad frames')
  }

  /** Token bucket: `rateLimit` frames a second, bursts up to `rateBurst`. */
  #withinRate (): boolean {
    const now = Date.now()
    const { rateLimit, rateBurst } = this.#options
    this.#rateTokens = Math.min(rateBurst, this.#rateTokens + (now - this.#rateCheckedAt) * rateLimit / 1000)
    this.#rateCheckedAt = now
    if (this.#rateTokens < 1) return false
    this.#rateTokens--
    return true
  }

  #armExpiry (): void {
    this.#setDeadline(undefined)
    const at = expiresAt(this.#user)
    if (at !== null) this.#setDeadline(at - this.#options.expiryNoticeMs)
  }

  #setDeadline (at: number | undefined): void {
    if (this.#deadline !== undefined) this.#host.deadlines.delete(this.#deadline, this)
    this.#deadline = at
    if (at !== undefined) this.#host.deadlines.add(at, this)
  }

  /** The host's deadline for this connection came: send the notice, or close at expiry. */
  deadlineReached (): void {
    this.#deadline = undefined
    const at = expiresAt(this.#user)
    if (at === null || this.#closing) return
    if (Date.now() < at) {
      this.#write({ op: 'expiring', expiresAt: at })
      this.#setDeadline(at)
    } else {
      this.close(CloseCode.TokenExpired, 'token expired')
    }
  }

  /** The socket closed, whoever closed it. */
  dispose (): void {
    this.#closing = true
    this.#setDeadline(undefined)
    clearTimeout(this.#graceTimer)
    this.#pending = undefined
    this.#host.closed(this)
  }
}

const kConnection = Symbol('evsock connection')

type OwnedSocket = WebSocket & { [kConnection]: Connection }

function onMessage (this: WebSocket, data: RawData, isBinary: boolean): void {
  (this as OwnedSocket)[kConnection].receive(data, isBinary)
}

function onPong (this: WebSocket, payload: Buffer): void {
  (this as OwnedSocket)[kConnection].pong(payload)
}

function onClose (this: WebSocket): void {
  (this as OwnedSocket)[kConnection].dispose()
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
