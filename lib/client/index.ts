import type { BackoffOptions } from './backoff.js'
import { Deferred } from './deferred.js'
import { Emitter } from './emitter.js'
import { EventSocketClientError } from './errors.js'
import { Link, type LinkListener } from './link.js'
import { PendingRequests } from './pending-requests.js'
import { Reconnects } from './reconnects.js'
import { ResumePosition } from './resume-position.js'
import { SubscriptionRegistry } from './subscription-registry.js'
import { TokenSource } from './token-source.js'
import type { ErrorMessage, EventMessage, Format, HelloMessage, ServerMessage } from './protocol.js'
import type { ClientEvents, ClientState, ConnectOptions, EventHandler, ReceivedEvent, Subscription, WebSocketConstructor } from './types.js'

// The client of docs/protocol.md: one WebSocket at a time, every subscription held
// across reconnects, events fanned out to local handlers and acknowledged in
// batches once the handlers are done. Zero runtime dependencies; runs on the
// browser's WebSocket and on the `ws` package's. This class is the state
// machine that ties the parts together: the link (link.ts), the subscriptions
// (subscription-registry.ts), the requests in flight (pending-requests.ts),
// the token (token-source.ts), the reconnect policy (reconnects.ts) and the
// position to resume from (resume-position.ts).

export { EventSocketClientError } from './errors.js'
export type { ClientErrorCode, ClientErrorDetails } from './errors.js'
export type { BackoffOptions } from './backoff.js'
export type { Format, HelloMessage } from './protocol.js'
export type { ClientEvents, ClientState, ConnectOptions, EventHandler, ReceivedEvent, ResumeResult, Subscription, WebSocketConstructor, WebSocketLike } from './types.js'

const defaultBackoff: BackoffOptions = { initialDelayMs: 500, maxDelayMs: 30_000 }
const defaultAckDelayMs = 50

export function connect (options: ConnectOptions): EventSocketClient {
  return new EventSocketClient(options)
}

