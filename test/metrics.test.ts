import t from 'tap'
import Fastify from 'fastify'
import { Registry, Counter } from 'prom-client'
import eventSocket, { METRICS_CONTENT_TYPE } from '../lib/index.js'
import { MemoryBus } from '../lib/bus/memory.js'
import { loadPromClient } from '../lib/metrics.js'
import { recordingLogger } from './helpers/broker.js'
import { parsePrometheus, scrape, type Scrape } from './helpers/prom-text.js'
import { attemptHandshake, openClient, SECRET, startServer, type TestClient } from './helpers/server.js'
import { runScript, waitFor } from './helpers/wait.js'
import { hidingPackage } from './helpers/hidden-package.js'

// A scripted workload on the in-process bus, one test per metric family, each
// asserting the exact amount the family moved (docs/metrics.md). The broker
// families' moves are in test/metrics-amqp.test.ts.

const families: Record<string, string> = {
  evsock_connections: 'gauge',
  evsock_subscriptions: 'gauge',
  evsock_pending_events: 'gauge',
  evsock_handshakes_refused_total: 'counter',
  evsock_events_published_total: 'counter',
  evsock_events_received_total: 'counter',
  evsock_events_delivered_total: 'counter',
  evsock_events_dropped_total: 'counter',
  evsock_window_stalls_total: 'counter',
  evsock_slow_consumer_closes_total: 'counter',
  evsock_broker_reconnects_total: 'counter',
  evsock_broker_state: 'gauge',
  evsock_broker_buffered_publishes: 'gauge',
  evsock_publish_confirm_seconds: 'histogram',
  evsock_delivery_seconds: 'histogram'
}

/** How much each named sample moved between two scrapes. */
const moved = (before: Scrape, after: Scrape, name: string, labels?: Record<string, string>): number => after.value(name, labels) - before.value(name, labels)

/** Waits for `count` events from `from` on, and returns the last one. */
async function eventsArrive (client: TestClient, count: number, from = 0): Promise<Record<string, any>> {
  await waitFor(() => client.events().length >= from + count, { what: `${count} events`, detail: () => `${client.events().length - from} arrived` })
  return client.events()[from + count - 1] as Record<string, any>
}

t.test('every family is there, named evsock_, with a help text and its type; the text is Prometheus 0.0.4', async (t) => {
  const server = await startServer(t, { metrics: true })
  const metrics = await scrape(server.app)
  for (const [name, type] of Object.entries(families)) {
    const family = metrics.families.get(name)
    t.equal(family?.type, type, `${name} is a ${type}`)
    t.ok((family?.help ?? '').length > 10, `${name} has a help text`)
  }
  t.same([...metrics.families.keys()].filter((name) => !name.startsWith('evsock_')), [], 'nothing outside the evsock_ prefix')
  t.same([...metrics.families.keys()].sort(), Object.keys(families).sort(), 'no family beyond the documented ones')
  t.equal(METRICS_CONTENT_TYPE, new Registry().contentType, 'the exported content type is prom-client\'s')
})

t.test('connections and subscriptions: gauges of what is open and held', async (t) => {
  const server = await startServer(t, { metrics: true })
  const a = await openClient(t, server)
  const b = await openClient(t, server, { sub: 'u2' })
  for (const pattern of ['a.*', 'b.#']) await a.subscribe(pattern)
  await b.subscribe('a.*')
  let metrics = await scrape(server.app)
  t.equal(metrics.value('evsock_connections'), 2)
  t.equal(metrics.value('evsock_subscriptions'), 3)
  b.close()
  await b.closed
  await waitFor(() => server.app.eventSocket.stats().connections === 1, { what: 'the server to see the close' })
  metrics = await scrape(server.app)
  t.equal(metrics.value('evsock_connections'), 1, 'the closed connection is gone')
  t.equal(metrics.value('evsock_subscriptions'), 2, 'with its subscription')
})

