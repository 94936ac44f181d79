import { connect, type Socket } from 'node:net'
import { randomBytes } from 'node:crypto'

// A WebSocket client written by hand over a plain TCP socket, for the
// tests of the defences: it can stop reading at the TCP level, and write thousands of
// frames in one write without the cost of a client library in the way.

/** One masked client frame (RFC 6455 section 5.2); text unless `opcode` says otherwise. */
export function clientFrame (payload: string | Buffer, opcode = 0x1): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload
  const length = data.length
  let header: Buffer
  if (length < 126) header = Buffer.from([0x80 | opcode, 0x80 | length])
  else if (length < 0x10000) header = Buffer.from([0x80 | opcode, 0x80 | 126, length >> 8, length & 0xff])
  else header = Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | 127]), bigEndian64(length)])
  const mask = randomBytes(4)
  const masked = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) masked[i] = data[i]! ^ mask[i & 3]!
  return Buffer.concat([header, mask, masked])
}

function bigEndian64 (value: number): Buffer {
  const bytes = Buffer.alloc(8)
  bytes.writeBigUInt64BE(BigInt(value))
  return bytes
}

/** Opens a TCP connection and performs the upgrade by hand; resolves once the server answered 101. */
export async function rawWebSocket (port: number, path: string, headers: Record<string, string>): Promise<Socket> {
  const socket = connect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve)
    socket.once('error', reject)
  })
  const request = [
    `GET ${path} HTTP/1.1`,
    `Host: 127.0.0.1:${port}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
    'Sec-WebSocket-Version: 13',
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`)
  ]
  socket.write(`${request.join('\r\n')}\r\n\r\n`)
  const head = await new Promise<string>((resolve, reject) => {
    let received = Buffer.alloc(0)
    const onData = (chunk: Buffer): void => {
      received = Buffer.concat([received, chunk])
      const end = received.indexOf('\r\n\r\n')
      if (end === -1) return
      socket.off('data', onData)
      // Anything after the head (the hello frame) goes back to be read later.
      const rest = received.subarray(end + 4)
      if (rest.length > 0) socket.unshift(rest)
      resolve(received.subarray(0, end).toString())
    }
    socket.on('data', onData)
    socket.once('error', reject)
  })
  if (!head.startsWith('HTTP/1.1 101')) throw new Error(`upgrade refused: ${head.split('\r\n')[0]}`)
  socket.pause()
  return socket
}

/** A frame the server sent (servers never mask). */
export interface ServerFrame { opcode: number, payload: Buffer }

/** Splits what the server sent into frames; an incomplete last frame is left out. */
export function serverFrames (bytes: Buffer): ServerFrame[] {
  const frames: ServerFrame[] = []
  let at = 0
  while (at + 2 <= bytes.length) {
    const opcode = bytes[at]! & 0x0f
    let length = bytes[at + 1]! & 0x7f
    let start = at + 2
    if (length === 126) {
      if (start + 2 > bytes.length) break
      length = bytes.readUInt16BE(start)
      start += 2
    } else if (length === 127) {
      if (start + 8 > bytes.length) break
      length = Number(bytes.readBigUInt64BE(start))
      start += 8
    }
    if (start + length > bytes.length) break
    frames.push({ opcode, payload: bytes.subarray(start, start + length) })
    at = start + length
  }
  return frames
}

/** Reads until the server closes the TCP connection; returns the close code of its close frame, if one arrived. */
export async function closeCodeOf (socket: Socket): Promise<number | undefined> {
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  socket.resume()
  await new Promise((resolve) => socket.once('close', resolve))
  const close = serverFrames(Buffer.concat(chunks)).find((frame) => frame.opcode === 0x8)
  return close === undefined || close.payload.length < 2 ? undefined : close.payload.readUInt16BE(0)
}
