import type { IncomingMessage } from 'node:http'
import type { FastifyInstance, FastifyRequest } from 'fastify'

// The `access_token` query parameter is taken out of the URL of requests to
// the plugin's route before Fastify routes them, so that neither its
// "incoming request" log line nor anything else printing request.url holds
// it. The value is kept aside for the handshake.

const QUERY_TOKEN = 'access_token'
const queryTokens = new WeakMap<IncomingMessage, string>()
const ABSOLUTE_FORM = /^[a-z][a-z\d+.-]*:\/\/[^/?#;]*/i

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

/**
 * Removes every `access_token` parameter from the URL of a request to `route`, keeping the first value aside.
 * The path is compared the way the router could read it, and then some: it
 * must catch every spelling that reaches the route under any router option
 * (find-my-way decodes percent-encoding; `ignoreTrailingSlash`,
 * `ignoreDuplicateSlashes`, `caseSensitive: false`, `useSemicolonDelimiter`).
 * A near miss that does not reach it is a 404, so stripping it costs nothing.
 */
function takeQueryToken (raw: IncomingMessage, route: string): void {
  const url = raw.url
  if (url === undefined) return
  // An absolute-form target (`GET http://host/events?…`) routes by its path.
  const pathAt = ABSOLUTE_FORM.exec(url)?.[0].length ?? 0
  // The router ends the path at `?` or `#`, and at `;` with useSemicolonDelimiter.
  const queryAt = url.slice(pathAt + 1).search(/[?#;]/) + pathAt + 1
  if (queryAt === pathAt || normalizePath(url.slice(pathAt, queryAt)) !== normalizePath(route)) return
  let token: string | undefined
  // The query is split at every delimiter, not only `&`: a router reading
  // from `#` or `;` sees `x?access_token=…` as one pair, but the log would not.
  const kept = url.slice(queryAt + 1).split(/(?=[&?#;])/).filter((part, i) => {
    const pair = i === 0 ? part : part.slice(1)
    const equals = pair.indexOf('=')
    if (decodeParam(equals === -1 ? pair : pair.slice(0, equals)) !== QUERY_TOKEN) return true
    if (equals !== -1 && equals < pair.length - 1) token ??= decodeParam(pair.slice(equals + 1))
    return false
  }).join('').replace(/^&/, '')
  // An emptied `?` goes; `#` and `;` stay, so that the path routes as it did.
  raw.url = kept.length > 0 || url[queryAt] !== '?' ? `${url.slice(0, queryAt + 1)}${kept}` : url.slice(0, queryAt)
  if (token !== undefined) queryTokens.set(raw, token)
}

/** Percent-decoded, duplicate and trailing slashes dropped, lower case. */
function normalizePath (path: string): string {
  let decoded: string
  try {
    decoded = decodeURIComponent(path)
  } catch {
    // The router answers 400 to a path it cannot decode, before any route.
    decoded = path
  }
  return decoded.replace(/\/{2,}/g, '/').replace(/\/$/, '').toLowerCase()
}

function decodeParam (text: string): string {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '))
  } catch {
    return text
  }
}
