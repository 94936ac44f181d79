import t from 'tap'
import { brokerOptions, brokerUrl, privateVhost, rabbitmqctl, requireBroker } from './helpers/broker.js'
import { publishForeign } from './helpers/foreign.js'
import { scrape, type Scrape } from './helpers/prom-text.js'
import { openClient, startServer } from './helpers/server.js'
import { waitFor, within } from './helpers/wait.js'

// The metric families that only RabbitMQ moves (docs/metrics.md): the
// broker's state, its reconnects and the outage buffer through a real outage,
// and messages dropped as malformed. Each test runs on an exchange of its
// own; the outage, in a vhost of its own, so that it cuts nobody else's connections.

const moved = (before: Scrape, after: Scrape, name: string, labels?: Record<string, string>): number => after.value(name, labels) - before.value(name, labels)

const stateOf = (metrics: Scrape): string[] => metrics.samples('evsock_broker_state').filter((sample) => sample.value === 1).map((sample) => sample.labels.state ?? '')

if (await requireBroker(t)) {
  t.test('an outage: the state goes down and up, publishes wait in the outage buffer, one reconnect is counted', async (t) => {
    const url = await privateVhost(t)
    const vhost = decodeURIComponent(new URL(url).pathname.slice(1))
    const user = decodeURIComponent(new URL(brokerUrl).username)
    const server = await startServer(t, { metrics: true, broker: brokerOptions(t, { url }) })
    const client = await openClient(t, server)
    await client.subscribe('outage.#')
    client.ackEach()
    const before = await scrape(server.app)
    t.same(stateOf(before), ['up'], 'up before the outage')
    t.equal(before.value('evsock_broker_reconnects_total'), 0, 'no reconnect yet')

    // Without permissions every reconnect is refused until they come back (as in test/amqp-fault.test.ts).
    await rabbitmqctl('clear_permissions', '-p', vhost, user)
    await rabbitmqctl('close_all_connections', '--vhost', vhost, 'evsock metrics test')
    await waitFor(() => server.app.eventSocket.health().broker.state === 'down', { what: 'the bus to notice the outage' })
    const publishes = [1, 2, 3].map((n) => server.app.publish('outage.x', { n }))
    const during = await scrape(server.app)
    t.same(stateOf(during), ['down'], 'down during the outage')
    t.equal(during.value('evsock_broker_buffered_publishes'), 3, 'the three publishes wait in the outage buffer')

    await rabbitmqctl('set_permissions', '-p', vhost, user, '.*', '.*', '.*')
    await within(Promise.all(publishes), { what: 'the buffered publishes to be confirmed after the outage', timeoutMs: 15_000 })
    await waitFor(() => client.events().length === 3, { what: 'the three events after the outage', timeoutMs: 15_000 })
    await waitFor(() => server.app.eventSocket.health().broker.state === 'up', { what: 'the bus to be up again' })
    const after = await scrape(server.app)
    t.same(stateOf(after), ['up'], 'up again')
    t.equal(moved(before, after, 'evsock_broker_reconnects_total'), 1, 'one reconnect, however many attempts were refused')
    t.equal(after.value('evsock_broker_buffered_publishes'), 0, 'the outage buffer is empty')
    t.equal(moved(before, after, 'evsock_events_published_total'), 3)
    t.equal(moved(before, after, 'evsock_publish_confirm_seconds_count'), 3, 'each confirm timed, the wait in the buffer included')
    t.ok(moved(before, after, 'evsock_publish_confirm_seconds_sum') > 0)
    t.equal(moved(before, after, 'evsock_events_received_total'), 3)
    t.equal(moved(before, after, 'evsock_events_delivered_total'), 3)
  })

  t.test('dropped malformed: a foreign message that is not an event is counted by its cause; the next event is not', async (t) => {
    const broker = brokerOptions(t)
    const server = await startServer(t, { metrics: true, broker })
    const client = await openClient(t, server)
    await client.subscribe('feed.#')
    const before = await scrape(server.app)
    await publishForeign(broker.exchange, [{ what: 'text that is not JSON', routingKey: 'feed.x', body: Buffer.from('not json') }])
    const { id } = await server.app.publish('feed.sentinel', 1)
    await client.next((message) => message.id === id, { timeout: 10_000 })
    const after = await scrape(server.app)
    t.equal(moved(before, after, 'evsock_events_dropped_total', { cause: 'malformed' }), 1)
    t.equal(moved(before, after, 'evsock_events_received_total'), 1, 'only the sentinel reached the hub')
    t.equal(moved(before, after, 'evsock_events_delivered_total'), 1)
    t.equal(moved(before, after, 'evsock_delivery_seconds_count'), 1, 'its delivery timed')
  })
}
