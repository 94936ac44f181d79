import t from 'tap'
import Fastify from 'fastify'
import eventSocket from '../lib/index.js'
import { openClient, startServer, SECRET } from './helpers/server.js'

t.test('publish resolves with the event id, which subscribers see', async (t) => {
  const server = await startServer(t)
  const client = await openClient(t, server)
  await client.subscribe('p.*')
  const { id } = await server.app.publish('p.one', { a: 1 })
  t.type(id, 'string')
  t.equal((await client.next((m) => m.op === 'event')).id, id)
  const custom = await server.app.publish('p.two', null, { id: 'order-42-created' })
  t.equal(custom.id, 'order-42-created')
  t.equal((await client.next((m) => m.op === 'event' && m.seq === 2)).id, 'order-42-created')
  for (const id of ['', 'x'.repeat(129), 42]) {
    await t.rejects(server.app.publish('p.three', null, { id: id as string }), { code: 'FST_EVSOCK_BAD_EVENT_ID', statusCode: 400 })
  }
})

t.test('publish refuses wildcard and malformed topics with FST_EVSOCK_BAD_TOPIC', async (t) => {
  const server = await startServer(t)
  for (const topic of ['orders.*', 'orders.#', '', 'a..b', 'bad topic', 'x'.repeat(300)]) {
    await t.rejects(server.app.publish(topic, 1), { code: 'FST_EVSOCK_BAD_TOPIC', statusCode: 400 }, JSON.stringify(topic).slice(0, 20))
  }
  await t.rejects(server.app.publish(42 as unknown as string, 1), { code: 'FST_EVSOCK_BAD_TOPIC' })
})

t.test('publish refuses events over maxEventBytes with FST_EVSOCK_PAYLOAD_TOO_LARGE', async (t) => {
  const server = await startServer(t)
  await t.rejects(server.app.publish('big', 'x'.repeat(200 * 1024)), { code: 'FST_EVSOCK_PAYLOAD_TOO_LARGE', statusCode: 413 })
  await t.resolves(server.app.publish('big', 'x'.repeat(200 * 1024 - 200)), 'just under the default 200 KB passes')
  const small = await startServer(t, { maxEventBytes: 1000 })
  await t.rejects(small.app.publish('big', 'x'.repeat(1000)), { code: 'FST_EVSOCK_PAYLOAD_TOO_LARGE' })
})

t.test('publish refuses data without a JSON form with FST_EVSOCK_NOT_SERIALIZABLE', async (t) => {
  const server = await startServer(t)
  const circular: Record<string, unknown> = {}
  circular.self = circular
  await t.rejects(server.app.publish('x', circular), { code: 'FST_EVSOCK_NOT_SERIALIZABLE' })
  await t.rejects(server.app.publish('x', undefined), { code: 'FST_EVSOCK_NOT_SERIALIZABLE' })
  await t.rejects(server.app.publish('x', 10n), { code: 'FST_EVSOCK_NOT_SERIALIZABLE' })
})

/** `depth` arrays (or single-key objects) nested in one another around `null`. */
function nested (depth: number, map = false): unknown {
  let value: unknown = null
  for (let i = 0; i < depth; i++) value = map ? { a: value } : [value]
  return value
}

