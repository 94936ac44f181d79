// Where the client resumes after a reconnect (docs/protocol.md section 6):
// the `pos` of the last event handed to the handlers, client-wide. Events
// reach the client in increasing `pos` order on every connection, so the
// last one dispatched is the point to resume after; positions are opaque and
// never compared. Before any event, the `pos` of a `sub`'s `ok` stands in.

export class ResumePosition {
  #pos: string | undefined
  /** `#pos` is an event's: an `ok`'s `pos` no longer replaces it. */
  #fromEvent = false

  /** `initial` is a position stored by the app (ConnectOptions `since`). */
  constructor (initial: string | undefined) {
    this.#pos = initial
  }

  get value (): string | undefined {
    return this.#pos
  }

  /** An event with `pos` was handed to the handlers (they run synchronously: handed is processed). */
  dispatched (pos: string): void {
    this.#pos = pos
    this.#fromEvent = true
  }

  /** A `sub`'s `ok` carried `pos`; it counts only while no event has been dispatched. */
  offered (pos: string): void {
    if (!this.#fromEvent) this.#pos = pos
  }

  /**
   * The server answered BAD_REQUEST to `since`: it never issued that position
   * (its history was reset, or the position is another deployment's), so it
   * can serve no later resume either.
   */
  forget (stale: string): void {
    if (this.#pos !== stale) return
    this.#pos = undefined
    this.#fromEvent = false
  }
}
