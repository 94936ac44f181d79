// The token the next connection attempt carries, and when to fetch a fresh
// one from `getToken`: none yet, the server said it is bad (401, a refused
// `auth`, close 4001), or the expiry the server told has passed.

export type GetToken = () => string | Promise<string>

export class TokenSource {
  readonly #getToken: GetToken | undefined
  #token: string | undefined
  /** The next attempt must fetch a token first. */
  #stale = false
  /** The token in use came from `getToken` for this very attempt: a 401 for it is final. */
  #fresh = false
  #expiresAt: number | null = null

  constructor (token: string | undefined, getToken: GetToken | undefined) {
    this.#token = token
    this.#getToken = getToken
  }

  /** A fresh token can be fetched. */
  get refreshable (): boolean {
    return this.#getToken !== undefined
  }

  get fresh (): boolean {
    return this.#fresh
  }

  /** Fetch a fresh token before the next attempt. */
  markStale (): void {
    this.#stale = true
  }

  /** The expiry the server told for the token in use (epoch ms, null for none). */
  expiresAt (at: number | null): void {
    this.#expiresAt = at
  }

  /** The token for a new connection attempt, fetched first when the one held will not do. */
  async forAttempt (): Promise<string | undefined> {
    this.#fresh = false
    const expired = this.#expiresAt !== null && Date.now() >= this.#expiresAt
    if (this.#getToken !== undefined && (this.#token === undefined || this.#stale || expired)) {
      this.#token = await this.#getToken()
      this.#stale = false
      this.#fresh = true
      this.#expiresAt = null
    }
    return this.#token
  }

  /** Fetches a fresh token for the connection in use (on `expiring`); undefined without `getToken`. */
  refresh (): Promise<string> | undefined {
    const getToken = this.#getToken
    if (getToken === undefined) return undefined
    return Promise.resolve().then(getToken).then((token) => {
      this.#token = token
      this.#stale = false
      this.#expiresAt = null // unknown until the server's `ok`
      return token
    })
  }
}
