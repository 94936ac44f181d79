import { randomInt, randomUUID } from 'node:crypto'
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { WebSocket, RawData } from 'ws'
import { decodeMessage, type Format, type OutboundEvent } from './codec.js'
import { InboundGuard, type Breach } from './inbound-guard.js'
import { OutboundStream, type StreamFault, type StreamHost, type StreamOwner } from './outbound.js'
import { RequestHandler, type Refusal, type RequestContext, type RequestDeps } from './request-handler.js'
import { Resume } from './resume.js'
import type { ReplayHost } from './replay.js'
import type { Deadlines } from './deadlines.js'
import { CloseCode, type CloseCodeValue } from './client/close-codes.js'
import { parseRequest, type ErrorCode } from './requests.js'
import { expiresAt } from './tokens.js'
import type { EventSocketUser } from './options.js'

/** What a connection needs from the instance that holds it. */
export interface ConnectionHost extends RequestDeps<Connection> {
  readonly streams: StreamHost
  /** Token-lifetime deadlines of every connection, on one timer. */
  readonly deadlines: Deadlines<Connection>
  /** What replays share, when history is on. */
  readonly replays: ReplayHost | undefined
  /** The socket closed; the connection holds nothing any more. */
  ended (connection: Connection): void
}

// Ping payloads are a nonce below this (see #ping).
const PING_NONCES = 2 ** 30
// A peer that never answers our close frame is cut off after this long.
const CLOSE_GRACE_MS = 2000
// Error codes that mean the client sent something malformed (they count toward 4002).
const BAD_FRAME_CODES: ReadonlySet<ErrorCode> = new Set(['BAD_REQUEST', 'BAD_TOPIC', 'BAD_ACK'])
// Closes for what the client did (too many bad frames, too fast, a frame too big): logged at info, the others at debug.
const CLIENT_FAULTS: ReadonlySet<number> = new Set([CloseCode.TooManyBadFrames, CloseCode.RateLimited, CloseCode.TooBig])

// Set by the class's static block: the shared socket listeners call the private handlers through them.
let receive: (connection: Connection, data: RawData, isBinary: boolean) => void
let pong: (connection: Connection, payload: Buffer) => void
let dispose: (connection: Connection, code: number, reason: Buffer) => void

/**
 * One WebSocket, from hello to close (docs/protocol.md sections 2 to 5): it
 * composes what it sends (OutboundStream), the limits on what it receives
 * (InboundGuard) and its requests (RequestHandler), and owns the socket's
 * lifecycle: hello, heartbeat, token expiry, close.
 */
export class Connection implements RequestContext, StreamOwner, Breach {
  readonly session = randomUUID()
  readonly format: Format
  readonly socket: WebSocket
  readonly request: FastifyRequest
  readonly #host: ConnectionHost
  readonly #stream: OutboundStream
  readonly #guard: InboundGuard
  readonly #requests: RequestHandler<Connection>
  readonly resume: Resume | undefined
  #user: EventSocketUser
  /** Answered the last ping; cleared at each heartbeat. */
  #alive = true
  /**
   * Payload of the outstanding ping. Only a pong echoing it counts: a peer
   * that never reads cannot see it, so unsolicited pongs do not keep it alive.
   * A random start, so that it cannot be guessed from the heartbeat count.
   * 30 bits, a small integer to V8: 32 would box it in a heap number (16 bytes
   * a connection) three times in four.
   */
  #ping = randomInt(PING_NONCES)
  /** When the next token-lifetime step is due (the `expiring` notice, then the 4001 close), epoch ms. */
  #deadline: number | undefined
  #graceTimer: NodeJS.Timeout | undefined
  #ending = false
  /** The close this side sent, if it closed first. */
  #closedWith: { code: number, reason: string } | undefined
  #log: FastifyBaseLogger | undefined

