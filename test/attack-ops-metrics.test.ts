import t, { type Test } from 'tap'
import Fastify from 'fastify'
import { Counter, Registry } from 'prom-client'
import eventSocket, { type Bus } from '../lib/index.js'
import { MemoryBus } from '../lib/bus/memory.js'
import { seriesOf } from './helpers/ops-labels.js'
import { parsePrometheus, scrape, type Scrape } from './helpers/prom-text.js'
import { attemptHandshake, openClient, SECRET, startServer, type TestClient, type TestServer } from './helpers/server.js'
import { waitFor, within } from './helpers/wait.js'

// Attacks on the metrics (lib/metrics.ts, docs/metrics.md) on the in-process
// bus: registrations that fail half-way on an app's registry, scrape storms
// while events flow and while the app closes, scrapes after close, and every
// value a client or publisher controls thrown at the plugin, to prove that
// none becomes a label value. The broker's side: attack-ops-metrics-amqp.test.ts.

/** The label sets each family may carry (docs/metrics.md): `null` for none. */
const documentedLabels: Record<string, (labels: Record<string, string>) => boolean> = {
  evsock_events_dropped_total: (labels) => ['malformed', 'unencodable', 'slow_consumer'].includes(labels.cause ?? '') && Object.keys(labels).length === 1,
  evsock_broker_state: (labels) => ['up', 'connecting', 'down', 'closed'].includes(labels.state ?? '') && Object.keys(labels).length === 1,
  // The plugin's own refusal codes (lib/errors.ts), with their statuses.
  evsock_handshakes_refused_total: (labels) => /^(FST_EVSOCK_[A-Z_]+|other)$/.test(labels.code ?? '') && /^[45]\d\d$/.test(labels.status ?? '') && Object.keys(labels).length === 2
}

/** The series whose labels are outside the documented sets, and how many series there are. */
function labelAudit (metrics: Scrape): { undocumented: string[], series: number } {
  const series = seriesOf(metrics)
  const undocumented = series.filter(({ family, labels }) => Object.keys(labels).length > 0 && documentedLabels[family]?.(labels) !== true)
  return { undocumented: undocumented.map(({ sample, labels }) => `${sample}${JSON.stringify(labels)}`), series: series.length }
}

t.test('a registration that fails after the metrics were made leaves the app\'s registry as it found it, so that the next one registers', async (t) => {
  const failing: Array<[string, (bus: MemoryBus) => Bus]> = [
    ['the bus does not start', (inner) => Object.assign(inner, { start: async () => { throw new Error('the broker is not there') } })],
    ['a control key cannot be bound', (inner) => Object.assign(inner, { bind: async () => { throw new Error('the binding timed out') } })]
  ]
  for (const [what, breakBus] of failing) {
    const registry = new Registry()
    new Counter({ name: 'app_orders_total', help: 'Orders.', registers: [registry] }).inc(2)
    const app = Fastify()
    app.register(eventSocket, { jwt: { secret: SECRET }, metrics: { registry }, bus: breakBus(new MemoryBus()) })
    await t.rejects(async () => { await app.ready() }, /the broker is not there|the binding timed out/, `${what}: registration fails`)
    t.same((await registry.getMetricsAsJSON()).map((metric) => metric.name), ['app_orders_total'], `${what}: only the app's own metric is left`)
    const again = Fastify()
    t.teardown(() => again.close())
    await again.register(eventSocket, { jwt: { secret: SECRET }, metrics: { registry } })
    t.equal(parsePrometheus(await registry.metrics()).value('evsock_connections'), 0, `${what}: a new instance registers on the same registry`)
    await app.close().catch(() => {})
  }
})

t.test('a second instance refused on a registry leaves the first one\'s metrics there and counting', async (t) => {
  const registry = new Registry()
  const first = await startServer(t, { metrics: { registry } })
  const second = Fastify()
  second.register(eventSocket, { jwt: { secret: SECRET }, metrics: { registry } })
  await t.rejects(async () => { await second.ready() }, { code: 'FST_EVSOCK_BAD_OPTION' })
  await second.close().catch(() => {})
  await first.app.publish('x.y', 1)
  t.equal(parsePrometheus(await registry.metrics()).value('evsock_events_published_total'), 1, 'the first instance still counts in the registry')
})

/** `count` subscribed clients acking everything. */
async function subscribers (t: Test, server: TestServer, count: number, pattern: string): Promise<TestClient[]> {
  const clients: TestClient[] = []
  for (let i = 0; i < count; i++) {
    const client = await openClient(t, server, { sub: `u${i}` })
    await client.subscribe(pattern)
    client.ackEach()
    clients.push(client)
  }
  return clients
}