t.test('publish refuses data nested deeper than maxEventDepth with FST_EVSOCK_TOO_DEEP', async (t) => {
  const server = await startServer(t)
  const json = await openClient(t, server, { format: 'json' })
  const msgpack = await openClient(t, server, { format: 'msgpack' })
  await json.subscribe('deep.*')
  await msgpack.subscribe('deep.*')
  // 2000 levels: a few KB of JSON that msgpackr cannot encode (its recursion overflows the stack).
  for (const map of [false, true]) {
    await t.rejects(server.app.publish('deep.x', nested(2000, map)), { code: 'FST_EVSOCK_TOO_DEEP', statusCode: 400 }, map ? 'objects' : 'arrays')
  }
  await t.rejects(server.app.publish('deep.x', nested(65)), { code: 'FST_EVSOCK_TOO_DEEP' }, 'one past the default of 64')
  // Brackets inside strings are text, not nesting.
  await t.resolves(server.app.publish('deep.x', { text: '['.repeat(500) + '{"'.repeat(100) }), 'brackets inside strings do not count')
  await t.resolves(server.app.publish('deep.x', nested(64, true)), 'exactly the default limit passes')
  for (const client of [json, msgpack]) {
    await client.next(() => client.events().length === 2)
    t.same(client.events()[1]!.data, nested(64, true), `${client.format} subscriber got the 64-level event`)
  }
  const shallow = await startServer(t, { maxEventDepth: 3 })
  await t.resolves(shallow.app.publish('deep.x', nested(3)))
  await t.rejects(shallow.app.publish('deep.x', { a: [{ b: 1 }], c: [[[1]]] }), { code: 'FST_EVSOCK_TOO_DEEP' }, 'the deepest branch counts')
})

t.test('an event nobody subscribes to is not delivered anywhere', async (t) => {
  const server = await startServer(t)
  const client = await openClient(t, server)
  await client.subscribe('wanted.*')
  await server.app.publish('unwanted.x', 1)
  await server.app.publish('wanted.sentinel', 2)
  await client.next((e) => e.topic === 'wanted.sentinel')
  t.same(client.events().map((e) => e.data), [2], 'nothing but the sentinel')
  t.equal(server.app.eventSocket.stats().eventsIn, 1, 'the bus did not route it to this instance: only the sentinel came in')
  t.equal(server.app.eventSocket.stats().eventsPublished, 2)
})

t.test('stats and health describe the instance', async (t) => {
  const server = await startServer(t)
  const a = await openClient(t, server)
  const b = await openClient(t, server, { sub: 'u2' })
  await a.subscribe('s.*')
  await a.subscribe('t.*')
  await b.subscribe('s.*')
  await server.app.publish('s.x', 1)
  await b.next((m) => m.op === 'event')
  await a.next((m) => m.op === 'event')
  t.match(server.app.eventSocket.stats(), {
    connections: 2, subscriptions: 3, patterns: 2, eventsPublished: 1, eventsIn: 1, eventsOut: 2, pending: 0, slowConsumerCloses: 0, eventsDropped: 0, broker: { kind: 'memory', state: 'up' }
  })
  t.match(server.app.eventSocket.health(), { status: 'ok', connections: 2, broker: { kind: 'memory', state: 'up' } })
})

t.test('options are validated with FST_EVSOCK_BAD_OPTION', async (t) => {
  for (const options of [{ window: 0 }, { path: 'events' }, { maxEventBytes: -1 }, { maxEventDepth: 0 }, { maxEventDepth: 100_000 }, { broker: { url: 'http://x' } }, { origins: 'x' }]) {
    const app = Fastify()
    app.register(eventSocket, { jwt: { secret: SECRET }, ...options } as never)
    await t.rejects(async () => { await app.ready() }, { code: 'FST_EVSOCK_BAD_OPTION' }, JSON.stringify(options))
    await app.close()
  }
  const app = Fastify()
  app.register(eventSocket, {})
  await t.rejects(async () => { await app.ready() }, { code: 'FST_EVSOCK_BAD_OPTION', message: /jwt/ })
  await app.close()
})

t.test('an @fastify/jwt the app registered is reused', async (t) => {
  const app = Fastify()
  await app.register((await import('@fastify/jwt')).default, { secret: 'app-own-secret-that-is-long-enough' })
  await app.register(eventSocket)
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const port = (app.server.address() as { port: number }).port
  const server = { app, port, url: `ws://127.0.0.1:${port}/events`, sign: (c: Record<string, unknown>) => app.jwt.sign(c) }
  const client = await openClient(t, server, { sub: 'reuse' })
  t.equal(client.messages[0]!.user, 'reuse')
})
