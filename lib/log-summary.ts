import type { FastifyBaseLogger } from 'fastify'

/**
 * One kind of incident that outsiders can cause at will (a producer flooding
 * the exchange with garbage): the first is logged at once with its details,
 * later ones at most once per interval, with how many were left out since.
 * Exact totals are in stats(); the log only has to say that it is happening.
 */
export class SummarizedLog {
  readonly #log: FastifyBaseLogger
  readonly #level: 'warn' | 'error'
  readonly #message: string
  readonly #intervalMs: number
  #lastAt = -Infinity
  #suppressed = 0

  constructor (log: FastifyBaseLogger, level: 'warn' | 'error', message: string, intervalMs = 10_000) {
    this.#log = log
    this.#level = level
    this.#message = message
    this.#intervalMs = intervalMs
  }

  report (context: Record<string, unknown>): void {
    const now = Date.now()
    if (now - this.#lastAt < this.#intervalMs) {
      this.#suppressed++
      return
    }
    this.#lastAt = now
    const suppressed = this.#suppressed
    this.#suppressed = 0
    this.#log[this.#level](suppressed === 0 ? context : { ...context, suppressed }, this.#message)
  }
}