  constructor (host: ConnectionHost, socket: WebSocket, request: FastifyRequest, user: EventSocketUser, format: Format) {
    this.#host = host
    this.socket = socket
    this.request = request
    this.#user = user
    this.format = format
    this.#stream = new OutboundStream(socket, format, host.options, host.streams, this)
    this.#guard = new InboundGuard(host.options, this)
    this.#requests = new RequestHandler(this, host)
    this.resume = host.replays === undefined ? undefined : this.#resumeIn(host.replays)
    // Listeners shared by all connections, so that each costs no closures.
    ;(socket as OwnedSocket)[kConnection] = this
    socket.on('message', onMessage)
    socket.on('pong', onPong)
    socket.on('close', onClose)
    const { options } = host
    this.reply({
      op: 'hello',
      v: 1,
      session: this.session,
      user: user.sub,
      window: options.window,
      maxMessageBytes: options.maxMessageBytes,
      heartbeatMs: options.heartbeatMs,
      expiresAt: expiresAt(user)
    })
    this.#armExpiry()
  }

  get user (): EventSocketUser {
    return this.#user
  }

  /**
   * The logger of every line about this connection: the upgrade request's
   * (its `reqId`, the connection id) with the session and the user's `sub`.
   * Made on first use: most connections never log above the app's level.
   */
  get log (): FastifyBaseLogger {
    this.#log ??= this.request.log.child({ session: this.session, user: this.#user.sub })
    return this.#log
  }

