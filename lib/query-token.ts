import type { IncomingMessage } from 'node:http'
import type { FastifyInstance, FastifyRequest } from 'fastify'

// The `access_token` query parameter is taken out of the URL of requests to
// the plugin's route before Fastify routes them, so that neither its
// "incoming request" log line nor anything else printing request.url holds
// it. The value is kept aside for the handshake.

const QUERY_TOKEN = 'access_token'
const queryTokens = new WeakMap<IncomingMessage, string>()

export function keepQueryTokensOutOfUrls (fastify: FastifyInstance, route: string): void {
  const strip = (raw: IncomingMessage): void => { takeQueryToken(raw, route) }
  fastify.server.prependListener('upgrade', strip)
  fastify.server.prependListener('request', strip)
  fastify.addHook('onClose', async () => {
    fastify.server.off('upgrade', strip)
    fastify.server.off('request', strip)
  })
}

/** The request's query token: the one taken out of its URL, or (for injected requests, which bypass the server) its query. */
export function queryTokenOf (request: FastifyRequest): string | undefined {
  const taken = queryTokens.get(request.raw)
  if (taken !== undefined) return taken
  const value = (request.query as Record<string, unknown> | undefined)?.[QUERY_TOKEN]
  return typeof value === 'string' && value.length > 0 ? value : undefined
}

/** Removes every `access_token` parameter from the URL of a request to `route`, keeping the first value aside. */
function takeQueryToken (raw: IncomingMessage, route: string): void {
  const url = raw.url
  const queryAt = url?.indexOf('?') ?? -1
  if (url === undefined || queryAt === -1) return
  // The router may ignore case and a trailing slash; compare the same way.
  const path = url.slice(0, queryAt).replace(/\/$/, '').toLowerCase()
  if (path !== route.replace(/\/$/, '').toLowerCase()) return
  let token: string | undefined
  const kept = url.slice(queryAt + 1).split('&').filter((pair) => {
    const equals = pair.indexOf('=')
    if (decodeParam(equals === -1 ? pair : pair.slice(0, equals)) !== QUERY_TOKEN) return true
    if (equals !== -1 && equals < pair.length - 1) token ??= decodeParam(pair.slice(equals + 1))
    return false
  })
  raw.url = kept.length > 0 ? `${url.slice(0, queryAt)}?${kept.join('&')}` : url.slice(0, queryAt)
  if (token !== undefined) queryTokens.set(raw, token)
}

function decodeParam (text: string): string {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '))
  } catch {
    return text
  }
}
