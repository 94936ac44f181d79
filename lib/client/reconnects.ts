import { backoffDelay, saturatedAttempt, type BackoffOptions } from './backoff.js'
import { CloseCode } from './close-codes.js'
import { EventSocketClientError } from './errors.js'
import type { TokenSource } from './token-source.js'

// When to connect again, and whether at all: what each close and each refused
// handshake means, the backoff attempt count it leaves, and the one pending
// reconnect timer.

/** Close codes after which the client waits out a full backoff ceiling: the server said it is sending too much. */
const penaltyCloses = new Set<number>([CloseCode.TooManyBadFrames, CloseCode.RateLimited])
/** Handshake statuses that no retry can fix. */
const finalStatuses = new Set([400, 403])

export class Reconnects {
  readonly #backoff: BackoffOptions
  readonly #tokens: TokenSource
  #attempt = 0
  /** Failed attempts in a row whose cause the platform hid (browsers, network errors). */
  #unexplainedFailures = 0
  #openedAt = 0
  #timer: ReturnType<typeof setTimeout> | undefined

  constructor (backoff: BackoffOptions, tokens: TokenSource) {
    this.#backoff = backoff
    this.#tokens = tokens
  }

  /** A connection got its `hello`. */
  opened (): void {
    this.#openedAt = Date.now()
    this.#unexplainedFailures = 0
  }

  /** A connection closed after `hello`: the client always reconnects, sooner or later. */
  closedAfterOpen (code: number): void {
    // A connection that stayed up for a while proves the server healthy again.
    if (Date.now() - this.#openedAt >= this.#backoff.maxDelayMs) this.#attempt = 0
    if (code === CloseCode.TokenExpired) this.#tokens.markStale()
    if (penaltyCloses.has(code)) this.#attempt = Math.max(this.#attempt, saturatedAttempt(this.#backoff))
  }

  /** A handshake never opened; returns the error that ends the client, or undefined to retry. */
  refused (status: number | undefined): EventSocketClientError | undefined {
    if (status === 401) {
      if (!this.#tokens.refreshable || this.#tokens.fresh) {
        return new EventSocketClientError('EVSOCK_UNAUTHORIZED', 'The server refused the token (401)', { status })
      }
      this.#tokens.markStale()
      return undefined
    }
    if (status !== undefined && finalStatuses.has(status)) {
      return new EventSocketClientError('EVSOCK_HANDSHAKE_REFUSED', `The server refused the handshake (${status})`, { status })
    }
    // Browsers hide the status: a refused token looks like a network error. The
    // first such failure (a restart, a blip) reuses the token; from the second
    // in a row on, a fresh one is fetched in case the old one is what fails.
    if (status === undefined && ++this.#unexplainedFailures >= 2 && this.#tokens.refreshable) this.#tokens.markStale()
    return undefined
  }

  /** Calls `open` after the next backoff delay. */
  schedule (open: () => void): void {
    this.#timer = setTimeout(open, backoffDelay(this.#attempt++, this.#backoff))
  }

  cancel (): void {
    clearTimeout(this.#timer)
  }
}
