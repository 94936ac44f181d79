import type { Bus } from './bus/types.js'

// Keeps the bus's bindings in step with the topic index. The index counts the
// subscribers of each pattern; this only orders the bind and unbind calls of
// one pattern, so that a quick unsubscribe-then-subscribe can never leave the
// pattern unbound, and a second subscriber waits for the first one's bind.

export class BindingQueue {
  readonly #bus: Bus
  #latest = new Map<string, Promise<void>>()

  constructor (bus: Bus) {
    this.#bus = bus
  }

  bind (pattern: string): Promise<void> {
    return this.#enqueue(pattern, () => this.#bus.bind(pattern))
  }

  unbind (pattern: string): Promise<void> {
    return this.#enqueue(pattern, () => this.#bus.unbind(pattern))
  }

  /** Settles once the pattern's latest bind or unbind did. */
  settled (pattern: string): Promise<void> {
    return this.#latest.get(pattern) ?? Promise.resolve()
  }

  #enqueue (pattern: string, operation: () => Promise<void>): Promise<void> {
    const previous = this.#latest.get(pattern) ?? Promise.resolve()
    const next = previous.catch(() => {}).then(operation)
    this.#latest.set(pattern, next)
    const forget = (): void => {
      if (this.#latest.get(pattern) === next) this.#latest.delete(pattern)
    }
    next.then(forget, forget)
    return next
  }
}
