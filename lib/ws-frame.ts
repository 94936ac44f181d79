// WebSocket framing (RFC 6455 section 5.2) for frames this server sends:
// final, unmasked, text or binary. Building the whole frame here lets the
// frames of one turn be one buffer and one write, rather than ws framing each
// payload and writing it on its own. Only for sockets without per-message
// compression: with it, ws.send is given the payloads.

const FIN_TEXT = 0x81
const FIN_BINARY = 0x82

/** Bytes of the header in front of a payload of `payloadLength` bytes. */
export function headerLength (payloadLength: number): number {
  return payloadLength < 126 ? 2 : payloadLength < 0x10000 ? 4 : 10
}

/** Writes a header at `at` of `target`; returns where the payload starts. */
export function writeHeader (target: Buffer, at: number, binary: boolean, payloadLength: number): number {
  target[at] = binary ? FIN_BINARY : FIN_TEXT
  if (payloadLength < 126) {
    target[at + 1] = payloadLength
    return at + 2
  }
  if (payloadLength < 0x10000) {
    target[at + 1] = 126
    target.writeUInt16BE(payloadLength, at + 2)
    return at + 4
  }
  target[at + 1] = 127
  target.writeUInt32BE(Math.floor(payloadLength / 0x100000000), at + 2)
  target.writeUInt32BE(payloadLength >>> 0, at + 6)
  return at + 10
}
