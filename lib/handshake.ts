import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import {
  BusyError, ForbiddenOriginError, HandshakeRateLimitedError, NoTokenError, UnsupportedProtocolError
} from './errors.js'
import { BEARER_PREFIX, subprotocols } from './client/protocol.js'
import { formatsBySubprotocol, type Format } from './codec.js'
import { KeyedLimiter } from './limiter.js'
import { keepQueryTokensOutOfUrls, queryTokenOf } from './query-token.js'
import type { VerifyToken } from './tokens.js'
import type { EventSocketUser, ResolvedOptions } from './options.js'

// docs/protocol.md section 1: everything about admission happens here, in a route
// hook that runs before @fastify/websocket upgrades the socket, so every
// refusal is a plain HTTP response with a status and a stable code.

export interface Admission {
  user: EventSocketUser
  format: Format
}

export interface HandshakeDeps {
  options: ResolvedOptions
  /** Open connections of this instance, for the connection cap. */
  connectionCount: () => number
  verify: VerifyToken
}

interface PendingAdmission extends Admission {
  /** Gives back the connection slot the handshake reserved. */
  release (): void
}

const admissions = new WeakMap<FastifyRequest, PendingAdmission>()

/**
 * What the handshake decided for an upgraded request; handed over once, then
 * forgotten. Its reserved slot is given back here: the caller adds the
 * connection in the same turn, so the cap never sees it twice or not at all.
 */
export function takeAdmission (request: FastifyRequest): Admission | undefined {
  const admission = admissions.get(request)
  admissions.delete(request)
  admission?.release()
  return admission
}

export function createHandshakeHook (fastify: FastifyInstance, { options, connectionCount, verify }: HandshakeDeps) {
  // A burst of a minute's worth, refilled evenly over the minute.
  const limiter = options.handshakesPerMinute > 0 ? new KeyedLimiter(options.handshakesPerMinute / 60, options.handshakesPerMinute) : undefined

  // Done whether or not the query token is allowed: a refused one is a credential too.
  keepQueryTokensOutOfUrls(fastify, `${fastify.prefix}${options.path}`)

  // Handshakes admitted past the cap check whose connection is not open yet.
  // Verification may await (a key resolved asynchronously), and everything
  // between this hook and the upgrade may too: without counting them, any
  // number of concurrent handshakes would pass the cap together.
  let reserved = 0

  return async function handshake (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    // Plain HTTP requests fall through to the route's 426 handler.
    if (!request.ws) return
    // Already gone: reset while an app's own onRequest hook (which Fastify runs
    // before this route's) awaited. Its response has closed and will not close
    // again to give a slot back, and ws will not upgrade it: nothing to admit.
    if (request.raw.socket?.destroyed === true) return
    if (limiter !== undefined && !limiter.take(request.ip)) throw new HandshakeRateLimitedError()
    if (connectionCount() + reserved >= options.maxConnections) throw new BusyError()
    reserved++
    // A client gone before the upgrade (ws then never opens the socket) gives
    // the slot back too. Heard through the response @fastify/websocket
    // assigned to the socket, which Node closes with it: a listener of our own
    // on the socket, removed after ws added its own, would leave the socket's
    // 'close' listener array grown to 19 slots, about 150 bytes a connection.
    // No TCP socket (@fastify/websocket's injectWS): nothing to hear.
    const response = request.raw.socket === undefined ? undefined : reply.raw
    let held = true
    const release = (): void => {
      if (!held) return
      held = false
      reserved--
      response?.off('close', release)
    }
    response?.once('close', release)
    try {
      checkOrigin(request, options)
      const offered = parseProtocols(request.headers['sec-websocket-protocol'])
      const { format, token: protocolToken } = negotiate(offered)
      const token = protocolToken ?? headerToken(request) ?? (options.allowQueryToken ? queryTokenOf(request) : undefined)
      if (token === undefined) throw new NoTokenError()
      const user = await verify(token, request)

      // ws answers with the first offered subprotocol; leave it only the chosen
      // format, so the bearer token is never echoed back in the response.
      if (offered.length > 0) request.raw.headers['sec-websocket-protocol'] = subprotocols[format]
      admissions.set(request, { user, format, release })
    } catch (err) {
      release()
      throw err
    }
  }
}

function checkOrigin (request: FastifyRequest, options: ResolvedOptions): void {
  if (options.origins === undefined) return
  const origin = request.headers.origin
  if (origin === undefined && options.allowMissingOrigin) return
  if (!options.origins(origin)) throw new ForbiddenOriginError(origin ?? '(none)')
}

function parseProtocols (header: string | undefined): string[] {
  if (header === undefined) return []
  return header.split(',').map((entry) => entry.trim()).filter((entry) => entry.length > 0)
}

/**
 * The first offered format wins; a client offering no subprotocol at all gets JSON.
 * One that offers only a bearer entry is refused too: the response must name
 * one of the offered subprotocols, and the token is never echoed.
 */
function negotiate (offered: string[]): { format: Format, token: string | undefined } {
  let format: Format | undefined
  let token: string | undefined
  for (const entry of offered) {
    if (entry.startsWith(BEARER_PREFIX)) token ??= entry.slice(BEARER_PREFIX.length)
    else format ??= formatsBySubprotocol.get(entry)
  }
  if (format === undefined && offered.length > 0) throw new UnsupportedProtocolError()
  return { format: format ?? 'json', token }
}

function headerToken (request: FastifyRequest): string | undefined {
  const header = request.headers.authorization
  if (header === undefined) return undefined
  const match = /^Bearer +(\S+)\s*$/i.exec(header)
  return match?.[1]
}
