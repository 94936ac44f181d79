import { EventSocketClientError } from './errors.js'
import type { ClientMessage, ErrorMessage, OkMessage } from './protocol.js'
import type { Link } from './link.js'

// The requests (`sub`, `unsub`, `auth`) sent on the current connection and
// not answered yet, by id. Each request carries its own outcomes, so that this
// module needs to know nothing of subscriptions or tokens.

export interface PendingRequest {
  readonly op: 'sub' | 'unsub' | 'auth'
  /** The pattern concerned, for the error of a refusal. */
  readonly pattern?: string
  ok (message: OkMessage): void
  /** Returns true when the refusal is an expected step, dealt with, that is not to be reported as an error. */
  refused (error: EventSocketClientError, serverCode: string): boolean | void
  /** The connection ended before the answer: the server forgot the request with it. */
  lost (): void
}

export class PendingRequests {
  #nextId = 1
  readonly #byId = new Map<number, PendingRequest>()

  /** Sends the message `build` makes with the request's id. */
  send (link: Link, request: PendingRequest, build: (id: number) => ClientMessage): void {
    const id = this.#nextId++
    this.#byId.set(id, request)
    link.send(build(id))
  }

  ok (message: OkMessage): void {
    const request = this.#byId.get(message.id)
    this.#byId.delete(message.id)
    request?.ok(message)
  }

  /** Settles the request an `error` answers; returns the error to report (tied to no request when it names none), if any. */
  error (message: ErrorMessage): EventSocketClientError | undefined {
    const request = message.id === undefined ? undefined : this.#byId.get(message.id)
    if (request === undefined) return new EventSocketClientError('EVSOCK_SERVER_ERROR', message.message, { serverCode: message.code })
    this.#byId.delete(message.id as number)
    const error = new EventSocketClientError('EVSOCK_REQUEST_FAILED', `${request.op} refused: ${message.message}`, { serverCode: message.code, pattern: request.pattern })
    return request.refused(error, message.code) === true ? undefined : error
  }

  /** The connection is gone, and every request in flight with it. */
  lost (): void {
    for (const request of this.#byId.values()) request.lost()
    this.#byId.clear()
  }
}