export class EventSocketClient extends Emitter<ClientEvents> {
  readonly #url: string
  readonly #format: Format
  readonly #WebSocket: WebSocketConstructor
  readonly #ackDelayMs: number
  readonly #tokens: TokenSource
  readonly #reconnects: Reconnects
  readonly #requests = new PendingRequests()
  readonly #position: ResumePosition
  readonly #subscriptions: SubscriptionRegistry
  readonly #linkListener: LinkListener = {
    message: (link, message) => { this.#onMessage(link, message) },
    undecodable: (link, error) => { this.#onUndecodable(link, error) },
    close: (link, code, reason) => { this.#onClose(link, code, reason) }
  }

  #state: ClientState = 'connecting'
  #link: Link | undefined
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
    const backoff = { ...defaultBackoff, ...options.reconnect }
    this.#tokens = new TokenSource(options.token, options.getToken)
    this.#reconnects = new Reconnects(backoff, this.#tokens)
    if (options.since !== undefined && typeof options.since !== 'string') throw new TypeError('since must be a string (a pos the server issued)')
    this.#position = new ResumePosition(options.since)
    this.#subscriptions = new SubscriptionRegistry({
      requests: this.#requests,
      backoff,
      link: () => this.#link,
      position: this.#position,
      resumeFirst: options.since !== undefined,
      resumed: (result) => { this.emit('resume', result) }
    })
    this.#ackDelayMs = options.ackDelayMs ?? defaultAckDelayMs
    this.#open()
  }

  get state (): ClientState {
    return this.#state
  }

  /**
   * The `pos` of the last event handed to the handlers (or, before any, of a
   * `sub`'s `ok`): where the next reconnect resumes. Store it to resume after
   * a reload with ConnectOptions `since`. Undefined while the server gave none.
   */
  get position (): string | undefined {
    return this.#position.value
  }

  /** Calls `handler` for every event whose topic matches `pattern` (AMQP syntax: `*` one word, `#` any number). */
  subscribe (pattern: string, handler: EventHandler): Subscription {
    if (this.#state === 'closed') throw new EventSocketClientError('EVSOCK_CLOSED', 'The client is closed', { pattern })
    return this.#subscriptions.add(pattern, handler)
  }

  /** Closes the connection for good; resolves once the socket is closed. */
  close (): Promise<void> {
    this.#shutdown(new EventSocketClientError('EVSOCK_CLOSED', 'The client was closed'))
    return this.#closed.promise
  }

  #open (): void {
    this.#tokens.forAttempt().then((token) => { this.#dial(token) }, (error: unknown) => {
      this.emit('error', new EventSocketClientError('EVSOCK_TOKEN_FAILED', 'getToken failed', { cause: error }))
      this.#retry()
    })
  }

  #dial (token: string | undefined): void {
    if (this.#state === 'closed') return
    try {
      this.#link = new Link({ WebSocket: this.#WebSocket, url: this.#url, format: this.#format, token }, this.#linkListener)
    } catch (error) {
      // E.g. a browser refusing ws:// from an https:// page: no retry changes that.
      this.#fail(new EventSocketClientError('EVSOCK_HANDSHAKE_REFUSED', `Could not open a WebSocket: ${(error as Error).message}`, { cause: error }))
    }
  }

  #onUndecodable (link: Link, error: unknown): void {
    if (link !== this.#link) return
    this.emit('error', new EventSocketClientError('EVSOCK_PROTOCOL', `Undecodable frame from the server: ${(error as Error).message}`, { cause: error }))
  }

  #onMessage (link: Link, message: ServerMessage): void {
    if (link !== this.#link) return
    switch (message.op) {
      case 'hello': return this.#onHello(link, message)
      case 'event': return this.#onEvent(link, message)
      case 'ok': return this.#requests.ok(message)
      case 'error': return this.#onError(message)
      case 'expiring': return this.#refreshToken(link)
    }
  }

  #onHello (link: Link, hello: HelloMessage): void {
    link.hello(hello.window, this.#ackDelayMs)
    this.#tokens.expiresAt(hello.expiresAt)
    this.#reconnects.opened()
    this.#subscriptions.resubscribe(link)
    this.#setState('open')
    this.emit('open', hello)
  }

  #onEvent (link: Link, message: EventMessage): void {
    if (!link.ready) return
    const event: ReceivedEvent = { topic: message.topic, id: message.id, data: message.data }
    // Handed to the handlers is processed, for resuming: an async handler
    // still running at a disconnect is not called for this event again.
    if (typeof message.pos === 'string') this.#position.dispatched(event.pos = message.pos)
    const handlers = this.#subscriptions.handlers(message.topic)
    // Acked once every handler is done, failed ones included: an event that
    // broke a handler is not redelivered, and must not stall the window.
    let pending = handlers.length + 1
    const done = (): void => { if (--pending === 0) link.processed(message.seq) }
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

  #onError (message: ErrorMessage): void {
    const error = this.#requests.error(message)
    if (error !== undefined) this.emit('error', error)
  }

  #handlerFailed (event: ReceivedEvent, error: unknown): void {
    this.emit('error', new EventSocketClientError('EVSOCK_HANDLER_FAILED', `A handler for ${event.topic} failed`, { topic: event.topic, cause: error }))
  }

  #refreshToken (link: Link): void {
    this.#tokens.refresh()?.then((token) => {
      if (link !== this.#link || !link.ready) return
      this.#requests.send(link, {
        op: 'auth',
        ok: (message) => { if (typeof message.expiresAt === 'number' || message.expiresAt === null) this.#tokens.expiresAt(message.expiresAt) },
        // The server closes with 4001 at `exp`; the reconnect then fetches a token again.
        refused: () => { this.#tokens.markStale() },
        lost: () => {}
      }, (id) => ({ op: 'auth', id, token }))
    }, (error: unknown) => {
      this.emit('error', new EventSocketClientError('EVSOCK_TOKEN_FAILED', 'getToken failed on "expiring"', { cause: error }))
    })
  }

  #onClose (link: Link, code: number, reason: string): void {
    if (link !== this.#link) return
    this.#link = undefined
    link.stop()
    this.#requests.lost()
    if (this.#state === 'closed') {
      this.#closed.resolve()
      return
    }
    if (link.ready) {
      this.emit('disconnect', { code, reason })
      this.#reconnects.closedAfterOpen(code)
    } else {
      const final = this.#reconnects.refused(link.status)
      if (final !== undefined) {
        this.#fail(final)
        return
      }
    }
    this.#retry()
  }

  #retry (): void {
    if (this.#state === 'closed') return
    this.#setState('reconnecting')
    this.#reconnects.schedule(() => { this.#open() })
  }

  #fail (error: EventSocketClientError): void {
    this.emit('error', error)
    this.#shutdown(error)
  }

  #shutdown (reason: EventSocketClientError): void {
    if (this.#state === 'closed') return
    this.#setState('closed')
    this.#reconnects.cancel()
    this.#subscriptions.clear(reason)
    const link = this.#link
    if (link === undefined) {
      this.#closed.resolve()
      return
    }
    link.close(1000)
  }

  #setState (state: ClientState): void {
    if (state === this.#state) return
    this.#state = state
    this.emit('state', state)
  }
}
