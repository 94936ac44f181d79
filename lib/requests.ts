import { canonicalPattern, multiWordWildcards, patternProblem } from './topics.js'

// Validation of client-to-server messages (docs/protocol.md section 2). A frame is
// either a typed request or a problem to answer with `error`; nothing here
// throws, and only the named fields are ever read (unknown fields are ignored).

export type ClientRequest =
  | { op: 'sub', id: number, topic: string, since: string | undefined }
  | { op: 'unsub', id: number, topic: string }
  | { op: 'ack', seq: number }
  | { op: 'auth', id: number, token: string }

export type ErrorCode =
  | 'BAD_REQUEST' | 'BAD_TOPIC' | 'FORBIDDEN' | 'TOO_MANY_SUBSCRIPTIONS' | 'BAD_ACK' | 'BAD_TOKEN' | 'RATE_LIMITED' | 'INTERNAL' | 'UNAVAILABLE'

export interface RequestProblem {
  code: ErrorCode
  message: string
  /** The request's id, when it had a usable one. */
  id?: number
}

const MAX_TOKEN_LENGTH = 8192

export interface RequestLimits {
  /** The most `#` words a subscribed pattern may hold, once canonical. */
  maxPatternWildcards: number
}

/**
 * `sub` and `unsub` come out with their topic in canonical form
 * (canonicalPattern): it is what the connection stores, authorizes, indexes
 * and binds, so that any spelling of a pattern names the same subscription.
 */
export function parseRequest (frame: unknown, limits: RequestLimits): ClientRequest | RequestProblem {
  if (typeof frame !== 'object' || frame === null || Array.isArray(frame)) {
    return { code: 'BAD_REQUEST', message: 'a message must be an object' }
  }
  const fields = frame as Record<string, unknown>
  const op = own(fields, 'op')
  if (op === 'ack') {
    const seq = own(fields, 'seq')
    return isCount(seq) ? { op, seq } : { code: 'BAD_REQUEST', message: 'ack needs an integer seq >= 0' }
  }
  const id = own(fields, 'id')
  if (op !== 'sub' && op !== 'unsub' && op !== 'auth') {
    return problem('BAD_REQUEST', typeof op === 'string' ? `unknown op ${JSON.stringify(op.slice(0, 32))}` : 'op must be a string', id)
  }
  if (!isCount(id)) return problem('BAD_REQUEST', `${op} needs an integer id >= 0`, id)
  if (op === 'auth') {
    const token = own(fields, 'token')
    if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) {
      return problem('BAD_REQUEST', 'auth needs a token string', id)
    }
    return { op, id, token }
  }
  const topic = own(fields, 'topic')
  const topicIssue = patternProblem(topic)
  if (topicIssue !== undefined) {
    return problem(typeof topic === 'string' ? 'BAD_TOPIC' : 'BAD_REQUEST', `topic ${topicIssue}`, id)
  }
  const pattern = canonicalPattern(topic as string)
  // An unsub of a pattern past the cap names nothing held: it gets its `ok`.
  if (op === 'unsub') return { op, id, topic: pattern }
  const since = own(fields, 'since')
  if (since !== undefined && typeof since !== 'string') return problem('BAD_REQUEST', 'since must be a string', id)
  const hashes = multiWordWildcards(pattern)
  if (hashes > limits.maxPatternWildcards) {
    return problem('BAD_TOPIC', `topic has ${hashes} # wildcards once canonical (${pattern}); at most ${limits.maxPatternWildcards} allowed`, id)
  }
  return { op, id, topic: pattern, since }
}

// Own properties only: a frame's prototype chain is never consulted.
function own (fields: Record<string, unknown>, name: string): unknown {
  return Object.hasOwn(fields, name) ? fields[name] : undefined
}

function isCount (value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}

function problem (code: ErrorCode, message: string, id: unknown): RequestProblem {
  return isCount(id) ? { code, message, id } : { code, message }
}
