// The one rate limiter of the plugin: a token bucket. The connection's inbound
// guard holds one per socket; the handshake holds one per remote address.

/** `rate` tokens a second, up to `burst` held. */
export class TokenBucket {
  #tokens: number
  #checkedAt: number
  readonly #perMs: number
  readonly #burst: number

  constructor (rate: number, burst: number, now = Date.now()) {
    this.#perMs = rate / 1000
    this.#burst = burst
    this.#tokens = burst
    this.#checkedAt = now
  }

  /** Takes one token; false when none is left. */
  take (now = Date.now()): boolean {
    this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#checkedAt) * this.#perMs)
    this.#checkedAt = now
    if (this.#tokens < 1) return false
    this.#tokens--
    return true
  }

  /** Gives one token back (for work that turned out to be bounded elsewhere). */
  refund (): void {
    this.#tokens = Math.min(this.#burst, this.#tokens + 1)
  }
}

/**
 * A bucket per key. A bucket left alone for one refill period is full again,
 * as good as new, so the buckets live in two generations swapped every period:
 * idle keys are dropped within two periods and cost nothing meanwhile.
 */
export class KeyedLimiter {
  #current = new Map<string, TokenBucket>()
  #previous = new Map<string, TokenBucket>()
  #swapAt = 0
  readonly #rate: number
  readonly #burst: number
  readonly #refillMs: number

  constructor (rate: number, burst: number) {
    this.#rate = rate
    this.#burst = burst
    this.#refillMs = burst / rate * 1000
  }

  take (key: string, now = Date.now()): boolean {
    if (now >= this.#swapAt) {
      // Two periods idle: every bucket of both generations is full, drop them all.
      this.#previous = now - this.#swapAt >= this.#refillMs ? new Map() : this.#current
      this.#current = new Map()
      this.#swapAt = now + this.#refillMs
    }
    let bucket = this.#current.get(key)
    if (bucket === undefined) {
      bucket = this.#previous.get(key) ?? new TokenBucket(this.#rate, this.#burst, now)
      this.#current.set(key, bucket)
    }
    return bucket.take(now)
  }

  /** Keys held, for tests of the memory bound. */
  get size (): number {
    return this.#current.size + this.#previous.size
  }
}
