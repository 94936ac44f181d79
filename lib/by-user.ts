// The connections of each user (`sub`), for revocations: one user's
// connections are closed without a walk over all. Most users hold one
// connection, so that one is kept as it is: a Set for it would cost its hash
// table, about 300 bytes a connection. A second connection makes it a Set.

export class ConnectionsByUser<C extends object> {
  readonly #bySub = new Map<string, C | Set<C>>()

  add (sub: string, connection: C): void {
    const held = this.#bySub.get(sub)
    if (held === undefined) this.#bySub.set(sub, connection)
    else if (held instanceof Set) held.add(connection)
    else if (held !== connection) this.#bySub.set(sub, new Set([held, connection]))
  }

  delete (sub: string, connection: C): void {
    const held = this.#bySub.get(sub)
    if (held === connection) {
      this.#bySub.delete(sub)
    } else if (held instanceof Set && held.delete(connection) && held.size === 1) {
      this.#bySub.set(sub, held.values().next().value as C)
    }
  }

  /** A copy: closing them removes them. */
  of (sub: string): C[] {
    const held = this.#bySub.get(sub)
    return held === undefined ? [] : held instanceof Set ? [...held] : [held]
  }
}