t.test('handshakes refused: one sample per code and status; a plain GET of the path is no handshake', async (t) => {
  const server = await startServer(t, { metrics: true })
  await attemptHandshake(server.url)
  await attemptHandshake(server.url)
  await attemptHandshake(server.url, { protocols: ['evsock.v1.json', 'bearer.not-a-jwt'] })
  await attemptHandshake(server.url, { protocols: ['chat.v2'] })
  t.equal((await fetch(server.url.replace('ws:', 'http:'))).status, 426, 'a plain GET gets 426')
  await openClient(t, server)
  const metrics = await scrape(server.app)
  t.same(metrics.samples('evsock_handshakes_refused_total').sort((x, y) => x.labels.code!.localeCompare(y.labels.code!)), [
    { labels: { code: 'FST_EVSOCK_BAD_TOKEN', status: '401' }, value: 1 },
    { labels: { code: 'FST_EVSOCK_NO_TOKEN', status: '401' }, value: 2 },
    { labels: { code: 'FST_EVSOCK_UNSUPPORTED_PROTOCOL', status: '400' }, value: 1 }
  ], 'the refusals, by code and status; the 426 and the admitted client are not counted')
})

t.test('published, received, delivered, and the two histograms: each event once, each frame once', async (t) => {
  const server = await startServer(t, { metrics: true })
  const clients = [await openClient(t, server), await openClient(t, server, { sub: 'u2' })]
  for (const client of clients) {
    await client.subscribe('orders.#')
    client.ackEach()
  }
  const before = await scrape(server.app)
  for (let n = 0; n < 3; n++) await server.app.publish('orders.created', { n })
  // Published, and accepted by the bus, but bound by nobody: the in-process bus does not hand it over.
  await server.app.publish('nobody.listens', {})
  for (const client of clients) await eventsArrive(client, 3)
  const after = await scrape(server.app)
  t.equal(moved(before, after, 'evsock_events_published_total'), 4, 'four publishes')
  t.equal(moved(before, after, 'evsock_events_received_total'), 3, 'three came back from the bus')
  t.equal(moved(before, after, 'evsock_events_delivered_total'), 6, 'three frames to each of two sockets')
  t.equal(moved(before, after, 'evsock_publish_confirm_seconds_count'), 4, 'one confirm timed per publish')
  t.ok(moved(before, after, 'evsock_publish_confirm_seconds_sum') > 0, 'the confirms took some time')
  t.equal(moved(before, after, 'evsock_delivery_seconds_count'), 3, 'one delivery timed per event, not per socket')
  t.equal(after.value('evsock_delivery_seconds_bucket', { le: '+Inf' }), after.value('evsock_delivery_seconds_count'), 'every observation is in a bucket')
})

t.test('window stalls and pending depth: a stall each time a window fills, the depth of what waits', async (t) => {
  const server = await startServer(t, { metrics: true, window: 2 })
  const client = await openClient(t, server)
  await client.subscribe('w.#')
  const before = await scrape(server.app)
  for (let n = 1; n <= 5; n++) await server.app.publish('w.x', { n })
  await eventsArrive(client, 2)
  let metrics = await scrape(server.app)
  t.equal(moved(before, metrics, 'evsock_window_stalls_total'), 1, 'the third event found the window full')
  t.equal(metrics.value('evsock_pending_events'), 3, 'three wait behind it')
  t.equal(moved(before, metrics, 'evsock_events_delivered_total'), 2, 'two were written')

  // The queue drains as acks come; it never emptied, so that was one stall.
  client.send({ op: 'ack', seq: 2 })
  await eventsArrive(client, 4)
  client.send({ op: 'ack', seq: 4 })
  const last = await eventsArrive(client, 5)
  client.send({ op: 'ack', seq: last.seq })
  metrics = await scrape(server.app)
  t.equal(metrics.value('evsock_pending_events'), 0, 'nothing waits any more')
  t.equal(moved(before, metrics, 'evsock_window_stalls_total'), 1, 'still one stall')

  // Emptied, then full again: a second stall.
  for (let n = 6; n <= 8; n++) await server.app.publish('w.x', { n })
  await eventsArrive(client, 7)
  metrics = await scrape(server.app)
  t.equal(moved(before, metrics, 'evsock_window_stalls_total'), 2, 'the window filled a second time')
  t.equal(metrics.value('evsock_pending_events'), 1)
})

