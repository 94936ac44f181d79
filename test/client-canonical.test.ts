import t from 'tap'
import { WebSocket } from 'ws'
import { connect, type ReceivedEvent } from '../lib/client/index.js'
import { startServer } from './helpers/server.js'

// The server keeps one subscription per canonical pattern (docs/protocol.md
// section 3); the bundled client must not let two spellings of one pattern
// end each other's subscription.

async function until (condition: () => boolean, what: string, timeout = 5000): Promise<void> {
  const deadline = Date.now() + timeout
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

t.test('two spellings of one pattern share a subscription: unsubscribing one keeps the other', async (t) => {
  const server = await startServer(t)
  const client = connect({ url: server.url, WebSocket, token: server.sign({ sub: 'alice', role: 'user' }) })
  t.teardown(() => client.close())
  const spelledLong: ReceivedEvent[] = []
  const canonical: ReceivedEvent[] = []
  const dropLong = client.subscribe('user.alice.#.*.#', (event) => { spelledLong.push(event) })
  await dropLong.ready
  await client.subscribe('user.alice.*.#', (event) => { canonical.push(event) }).ready
  t.equal(server.app.eventSocket.stats().subscriptions, 1, 'one server subscription')

  await server.app.publish('user.alice.x', 1)
  await until(() => spelledLong.length === 1 && canonical.length === 1, 'the first event, to both handlers')

  await dropLong()
  t.equal(server.app.eventSocket.stats().subscriptions, 1, 'the other spelling still holds the subscription')
  await server.app.publish('user.alice.y', 2)
  await until(() => canonical.length === 2, 'the second event, to the remaining handler')
  t.same(spelledLong.map((event) => event.data), [1], 'the removed handler is not called')
})
