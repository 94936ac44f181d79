import t from 'tap'
import { OutboundEvent } from '../lib/codec.js'
import { openClient, startServer } from './helpers/server.js'

// With permessage-deflate, ws frames what it is given: the event must reach
// ws.send as its payload, never as a whole frame built here and stripped again.

t.test('with compression, an event reaches ws.send as its payload, never as a frame built and stripped', async (t) => {
  const server = await startServer(t, { compression: true })
  const client = await openClient(t, server)
  t.ok(client.ws.extensions.includes('permessage-deflate'), 'deflate negotiated')
  await client.subscribe('c.*')
  const writeFrame = OutboundEvent.prototype.writeFrame
  let framesBuilt = 0
  OutboundEvent.prototype.writeFrame = function (this: OutboundEvent, ...args: Parameters<typeof writeFrame>) {
    framesBuilt++
    return writeFrame.apply(this, args)
  }
  t.teardown(() => { OutboundEvent.prototype.writeFrame = writeFrame })
  const sizes = [10, 200, 70_000]
  for (const size of sizes) await server.app.publish('c.x', { text: 'y'.repeat(size) })
  await client.next(() => client.events().length === sizes.length)
  t.same(client.events().map((e) => e.data.text.length), sizes, 'every event arrives intact')
  t.equal(framesBuilt, 0, 'no whole frame was built for the ws.send path')
})

t.test('without compression, events are still written as whole frames', async (t) => {
  const server = await startServer(t, { compression: false })
  const client = await openClient(t, server, { format: 'msgpack' })
  await client.subscribe('c.*')
  await server.app.publish('c.x', { n: 1 })
  await client.next(() => client.events().length === 1)
  t.same(client.events()[0]?.data, { n: 1 })
})