  /**
   * A debug line, through `log` only where debug lines are written: pino's
   * child with these bindings costs about 750 bytes of heap, which every
   * connection of an app logging at info would keep for lines never written.
   * A logger that cannot say its level (not pino) is given the line.
   */
  debug (fields: object, message: string): void {
    const parent = (this.#log ?? this.request.log) as FastifyBaseLogger & { isLevelEnabled?: (level: string) => boolean }
    if (parent.isLevelEnabled?.('debug') === false) return
    this.log.debug(fields, message)
  }

  get ending (): boolean {
    return this.#ending
  }

  /** Events waiting behind the window. */
  get pendingCount (): number {
    return this.#stream.pendingCount
  }

  /** Sends `event` now if the window allows, or queues it (with history on, unless a replay will read it or it was sent). */
  push (event: OutboundEvent): void {
    if (this.resume === undefined) this.#stream.push(event)
    else this.resume.live(event)
  }

  reply (message: Record<string, unknown>): void {
    this.#stream.control(message)
  }

  refuse (problem: Refusal): void {
    const message: Record<string, unknown> = { op: 'error', code: problem.code, message: problem.message }
    if (problem.id !== undefined) message.id = problem.id
    if (problem.topic !== undefined) message.topic = problem.topic
    this.reply(message)
    this.debug({ code: problem.code, problem: problem.message, id: problem.id }, 'event socket refused a request')
    if (problem.counts ?? BAD_FRAME_CODES.has(problem.code)) this.#guard.badFrame()
  }

  renewed (user: EventSocketUser): void {
    this.#user = user
    this.#armExpiry()
    this.debug({ expiresAt: expiresAt(user) }, 'event socket token refreshed')
  }

  /** One heartbeat: a connection that did not answer the previous ping is dropped. */
  heartbeat (): void {
    if (!this.#alive) {
      this.debug({}, 'event socket missed a heartbeat')
      this.socket.terminate()
      return
    }
    this.#alive = false
    this.#ping = (this.#ping + 1) % PING_NONCES
    const payload = Buffer.allocUnsafe(4)
    payload.writeUInt32BE(this.#ping)
    this.socket.ping(payload)
  }

  close (code: CloseCodeValue, reason: string): void {
    if (this.#ending) return
    this.#stream.flush()
    this.#ending = true
    this.#closedWith = { code, reason }
    this.#stream.stop()
    this.resume?.stop()
    this.socket.close(code, reason)
    this.#graceTimer = setTimeout(() => this.socket.terminate(), CLOSE_GRACE_MS)
  }

  /** The host's deadline for this connection came: send the notice, or close at expiry. */
  deadlineReached (): void {
    this.#deadline = undefined
    const at = expiresAt(this.#user)
    if (at === null || this.#ending) return
    if (Date.now() < at) {
      this.reply({ op: 'expiring', expiresAt: at })
      this.#setDeadline(at)
    } else {
      this.close(CloseCode.TokenExpired, 'token expired')
    }
  }

  #receive (data: RawData, isBinary: boolean): void {
    if (this.#ending) return
    const bytes = this.#guard.admit(data)
    if (bytes === undefined) return
    let decoded: unknown
    try {
      decoded = decodeMessage(this.format, bytes, isBinary)
    } catch (err) {
      this.refuse({ code: 'BAD_REQUEST', message: `unreadable frame: ${(err as Error).message}` })
      return
    }
    const parsed = parseRequest(decoded, this.#host.options)
    if ('code' in parsed) {
      this.refuse(parsed)
    } else if (parsed.op !== 'ack') {
      this.#requests.take(parsed)
    } else {
      const result = this.#stream.ack(parsed.seq)
      if (result === 'moved') this.#guard.ackMoved()
      else if (result === 'unsent') this.refuse({ code: 'BAD_ACK', message: `seq ${parsed.seq} was never sent (last sent: ${this.#stream.lastSent})` })
    }
  }

  #pong (payload: Buffer): void {
    if (payload.length === 4 && payload.readUInt32BE(0) === this.#ping) this.#alive = true
  }

  /** The stream stopped: a slow consumer, or a write that threw (OutboundStream's owner). */
  faulted (fault: StreamFault): void {
    if ('slow' in fault) {
      this.log.warn({ pending: this.pendingCount }, `event socket is a slow consumer: ${fault.slow}`)
      const acked = this.resume?.ackedPos
      this.close(CloseCode.SlowConsumer, acked === undefined ? 'slow consumer' : `slow consumer; resume after ${acked}`)
      return
    }
    this.log.error({ err: fault.failed }, 'event socket: writing to a socket failed; closing it with 1011')
    try {
      this.close(CloseCode.InternalError, 'internal error')
    } catch {
      this.socket.terminate()
    }
  }

  #resumeIn (replays: ReplayHost): Resume {
    return new Resume(replays, {
      stream: this.#stream,
      patterns: () => this.#host.subscriptions.patternsOf(this),
      format: this.format,
      failed: (reason) => {
        this.log.warn({ reason }, 'event socket: a replay could not go on; the client is told to resume again')
        this.close(CloseCode.TryAgainLater, 'resume again')
      }
    })
  }

  #armExpiry (): void {
    this.#setDeadline(undefined)
    const at = expiresAt(this.#user)
    if (at !== null) this.#setDeadline(at - this.#host.options.expiryNoticeMs)
  }

  #setDeadline (at: number | undefined): void {
    if (this.#deadline !== undefined) this.#host.deadlines.delete(this.#deadline, this)
    this.#deadline = at
    if (at !== undefined) this.#host.deadlines.add(at, this)
  }

  /** The socket closed, whoever closed it. */
  #dispose (code: number, reason: Buffer): void {
    // `byServer`: the plugin closed it (ws's own 1009 for a frame over maxPayload is not).
    const closed = this.#closedWith === undefined ? { code, reason: reason.toString(), byServer: false } : { ...this.#closedWith, byServer: true }
    if (CLIENT_FAULTS.has(closed.code)) this.log.info(closed, 'event socket closed')
    else this.debug(closed, 'event socket closed')
    this.#ending = true
    this.#setDeadline(undefined)
    clearTimeout(this.#graceTimer)
    this.#stream.stop()
    this.resume?.stop()
    this.#host.ended(this)
  }

  static {
    receive = (connection, data, isBinary) => { connection.#receive(data, isBinary) }
    pong = (connection, payload) => { connection.#pong(payload) }
    dispose = (connection, code, reason) => { connection.#dispose(code, reason) }
  }
}

const kConnection = Symbol('evsock connection')

type OwnedSocket = WebSocket & { [kConnection]: Connection }

function onMessage (this: WebSocket, data: RawData, isBinary: boolean): void {
  receive((this as OwnedSocket)[kConnection], data, isBinary)
}

function onPong (this: WebSocket, payload: Buffer): void {
  pong((this as OwnedSocket)[kConnection], payload)
}

function onClose (this: WebSocket, code: number, reason: Buffer): void {
  dispose((this as OwnedSocket)[kConnection], code, reason)
}
