// Reconnect delays: exponential growth with FULL jitter (a uniform draw
// between 0 and the exponential ceiling), so that the clients a restarting
// server drops do not all come back in the same instant.

export interface BackoffOptions {
  /** Ceiling of the first delay, ms. */
  initialDelayMs: number
  /** Largest ceiling, ms. */
  maxDelayMs: number
}

/** Delay before retry number `attempt` (0-based). `random` is injectable for tests. */
export function backoffDelay (attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  const ceiling = Math.min(options.maxDelayMs, options.initialDelayMs * 2 ** attempt)
  return Math.floor(random() * ceiling)
}

/** The first attempt number whose ceiling is the maximum: what a "back off hard" close jumps to. */
export function saturatedAttempt (options: BackoffOptions): number {
  return Math.max(0, Math.ceil(Math.log2(options.maxDelayMs / Math.max(1, options.initialDelayMs))))
}
