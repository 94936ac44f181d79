import { backoffDelay, type BackoffOptions } from './backoff.js'
import { Deferred } from './deferred.js'
import { EventSocketClientError } from './errors.js'
import { canonicalPattern, compilePattern } from './patterns.js'
import type { Link } from './link.js'
import type { PendingRequests } from './pending-requests.js'
import type { OkMessage } from './protocol.js'
import type { ResumePosition } from './resume-position.js'
import type { EventHandler, ResumeResult, Subscription } from './types.js'

// Every pattern the client holds with the server, across reconnects: its local
// handlers, the `ready` promise of its `sub`, whether its next `sub` resumes
// (docs/protocol.md section 6), and the re-send after an UNAVAILABLE answer.

interface Registration { handler: EventHandler }

/** One pattern held with the server, shared by every local handler subscribed to it. */
interface PatternEntry {
  pattern: string
  matches: (topic: string) => boolean
  registrations: Set<Registration>
  ready: Deferred
  /** The connection the `sub` was last sent on. */
  sentOn: Link | undefined
  /**
   * Its subscription was (or may have been) in effect on an earlier
   * connection, or the app restored a position for it: the next connection's
   * `sub` continues its stream from the client's position.
   */
  resumes: boolean
  /** Failed `sub`s in a row answered UNAVAILABLE, for the backoff of the next try. */
  unavailable: number
  /** The pending re-send after UNAVAILABLE, cleared on close so it cannot hold a Node process open. */
  retry: ReturnType<typeof setTimeout> | undefined
}

/** A `sub` that resumes, with the position it resumes from (none when the client has none). */
interface Resuming { since: string | undefined }

export interface RegistryOptions {
  requests: PendingRequests
  backoff: BackoffOptions
  /** The link requests go out on, when it is one; read at the moment of sending. */
  link: () => Link | undefined
  position: ResumePosition
  /** Patterns subscribed before the first connection opens resume from the position the app gave. */
  resumeFirst: boolean
  resumed: (result: ResumeResult) => void
}

export class SubscriptionRegistry {
  readonly #entries = new Map<string, PatternEntry>()
  readonly #options: RegistryOptions
  #resumeNew: boolean

  constructor (options: RegistryOptions) {
    this.#options = options
    this.#resumeNew = options.resumeFirst
  }

  add (spelled: string, handler: EventHandler): Subscription {
    // The server keeps one subscription per canonical pattern: two spellings
    // of it must share one entry, or unsubscribing one would end the other's.
    const pattern = canonicalPattern(spelled)
    let entry = this.#entries.get(pattern)
    if (entry === undefined) {
      entry = { pattern, matches: compilePattern(pattern), registrations: new Set(), ready: new Deferred(), sentOn: undefined, resumes: this.#resumeNew, unavailable: 0, retry: undefined }
      this.#entries.set(pattern, entry)
      const link = this.#options.link()
      if (link?.ready === true) this.#sendSub(link, entry, undefined)
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

  /**
   * A new connection said `hello`: asks for every pattern on it, the resuming
   * ones first and all in this one synchronous burst. The server joins
   * resuming `sub`s into one replay only while the replay has sent nothing,
   * and answers a `since` behind an event it already sent `recovered: false`.
   */
  resubscribe (link: Link): void {
    this.#resumeNew = false
    const resuming: Resuming = { since: this.#options.position.value }
    const fresh: PatternEntry[] = []
    for (const entry of this.#entries.values()) {
      if (entry.resumes) this.#sendSub(link, entry, resuming)
      else fresh.push(entry)
    }
    for (const entry of fresh) this.#sendSub(link, entry, undefined)
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
    const link = this.#options.link()
    if (link?.ready !== true) return Promise.resolve()
    const done = new Deferred()
    this.#options.requests.send(link, {
      op: 'unsub',
      pattern: entry.pattern,
      ok: () => { done.resolve() },
      refused: (error) => { done.reject(error) },
      // The server dropped every subscription with the connection: an unsub in flight has its effect.
      lost: () => { done.resolve() }
    }, (id) => ({ op: 'unsub', id, topic: entry.pattern }))
    return done.promise
  }

  #held (entry: PatternEntry): boolean {
    return this.#entries.get(entry.pattern) === entry
  }

  #sendSub (link: Link, entry: PatternEntry, resuming: Resuming | undefined): void {
    entry.sentOn = link
    const since = resuming?.since
    this.#options.requests.send(link, {
      op: 'sub',
      pattern: entry.pattern,
      ok: (message) => { this.#accepted(entry, resuming, message) },
      refused: (error, serverCode) => this.#refused(entry, resuming, error, serverCode),
      // Unanswered: the server may have held it and sent its events, so the
      // next connection must resume it, or what it missed in between is lost.
      lost: () => { entry.resumes = true }
    }, (id) => since === undefined ? { op: 'sub', id, topic: entry.pattern } : { op: 'sub', id, topic: entry.pattern, since })
  }

  #accepted (entry: PatternEntry, resuming: Resuming | undefined, message: OkMessage): void {
    entry.unavailable = 0
    entry.resumes = true
    // Before `resumed`, so that its listeners read the position this `ok` set.
    if (typeof message.pos === 'string') this.#options.position.offered(message.pos)
    entry.ready.resolve()
    if (resuming !== undefined && this.#held(entry)) this.#options.resumed({ pattern: entry.pattern, recovered: message.recovered === true })
  }

  /** Returns true for a refusal dealt with here that is no error of the app's. */
  #refused (entry: PatternEntry, resuming: Resuming | undefined, error: EventSocketClientError, serverCode: string): boolean {
    const held = this.#held(entry)
    const link = entry.sentOn
    if (serverCode === 'BAD_REQUEST' && resuming?.since !== undefined && held && link === this.#options.link() && link?.ready === true) {
      // The server never issued that position (its history was reset): the
      // pattern stays held, asked for again from now on, and its `ok` reports
      // `recovered: false`.
      this.#options.position.forget(resuming.since)
      this.#sendSub(link, entry, { since: undefined })
      return true
    }
    if (serverCode === 'UNAVAILABLE' && held) {
      // The server could not reach its broker in time: not a refusal. Kept and asked again after a backoff
      // (and on any reconnect); `ready` rejects, and later subscribers of the pattern get a fresh one.
      // The re-send keeps its `since`: should the connection have sent events after it meanwhile, the
      // server answers `recovered: false`, which is then the truth.
      entry.ready.reject(error)
      entry.ready = new Deferred()
      clearTimeout(entry.retry)
      entry.retry = setTimeout(() => {
        entry.retry = undefined
        if (this.#held(entry) && entry.sentOn === link && link === this.#options.link() && link?.ready === true) this.#sendSub(link, entry, resuming)
      }, backoffDelay(entry.unavailable++, this.#options.backoff) + this.#options.backoff.initialDelayMs)
      return false
    }
    // Refused patterns are dropped, so that reconnects do not ask again.
    if (held) this.#entries.delete(entry.pattern)
    entry.ready.reject(error)
    return false
  }
}
