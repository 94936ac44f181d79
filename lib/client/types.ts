import type { BackoffOptions } from './backoff.js'
import type { EventSocketClientError } from './errors.js'
import type { Format, HelloMessage } from './protocol.js'

// The client's public types, apart from the class, so that the modules behind
// it can name them without importing index.ts; index.ts re-exports them all.

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
  /**
   * A position the app stored (`client.position`, or an event's `pos`), to
   * resume from: the patterns subscribed before the first connection opens
   * ask the server for what was published after it (docs/protocol.md section 6).
   */
  since?: string
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

/** How the `sub` of a pattern held across a reconnect was answered. */
export interface ResumeResult {
  /** The pattern, in canonical form (docs/protocol.md section 3). */
  pattern: string
  /**
   * True when the server replays every event after the client's position
   * that matches `pattern`, so none is missed; false when events published
   * meanwhile may be lost (history off, retention passed, or the history was reset).
   */
  recovered: boolean
}

export interface ClientEvents {
  state: ClientState
  /** A connection is up and its `hello` arrived. */
  open: HelloMessage
  /** A connection ended (the client reconnects unless it is closed). */
  disconnect: { code: number, reason: string }
  /** After a reconnect, the server accepted the `sub` of a pattern held before: once per pattern and reconnect. */
  resume: ResumeResult
  /** Every failure. Those that end the client are followed by state 'closed'. */
  error: EventSocketClientError
}
