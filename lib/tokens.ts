import type { FastifyInstance } from 'fastify'
import { BadTokenError, TokenExpiredError } from './errors.js'
import type { EventSocketUser } from './options.js'

// Verification shared by the handshake and the in-band `auth` refresh, so both
// refuse exactly the same tokens with the same codes.

// fastify.jwt.verify throws fast-jwt's own errors: these two mean "expired" and "not yet valid".
const TEMPORAL_CODES = new Set(['FAST_JWT_EXPIRED', 'FAST_JWT_INACTIVE'])

export async function verifyToken (fastify: FastifyInstance, token: string): Promise<EventSocketUser> {
  let claims: unknown
  try {
    // Awaited because a key resolver function makes @fastify/jwt verify asynchronously.
    claims = await fastify.jwt.verify(token)
  } catch (err) {
    const code = (err as { code?: unknown }).code
    if (typeof code === 'string' && TEMPORAL_CODES.has(code)) throw new TokenExpiredError()
    throw new BadTokenError(typeof code === 'string' ? code : 'verification failed')
  }
  return toUser(claims)
}

function toUser (claims: unknown): EventSocketUser {
  if (typeof claims !== 'object' || claims === null) throw new BadTokenError('the payload is not an object')
  const { sub, role, roles, exp } = claims as Record<string, unknown>
  if ((typeof sub !== 'string' || sub.length === 0) && typeof sub !== 'number') throw new BadTokenError('no sub claim')
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
