import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import { CloseCode, type CloseCodeValue } from './client/close-codes.js'
import { TokenRevokedError } from './errors.js'
import { expiresAt } from './tokens.js'
import type { ClientRequest, RequestProblem } from './requests.js'
import type { Resume, Resuming } from './resume.js'
import type { Subscriptions } from './subscriptions.js'
import type { EventSocketUser, ResolvedOptions } from './options.js'

// sub, unsub and auth of one connection (docs/protocol.md sections 2 and 4):
// they run one after the other in arrival order, since each may await
// (authorize, token verification, the bus's bind), behind a bounded queue.

export type Request = Exclude<ClientRequest, { op: 'ack' }>

/** An `error` answer: the problem, the pattern it ended (FORBIDDEN after a refresh), and whether it counts as a bad frame (default: by its code). */
export type Refusal = RequestProblem & { topic?: string, counts?: boolean }

/** The connection, as its requests see it; it is also the subscriber the subscriptions hold. */
export interface RequestContext {
  readonly user: EventSocketUser
  /** Logs with the connection's ids (docs/architecture.md, "Logs"). */
  readonly log: FastifyBaseLogger
  readonly request: FastifyRequest
  readonly session: string
  /** Closing or closed: nothing more is answered. */
  readonly ending: boolean
  /** Its place in the history, when history is on. */
  readonly resume: Resume | undefined
  reply (message: Record<string, unknown>): void
  refuse (problem: Refusal): void
  close (code: CloseCodeValue, reason: string): void
  /** A refreshed token for the same user: its claims and expiry now apply. */
  renewed (user: EventSocketUser): void
}

/** Shared by every connection of an instance. */
export interface RequestDeps<C extends RequestContext> {
  readonly options: ResolvedOptions
  readonly subscriptions: Subscriptions<C>
  verify (token: string, request: FastifyRequest): Promise<EventSocketUser>
}

export class RequestHandler<C extends RequestContext> {
  readonly #context: C
  readonly #deps: RequestDeps<C>
  #queue: Request[] | undefined

  constructor (context: C, deps: RequestDeps<C>) {
    this.#context = context
    this.#deps = deps
  }

  take (request: Request): void {
    if (this.#queue !== undefined) {
      const { rateBurst } = this.#deps.options
      // Behind a slow async authorize the queue would grow as fast as the
      // rate refills. Bounded by one burst, so that whatever the rate limit
      // admits at once (a whole resubscription after a reconnect) still fits.
      if (this.#queue.length >= rateBurst) {
        this.#context.refuse({ code: 'RATE_LIMITED', message: `more than ${rateBurst} requests waiting`, id: request.id })
        return
      }
      this.#queue.push(request)
      return
    }
    this.#queue = [request]
    this.#process(this.#queue).catch(() => {})
  }

  async #process (queue: Request[]): Promise<void> {
    for (let request = queue.shift(); request !== undefined; request = queue.shift()) {
      try {
        await this.#handle(request)
      } catch (err) {
        this.#context.log.error({ err }, 'event socket request failed')
        this.#context.refuse({ code: 'INTERNAL', message: 'internal error', id: request.id })
      }
    }
    // Gone once idle: most connections subscribe once and never ask again.
    this.#queue = undefined
    // A resume burst is over: its replay, joined by all its subs, may begin.
    this.#context.resume?.requestsIdle()
  }

  async #handle (request: Request): Promise<void> {
    if (this.#context.ending) return
    switch (request.op) {
      case 'sub': return await this.#subscribe(request.id, request.topic, request.since)
      case 'unsub':
        this.#unsubscribe(request.topic)
        this.#context.reply({ op: 'ok', id: request.id })
        return
      case 'auth': return await this.#refresh(request.id, request.token)
    }
  }

  async #subscribe (id: number, pattern: string, since: string | undefined): Promise<void> {
    const context = this.#context
    const { subscriptions, options } = this.#deps
    if (subscriptions.has(context, pattern)) {
      context.reply({ op: 'ok', id })
      return
    }
    if (subscriptions.countOf(context) >= options.maxSubscriptions) {
      context.refuse({ code: 'TOO_MANY_SUBSCRIPTIONS', message: `at most ${options.maxSubscriptions} subscriptions per connection`, id })
      return
    }
    if (!await this.#allowed(pattern)) {
      context.refuse({ code: 'FORBIDDEN', message: `not allowed to subscribe to ${pattern}`, id })
      return
    }
    let resuming: Resuming | undefined
    if (context.resume !== undefined) {
      const started = await context.resume.subscribing(pattern, since)
      if ('refused' in started) {
        // Not counted toward 4002: after a server's history was reset, a client's every resuming sub gets it once.
        context.refuse({ code: 'BAD_REQUEST', message: started.refused, id, counts: false })
        return
      }
      resuming = started
    }
    if (context.ending) return
    try {
      await subscriptions.add(context, pattern)
      // History off: a resume point can never be honoured (docs/protocol.md section 6).
      const answer = resuming === undefined ? (since === undefined ? {} : { recovered: false }) : await resuming.finish()
      context.reply({ op: 'ok', id, ...answer })
    } catch (err) {
      resuming?.abandon()
      this.#unsubscribe(pattern)
      // The broker could not be reached in time: the client may retry, nothing here failed.
      if ((err as { code?: unknown }).code !== 'FST_EVSOCK_BROKER_UNAVAILABLE') throw err
      context.refuse({ code: 'UNAVAILABLE', message: `subscription to ${pattern} not made: ${(err as Error).message}`, id })
    }
  }

  #unsubscribe (pattern: string): void {
    this.#deps.subscriptions.remove(this.#context, pattern)
    this.#context.resume?.unsubscribed(pattern)
  }

  async #allowed (pattern: string): Promise<boolean> {
    try {
      return await this.#deps.options.authorize(this.#context.user, pattern, this.#context.request) === true
    } catch (err) {
      this.#context.log.error({ err, pattern }, 'event socket authorize hook threw; refusing')
      return false
    }
  }

  async #refresh (id: number, token: string): Promise<void> {
    const context = this.#context
    let user: EventSocketUser
    try {
      user = await this.#deps.verify(token, context.request)
    } catch (err) {
      if (err instanceof TokenRevokedError) {
        context.close(CloseCode.TokenExpired, 'token revoked')
        return
      }
      context.refuse({ code: 'BAD_TOKEN', message: (err as Error).message, id })
      return
    }
    if (user.sub !== context.user.sub) {
      context.refuse({ code: 'BAD_TOKEN', message: 'the new token is for another user', id })
      return
    }
    if (context.ending) return
    context.renewed(user)
    // New claims may take rights away: end the subscriptions they no longer allow.
    const { subscriptions } = this.#deps
    for (const pattern of subscriptions.patternsOf(context)) {
      if (await this.#allowed(pattern)) continue
      this.#unsubscribe(pattern)
      context.refuse({ code: 'FORBIDDEN', message: `subscription ${pattern} ended: no longer allowed`, topic: pattern })
    }
    context.reply({ op: 'ok', id, expiresAt: expiresAt(user) })
  }
}
