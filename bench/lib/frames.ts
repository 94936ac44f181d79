// The few WebSocket framing pieces the bench needs (RFC 6455 section 5): the
// generators' frames and the bare-ws peers' pre-framed broadcasts.

export const OP_TEXT = 0x1
export const OP_CLOSE = 0x8
export const OP_PING = 0x9

/**
 * One whole frame, header and payload in one Buffer (payloads under 64 KiB).
 * Clients must mask: a zero masking key leaves the payload as is, so no per-byte work.
 */
export function frame (opcode: number, payload: Buffer, masked: boolean): Buffer {
  const length = payload.length
  const mask = masked ? 0x80 : 0
  const head = (length < 126 ? 2 : 4) + (masked ? 4 : 0)
  const out = Buffer.allocUnsafe(head + length)
  out[0] = 0x80 | opcode
  if (length < 126) {
    out[1] = mask | length
  } else {
    out[1] = mask | 126
    out.writeUInt16BE(length, 2)
  }
  if (masked) out.writeUInt32BE(0, head - 4)
  payload.copy(out, head)
  return out
}

export const clientFrame = (opcode: number, payload: Buffer): Buffer => frame(opcode, payload, true)
export const textFrame = (text: string): Buffer => clientFrame(OP_TEXT, Buffer.from(text))

/** Header of the server frame at `offset`, or undefined when `buffer` does not hold all of it yet. */
export function readHeader (buffer: Buffer, offset: number): { opcode: number, compressed: boolean, start: number, end: number } | undefined {
  if (offset + 2 > buffer.length) return undefined
  const opcode = buffer[offset]! & 0x0f
  const compressed = (buffer[offset]! & 0x40) !== 0
  let length = buffer[offset + 1]! & 0x7f
  let start = offset + 2
  if (length === 126) {
    if (offset + 4 > buffer.length) return undefined
    length = buffer.readUInt16BE(offset + 2)
    start = offset + 4
  } else if (length === 127) {
    if (offset + 10 > buffer.length) return undefined
    length = buffer.readUIntBE(offset + 4, 6)
    start = offset + 10
  }
  return { opcode, compressed, start, end: start + length }
}

const T_KEY = Buffer.from('"t":')

/** The publish timestamp (EventData.t) inside an event frame's payload, or -1. */
export function timestampOf (payload: Buffer): number {
  let i = payload.indexOf(T_KEY)
  if (i < 0) return -1
  let t = 0
  for (i += T_KEY.length; i < payload.length; i++) {
    const digit = payload[i]! - 48
    if (digit < 0 || digit > 9) break
    t = t * 10 + digit
  }
  return t
}
