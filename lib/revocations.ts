import { randomUUID } from 'node:crypto'
import { CONTROL_PREFIX } from './topics.js'
import type { BusMessage } from './bus/types.js'
import type { EventSocketUser } from './options.js'

// Revocations by `sub`, shared between instances through the bus: each
// instance keeps the ones it heard of for `revocationTtlMs` and refuses the
// tokens they cover (docs/security.md, "Revocation").

export const REVOKE_KEY = `${CONTROL_PREFIX}revoke`

// A revocation dated further ahead than this is not believed: a foreign
// producer (or a wild clock) could otherwise refuse every future token of a sub.
const MAX_FUTURE_MS = 60_000
const MAX_SUB_LENGTH = 1024

export interface Revocation {
  sub: string
  /** Epoch ms at which it was made, on the instance that made it. */
  at: number
}

interface Entry {
  /** Tokens with an `iat` at or before this second are refused. */
  upToSecond: number
  expiresAt: number
}

export class Revocations {
  readonly #ttlMs: number
  // Insertion order is expiry order (every entry lives ttlMs from when it was
  // last set), so expired entries are always at the front.
  readonly #bySub = new Map<string, Entry>()

  constructor (ttlMs: number) {
    this.#ttlMs = ttlMs
  }

  get size (): number {
    this.#sweep()
    return this.#bySub.size
  }

  add ({ sub, at }: Revocation): void {
    this.#sweep()
    // `iat` holds whole seconds: a token issued in the revocation's own second
    // may be older than it, so that whole second is refused.
    const second = Math.floor(at / 1000)
    const previous = this.#bySub.get(sub)
    this.#bySub.delete(sub)
    this.#bySub.set(sub, { upToSecond: Math.max(second, previous?.upToSecond ?? second), expiresAt: Date.now() + this.#ttlMs })
  }

  /** True when `user`'s token was issued before a live revocation of its sub, or carries no `iat` to tell. */
  refuses (user: EventSocketUser): boolean {
    if (this.#bySub.size === 0) return false
    this.#sweep()
    const entry = this.#bySub.get(user.sub)
    if (entry === undefined) return false
    // A NumericDate may have a fraction: S.4 was issued in second S, before a revocation at S.7.
    return typeof user.iat !== 'number' || Math.floor(user.iat) <= entry.upToSecond
  }

  #sweep (): void {
    const now = Date.now()
    for (const [sub, entry] of this.#bySub) {
      if (entry.expiresAt > now) return
      this.#bySub.delete(sub)
    }
  }
}

export function isValidSub (sub: unknown): sub is string {
  return typeof sub === 'string' && sub.length > 0 && sub.length <= MAX_SUB_LENGTH
}

/** The control message that tells every instance (this one included) of a revocation. */
export function revocationMessage (revocation: Revocation): BusMessage {
  return { id: randomUUID(), topic: REVOKE_KEY, time: revocation.at, payload: Buffer.from(JSON.stringify(revocation)) }
}

/** The revocation a control message carries, or a string saying why it is not one. */
export function parseRevocation (message: BusMessage): Revocation | string {
  let value: unknown
  try {
    value = JSON.parse(message.payload.toString('utf8'))
  } catch {
    return 'payload is not JSON'
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'payload is not an object'
  const { sub, at } = value as Record<string, unknown>
  if (!isValidSub(sub)) return `sub must be a string of 1 to ${MAX_SUB_LENGTH} characters`
  if (typeof at !== 'number' || !Number.isSafeInteger(at) || at <= 0) return 'at must be a positive integer (epoch ms)'
  if (at > Date.now() + MAX_FUTURE_MS) return 'at is in the future'
  return { sub, at }
}
