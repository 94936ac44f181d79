import t from 'tap'
import { performance } from 'node:perf_hooks'
import { delay, openClient, startServer, type TestClient, type TestServer } from './helpers/server.js'
import { clientFrame, closeCodeOf, rawWebSocket } from './helpers/raw-socket.js'

// Floods (issue 6): a client sending thousands of frames a second is closed
// with 4029 by the per-connection token bucket while another client's events
// keep their latency; subscribe/unsubscribe storms stay bounded by
// maxSubscriptions and leave no pattern bound behind.

/** Publishes `count` events `every` ms apart and returns each one's delivery latency (ms) at `client`. */
async function latencies (server: TestServer, client: TestClient, count: number, every: number): Promise<number[]> {
  const sentAt = new Map<number, number>()
  const received = new Map<number, number>()
  const onMessage = (): void => {
    const last = client.messages.at(-1)
    if (last?.op !== 'event') return
    received.set(last.data as number, performance.now())
    client.send({ op: 'ack', seq: last.seq })
  }
  client.ws.on('message', onMessage)
  const first = client.events().length
  for (let i = 0; i < count; i++) {
    const n = first + i
    sentAt.set(n, performance.now())
    await server.app.publish('lat.tick', n)
    await delay(every)
  }
  await client.next(() => client.events().length === first + count, { timeout: 5000 })
  client.ws.off('message', onMessage)
  return [...sentAt].map(([n, at]) => received.get(n)! - at).sort((a, b) => a - b)
}

const percentile = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!

t.test('flooding clients are closed with 4029 while another client\'s event latency stays low', async (t) => {
  const server = await startServer(t, { handshakesPerMinute: 0 })
  const watcher = await openClient(t, server, { sub: 'watcher' })
  await watcher.subscribe('lat.*')
  const baseline = await latencies(server, watcher, 40, 5)

  // Ten flooders one after the other over about a second, each writing 3000
  // frames in one TCP write (raw sockets, so the client side costs nothing).
  const burst = Buffer.concat(Array.from({ length: 3000 }, () => clientFrame('{"op":"ack","seq":0}')))
  const closes: Array<Promise<number | undefined>> = []
  let sent = 0
  const started = performance.now()
  const flood = (async () => {
    for (let n = 0; n < 10; n++) {
      const flooder = await rawWebSocket(server.port, '/events', { authorization: `Bearer ${server.sign({ sub: `flooder${n}` })}` })
      t.teardown(() => flooder.destroy())
      closes.push(closeCodeOf(flooder))
      flooder.write(burst)
      sent += 3000
      await delay(100)
    }
  })()
  const during = await latencies(server, watcher, 100, 8)
  await flood
  const seconds = (performance.now() - started) / 1000
  const codes = await Promise.all(closes)

  t.same(codes, Array(10).fill(4029), 'every flooder was closed with 4029')
  t.ok(sent / seconds > 1000, `the flood ran at ${Math.round(sent / seconds)} frames/s`)
  const summary = (xs: number[]): string => `p50 ${percentile(xs, 0.5).toFixed(1)} ms, p99 ${percentile(xs, 0.99).toFixed(1)} ms`
  t.comment(`event latency before the flood: ${summary(baseline)}; during: ${summary(during)}`)
  // Generous bounds: the machine is small and shared; an unthrottled flood of
  // 30000 frames parsed and answered would hold the event loop far longer.
  t.ok(percentile(during, 0.5) < 20, `median latency during the flood stays low (${summary(during)})`)
  t.ok(percentile(during, 0.99) < 150, 'p99 latency during the flood stays bounded')
  while (server.app.eventSocket.stats().connections > 1) await delay(10)
  t.pass('only the watcher is left')
})

t.test('a subscribe/unsubscribe storm is bounded by maxSubscriptions and leaves no pattern behind', async (t) => {
  // The rate limit is raised to reach the subscription bound; the default one is tested below.
  const server = await startServer(t, { rateLimit: 100_000, rateBurst: 100_000, maxSubscriptions: 50 })
  const stormer = await openClient(t, server, { sub: 'storm' })
  const other = await openClient(t, server, { sub: 'other' })
  await other.subscribe('keep.*')
  const memoryBefore = process.memoryUsage().heapUsed

  const patternsSeen: number[] = []
  let id = 0
  for (let round = 0; round < 20; round++) {
    // 200 distinct patterns, pipelined, then unsubscribe them all; the last
    // half of the rounds does both without waiting in between.
    for (let i = 0; i < 200; i++) stormer.send({ op: 'sub', id: ++id, topic: `s${round}.p${i}.#` })
    if (round < 10) {
      await stormer.next((m) => m.id === id, { timeout: 5000 })
      patternsSeen.push(server.app.eventSocket.stats().patterns)
    }
    for (let i = 0; i < 200; i++) stormer.send({ op: 'unsub', id: ++id, topic: `s${round}.p${i}.#` })
    await stormer.next((m) => m.id === id, { timeout: 5000 })
    patternsSeen.push(server.app.eventSocket.stats().patterns)
  }
  const maxPatterns = Math.max(...patternsSeen)
  const answers = stormer.messages.filter((m) => m.op === 'ok' || m.op === 'error')
  t.equal(answers.length, id, 'every request was answered')
  t.equal(answers.filter((m) => m.code === 'TOO_MANY_SUBSCRIPTIONS').length, 20 * 150, 'past 50 patterns each sub is refused')
  t.equal(maxPatterns, 51, `patterns stayed bounded (max ${maxPatterns})`)
  const stats = server.app.eventSocket.stats()
  t.equal(stats.patterns, 1, 'only the other client\'s pattern is bound')
  t.equal(stats.subscriptions, 1)
  t.ok(process.memoryUsage().heapUsed - memoryBefore < 64 * 1024 * 1024, 'the heap did not balloon')

  await server.app.publish('keep.x', 'still here')
  t.equal((await other.next((m) => m.op === 'event')).data, 'still here', 'the other client is unaffected')
})

t.test('with the default rate limit a storm is closed with 4029 and its patterns are released', async (t) => {
  const server = await startServer(t)
  const stormer = await openClient(t, server, { sub: 'storm' })
  for (let i = 0; i < 1000 && stormer.ws.readyState === stormer.ws.OPEN; i++) stormer.send({ op: 'sub', id: i, topic: `s.p${i % 90}.#` })
  t.equal((await stormer.closed).code, 4029)
  while (server.app.eventSocket.stats().connections > 0) await delay(10)
  t.equal(server.app.eventSocket.stats().patterns, 0, 'a closed connection leaves no pattern bound')
})
