import { AckTracker } from './acks.js'
import { CloseCode } from './close-codes.js'
import { backoffDelay, saturatedAttempt, type BackoffOptions } from './backoff.js'
import { Emitter } from './emitter.js'
import { EventSocketClientError } from './errors.js'
import { canonicalPattern, compilePattern } from './patterns.js'
import { BEARER_PREFIX, decodeMessage, encodeMessage, subprotocols } from './protocol.js'
import type { ClientMessage, EventMessage, Format, HelloMessage, OkMessage, ErrorMessage, ServerMessage } from './protocol.js'

// The client of docs/protocol.md: one WebSocket at a time, every subscription held
// across reconnects, events fanned out to local handlers and acknowledged in
// batches once the handlers are done. Zero runtime dependencies; runs on the
// browser's WebSocket and on the `ws` package's.

export { EventSocketClientError } from './errors.js'
export type { ClientErrorCode, ClientErrorDetails } from './errors.js'
export type { BackoffOptions } from './backoff.js'
export type { Format, HelloMessage } from './protocol.js'

/** The part of the WebSocket API the client uses; the browser's and `ws`'s both fit. */
export interface WebSocketLike {
  readonly readyState: number
  binaryType: string
  send (data: string | Uint8Array): void
  close (code?: number, reason?: string): void
  addEventListener (type: 'message', listener: (event: { data: unknown }) => void): void
  addEventListener (type: 'close', listener: (event: { code: number, reason: string }) => void): void
  addEventListener (type: 'error', listener: () => void): void
}

export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike

export interface ConnectOptions {
  /** ws:// or wss:// URL of the endpoint, e.g. `wss://example.com/events`. */
  url: string | URL
  /** The access token (a JWT). With `getToken` too, it is used first. */
  token?: string
  /** Fetches a fresh token: on `expiring`, after close 4001, and after a refused handshake. */
  getToken?: () => string | Promise<string>
  /** Wire format. Default 'json'. */
  format?: Format
  /** WebSocket constructor; default the global one. In Node < 22 pass `ws`'s. */
  WebSocket?: WebSocketConstructor
  /** Reconnect backoff ceilings (full jitter). Default 500 ms growing to 30 s. */
  reconnect?: Partial<BackoffOptions>
  /** Longest an ack waits for more events to batch with, ms. Default 50. */
  ackDelayMs?: number
}

export type ClientState = 'connecting' | 'open' | 'reconnecting' | 'closed'

/** What a handler receives. */
export interface ReceivedEvent {
  topic: string
  id: string
  data: unknown
  /** Server-side position, when the server keeps history. */
  pos?: string
}

/** A handler may be async: the event is acknowledged once its promise settles. */
export type EventHandler = (event: ReceivedEvent) => void | Promise<void>

/** Removes the handler; resolves once the server confirmed the `unsub` (immediately if other handlers keep the pattern). */
export interface Subscription {
  (): Promise<void>
  /** Resolves once the server confirmed the subscription; rejects when it refused it. */
  readonly ready: Promise<void>
}

export interface ClientEvents {
  state: ClientState
  /** A connection is up and its `hello` arrived. */
  open: HelloMessage
  /** A connection ended (the client reconnects unless it is closed). */
  disconnect: { code: number, reason: string }
  /** Every failure. Those that end the client are followed by state 'closed'. */
  error: EventSocketClientError
}

const defaultBackoff: BackoffOptions = { initialDelayMs: 500, maxDelayMs: 30_000 }
const defaultAckDelayMs = 50
const OPEN = 1 // WebSocket.OPEN, which a constructor passed in need not expose statically.

/** Close codes after which the client waits out a full backoff ceiling: the server said it is sending too much. */
const penaltyCloses = new Set<number>([CloseCode.TooManyBadFrames, CloseCode.RateLimited])
/** Handshake statuses that no retry can fix. */
const finalStatuses = new Set([400, 403])

export function connect (options: ConnectOptions): EventSocketClient {
  return new EventSocketClient(options)
}

interface Registration { handler: EventHandler }

