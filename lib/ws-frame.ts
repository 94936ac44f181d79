// WebSocket framing (RFC 6455 section 5.2) for frames this server sends:
// final, unmasked, text or binary. Building the whole frame here lets an
// event's frame be one buffer and one write, rather than ws framing the
// payload again for every socket.

const FIN_TEXT = 0x81
const FIN_BINARY = 0x82

/** Bytes of the header in front of a payload of `payloadLength` bytes. */
export function headerLength (payloadLength: number): number {
  return payloadLength < 126 ? 2 : payloadLength < 0x10000 ? 4 : 10
}

/** Writes the header at the start of `frame`; returns where the payload starts. */
export function writeHeader (frame: Buffer, binary: boolean, payloadLength: number): number {
  frame[0] = binary ? FIN_BINARY : FIN_TEXT
  if (payloadLength < 126) {
    frame[1] = payloadLength
    return 2
  }
  if (payloadLength < 0x10000) {
    frame[1] = 126
    frame.writeUInt16BE(payloadLength, 2)
    return 4
  }
  frame[1] = 127
  frame.writeUInt32BE(Math.floor(payloadLength / 0x100000000), 2)
  frame.writeUInt32BE(payloadLength >>> 0, 6)
  return 10
}

/** A whole frame around `payload`. */
export function frame (payload: Buffer, binary: boolean): Buffer {
  const result = Buffer.allocUnsafe(headerLength(payload.length) + payload.length)
  payload.copy(result, writeHeader(result, binary, payload.length))
  return result
}

/** The payload of a frame built here. */
export function payloadOf (frame: Buffer): Buffer {
  const length = frame[1]!
  return frame.subarray(length < 126 ? 2 : length === 126 ? 4 : 10)
}
