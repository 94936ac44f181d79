import { decode, encode } from './msgpack.js'

// The messages of docs/protocol.md section 2 and their two encodings. Frames from
// the server are checked here, once, so the rest of the client can trust the
// types.

export type Format = 'json' | 'msgpack'

export const subprotocols: Readonly<Record<Format, string>> = {
  json: 'evsock.v1.json',
  msgpack: 'evsock.v1.msgpack'
}

export const BEARER_PREFIX = 'bearer.'

export interface HelloMessage {
  op: 'hello'
  v: number
  session: string
  user: string
  window: number
  maxMessageBytes: number
  heartbeatMs: number
  /** Epoch ms, or null for a token without `exp`. */
  expiresAt: number | null
}

export interface EventMessage {
  op: 'event'
  seq: number
  topic: string
  id: string
  data: unknown
  /** Server-side position, present when history is on (docs/protocol.md section 6). */
  pos?: string
}

export interface OkMessage {
  op: 'ok'
  id: number
  /** On the `ok` to an `auth`: the new token's expiry (null: none). */
  expiresAt?: number | null
  /** On the `ok` to a `sub` with `since`: whether everything after `since` is replayed (docs/protocol.md section 6). */
  recovered?: boolean
  /** On the `ok` to a `sub`, history on, nothing queued: a position to resume from before any event arrived. */
  pos?: string
}

export interface ErrorMessage {
  op: 'error'
  id?: number
  code: string
  message: string
}

export interface ExpiringMessage {
  op: 'expiring'
  expiresAt: number
}

export type ServerMessage = HelloMessage | EventMessage | OkMessage | ErrorMessage | ExpiringMessage

export type ClientMessage =
  | { op: 'sub', id: number, topic: string, since?: string }
  | { op: 'unsub', id: number, topic: string }
  | { op: 'ack', seq: number }
  | { op: 'auth', id: number, token: string }

type Check = (value: unknown) => boolean
const isString: Check = (value) => typeof value === 'string'
const isNumber: Check = (value) => typeof value === 'number'
const isNumberOrNull: Check = (value) => value === null || typeof value === 'number'
const isAnything: Check = () => true

// Required fields of each server op (optional ones are checked where they are read).
const required: Readonly<Record<ServerMessage['op'], Readonly<Record<string, Check>>>> = {
  hello: { v: isNumber, session: isString, user: isString, window: isNumber, maxMessageBytes: isNumber, heartbeatMs: isNumber, expiresAt: isNumberOrNull },
  event: { seq: isNumber, topic: isString, id: isString, data: isAnything },
  ok: { id: isNumber },
  error: { code: isString, message: isString },
  expiring: { expiresAt: isNumber }
}

export function encodeMessage (format: Format, message: ClientMessage): string | Uint8Array {
  return format === 'json' ? JSON.stringify(message) : encode(message)
}

/**
 * Decodes one frame: text frames are JSON, binary frames MessagePack, whatever
 * was negotiated. Returns undefined for an op this client does not know (a
 * newer server's; ignored for forward compatibility); throws on a malformed frame.
 */
export function decodeMessage (data: unknown): ServerMessage | undefined {
  const message = typeof data === 'string' ? JSON.parse(data) as unknown : decode(binary(data))
  if (typeof message !== 'object' || message === null || !('op' in message) || typeof message.op !== 'string') {
    throw new TypeError('frame is not an object with an "op"')
  }
  if (!Object.hasOwn(required, message.op)) return undefined
  const fields = required[message.op as ServerMessage['op']]
  for (const [field, check] of Object.entries(fields)) {
    if (!(field in message) || !check((message as Record<string, unknown>)[field])) throw new TypeError(`"${message.op}" frame without a valid "${field}"`)
  }
  return message as ServerMessage
}

function binary (data: unknown): Uint8Array | ArrayBuffer {
  if (data instanceof ArrayBuffer || data instanceof Uint8Array) return data
  throw new TypeError('unexpected frame data type')
}
