import { AckTracker } from './acks.js'
import { BEARER_PREFIX, decodeMessage, encodeMessage, subprotocols } from './protocol.js'
import type { ClientMessage, Format, ServerMessage } from './protocol.js'
import type { WebSocketConstructor, WebSocketLike } from './types.js'

// One WebSocket and what belongs to it alone: its handshake status and its
// acks (seqs mean nothing to the next connection). The client makes a new
// Link for every connection attempt.

const OPEN = 1 // WebSocket.OPEN, which a constructor passed in need not expose statically.

/** What a link reports to its owner, always with itself, so that the owner can ignore a link it has let go. */
export interface LinkListener {
  message (link: Link, message: ServerMessage): void
  undecodable (link: Link, error: unknown): void
  close (link: Link, code: number, reason: string): void
}

export interface LinkOptions {
  WebSocket: WebSocketConstructor
  url: string
  format: Format
  token: string | undefined
}

export class Link {
  readonly #socket: WebSocketLike
  readonly #format: Format
  /** Set by `hello`; until then the link is not usable. */
  #acks: AckTracker | undefined
  #status: number | undefined

  /** Throws what the WebSocket constructor throws (e.g. a browser refusing ws:// from an https:// page). */
  constructor (options: LinkOptions, listener: LinkListener) {
    // The format first: the server picks the first format offered, and never echoes the bearer entry.
    const protocols = [subprotocols[options.format]]
    if (options.token !== undefined) protocols.push(BEARER_PREFIX + options.token)
    const socket = new options.WebSocket(options.url, protocols)
    this.#socket = socket
    this.#format = options.format
    socket.binaryType = 'arraybuffer'
    watchHandshakeStatus(socket, (status) => { this.#status = status })
    socket.addEventListener('message', (event: { data: unknown }) => { this.#onFrame(listener, event.data) })
    // Errors are always followed by 'close', where they are handled; the
    // listener still matters: `ws` throws an 'error' nobody listens to.
    socket.addEventListener('error', () => {})
    socket.addEventListener('close', (event: { code: number, reason: string }) => { listener.close(this, event.code, event.reason) })
  }

  /** The server's `hello` arrived: requests may be sent and events acknowledged. */
  get ready (): boolean {
    return this.#acks !== undefined
  }

  /** HTTP status of a refused handshake, when the platform tells it. */
  get status (): number | undefined {
    return this.#status
  }

  hello (window: number, ackDelayMs: number): void {
    this.#acks = new AckTracker(window, ackDelayMs, (seq) => { this.send({ op: 'ack', seq }) })
  }

  /** Event `seq` is done with; acknowledged in batches. */
  processed (seq: number): void {
    this.#acks?.processed(seq)
  }

  send (message: ClientMessage): void {
    if (this.#socket.readyState === OPEN) this.#socket.send(encodeMessage(this.#format, message))
  }

  /** The socket closed: no ack may go out for its seqs any more. */
  stop (): void {
    this.#acks?.stop()
  }

  close (code: number): void {
    this.stop()
    this.#socket.close(code)
  }

  #onFrame (listener: LinkListener, data: unknown): void {
    let message: ServerMessage | undefined
    try {
      message = decodeMessage(data)
    } catch (error) {
      listener.undecodable(this, error)
      return
    }
    if (message !== undefined) listener.message(this, message)
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
