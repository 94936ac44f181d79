import t from 'tap'
import type { WebSocket } from 'ws'
import { delay, openClient, startServer, type TestClient, type TestServer } from './helpers/server.js'
import { clientFrame, closeCodeOf, rawWebSocket } from './helpers/raw-socket.js'
import { waitFor } from './helpers/wait.js'
import { gc } from './helpers/gc.js'

// A reader that stops reading at the TCP level. Once the kernel
// buffers on both sides are full, every frame written stays in the server's
// memory; the server must close such a connection (4008) instead of buffering
// without bound, and keep serving the others.

const EVENT = 'x'.repeat(100 * 1024)
const MiB = 1024 * 1024

/** A raw client subscribed to `stall.*` that then stops reading from its socket. */
async function stalledReader (t: Parameters<typeof startServer>[0], server: TestServer) {
  const socket = await rawWebSocket(server.port, '/events', { authorization: `Bearer ${server.sign({ sub: 'stalled', role: 'admin' })}` })
  t.teardown(() => socket.destroy())
  const subscriptions = server.app.eventSocket.stats().subscriptions
  socket.write(clientFrame('{"op":"sub","id":1,"topic":"stall.*"}'))
  await waitFor(() => server.app.eventSocket.stats().subscriptions > subscriptions, { what: 'the stalled reader\'s subscription' })
  // Paused since the upgrade: nothing more is read, and the kernel's receive window closes.
  return socket
}

/** The server side of every open connection, to watch what each holds in memory. */
function serverSockets (server: TestServer): WebSocket[] {
  return [...server.app.websocketServer.clients]
}

/** Publishes until a slow consumer was closed (or `maxEvents`); returns the ids published. */
async function publishUntilClosed (server: TestServer, before: number, maxEvents: number, onEach: () => void): Promise<string[]> {
  const ids: string[] = []
  while (server.app.eventSocket.stats().slowConsumerCloses === before && ids.length < maxEvents) {
    ids.push((await server.app.publish('stall.big', EVENT)).id)
    onEach()
    // Pacing, not waiting: the sockets write between events, as with a real publisher.
    if (ids.length % 8 === 0) await delay(1)
  }
  return ids
}

/** Waits for `count` events on `client` (a timeout names how many came: the events themselves are 100 KiB each). */
async function everyEvent (client: TestClient, count: number): Promise<void> {
  await waitFor(() => client.events().length >= count, { what: `${count} events on the healthy client`, detail: () => `${client.events().length} arrived` })
}

t.test('a reader that stops reading is closed with 4008 once maxBufferedBytes is buffered, and no more is held', async (t) => {
  const maxBufferedBytes = 2 * MiB
  // A window and pending queue far larger than what is published, so that only the socket-buffer bound can act.
  const server = await startServer(t, { window: 100_000, maxPendingEvents: 100_000, maxPendingBytes: 1024 * MiB, maxBufferedBytes })
  const healthy = await openClient(t, server, { sub: 'healthy' })
  await healthy.subscribe('stall.*')
  const socket = await stalledReader(t, server)
  gc()
  const memoryBefore = process.memoryUsage()

  let maxBuffered = 0
  const ids = await publishUntilClosed(server, 0, 2000, () => {
    for (const ws of serverSockets(server)) maxBuffered = Math.max(maxBuffered, ws.bufferedAmount)
  })
  gc()
  const memoryAfter = process.memoryUsage()
  const published = ids.length
  t.comment(`closed after ${published} events of 100 KiB (${(published * 0.1).toFixed(0)} MiB); server socket buffer peaked at ${(maxBuffered / MiB).toFixed(1)} MiB`)
  t.equal(server.app.eventSocket.stats().slowConsumerCloses, 1, 'the stalled reader was closed as a slow consumer')
  t.ok(published < 2000, 'long before the publisher gave up')
  t.ok(maxBuffered <= maxBufferedBytes + EVENT.length + 1024, 'the server never held more than maxBufferedBytes plus one event for it')
  const grown = (memoryAfter.arrayBuffers - memoryBefore.arrayBuffers) / MiB
  t.ok(grown < 3 * maxBufferedBytes / MiB + 16, `buffer memory grew by ${grown.toFixed(1)} MiB only`)

  // The stalled socket cannot read the close frame; the server cuts it off after its grace period.
  await waitFor(() => server.app.eventSocket.stats().connections === 1, { what: 'the stalled connection to be released within the close grace period', timeoutMs: 3000 })
  t.equal(server.app.eventSocket.stats().patterns, 1, 'its subscription is released')
  // Its window (100,000) is far above what was published: it gets every event, in order.
  await everyEvent(healthy, published)
  t.same(healthy.events().map((e) => e.id), ids, `the healthy client received all ${published} events, in order`)
  socket.destroy()
})

t.test('with the default window a reader that stops reading overflows its pending queue and gets 4008', async (t) => {
  const server = await startServer(t)
  const healthy = await openClient(t, server, { sub: 'healthy' })
  await healthy.subscribe('stall.*')
  healthy.ackEach()
  const socket = await stalledReader(t, server)
  const ids = await publishUntilClosed(server, 0, 200, () => {})
  t.equal(server.app.eventSocket.stats().slowConsumerCloses, 1)
  // 64 in flight and 4 MiB pending (maxPendingBytes) of 100 KiB events.
  t.ok(ids.length <= 64 + 42, `closed after ${ids.length} events`)
  await everyEvent(healthy, ids.length)
  t.same(healthy.events().map((e) => e.id), ids, 'the healthy client acking as it goes received every event, in order')
  // Reading again now shows the close frame the server queued behind the events.
  t.equal(await closeCodeOf(socket), 4008)
})
