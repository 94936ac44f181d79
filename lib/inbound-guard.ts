import type { RawData } from 'ws'
import { CloseCode, type CloseCodeValue } from './client/close-codes.js'
import { TokenBucket } from './limiter.js'
import type { ResolvedOptions } from './options.js'

// The limits on what one client may send (docs/protocol.md section 5): frames
// a second, bytes a frame, malformed frames within a window. Each breach is a
// close code; the guard names it and the connection closes.

export type GuardLimits = Pick<ResolvedOptions, 'rateLimit' | 'rateBurst' | 'maxMessageBytes' | 'maxBadFrames' | 'badFrameWindowMs'>

/** Closes the connection for a breach: the connection itself, not a closure over it (one function and context less per connection). */
export interface Breach {
  close (code: CloseCodeValue, reason: string): void
}

export class InboundGuard {
  readonly #limits: GuardLimits
  readonly #rate: TokenBucket
  readonly #breach: Breach
  #badFrames = 0
  #badFramesSince = 0

  constructor (limits: GuardLimits, breach: Breach) {
    this.#limits = limits
    this.#rate = new TokenBucket(limits.rateLimit, limits.rateBurst)
    this.#breach = breach
  }

  /** The frame's bytes, or undefined when it breaches the rate or the size limit. */
  admit (data: RawData): Buffer | undefined {
    // Before the bytes are gathered: a flood should cost as little as possible.
    if (!this.#rate.take()) {
      this.#breach.close(CloseCode.RateLimited, 'rate limit exceeded')
      return undefined
    }
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer)
    // ws enforces maxPayload when this plugin registered it; an app's own
    // @fastify/websocket may allow more, so the limit is checked here as well.
    if (bytes.length > this.#limits.maxMessageBytes) {
      this.#breach.close(CloseCode.TooBig, 'frame too large')
      return undefined
    }
    return bytes
  }

  /**
   * An ack that moved the window forward is bounded by the events sent, so it
   * gives its token back: a client acking every event is never throttled.
   */
  ackMoved (): void {
    this.#rate.refund()
  }

  /** One malformed frame; too many within the window breach the limit. */
  badFrame (now = Date.now()): void {
    if (now - this.#badFramesSince > this.#limits.badFrameWindowMs) {
      this.#badFrames = 0
      this.#badFramesSince = now
    }
    if (++this.#badFrames >= this.#limits.maxBadFrames) this.#breach.close(CloseCode.TooManyBadFrames, 'too many bad frames')
  }
}
