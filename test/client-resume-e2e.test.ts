import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import t from 'tap'
import WebSocket from 'ws'
import eventSocket from '../lib/index.js'
import { connect, type ResumeResult } from '../lib/client/index.js'
import type { EventSocketClientError } from '../lib/client/errors.js'
import { SECRET, startServer } from './helpers/server.js'
import { waitFor } from './helpers/wait.js'

// The bundled client against the real server with history on the in-process
// bus: the server drops the client's connection again and again while events
// are published, and the handler still sees every event exactly once, in
// publish order (docs/protocol.md section 6).

for (const format of ['json', 'msgpack'] as const) {
  t.test(`${format}: every event reaches the handler exactly once, in order, across many server-side closes`, async (t) => {
    // A small window, so that some events wait behind it at each close.
    const server = await startServer(t, { history: true, window: 8 })
    const client = connect({
      url: server.url,
      token: server.sign({ sub: 'watcher', role: 'admin' }),
      WebSocket,
      format,
      reconnect: { initialDelayMs: 5, maxDelayMs: 20 }
    })
    t.teardown(() => client.close())
    const errors: EventSocketClientError[] = []
    const resumes: ResumeResult[] = []
    const closes: number[] = []
    client.on('error', (error) => { errors.push(error) })
    client.on('resume', (result) => { resumes.push(result) })
    client.on('disconnect', ({ code }) => { closes.push(code) })
    let opens = 0
    client.on('open', () => { opens++ })
    const seen: unknown[] = []
    await client.subscribe('orders.#', async (event) => {
      seen.push(event.data)
      // Some handlers finish later than the next event arrives.
      if (seen.length % 7 === 0) await new Promise((resolve) => setImmediate(resolve))
    }).ready

    const count = 3000
    const drops = 12
    // Each way the server ends a connection the client must resume after.
    const endings: Array<(socket: WebSocket) => void> = [
      (socket) => { socket.close(1001, 'going away') },
      (socket) => { socket.close(1013, 'resume again') },
      (socket) => { socket.terminate() }
    ]
    const every = Math.floor(count / drops)
    let dropped = 0
    let due = false
    for (let n = 0; n < count; n++) {
      await server.app.publish(`orders.${n % 3 === 0 ? 'eu.created' : 'created'}`, n)
      if (n % every === every >> 1) due = true
      // Each drop ends a connection the client has opened (its hello handled) since the last drop.
      const [socket] = server.app.websocketServer.clients as Set<WebSocket>
      if (due && opens > dropped && socket?.readyState === WebSocket.OPEN) {
        endings[dropped++ % endings.length]?.(socket)
        due = false
      }
      // Let the client run between publishes, and reconnect while a drop is due.
      if (n % 10 === 0 || due) await new Promise((resolve) => setTimeout(resolve, due ? 2 : 0))
    }
    // Published after every other: once it is handled, a duplicate or a late event would have been too.
    await server.app.publish('orders.sentinel', 'sentinel')
    await waitFor(() => seen.at(-1) === 'sentinel' || seen.length > count + 1, {
      what: 'the sentinel',
      timeoutMs: 30_000,
      detail: () => `${seen.length} events seen, state ${client.state}, closes ${JSON.stringify(closes)}, resumes ${resumes.length}, errors ${errors.map((error) => error.message).join()}, stats ${JSON.stringify(server.app.eventSocket.stats())}`
    })

    t.equal(dropped, drops, 'the server dropped the connection that many times')
    t.equal(closes.length, dropped, 'each drop was seen')
    t.same(seen, [...Array.from({ length: count }, (_, n) => n), 'sentinel'], 'every event once, in order')
    t.ok(resumes.length >= dropped && resumes.every((result) => result.recovered && result.pattern === 'orders.#'), 'every resume recovered')
    t.same(errors.map((error) => error.code), [], 'no error')
  })
}

t.test('a slow consumer closed with 4008 resumes after its last dispatched event, not its last acknowledged one', async (t) => {
  const server = await startServer(t, { history: true, window: 8, maxPendingEvents: 4 })
  const client = connect({ url: server.url, token: server.sign({ sub: 'watcher', role: 'admin' }), WebSocket, reconnect: { initialDelayMs: 5, maxDelayMs: 20 } })
  t.teardown(() => client.close())
  const closes: Array<{ code: number, reason: string }> = []
  const resumes: ResumeResult[] = []
  client.on('disconnect', (close) => { closes.push(close) })
  client.on('resume', (result) => { resumes.push(result) })
  let release: () => void = () => {}
  const stuck = new Promise<void>((resolve) => { release = resolve })
  t.teardown(() => { release() })
  const seen: unknown[] = []
  // Event 2's handler holds the acks back: the window fills, then the queue behind it.
  await client.subscribe('orders.*', async (event) => {
    seen.push(event.data)
    if (event.data === 2) await stuck
  }).ready

  const count = 40
  for (let n = 0; n < count; n++) await server.app.publish('orders.created', n)
  await waitFor(() => closes.length > 0, { what: 'the 4008', timeoutMs: 10_000, detail: () => `${seen.length} seen` })
  release()
  await server.app.publish('orders.created', 'sentinel')
  await waitFor(() => seen.at(-1) === 'sentinel' || seen.length > count + 1, { what: 'the sentinel', timeoutMs: 10_000, detail: () => JSON.stringify(seen) })

  t.equal(closes[0]?.code, 4008)
  t.match(closes[0]?.reason, /^slow consumer/)
  t.same(seen, [...Array.from({ length: count }, (_, n) => n), 'sentinel'], 'every event once, in order: the events dispatched but not acknowledged are not called again')
  t.same(resumes, [{ pattern: 'orders.*', recovered: true }])
})

t.test('after the in-process server restarts, its history is new: the client subscribes again from now and reports recovered false', async (t) => {
  const apps: FastifyInstance[] = []
  t.teardown(async () => { for (const app of apps) await app.close() })
  const listen = async (port: number): Promise<FastifyInstance> => {
    const app = Fastify()
    apps.push(app)
    await app.register(eventSocket, { jwt: { secret: SECRET }, history: true })
    await app.listen({ port, host: '127.0.0.1' })
    return app
  }
  const first = await listen(0)
  const port = (first.server.address() as AddressInfo).port
  const client = connect({ url: `ws://127.0.0.1:${port}/events`, token: first.jwt.sign({ sub: 'watcher', role: 'admin' }), WebSocket, reconnect: { initialDelayMs: 20, maxDelayMs: 100 } })
  t.teardown(() => client.close())
  const errors: EventSocketClientError[] = []
  const resumes: ResumeResult[] = []
  client.on('error', (error) => { errors.push(error) })
  client.on('resume', (result) => { resumes.push(result) })
  const seen: unknown[] = []
  await client.subscribe('orders.*', (event) => { seen.push(event.data) }).ready
  await first.publish('orders.created', 'before')
  await waitFor(() => seen.length === 1, { what: 'the first event', timeoutMs: 5000 })
  const stale = client.position

  await first.close()
  const second = await listen(port)
  await waitFor(() => resumes.length === 1, { what: 'the resume on the new server', timeoutMs: 10_000 })
  t.same(resumes, [{ pattern: 'orders.*', recovered: false }])
  t.not(client.position, stale, 'the old history\'s position is dropped')
  await second.publish('orders.created', 'after')
  await waitFor(() => seen.length === 2, { what: 'the event on the new server', timeoutMs: 5000 })
  t.same(seen, ['before', 'after'], 'the pattern is held again')
  t.same(errors, [], 'no error: the BAD_REQUEST to the stale since is handled')
})
