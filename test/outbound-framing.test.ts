import t from 'tap'
import type { WebSocket } from 'ws'
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