t.test('slow-consumer closes, and the events they discard counted as dropped by slow_consumer', async (t) => {
  const server = await startServer(t, { metrics: true, window: 1, maxPendingEvents: 2 })
  const slow = await openClient(t, server)
  await slow.subscribe('s.#')
  const before = await scrape(server.app)
  // One in the window, two queued, the fourth overflows the queue: 4008, three discarded.
  for (let n = 1; n <= 4; n++) await server.app.publish('s.x', { n })
  t.equal((await slow.closed).code, 4008, 'closed as a slow consumer')
  const after = await scrape(server.app)
  t.equal(moved(before, after, 'evsock_slow_consumer_closes_total'), 1)
  t.equal(moved(before, after, 'evsock_events_dropped_total', { cause: 'slow_consumer' }), 3, 'the three queued events')
  t.equal(moved(before, after, 'evsock_events_dropped_total', { cause: 'malformed' }), 0)
})

t.test('dropped unencodable: an event with no MessagePack form is dropped for that format, once', async (t) => {
  // Past any maxEventDepth: only a bus that skipped publish's checks hands the core this (as in test/poison.test.ts).
  const bus = new MemoryBus(recordingLogger().log, undefined)
  const server = await startServer(t, { metrics: true, bus })
  const json = await openClient(t, server, { format: 'json' })
  const msgpack = await openClient(t, server, { format: 'msgpack', sub: 'u2' })
  for (const client of [json, msgpack]) await client.subscribe('deep.#')
  const before = await scrape(server.app)
  const depth = 5000
  await bus.publish({ id: 'deep', topic: 'deep.x', time: Date.now(), payload: Buffer.from('['.repeat(depth) + ']'.repeat(depth)) })
  const { id } = await server.app.publish('deep.sentinel', 1)
  await json.next((m) => m.id === id)
  await msgpack.next((m) => m.id === id)
  t.same(msgpack.events().map((event) => event.id), [id], 'the MessagePack socket got the sentinel only')
  const after = await scrape(server.app)
  t.equal(moved(before, after, 'evsock_events_dropped_total', { cause: 'unencodable' }), 1)
  t.equal(moved(before, after, 'evsock_events_delivered_total'), 3, 'two frames to JSON, one to MessagePack')
})

t.test('the broker families on the in-process bus: up, no reconnect, nothing buffered', async (t) => {
  const server = await startServer(t, { metrics: true })
  const metrics = await scrape(server.app)
  t.same(metrics.samples('evsock_broker_state'), [
    { labels: { state: 'up' }, value: 1 },
    { labels: { state: 'connecting' }, value: 0 },
    { labels: { state: 'down' }, value: 0 },
    { labels: { state: 'closed' }, value: 0 }
  ])
  t.equal(metrics.value('evsock_broker_reconnects_total'), 0)
  t.equal(metrics.value('evsock_broker_buffered_publishes'), 0)
})

t.test('metrics off (the default): metrics() rejects with FST_EVSOCK_METRICS_DISABLED', async (t) => {
  const server = await startServer(t)
  await t.rejects(server.app.eventSocket.metrics(), { code: 'FST_EVSOCK_METRICS_DISABLED', statusCode: 500 })
})

