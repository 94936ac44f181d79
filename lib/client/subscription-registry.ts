import { backoffDelay, type BackoffOptions } from './backoff.js'
import { Deferred } from './deferred.js'
import { EventSocketClientError } from './errors.js'
import { canonicalPattern, compilePattern } from './patterns.js'
import type { Link } from './link.js'
import type { PendingRequests } from './pending-requests.js'
import type { EventHandler, Subscription } from './types.js'

// Every pattern the client holds with the server, across reconnects: its local
// handlers, the `ready` promise of its `sub`, its resume position, and the
// re-send after an UNAVAILABLE answer.

interface Registration { handler: EventHandler }

/** One pattern held with the server, shared by every local handler subscribed to it. */
interface PatternEntry {
  pattern: string
  matches: (topic: string) => boolean
  registrations: Set<Registration>
  ready: Deferred
  /** The connection the `sub` was last sent on. */
  sentOn: Link | undefined
  /** Resume position for the next `sub` (docs/protocol.md section 6). */
  since: string | undefined
  /** Failed `sub`s in a row answered UNAVAILABLE, for the backoff of the next try. */
  unavailable: number
  /** The pending re-send after UNAVAILABLE, cleared on close so it cannot hold a Node process open. */
  retry: ReturnType<typeof setTimeout> | undefined
}

export class SubscriptionRegistry {
  readonly #entries = new Map<string, PatternEntry>()
  readonly #requests: PendingRequests
  readonly #backoff: BackoffOptions
  /** The link requests go out on, when it is one; read at the moment of sending. */
  readonly #link: () => Link | undefined

  constructor (requests: PendingRequests, backoff: BackoffOptions, link: () => Link | undefined) {
    this.#requests = requests
    this.#backoff = backoff
    this.#link = link
  }

  add (spelled: string, handler: EventHandler): Subscription {
    // The server keeps one subscription per canonical pattern: two spellings
    // of it must share one entry, or unsubscribing one would end the other's.
    const pattern = canonicalPattern(spelled)
    let entry = this.#entries.get(pattern)
    if (entry === undefined) {
      entry = { pattern, matches: compilePattern(pattern), registrations: new Set(), ready: new Deferred(), sentOn: undefined, since: undefined, unavailable: 0, retry: undefined }
      this.#entries.set(pattern, entry)
      const link = this.#link()
      if (link?.ready === true) this.#sendSub(link, entry)
    }
    const registration: Registration = { handler }
    entry.registrations.add(registration)
    const held = entry
    return Object.assign(() => this.#remove(held, registration), { ready: held.ready.promise })
  }

  /** The handlers of every pattern `topic` matches, in subscription order. */
  handlers (topic: string): EventHandler[] {
    const handlers: EventHandler[] = []
    for (const entry of this.#entries.values()) {
      if (entry.matches(topic)) for (const { handler } of entry.registrations) handlers.push(handler)
    }
    return handlers
  }

  /** A new connection said `hello`: asks for every pattern on it. */
  resubscribe (link: Link): void {
    for (const entry of this.#entries.values()) this.#sendSub(link, entry)
  }

  /** `link` is gone: the patterns it carried resume from the last position it delivered. */
  lost (link: Link): void {
    if (link.lastPos === undefined) return
    for (const entry of this.#entries.values()) {
      if (entry.sentOn === link) entry.since = link.lastPos
    }
  }

  /** The client is closed: every `ready` still pending rejects with `reason`. */
  clear (reason: EventSocketClientError): void {
    for (const entry of this.#entries.values()) {
      clearTimeout(entry.retry)
      entry.ready.reject(reason)
    }
    this.#entries.clear()
  }

  #remove (entry: PatternEntry, registration: Registration): Promise<void> {
    if (!entry.registrations.delete(registration) || entry.registrations.size > 0) return Promise.resolve()
    this.#entries.delete(entry.pattern)
    // A re-send pending after UNAVAILABLE would do nothing now, yet hold a Node process open until it fires.
    clearTimeout(entry.retry)
    entry.ready.reject(new EventSocketClientError('EVSOCK_CLOSED', 'Unsubscribed before the server confirmed the subscription', { pattern: entry.pattern }))
    const link = this.#link()
    if (link?.ready !== true) return Promise.resolve()
    const done = new Deferred()
    this.#requests.send(link, {
      op: 'unsub',
      pattern: entry.pattern,
      ok: () => { done.resolve() },
      refused: (error) => { done.reject(error) },
      // The server dropped every subscription with the connection: an unsub in flight has its effect.
      lost: () => { done.resolve() }
    }, (id) => ({ op: 'unsub', id, topic: entry.pattern }))
    return done.promise
  }

  #sendSub (link: Link, entry: PatternEntry): void {
    entry.sentOn = link
    this.#requests.send(link, {
      op: 'sub',
      pattern: entry.pattern,
      ok: () => {
        entry.unavailable = 0
        entry.ready.resolve()
      },
      refused: (error, serverCode) => { this.#refused(entry, error, serverCode) },
      lost: () => {}
    }, (id) => entry.since === undefined ? { op: 'sub', id, topic: entry.pattern } : { op: 'sub', id, topic: entry.pattern, since: entry.since })
  }

  #refused (entry: PatternEntry, error: EventSocketClientError, serverCode: string): void {
    const held = this.#entries.get(entry.pattern) === entry
    if (serverCode === 'UNAVAILABLE' && held) {
      // The server could not reach its broker in time: not a refusal. Kept and asked again after a backoff
      // (and on any reconnect); `ready` rejects, and later subscribers of the pattern get a fresh one.
      entry.ready.reject(error)
      entry.ready = new Deferred()
      const link = entry.sentOn
      clearTimeout(entry.retry)
      entry.retry = setTimeout(() => {
        entry.retry = undefined
        if (this.#entries.get(entry.pattern) === entry && entry.sentOn === link && link === this.#link() && link?.ready === true) this.#sendSub(link, entry)
      }, backoffDelay(entry.unavailable++, this.#backoff) + this.#backoff.initialDelayMs)
      return
    }
    // Refused patterns are dropped, so that reconnects do not ask again.
    if (held) this.#entries.delete(entry.pattern)
    entry.ready.reject(error)
  }
}
