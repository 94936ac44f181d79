import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { VerifyOptions } from '@fastify/jwt'
import { BadTokenError, TokenExpiredError, TokenRevokedError, TokenUntrustedError } from './errors.js'
import type { EventSocketUser } from './options.js'
import type { Revocations } from './revocations.js'

// Verification shared by the handshake and the in-band `auth` refresh, so both
// refuse exactly the same tokens with the same codes.

/** Verifies `token` on behalf of `request` (the upgrade request, for a refresh too). */
export type VerifyToken = (token: string, request: FastifyRequest) => Promise<EventSocketUser>

// What @fastify/jwt's request.jwtVerify throws for "expired" and "not yet
// valid" (it wraps fast-jwt's expiry, and passes nbf's through).
const TEMPORAL_CODES = new Set(['FST_JWT_AUTHORIZATION_TOKEN_EXPIRED', 'FAST_JWT_EXPIRED', 'FAST_JWT_INACTIVE'])
const UNTRUSTED_CODE = 'FST_JWT_AUTHORIZATION_TOKEN_UNTRUSTED'

interface JwtVerifyOptions {
  extractToken?: unknown
  onlyCookie?: unknown
}

/**
 * Verification goes through `request.jwtVerify`, not `fastify.jwt.verify`:
 * only the former calls a function `secret` as `(request, decodedToken)` (the
 * get-jwks recipe) and runs the `trusted` hook, and the app configured
 * @fastify/jwt expecting both. The token here may come from a subprotocol or
 * the query, so jwtVerify is run on a view of the request that carries it in
 * `Authorization`; `secret` and `trusted` still see the request's own URL,
 * headers and decorations.
 */
export function createTokenVerifier (fastify: FastifyInstance, revocations: Revocations): VerifyToken {
  const configured = (fastify.jwt.options.verify ?? {}) as JwtVerifyOptions
  // An app-wide extractToken or onlyCookie would look elsewhere than the
  // header; overriding it costs a verifier per call, so only then.
  const override = configured.extractToken !== undefined || configured.onlyCookie === true
  // extractToken is a verify option of the plugin's, missing from the type jwtVerify takes.
  const overrideOptions = (token: string): Partial<VerifyOptions> => ({ extractToken: () => token, onlyCookie: false }) as Partial<VerifyOptions>
  return async function verifyToken (token, request) {
    const view = carrying(request, token)
    let claims: unknown
    try {
      claims = await (override ? view.jwtVerify(overrideOptions(token)) : view.jwtVerify())
    } catch (err) {
      const code = (err as { code?: unknown }).code
      if (typeof code === 'string' && TEMPORAL_CODES.has(code)) throw new TokenExpiredError()
      if (code === UNTRUSTED_CODE) throw new TokenUntrustedError()
      throw new BadTokenError(typeof code === 'string' ? code : 'verification failed')
    }
    const user = toUser(claims)
    if (revocations.refuses(user)) throw new TokenRevokedError()
    return user
  }
}

/**
 * The request as jwtVerify should see it: its own, but with `token` in
 * `Authorization`, and with what jwtVerify sets (`request.user`) kept on the
 * view. A Proxy, not `Object.create(request)`: a prototype gets a hidden
 * class of its own in V8, and the upgrade request, which lives as long as
 * its connection, would carry one (about 400 bytes) for good.
 */
function carrying (request: FastifyRequest, token: string): FastifyRequest {
  const own = new Map<PropertyKey, unknown>([['headers', { ...request.headers, authorization: `Bearer ${token}` }]])
  return new Proxy(request, {
    // Getters run on the request itself (a private field would throw on the proxy); only `headers` read through the view is the token's.
    get: (target, key) => own.has(key) ? own.get(key) : Reflect.get(target, key, target),
    has: (target, key) => own.has(key) || Reflect.has(target, key),
    set: (_, key, value) => {
      own.set(key, value)
      return true
    }
  })
}

function toUser (claims: unknown): EventSocketUser {
  if (typeof claims !== 'object' || claims === null) throw new BadTokenError('the payload is not an object')
  const { sub, role, roles, exp } = claims as Record<string, unknown>
  if ((typeof sub !== 'string' || sub.length === 0) && typeof sub !== 'number') throw new BadTokenError('no sub claim')
  // Past 2^53 distinct ids parse to one double (snowflake ids do), and two
  // users would share a sub; a fraction or Infinity is no user id either.
  if (typeof sub === 'number' && !Number.isSafeInteger(sub)) throw new BadTokenError('a numeric sub must be a safe integer; issue large ids as strings')
  if (role !== undefined && typeof role !== 'string') throw new BadTokenError('role must be a string')
  if (roles !== undefined && !(Array.isArray(roles) && roles.every((r) => typeof r === 'string'))) {
    throw new BadTokenError('roles must be an array of strings')
  }
  if (exp !== undefined && typeof exp !== 'number') throw new BadTokenError('exp must be a number')
  return { ...(claims as Record<string, unknown>), sub: String(sub) }
}

/** Epoch milliseconds at which the user's token expires, or null when it never does. */
export function expiresAt (user: EventSocketUser): number | null {
  return typeof user.exp === 'number' ? user.exp * 1000 : null
}
