import t from 'tap'
import type { WebSocket } from 'ws'
import type { BusMessage } from '../lib/bus/types.js'
import { OutboundEvent } from '../lib/codec.js'
import { framerFor, SharedFrames } from '../lib/framers.js'
import { openClient, startServer } from './helpers/server.js'

// With permessage-deflate, ws frames what it is given: an event must reach
// ws.send as a payload built for it, never as a whole frame built here and
// stripped of its header (a view into a larger buffer) to be framed again.

t.test('with compression, an event reaches ws.send as its own payload, not a frame stripped of its header', async (t) => {
  const server = await startServer(t, { compression: true })
  const client = await openClient(t, server)
  t.ok(client.ws.extensions.includes('permessage-deflate'), 'deflate negotiated')
  await client.subscribe('c.*')
  const [serverSide] = server.app.websocketServer.clients as Set<WebSocket>
  const given: Buffer[] = []
  const send = serverSide!.send.bind(serverSide)
  serverSide!.send = ((data: Buffer, ...rest: unknown[]) => {
    given.push(data)
    return (send as (...args: unknown[]) => void)(data, ...rest)
  }) as WebSocket['send']
  // Past Buffer's pool (4 KB), so that each buffer built for it is its own allocation.
  const sizes = [70_000, 150_000]
  for (const size of sizes) await server.app.publish('c.x', { text: 'y'.repeat(size) })
  await client.next(() => client.events().length === sizes.length)
  t.same(client.events().map((e) => e.data.text.length), sizes, 'every event arrives intact')
  t.equal(given.length, sizes.length, 'one send per event')
  for (const data of given) {
    t.same([data.byteOffset, data.buffer.byteLength], [0, data.length], `the ${data.length}-byte payload was built on its own, with no header in front`)
  }
})

t.test('without compression, events are still written as whole frames', async (t) => {
  const server = await startServer(t, { compression: false })
  const client = await openClient(t, server, { format: 'msgpack' })
  await client.subscribe('c.*')
  await server.app.publish('c.x', { n: 1 })
  await client.next(() => client.events().length === 1)
  t.same(client.events()[0]?.data, { n: 1 })
})

// A fan-out of one event builds its frame once for the sockets that number it
// alike (lib/framers.ts, SharedFrames): the same buffer goes to each of them,
// and a socket whose seq or format differs gets a frame of its own.

/** A socket without compression whose TCP writes are recorded. */
function recordingSocket (): { ws: WebSocket, written: Buffer[] } {
  const written: Buffer[] = []
  const ws = { extensions: '', _socket: { write: (chunk: Buffer) => { written.push(chunk); return true } } } as unknown as WebSocket
  return { ws, written }
}

/** The JSON message of a whole unmasked text frame with a short payload. */
function message (frame: Buffer): { op: string, seq: number, data: unknown } {
  t.equal(frame[0], 0x81, 'a final text frame')
  return JSON.parse(frame.subarray(2, 2 + (frame[1] as number)).toString())
}

t.test('one event to sockets that number it alike is framed once; another seq or format gets its own frame', async (t) => {
  const shared = new SharedFrames()
  const sockets = Array.from({ length: 4 }, recordingSocket)
  const framers = sockets.map(({ ws }, i) => framerFor(ws, i === 3 ? 'msgpack' : 'json', shared))
  const event = new OutboundEvent({ topic: 'c.x', id: 'e1', payload: Buffer.from('{"n":1}'), time: 0 } as BusMessage)
  t.ok(event.encodes('json') && event.encodes('msgpack'))
  for (const [i, framer] of framers.entries()) t.equal(framer.write(sockets[i]!.ws, [event], i === 2 ? 8 : 5), 1)
  const [a, b, c, d] = sockets.map(({ written }) => written[0] as Buffer)
  t.equal(a, b, 'the two sockets at seq 5 were written the same buffer')
  t.same(message(a!), { op: 'event', seq: 5, topic: 'c.x', id: 'e1', data: { n: 1 } })
  t.not(c, a, 'the socket at seq 8 got a frame of its own')
  t.equal(message(c!).seq, 8)
  t.not(d, a, 'the msgpack socket got a frame of its own')
  t.equal(d![0], 0x82, 'a binary frame')

  shared.clear()
  const again = recordingSocket()
  framerFor(again.ws, 'json', shared).write(again.ws, [event], 5)
  t.not(again.written[0], a, 'after the turn, the frame is built anew: the shared one is not kept')
  t.same(again.written[0], a, 'with the same bytes')

  const batch = recordingSocket()
  framerFor(batch.ws, 'json', shared).write(batch.ws, [event, event], 5)
  t.equal(batch.written.length, 1, 'two events of one turn still leave in one write')
})

/** The messages of a buffer of whole unmasked text frames with short payloads. */
function messages (bytes: Buffer): Array<{ seq: number, id: string }> {
  const out: Array<{ seq: number, id: string }> = []
  for (let at = 0; at < bytes.length; at += 2 + (bytes[at + 1] as number)) out.push(JSON.parse(bytes.subarray(at + 2, at + 2 + (bytes[at + 1] as number)).toString()))
  return out
}

t.test('several events of one turn to sockets that number them alike are one buffer, written to each; a run that differs gets its own', async (t) => {
  const shared = new SharedFrames()
  const [e1, e2, e3] = ['e1', 'e2', 'e3'].map((id) => new OutboundEvent({ topic: 'c.x', id, payload: Buffer.from('{"n":1}'), time: 0 } as BusMessage))
  const sockets = Array.from({ length: 6 }, recordingSocket)
  const write = (i: number, entries: Array<OutboundEvent | Buffer>, seq: number): number => framerFor(sockets[i]!.ws, 'json', shared).write(sockets[i]!.ws, entries, seq)
  t.equal(write(0, [e1!, e2!, e3!], 5), 3)
  t.equal(write(1, [e1!, e2!, e3!], 5), 3)
  write(2, [e1!, e2!], 5)
  write(3, [e1!, e3!, e2!], 5)
  write(4, [e1!, e2!, e3!], 6)
  t.equal(write(5, [e1!, Buffer.from('{"op":"ok"}'), e2!], 5), 2, 'a control message among them: two events written')
  const [a, b, c, d, e, f] = sockets.map(({ written }) => { t.equal(written.length, 1, 'one write per socket'); return written[0] as Buffer })
  t.equal(b, a, 'the sockets sent the same run at the same seqs were written the same buffer')
  t.same(messages(a!).map((m) => [m.id, m.seq]), [['e1', 5], ['e2', 6], ['e3', 7]])
  t.same(messages(c!).map((m) => [m.id, m.seq]), [['e1', 5], ['e2', 6]], 'a shorter run: its own frames')
  t.same(messages(d!).map((m) => [m.id, m.seq]), [['e1', 5], ['e3', 6], ['e2', 7]], 'another order: its own frames')
  t.same(messages(e!).map((m) => [m.id, m.seq]), [['e1', 6], ['e2', 7], ['e3', 8]], 'other seqs: its own frames')
  t.same(messages(f!).map((m) => [m.id, m.seq ?? m]), [['e1', 5], [undefined, { op: 'ok' }], ['e2', 6]], 'with a control message: its own buffer, in order')
})
