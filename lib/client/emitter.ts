// A tiny typed event emitter that runs the same in browsers and Node.

export type Listener<T> = (value: T) => void

export class Emitter<Events extends object> {
  readonly #listeners = new Map<keyof Events, Set<Listener<never>>>()

  /** Adds `listener`; returns a function that removes it. */
  on<K extends keyof Events> (event: K, listener: Listener<Events[K]>): () => void {
    let listeners = this.#listeners.get(event)
    if (listeners === undefined) this.#listeners.set(event, listeners = new Set())
    listeners.add(listener)
    return () => { this.off(event, listener) }
  }

  off<K extends keyof Events> (event: K, listener: Listener<Events[K]>): void {
    this.#listeners.get(event)?.delete(listener)
  }

  protected emit<K extends keyof Events> (event: K, value: Events[K]): void {
    for (const listener of this.#listeners.get(event) ?? []) {
      try {
        (listener as Listener<Events[K]>)(value)
      } catch (error) {
        // A listener's bug must not derail the client's state machine; report it
        // the way EventTarget does, as an uncaught exception on a later turn.
        queueMicrotask(() => { throw error })
      }
    }
  }
}