t.test('300 concurrent scrapes while events flow: every one resolves, counters never go back, nothing counted twice or lost', async (t) => {
  const server = await startServer(t, { metrics: true })
  const clients = await subscribers(t, server, 5, 'storm.#')
  const scrapes: Array<Promise<string>> = []
  const publishes: Array<Promise<unknown>> = []
  for (let i = 0; i < 300; i++) {
    scrapes.push(server.app.eventSocket.metrics())
    publishes.push(server.app.publish('storm.x', { i }))
  }
  const texts = await within(Promise.all(scrapes), { what: '300 scrapes' })
  await Promise.all(publishes)
  const delivered = texts.map((text) => parsePrometheus(text).value('evsock_events_delivered_total'))
  t.ok(delivered.every((value, i) => i === 0 || value >= (delivered[i - 1] as number)), 'the delivered counter never goes back from one scrape to the next')
  await waitFor(() => clients.every((client) => client.events().length === 300), { what: 'every event at every client' })
  const after = await scrape(server.app)
  t.equal(after.value('evsock_events_delivered_total'), 5 * 300, 'one frame per event per client, however many scrapes read it')
  t.equal(after.value('evsock_events_published_total'), 300)
  t.equal(after.value('evsock_events_received_total'), 300)
})

t.test('scrapes during app.close() and after it resolve: the own registry says closed, an app\'s registry no longer holds the plugin\'s metrics', async (t) => {
  const own = await startServer(t, { metrics: true })
  await subscribers(t, own, 3, 'a.#')
  const during = Array.from({ length: 100 }, () => own.app.eventSocket.metrics())
  const closing = own.app.close()
  during.push(...Array.from({ length: 100 }, () => own.app.eventSocket.metrics()))
  await within(closing, { what: 'app.close()' })
  const texts = await within(Promise.all(during), { what: 'the scrapes during close' })
  t.ok(texts.every((text) => text.includes('evsock_connections')), 'every scrape during close resolved with the metrics')
  const after = await scrape(own.app)
  t.same(after.samples('evsock_broker_state').filter((sample) => sample.value === 1).map((sample) => sample.labels.state), ['closed'], 'after close: the bus is closed')
  t.equal(after.value('evsock_connections'), 0, 'and no connection is open')

  const registry = new Registry()
  const shared = await startServer(t, { metrics: { registry } })
  await shared.app.close()
  t.same([...parsePrometheus(await shared.app.eventSocket.metrics()).families.keys()], [], 'after close: metrics() reads the app\'s registry, without the plugin\'s metrics')
})

/** Throws at the plugin every value a client or publisher controls, each time with values never used before. */
async function hostileRound (t: Test, server: TestServer, round: number): Promise<void> {
  const junk = (i: number): string => `r${round}-${i}-${'é'.repeat(i % 3)}"\\{}`
  for (let i = 0; i < 20; i++) {
    await attemptHandshake(server.url, { headers: { authorization: `Bearer ${junk(i)}` } })
    await attemptHandshake(`${server.url}?token=${encodeURIComponent(junk(i))}&x=${i}`)
    await attemptHandshake(server.url, { protocols: [`proto-${round}-${i}`] })
    await attemptHandshake(server.url, { headers: { origin: `http://evil-${round}-${i}.example` } })
    await attemptHandshake(server.url, { protocols: ['evsock.v1.json', `bearer.${junk(i).replace(/[^A-Za-z0-9-]/g, '')}`] })
  }
  // An app's own hook that refuses with its own error (no FST_ code): counted as `other`, not by its message.
  await attemptHandshake(server.url, { headers: { 'x-refuse': junk(1) } })
  const client = await openClient(t, server, { sub: `user-${round}` })
  client.ackEach()
  for (let i = 0; i < 20; i++) await client.subscribe(`topic-${round}-${i}.#`)
  for (let i = 0; i < 20; i++) await server.app.publish(`topic-${round}-${i}.x`, { message: junk(i) }, { id: `id-${round}-${i}` })
  client.ws.send('{"op":"nonsense-' + String(round) + '"}')
  client.ws.send('not json ' + junk(round))
  for (let i = 0; i < 5; i++) await server.app.eventSocket.revoke(`revoked-${round}-${i}`)
  client.ws.close(4000 + round, `reason ${junk(round)}`)
  await client.closed
}

t.test('no value a client or publisher controls becomes a label value: the label sets are the documented ones, and a second round adds no series', async (t) => {
  const server = await startServer(t, { metrics: true, origins: ['http://app.example'], allowMissingOrigin: true, allowQueryToken: true, handshakesPerMinute: 0 }, (app) => {
    app.addHook('onRequest', async (request) => {
      if (request.headers['x-refuse'] !== undefined) throw Object.assign(new Error(`refused ${String(request.headers['x-refuse'])}`), { statusCode: 418, code: 'APP_REFUSED' })
    })
  })
  await hostileRound(t, server, 1)
  const metrics = await scrape(server.app)
  t.same(metrics.samples('evsock_handshakes_refused_total').map((sample) => `${sample.labels.code ?? ''} ${sample.labels.status ?? ''}`).sort(), [
    'FST_EVSOCK_BAD_TOKEN 401', 'FST_EVSOCK_FORBIDDEN_ORIGIN 403', 'FST_EVSOCK_NO_TOKEN 401', 'FST_EVSOCK_UNSUPPORTED_PROTOCOL 400', 'other 418'
  ], 'the refusals were counted, by the plugin\'s codes and `other` for the app\'s')
  const first = labelAudit(metrics)
  t.same(first.undocumented, [], 'every label value is a documented one')
  await hostileRound(t, server, 2)
  const second = labelAudit(await scrape(server.app))
  t.same(second.undocumented, [], 'still, after a second round with new values')
  t.equal(second.series, first.series, `no series added by new values (${first.series})`)
})
