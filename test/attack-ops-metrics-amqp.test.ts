import { randomUUID } from 'node:crypto'
import t from 'tap'
import Fastify from 'fastify'
import { Counter, Registry } from 'prom-client'
import eventSocket from '../lib/index.js'
import { brokerOptions, brokerUrl, privateVhost, rabbitmqctl, requireBroker, unreachableOptions } from './helpers/broker.js'
import { publishForeign, type Foreign } from './helpers/foreign.js'
import { labelSets } from './helpers/ops-labels.js'
import { parsePrometheus, scrape, type Scrape } from './helpers/prom-text.js'
import { openClient, SECRET, startServer } from './helpers/server.js'
import { waitFor, within } from './helpers/wait.js'

// Attacks on the metrics on the real broker: scrape storms through an
// outage, foreign messages whose every field is the attacker's, and a
// registration that fails because the broker is unreachable, on an app's
// registry. The in-process side: attack-ops-metrics.test.ts.

const stateOf = (metrics: Scrape): string[] => metrics.samples('evsock_broker_state').filter((sample) => sample.value === 1).map((sample) => sample.labels.state ?? '')

t.test('200 concurrent scrapes before, during and after an outage all resolve at once, with the state of that moment', async (t) => {
  if (!await requireBroker(t)) return
  const url = await privateVhost(t)
  const vhost = decodeURIComponent(new URL(url).pathname.slice(1))
  const user = decodeURIComponent(new URL(brokerUrl).username)
  const server = await startServer(t, { metrics: true, broker: brokerOptions(t, { url }) })
  const storm = async (what: string): Promise<Scrape[]> => {
    const started = performance.now()
    const texts = await within(Promise.all(Array.from({ length: 200 }, () => server.app.eventSocket.metrics())), { what: `200 scrapes ${what}`, timeoutMs: 5000 })
    t.ok(performance.now() - started < 2000, `${what}: 200 scrapes in ${Math.round(performance.now() - started)} ms`)
    return texts.map(parsePrometheus)
  }
  t.same([...new Set((await storm('before')).flatMap(stateOf))], ['up'])
  await rabbitmqctl('clear_permissions', '-p', vhost, user)
  await rabbitmqctl('close_all_connections', '--vhost', vhost, 'evsock attack-ops metrics test')
  await waitFor(() => server.app.eventSocket.health().broker.state === 'down', { what: 'the bus to notice the outage' })
  const publishes = [1, 2].map((n) => server.app.publish('outage.x', { n }))
  const during = await storm('during the outage')
  t.same([...new Set(during.flatMap(stateOf))], ['down'], 'every scrape says down')
  t.same([...new Set(during.map((metrics) => metrics.value('evsock_broker_buffered_publishes')))], [2], 'and sees the two buffered publishes')
  await rabbitmqctl('set_permissions', '-p', vhost, user, '.*', '.*', '.*')
  await within(Promise.all(publishes), { what: 'the buffered publishes', timeoutMs: 15_000 })
  await waitFor(() => server.app.eventSocket.health().broker.state === 'up', { what: 'the bus to be up again', timeoutMs: 15_000 })
  const after = await storm('after')
  t.same([...new Set(after.flatMap(stateOf))], ['up'])
  t.same([...new Set(after.map((metrics) => metrics.value('evsock_broker_reconnects_total')))], [1], 'one reconnect, read the same by every scrape')
})

/** Foreign messages whose every field is new in each round: routing keys, ids, headers, bodies. */
function hostileMessages (round: number): Foreign[] {
  const messages: Foreign[] = []
  for (let i = 0; i < 30; i++) {
    const tag = `r${round}-${i}-${randomUUID()}`
    messages.push(
      { what: 'a valid event on a new topic', routingKey: `feed.${tag}`, body: Buffer.from(JSON.stringify({ tag })), properties: { messageId: `id-${tag}`, headers: { traceparent: tag, 'x-user': tag } } },
      { what: 'not JSON', routingKey: `feed.${tag}`, body: Buffer.from(`not json ${tag}`) },
      { what: 'no messageId', routingKey: `feed.${tag}`, body: Buffer.from('{}'), properties: { messageId: undefined, type: tag, appId: tag } },
      { what: 'an invalid topic', routingKey: `feed.${tag}.$bad`, body: Buffer.from('{}') },
      { what: 'an unknown control key', routingKey: `$evsock.${tag}`, body: Buffer.from('{}') },
      { what: 'a revocation that is not one', routingKey: '$evsock.revoke', body: Buffer.from(JSON.stringify({ sub: tag, at: 'never' })) }
    )
  }
  return messages
}

t.test('foreign messages whose every field is the attacker\'s move counters only: the label sets stay the documented ones', async (t) => {
  if (!await requireBroker(t)) return
  const broker = brokerOptions(t)
  const server = await startServer(t, { metrics: true, broker })
  const client = await openClient(t, server, { role: 'admin' })
  client.ackEach()
  await client.subscribe('#')
  let first: string[] | undefined
  for (const round of [1, 2]) {
    await publishForeign(broker.exchange, hostileMessages(round))
    const { id } = await server.app.publish('feed.sentinel', round)
    await client.next((message) => message.op === 'event' && message.id === id, { timeout: 10_000 })
    const metrics = await scrape(server.app)
    t.equal(metrics.value('evsock_events_received_total'), round * 31, `round ${round}: the valid ones and the sentinel received`)
    t.equal(metrics.value('evsock_events_dropped_total', { cause: 'malformed' }), round * 90, `round ${round}: the invalid ones dropped as malformed`)
    const sets = labelSets(metrics)
    first ??= sets
    t.same(sets, first, `round ${round}: the same label sets, none from the messages`)
  }
  t.same(first, [
    'evsock_broker_state{"state":"closed"}', 'evsock_broker_state{"state":"connecting"}', 'evsock_broker_state{"state":"down"}', 'evsock_broker_state{"state":"up"}',
    'evsock_events_dropped_total{"cause":"malformed"}', 'evsock_events_dropped_total{"cause":"slow_consumer"}', 'evsock_events_dropped_total{"cause":"unencodable"}'
  ], 'the documented label sets only')
})

t.test('a registration that fails because the broker is unreachable leaves the app\'s registry as it found it', async (t) => {
  if (!await requireBroker(t)) return
  const registry = new Registry()
  new Counter({ name: 'app_orders_total', help: 'Orders.', registers: [registry] }).inc()
  const app = Fastify()
  app.register(eventSocket, { jwt: { secret: SECRET }, metrics: { registry }, broker: unreachableOptions({ publishTimeoutMs: 300 }) })
  await t.rejects(async () => { await app.ready() }, { code: 'FST_EVSOCK_BROKER_UNAVAILABLE' })
  await app.close().catch(() => {})
  t.same((await registry.getMetricsAsJSON()).map((metric) => metric.name), ['app_orders_total'], 'only the app\'s own metric is left')
  const server = await startServer(t, { metrics: { registry }, broker: brokerOptions(t) })
  await server.app.publish('x.y', 1)
  t.equal(parsePrometheus(await registry.metrics()).value('evsock_events_published_total'), 1, 'the next instance registers there, on the real broker, and counts')
})