/** One pattern held with the server, shared by every local handler subscribed to it. */
interface PatternEntry {
  pattern: string
  matches: (topic: string) => boolean
  registrations: Set<Registration>
  ready: Deferred
  /** The connection the `sub` was last sent on. */
  sentOn: Link | undefined
  /** Resume position for the next `sub` (docs/protocol.md section 6). */
  since: string | undefined
  /** Failed `sub`s in a row answered UNAVAILABLE, for the backoff of the next try. */
  unavailable: number
  /** The pending re-send after UNAVAILABLE, cleared on close so it cannot hold a Node process open. */
  retry: ReturnType<typeof setTimeout> | undefined
}

/** One WebSocket and what belongs to it alone. */
interface Link {
  socket: WebSocketLike
  /** Set by `hello`; until then the link is not usable. */
  acks: AckTracker | undefined
  /** HTTP status of a refused handshake, when the platform tells it. */
  status: number | undefined
  /** `pos` of the last event received on this link. */
  lastPos: string | undefined
}

type Request =
  | { op: 'sub', entry: PatternEntry }
  | { op: 'unsub', pattern: string, done: Deferred }
  | { op: 'auth' }

export class EventSocketClient extends Emitter<ClientEvents> {
  readonly #url: string
  readonly #format: Format
  readonly #WebSocket: WebSocketConstructor
  readonly #getToken: (() => string | Promise<string>) | undefined
  readonly #backoff: BackoffOptions
  readonly #ackDelayMs: number

  #state: ClientState = 'connecting'
  #token: string | undefined
  /** The next attempt must fetch a token first. */
  #tokenStale = false
  /** The token in use came from `getToken` for this very attempt: a 401 for it is final. */
  #tokenFresh = false
  #expiresAt: number | null = null
  #attempt = 0
  /** Failed attempts in a row whose cause the platform hid (browsers, network errors). */
  #unexplainedFailures = 0
  #openedAt = 0
  #link: Link | undefined
  #retryTimer: ReturnType<typeof setTimeout> | undefined
  #nextId = 1
  readonly #requests = new Map<number, Request>()
  readonly #subscriptions = new Map<string, PatternEntry>()
  readonly #closed = new Deferred()

