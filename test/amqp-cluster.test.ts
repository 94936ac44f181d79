import t, { type Test } from 'tap'
import type { ResolvedBrokerOptions } from '../lib/options.js'
import { brokerOptions, privateVhost, rabbitmqctl, requireBroker } from './helpers/broker.js'
import { waitFor } from './helpers/wait.js'
import { delay, openClient, startServer, type Message, type TestClient, type TestServer } from './helpers/server.js'

// Several app instances sharing one RabbitMQ, seen from the sockets.

/** A subscriber that acks like the protocol asks: at half the window, or after a short idle (acking each event would trip the rate limit). */
async function subscriber (t: Test, server: TestServer, patterns: string[]): Promise<TestClient> {
  const client = await openClient(t, server)
  const window = (client.messages[0] as Message).window as number
  let received = 0
  let acked = 0
  let idle: NodeJS.Timeout | undefined
  const ack = (): void => {
    clearTimeout(idle)
    if (received > acked) client.send({ op: 'ack', seq: received })
    acked = received
  }
  client.ws.on('message', (data: Buffer) => {
    const message = JSON.parse(data.toString()) as Message
    if (message.op !== 'event') return
    received = message.seq as number
    if (received - acked >= window / 2) ack()
    else {
      clearTimeout(idle)
      idle = setTimeout(ack, 20)
    }
  })
  t.teardown(() => clearTimeout(idle))
  for (const pattern of patterns) t.equal((await client.subscribe(pattern)).op, 'ok', `subscribed to ${pattern}`)
  return client
}

async function instances (t: Test, count: number, broker: ResolvedBrokerOptions): Promise<TestServer[]> {
  return await Promise.all(Array.from({ length: count }, () => startServer(t, { broker })))
}

if (await requireBroker(t)) {
  t.test('three instances: each socket gets exactly the matching events, once, in each publisher\'s order', async (t) => {
    const servers = await instances(t, 3, brokerOptions(t))
    const patterns = [['orders.*'], ['orders.#', 'users.*'], ['users.#']]
    const wants = [
      (topic: string) => topic === 'orders.created',
      (topic: string) => topic.startsWith('orders.') || topic === 'users.1',
      (topic: string) => topic === 'users.1'
    ]
    const clients = await Promise.all(servers.map((server, i) => subscriber(t, server, patterns[i] ?? [])))
    const topics = ['orders.created', 'orders.eu.created', 'users.1', 'stock.low']

    // Every instance publishes at the same time; each its own events in order.
    const published = await Promise.all(servers.map(async (server, from) => {
      const events: Array<{ id: string, topic: string, sentinel?: true }> = []
      for (let n = 0; n < 40; n++) {
        const topic = topics[n % topics.length] as string
        events.push({ id: (await server.app.publish(topic, { from, n })).id, topic })
      }
      // Last, sentinels: orders.created reaches sockets 0 and 1, users.1 sockets 1 and 2.
      for (const [k, topic] of ['orders.created', 'users.1'].entries()) {
        events.push({ id: (await server.app.publish(topic, { from, n: 40 + k })).id, topic, sentinel: true })
      }
      return events
    }))
    const all = published.flat()

    for (const [i, client] of clients.entries()) {
      const want = wants[i] as (topic: string) => boolean
      const expected = all.filter((event) => want(event.topic))
      // Each publisher's order holds (asserted below), so once its sentinels are in, so is any duplicate or stray it sent before.
      const sentinels = new Set(expected.filter((event) => event.sentinel === true).map((event) => event.id))
      await client.next(() => client.events().filter((event) => sentinels.has(event.id)).length === sentinels.size, { timeout: 10_000 })
      const events = client.events()
      t.equal(events.length, expected.length, `socket ${i}: as many events as match`)
      t.same(new Set(events.map((event) => event.id)), new Set(expected.map((event) => event.id)), `socket ${i}: exactly the matching ones`)
      for (let from = 0; from < servers.length; from++) {
        const order = events.filter((event) => event.data.from === from).map((event) => event.data.n as number)
        t.same(order, [...order].sort((a, b) => a - b), `socket ${i}: publisher ${from}'s order kept`)
      }
      t.equal(servers[i]?.app.eventSocket.stats().eventsIn, expected.length, `instance ${i} consumed only what its sockets match`)
    }
  })

  t.test('connections dropped mid-stream: every resolved publish reaches the socket, once; subscriptions survive', async (t) => {
    const url = await privateVhost(t)
    const [publishing, subscribing] = await instances(t, 2, brokerOptions(t, { url, publishTimeoutMs: 8000 })) as [TestServer, TestServer]
    const client = await subscriber(t, subscribing, ['fault.#'])

    const outcomes: Array<Promise<string | { code?: string }>> = []
    let dropped = false
    let burstsAfterDrop = 0
    for (let burst = 0; burstsAfterDrop < 30 && burst < 500; burst++) {
      for (let i = 0; i < 5; i++) {
        outcomes.push(publishing.app.publish(`fault.${i}`, { burst, i }).then(({ id }) => id, (error: { code?: string }) => error))
      }
      if (burst === 20) {
        const vhost = decodeURIComponent(new URL(url).pathname.slice(1))
        rabbitmqctl('close_all_connections', '--vhost', vhost, 'evsock cluster fault test').then(() => { dropped = true }, t.error)
      }
      if (dropped) burstsAfterDrop++
      await delay(5)
    }
    t.ok(dropped, 'the connections were dropped while publishing')
    const results = await Promise.all(outcomes)
    const resolved = results.filter((result): result is string => typeof result === 'string')
    const codes = new Set(results.filter((result) => typeof result !== 'string').map((error) => (error as { code?: string }).code))
    t.same([...codes].filter((code) => code !== 'FST_EVSOCK_BROKER_UNAVAILABLE'), [], 'every rejection is FST_EVSOCK_BROKER_UNAVAILABLE')

    const received = (): Set<string> => new Set(client.events().map((event) => event.id as string))
    await waitFor(() => resolved.every((id) => received().has(id)), { what: 'every resolved event at the socket', timeoutMs: 15_000 }).catch(() => {})
    t.same(resolved.filter((id) => !received().has(id)), [], `no resolved event lost (${resolved.length} resolved of ${results.length})`)
    t.equal(client.events().length, received().size, 'no event delivered twice')

    const { id } = await publishing.app.publish('fault.after', { after: true })
    await waitFor(() => received().has(id), { what: 'an event published after recovery' })
    t.pass('the subscription made before the drop still delivers')
  })
}