t.test('a registry of the app\'s own: the plugin\'s metrics beside the app\'s; one plugin instance per registry', async (t) => {
  const registry = new Registry()
  const own = new Counter({ name: 'app_orders_total', help: 'Orders.', registers: [registry] })
  own.inc(2)
  const server = await startServer(t, { metrics: { registry } })
  await server.app.publish('x.y', 1)
  const metrics = parsePrometheus(await registry.metrics())
  t.equal(metrics.value('app_orders_total'), 2, 'the app\'s own metric')
  t.equal(metrics.value('evsock_events_published_total'), 1, 'and the plugin\'s, in the same text')
  t.equal(await server.app.eventSocket.metrics(), await registry.metrics(), 'metrics() reads the same registry')

  const second = Fastify()
  second.register(eventSocket, { jwt: { secret: SECRET }, metrics: { registry } })
  await t.rejects(async () => { await second.ready() }, { code: 'FST_EVSOCK_BAD_OPTION', message: /metrics\.registry: already holds the evsock_ metrics of another instance/ }, 'a second instance on the same registry fails, saying why')
  await second.close()

  await server.app.close()
  t.same((await registry.getMetricsAsJSON()).map((metric) => metric.name), ['app_orders_total'], 'closing takes the plugin\'s metrics out, the app\'s stay')
  const again = Fastify()
  await again.register(eventSocket, { jwt: { secret: SECRET }, metrics: { registry } })
  t.equal(parsePrometheus(await registry.metrics()).value('evsock_events_published_total'), 0, 'a new instance registers afresh')
  await again.close()
})

t.test('bad metrics options fail registration with FST_EVSOCK_BAD_OPTION, naming the option', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    ['yes', /metrics: must be true, false or \{ registry \}/],
    [{ registry: {} }, /metrics\.registry: must be a prom-client Registry/],
    [{ regsitry: new Registry() }, /metrics\.regsitry: is not a known option/]
  ]
  for (const [metrics, message] of cases) {
    const app = Fastify()
    app.register(eventSocket, { jwt: { secret: SECRET }, metrics } as never)
    await t.rejects(async () => { await app.ready() }, { code: 'FST_EVSOCK_BAD_OPTION', message }, JSON.stringify(metrics))
    await app.close()
  }
})

t.test('prom-client not installed: the loader fails with FST_EVSOCK_BAD_OPTION saying to install it; other failures pass through', async (t) => {
  const missing = Object.assign(new Error('Cannot find package \'prom-client\' imported from lib/metrics.js'), { code: 'ERR_MODULE_NOT_FOUND' })
  await t.rejects(loadPromClient(async () => { throw missing }), { code: 'FST_EVSOCK_BAD_OPTION', message: /metrics: needs the prom-client package, which is not installed: npm install prom-client/ })
  const broken = new SyntaxError('broken prom-client')
  await t.rejects(loadPromClient(async () => { throw broken }), broken, 'any other failure is not disguised as a missing package')
})

t.test('prom-client not installed, for real: registering with metrics on fails with the typed error; without metrics, nothing loads it', async (t) => {
  // A resolve hook that finds no prom-client, as in an app that never installed it.
  const child = runScript(t, `
    ${hidingPackage('prom-client')}
    const { default: Fastify } = await import('fastify')
    const { default: eventSocket } = await import('./lib/index.ts')
    const outcome = async (metrics) => {
      const app = Fastify()
      try {
        await app.register(eventSocket, { jwt: { secret: '${SECRET}' }, metrics })
        return 'registered'
      } catch (err) {
        return err.code + ': ' + err.message
      } finally {
        await app.close()
      }
    }
    console.log(JSON.stringify({ on: await outcome(true), off: await outcome(false) }))
  `)
  const { on, off } = await child.firstLine as { on: string, off: string }
  t.match(on, /^FST_EVSOCK_BAD_OPTION: Invalid option metrics: needs the prom-client package, which is not installed: npm install prom-client/)
  t.equal(off, 'registered', 'metrics off: prom-client is never imported')
  t.equal(await child.exited('the child to exit', 20_000), 0)
})