  constructor (options: ConnectOptions) {
    super()
    const WebSocketImpl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket
    if (WebSocketImpl === undefined) {
      throw new EventSocketClientError('EVSOCK_NO_WEBSOCKET', 'No global WebSocket: pass one, e.g. connect({ WebSocket: (await import("ws")).WebSocket, ... })')
    }
    this.#WebSocket = WebSocketImpl
    // Checked here, where a throw reaches the caller, rather than in a later reconnect.
    const url = new URL(options.url)
    if (url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new TypeError(`url must be ws:// or wss://, got ${url.href}`)
    this.#url = url.href
    this.#format = options.format ?? 'json'
    this.#token = options.token
    this.#getToken = options.getToken
    this.#backoff = { ...defaultBackoff, ...options.reconnect }
    this.#ackDelayMs = options.ackDelayMs ?? defaultAckDelayMs
    this.#open()
  }

  get state (): ClientState {
    return this.#state
  }

  /** Calls `handler` for every event whose topic matches `pattern` (AMQP syntax: `*` one word, `#` any number). */
  subscribe (spelled: string, handler: EventHandler): Subscription {
    if (this.#state === 'closed') throw new EventSocketClientError('EVSOCK_CLOSED', 'The client is closed', { pattern: spelled })
    // The server keeps one subscription per canonical pattern: two spellings
    // of it must share one entry, or unsubscribing one would end the other's.
    const pattern = canonicalPattern(spelled)
    let entry = this.#subscriptions.get(pattern)
    if (entry === undefined) {
      entry = { pattern, matches: compilePattern(pattern), registrations: new Set(), ready: new Deferred(), sentOn: undefined, since: undefined, unavailable: 0, retry: undefined }
      this.#subscriptions.set(pattern, entry)
      if (this.#link?.acks !== undefined) this.#sendSub(this.#link, entry)
    }
    const registration: Registration = { handler }
    entry.registrations.add(registration)
    const held = entry
    return Object.assign(() => this.#unsubscribe(held, registration), { ready: held.ready.promise })
  }

  /** Closes the connection for good; resolves once the socket is closed. */
  close (): Promise<void> {
    this.#shutdown(new EventSocketClientError('EVSOCK_CLOSED', 'The client was closed'))
    return this.#closed.promise
  }

  #open (): void {
    this.#currentToken().then((token) => { this.#dial(token) }, (error: unknown) => {
      this.emit('error', new EventSocketClientError('EVSOCK_TOKEN_FAILED', 'getToken failed', { cause: error }))
      this.#retry()
    })
  }

  #dial (token: string | undefined): void {
    if (this.#state === 'closed') return
    // The format first: the server picks the first format offered, and never echoes the bearer entry.
    const protocols = [subprotocols[this.#format]]
    if (token !== undefined) protocols.push(BEARER_PREFIX + token)
    let socket: WebSocketLike
    try {
      socket = new this.#WebSocket(this.#url, protocols)
    } catch (error) {
      // E.g. a browser refusing ws:// from an https:// page: no retry changes that.
      this.#fail(new EventSocketClientError('EVSOCK_HANDSHAKE_REFUSED', `Could not open a WebSocket: ${(error as Error).message}`, { cause: error }))
      return
    }
    socket.binaryType = 'arraybuffer'
    const link: Link = { socket, acks: undefined, status: undefined, lastPos: undefined }
    this.#link = link
    watchHandshakeStatus(socket, (status) => { link.status = status })
    socket.addEventListener('message', (event: { data: unknown }) => { this.#onFrame(link, event.data) })
    // Errors are always followed by 'close', where they are handled; the
    // listener still matters: `ws` throws an 'error' nobody listens to.
    socket.addEventListener('error', () => {})
    socket.addEventListener('close', (event: { code: number, reason: string }) => { this.#onClose(link, event.code, event.reason) })
  }

  async #currentToken (): Promise<string | undefined> {
    this.#tokenFresh = false
    const expired = this.#expiresAt !== null && Date.now() >= this.#expiresAt
    if (this.#getToken !== undefined && (this.#token === undefined || this.#tokenStale || expired)) {
      this.#token = await this.#getToken()
      this.#tokenStale = false
      this.#tokenFresh = true
      this.#expiresAt = null
    }
    return this.#token
  }

  #onFrame (link: Link, data: unknown): void {
    if (link !== this.#link) return
    let message: ServerMessage | undefined
    try {
      message = decodeMessage(data)
    } catch (error) {
      this.emit('error', new EventSocketClientError('EVSOCK_PROTOCOL', `Undecodable frame from the server: ${(error as Error).message}`, { cause: error }))
      return
    }
    switch (message?.op) {
      case 'hello': return this.#onHello(link, message)
      case 'event': return this.#onEvent(link, message)
      case 'ok': return this.#onOk(message)
      case 'error': return this.#onError(message)
      case 'expiring': return this.#refreshToken(link)
    }
  }

  #onHello (link: Link, hello: HelloMessage): void {
    link.acks = new AckTracker(hello.window, this.#ackDelayMs, (seq) => { this.#send(link, { op: 'ack', seq }) })
    this.#expiresAt = hello.expiresAt
    this.#openedAt = Date.now()
    this.#unexplainedFailures = 0
    for (const entry of this.#subscriptions.values()) this.#sendSub(link, entry)
    this.#setState('open')
    this.emit('open', hello)
  }

  #onEvent (link: Link, message: EventMessage): void {
    const acks = link.acks
    if (acks === undefined) return
    const event: ReceivedEvent = { topic: message.topic, id: message.id, data: message.data }
    if (typeof message.pos === 'string') link.lastPos = event.pos = message.pos
    const handlers: EventHandler[] = []
    for (const entry of this.#subscriptions.values()) {
      if (entry.matches(message.topic)) for (const { handler } of entry.registrations) handlers.push(handler)
    }
    // Acked once every handler is done, failed ones included: an event that
    // broke a handler is not redelivered, and must not stall the window.
    let pending = handlers.length + 1
    const done = (): void => { if (--pending === 0) acks.processed(message.seq) }
    for (const handler of handlers) {
      try {
        const result = handler(event)
        if (result instanceof Promise) result.then(done, (error: unknown) => { this.#handlerFailed(event, error); done() })
        else done()
      } catch (error) {
        this.#handlerFailed(event, error)
        done()
      }
    }
    done()
  }

  #handlerFailed (event: ReceivedEvent, error: unknown): void {
    this.emit('error', new EventSocketClientError('EVSOCK_HANDLER_FAILED', `A handler for ${event.topic} failed`, { topic: event.topic, cause: error }))
  }

  #onOk (message: OkMessage): void {
    const request = this.#requests.get(message.id)
    this.#requests.delete(message.id)
    if (request?.op === 'sub') {
      request.entry.unavailable = 0
      request.entry.ready.resolve()
    } else if (request?.op === 'unsub') request.done.resolve()
    else if (request?.op === 'auth' && (typeof message.expiresAt === 'number' || message.expiresAt === null)) this.#expiresAt = message.expiresAt
  }

  #onError (message: ErrorMessage): void {
    const request = message.id === undefined ? undefined : this.#requests.get(message.id)
    if (request === undefined) {
      this.emit('error', new EventSocketClientError('EVSOCK_SERVER_ERROR', message.message, { serverCode: message.code }))
      return
    }
    this.#requests.delete(message.id as number)
    const pattern = request.op === 'sub' ? request.entry.pattern : request.op === 'unsub' ? request.pattern : undefined
    const error = new EventSocketClientError('EVSOCK_REQUEST_FAILED', `${request.op} refused: ${message.message}`, { serverCode: message.code, pattern })
    if (request.op === 'sub' && message.code === 'UNAVAILABLE' && this.#subscriptions.get(request.entry.pattern) === request.entry) {
      // The server could not reach its broker in time: not a refusal. Kept and asked again after a backoff
      // (and on any reconnect); `ready` rejects, and later subscribers of the pattern get a fresh one.
      const entry = request.entry
      entry.ready.reject(error)
      entry.ready = new Deferred()
      const link = entry.sentOn
      clearTimeout(entry.retry)
      entry.retry = setTimeout(() => {
        entry.retry = undefined
        if (this.#subscriptions.get(entry.pattern) === entry && entry.sentOn === link && link === this.#link && link?.acks !== undefined) this.#sendSub(link, entry)
      }, backoffDelay(entry.unavailable++, this.#backoff) + this.#backoff.initialDelayMs)
    } else if (request.op === 'sub') {
      // Refused patterns are dropped, so that reconnects do not ask again.
      if (this.#subscriptions.get(request.entry.pattern) === request.entry) this.#subscriptions.delete(request.entry.pattern)
      request.entry.ready.reject(error)
    } else if (request.op === 'unsub') {
      request.done.reject(error)
    } else {
      // The server closes with 4001 at `exp`; the reconnect then fetches a token again.
      this.#tokenStale = true
    }
    this.emit('error', error)
  }

  #refreshToken (link: Link): void {
    const getToken = this.#getToken
    if (getToken === undefined) return
    Promise.resolve().then(getToken).then((token) => {
      this.#token = token
      this.#tokenStale = false
      this.#expiresAt = null // unknown until the server's `ok`
      if (link !== this.#link || link.acks === undefined) return
      const id = this.#nextId++
      this.#requests.set(id, { op: 'auth' })
      this.#send(link, { op: 'auth', id, token })
    }, (error: unknown) => {
      this.emit('error', new EventSocketClientError('EVSOCK_TOKEN_FAILED', 'getToken failed on "expiring"', { cause: error }))
    })
  }

  #unsubscribe (entry: PatternEntry, registration: Registration): Promise<void> {
    if (!entry.registrations.delete(registration) || entry.registrations.size > 0) return Promise.resolve()
    this.#subscriptions.delete(entry.pattern)
    entry.ready.reject(new EventSocketClientError('EVSOCK_CLOSED', 'Unsubscribed before the server confirmed the subscription', { pattern: entry.pattern }))
    const link = this.#link
    if (link?.acks === undefined) return Promise.resolve()
    const id = this.#nextId++
    const done = new Deferred()
    this.#requests.set(id, { op: 'unsub', pattern: entry.pattern, done })
    this.#send(link, { op: 'unsub', id, topic: entry.pattern })
    return done.promise
  }

  #sendSub (link: Link, entry: PatternEntry): void {
    const id = this.#nextId++
    this.#requests.set(id, { op: 'sub', entry })
    entry.sentOn = link
    this.#send(link, entry.since === undefined ? { op: 'sub', id, topic: entry.pattern } : { op: 'sub', id, topic: entry.pattern, since: entry.since })
  }

  #send (link: Link, message: ClientMessage): void {
    if (link.socket.readyState === OPEN) link.socket.send(encodeMessage(this.#format, message))
  }

  #onClose (link: Link, code: number, reason: string): void {
    if (link !== this.#link) return
    this.#link = undefined
    const opened = link.acks !== undefined
    link.acks?.stop()
    this.#forgetLink(link)
    if (this.#state === 'closed') {
      this.#closed.resolve()
      return
    }
    if (opened) this.emit('disconnect', { code, reason })
    if (opened ? this.#afterOpenClose(code) : this.#afterRefusal(link.status)) this.#retry()
  }

  /** Requests and resume positions of a connection that is gone. */
  #forgetLink (link: Link): void {
    for (const request of this.#requests.values()) {
      // The server dropped every subscription with the connection: an unsub in flight has its effect.
      if (request.op === 'unsub') request.done.resolve()
    }
    this.#requests.clear()
    for (const entry of this.#subscriptions.values()) {
      if (entry.sentOn === link && link.lastPos !== undefined) entry.since = link.lastPos
    }
  }

  /** Decides what a close after `hello` means; true to reconnect. */
  #afterOpenClose (code: number): boolean {
    // A connection that stayed up for a while proves the server healthy again.
    if (Date.now() - this.#openedAt >= this.#backoff.maxDelayMs) this.#attempt = 0
    if (code === CloseCode.TokenExpired) this.#tokenStale = true
    if (penaltyCloses.has(code)) this.#attempt = Math.max(this.#attempt, saturatedAttempt(this.#backoff))
    return true
  }

  /** Decides what a handshake that never opened means; true to retry. */
  #afterRefusal (status: number | undefined): boolean {
    if (status === 401) {
      if (this.#getToken === undefined || this.#tokenFresh) {
        this.#fail(new EventSocketClientError('EVSOCK_UNAUTHORIZED', 'The server refused the token (401)', { status }))
        return false
      }
      this.#tokenStale = true
      return true
    }
    if (status !== undefined && finalStatuses.has(status)) {
      this.#fail(new EventSocketClientError('EVSOCK_HANDSHAKE_REFUSED', `The server refused the handshake (${status})`, { status }))
      return false
    }
    // Browsers hide the status: a refused token looks like a network error. The
    // first such failure (a restart, a blip) reuses the token; from the second
    // in a row on, a fresh one is fetched in case the old one is what fails.
    if (status === undefined && ++this.#unexplainedFailures >= 2 && this.#getToken !== undefined) this.#tokenStale = true
    return true
  }

  #retry (): void {
    if (this.#state === 'closed') return
    this.#setState('reconnecting')
    const delay = backoffDelay(this.#attempt++, this.#backoff)
    this.#retryTimer = setTimeout(() => { this.#open() }, delay)
  }

  #fail (error: EventSocketClientError): void {
    this.emit('error', error)
    this.#shutdown(error)
  }

  #shutdown (reason: EventSocketClientError): void {
    if (this.#state === 'closed') return
    this.#setState('closed')
    clearTimeout(this.#retryTimer)
    for (const entry of this.#subscriptions.values()) {
      clearTimeout(entry.retry)
      entry.ready.reject(reason)
    }
    this.#subscriptions.clear()
    const link = this.#link
    if (link === undefined) {
      this.#closed.resolve()
      return
    }
    link.acks?.stop()
    link.socket.close(1000)
  }

  #setState (state: ClientState): void {
    if (state === this.#state) return
    this.#state = state
    this.emit('state', state)
  }
}

/**
 * `ws` tells the status of a refused handshake through 'unexpected-response';
 * browsers tell nothing. Listening replaces ws's own abort, so the handshake
 * is aborted here, which ends in the usual 'error' and 'close'.
 */
function watchHandshakeStatus (socket: WebSocketLike, record: (status: number) => void): void {
  const node = socket as Partial<NodeWebSocket>
  if (typeof node.on !== 'function') return
  node.on('unexpected-response', (_request, response) => {
    if (response.statusCode !== undefined) record(response.statusCode)
    socket.close()
  })
}

interface NodeWebSocket {
  on (event: 'unexpected-response', listener: (request: unknown, response: { statusCode?: number }) => void): unknown
}

/** A promise with its settle functions; never reported as unhandled, since callers may not await it. */
class Deferred {
  readonly promise: Promise<void>
  resolve!: () => void
  reject!: (error: Error) => void

  constructor () {
    this.promise = new Promise((resolve, reject) => {
      this.resolve = resolve
      this.reject = reject
    })
    this.promise.catch(() => {})
  }
}
