// Every error the client reports, with a stable `code` callers can switch on.
// Errors reach callers through the client's 'error' event or a rejected
// promise; the client never logs.

export type ClientErrorCode =
  /** The server refused the handshake with 401, even for a token fresh from `getToken`. Final. */
  | 'EVSOCK_UNAUTHORIZED'
  /** The handshake was refused for a reason retrying cannot fix (400 bad subprotocol, 403 origin, or the platform would not open the socket). Final. */
  | 'EVSOCK_HANDSHAKE_REFUSED'
  /** The server answered a `sub`, `unsub` or `auth` with `error`; see `serverCode`. */
  | 'EVSOCK_REQUEST_FAILED'
  /** The server sent an `error` tied to no request (e.g. it did not understand a frame). */
  | 'EVSOCK_SERVER_ERROR'
  /** A frame from the server could not be decoded. */
  | 'EVSOCK_PROTOCOL'
  /** A subscription handler threw or rejected; the event still counts as processed. */
  | 'EVSOCK_HANDLER_FAILED'
  /** `getToken` threw or rejected. */
  | 'EVSOCK_TOKEN_FAILED'
  /** The client is closed. */
  | 'EVSOCK_CLOSED'
  /** No WebSocket implementation: pass `WebSocket` (e.g. the `ws` package's) to `connect`. */
  | 'EVSOCK_NO_WEBSOCKET'

export interface ClientErrorDetails {
  /** HTTP status of a refused handshake, when the platform exposes it (Node with `ws`; never in browsers). */
  status?: number
  /** The server's error code (docs/protocol.md section 2), for EVSOCK_REQUEST_FAILED and EVSOCK_SERVER_ERROR. */
  serverCode?: string
  /** The subscription pattern concerned, if any. */
  pattern?: string
  /** The event's topic, for EVSOCK_HANDLER_FAILED. */
  topic?: string
  cause?: unknown
}

export class EventSocketClientError extends Error implements ClientErrorDetails {
  readonly code: ClientErrorCode
  readonly status?: number
  readonly serverCode?: string
  readonly pattern?: string
  readonly topic?: string

  constructor (code: ClientErrorCode, message: string, details: ClientErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause })
    this.name = 'EventSocketClientError'
    this.code = code
    if (details.status !== undefined) this.status = details.status
    if (details.serverCode !== undefined) this.serverCode = details.serverCode
    if (details.pattern !== undefined) this.pattern = details.pattern
    if (details.topic !== undefined) this.topic = details.topic
  }
}
