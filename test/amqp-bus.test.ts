import { randomUUID } from 'node:crypto'
import t from 'tap'
import { createAmqpBus } from '../lib/bus/amqp.js'
import type { Bus } from '../lib/bus/types.js'
import {
  bindingsOf, brokerOptions, brokerUrl, busMessage, rabbitmqctl, recordingLogger, requireBroker, startBus, unreachableOptions, withChannel,
  type StartedBus
} from './helpers/broker.js'
import { waitFor } from './helpers/wait.js'

// The amqp bus on its own, against the real RabbitMQ: two bus instances on one
// exchange stand for two app instances.

/** Publishes a sentinel on `topic` and waits for it: everything `from` published earlier on a bound pattern has then arrived (one queue keeps a publisher's order). */
async function settle (from: Bus, to: StartedBus, topic: string): Promise<void> {
  const sentinel = busMessage(topic)
  await from.publish(sentinel)
  await waitFor(() => to.received.some((each) => each.id === sentinel.id), { what: `sentinel ${topic}` })
}

if (await requireBroker(t)) {
  t.test('a publish reaches a bus bound to a matching pattern, intact and in order', async (t) => {
    const options = brokerOptions(t)
    const publisher = await startBus(t, options)
    const subscriber = await startBus(t, options)
    await subscriber.bus.bind('orders.*')
    const sent = Array.from({ length: 50 }, (_, i) => busMessage('orders.created', { n: i, text: 'zaž 🚀' }))
    await Promise.all(sent.map((each) => publisher.bus.publish(each)))
    await waitFor(() => subscriber.received.length === sent.length, { what: '50 deliveries' })
    t.same(subscriber.received.map((each) => each.id), sent.map((each) => each.id), 'every message, in publish order')
    const [first] = subscriber.received
    t.equal(first?.topic, 'orders.created')
    t.equal(first?.time, sent[0]?.time, 'the exact publish time in ms')
    t.ok(first?.payload.equals(sent[0]?.payload as Buffer), 'the payload bytes untouched')
    t.equal(publisher.received.length, 0, 'the publisher bound nothing and received nothing')
    const up = subscriber.entries.find((entry) => entry.msg.includes('broker connection up'))
    t.equal(up?.level, 30, 'going up is logged at info')
  })

  t.test('only bound patterns are routed to an instance; unbind stops delivery', async (t) => {
    const options = brokerOptions(t)
    const publisher = await startBus(t, options)
    const subscriber = await startBus(t, options)
    // Concurrent binds of different patterns, as the core issues them.
    const patterns = ['orders.*', 'users.#', 'end', ...Array.from({ length: 20 }, (_, i) => `many.${i}.*`)]
    await Promise.all(patterns.map((pattern) => subscriber.bus.bind(pattern)))
    for (const topic of ['orders.created', 'orders.eu.created', 'users', 'users.1.inbox', 'stock.low', 'many.7.x', 'many.x.7']) {
      await publisher.bus.publish(busMessage(topic))
    }
    await settle(publisher.bus, subscriber, 'end')
    t.same(subscriber.received.map((each) => each.topic), ['orders.created', 'users', 'users.1.inbox', 'many.7.x', 'end'])

    await subscriber.bus.unbind('orders.*')
    await publisher.bus.publish(busMessage('orders.created'))
    await publisher.bus.publish(busMessage('users.2'))
    await settle(publisher.bus, subscriber, 'end')
    t.same(subscriber.received.slice(5).map((each) => each.topic), ['users.2', 'end'], 'nothing of the unbound pattern')

    await subscriber.bus.bind('orders.*')
    await publisher.bus.publish(busMessage('orders.again'))
    await settle(publisher.bus, subscriber, 'end')
    t.same(subscriber.received.slice(7).map((each) => each.topic), ['orders.again', 'end'], 'bound again, routed again')
  })

  t.test('a pattern is bound on the broker cut after its first #, shared keys counted, deliveries filtered exactly', async (t) => {
    const options = brokerOptions(t)
    const publisher = await startBus(t, options)
    const subscriber = await startBus(t, options)
    const keys = async (): Promise<string[]> => (await bindingsOf(options.exchange)).map((each) => each.key).sort()
    await Promise.all(['k.#.b.c', 'k.#.b.d', 'k.*.#.e', 'k.*.f', 'end'].map((pattern) => subscriber.bus.bind(pattern)))
    t.same(await keys(), ['end', 'k.#', 'k.*.#', 'k.*.f'], 'linear-cost keys; patterns without # as they are')
    const round = async (): Promise<string[]> => {
      const from = subscriber.received.length
      for (const topic of ['k.1.b.c', 'k.1.b.d', 'k.1.b.x', 'k.1.2.e', 'k.e', 'k.1.f', 'k.1.2.f']) await publisher.bus.publish(busMessage(topic))
      await settle(publisher.bus, subscriber, 'end')
      return subscriber.received.slice(from).map((each) => each.topic)
    }
    t.same(await round(), ['k.1.b.c', 'k.1.b.d', 'k.1.2.e', 'k.1.f', 'end'], 'what matches only the wider key never reaches deliver')
    await subscriber.bus.unbind('k.#.b.c')
    t.same(await keys(), ['end', 'k.#', 'k.*.#', 'k.*.f'], 'k.# stays bound for k.#.b.d')
    t.same(await round(), ['k.1.b.d', 'k.1.2.e', 'k.1.f', 'end'])
    await subscriber.bus.unbind('k.#.b.d')
    await subscriber.bus.unbind('k.*.#.e')
    t.same(await keys(), ['end', 'k.*.f'], 'the last pattern of a key unbinds it')
    t.same(await round(), ['k.1.f', 'end'])
  })

  t.test('publish resolves on the confirm; a nack rejects with the typed error', async (t) => {
    const options = brokerOptions(t)
    const { bus } = await startBus(t, options)
    const pending = bus.publish(busMessage('audit.x'))
    t.equal(bus.health().unconfirmed, 1, 'sent, waiting for the confirm')
    await pending
    t.match(bus.health(), { kind: 'amqp', state: 'up', buffered: 0, unconfirmed: 0 })

    // A queue that refuses everything makes the broker nack what is routed to it.
    const refusing = `evsock.test.refusing.${randomUUID()}`
    await withChannel(brokerUrl, async (channel) => {
      await channel.assertQueue(refusing, { autoDelete: false, maxLength: 0, overflow: 'reject-publish' })
      await channel.bindQueue(refusing, options.exchange, 'audit.#')
    })
    t.teardown(() => withChannel(brokerUrl, (channel) => channel.deleteQueue(refusing)))
    await t.rejects(bus.publish(busMessage('audit.y')), { code: 'FST_EVSOCK_PUBLISH_NACKED' })
    await bus.publish(busMessage('other.y'))
    t.pass('publishes not routed to the refusing queue still resolve')
  })

  t.test('the instance queue: length guard, drop-head, expiry, deleted on close', async (t) => {
    const options = brokerOptions(t, { maxQueueLength: 1234, queuePrefix: `evsock.test.${randomUUID()}` })
    const { bus } = await startBus(t, options)
    const listed = JSON.parse(await rabbitmqctl('list_queues', 'name', 'durable', 'exclusive', 'auto_delete', 'arguments', '--formatter', 'json')) as Array<Record<string, any>>
    const queue = listed.find((each) => String(each.name).startsWith(options.queuePrefix))
    t.ok(queue, 'one queue with the prefix')
    t.match(queue, { durable: true, exclusive: false, auto_delete: false })
    // rabbitmqctl lists arguments as [name, type, value] triples
    const args = Object.fromEntries((queue?.arguments as Array<[string, string, unknown]>).map(([name, , value]) => [name, value]))
    t.match(args, { 'x-max-length': 1234, 'x-overflow': 'drop-head', 'x-expires': 60_000 })
    await bus.close()
    await t.rejects(withChannel(brokerUrl, (channel) => channel.checkQueue(String(queue?.name))), /404/, 'close deleted the queue')
  })

  t.test('after close: publish and bind reject with FST_EVSOCK_CLOSED; close is idempotent', async (t) => {
    const { bus, entries } = await startBus(t, brokerOptions(t))
    await Promise.all([bus.close(), bus.close()])
    await bus.close()
    t.equal(bus.health().state, 'closed')
    await t.rejects(bus.publish(busMessage('x')), { code: 'FST_EVSOCK_CLOSED' })
    await t.rejects(bus.bind('x'), { code: 'FST_EVSOCK_CLOSED' })
    await bus.unbind('x')
    t.equal(entries.filter((entry) => entry.msg.includes('broker connection closed')).length, 1, 'closing logged once')
  })

  t.test('broker unreachable: publishes buffer (bounded), reject on their deadline, start rejects', async (t) => {
    const { log, entries } = recordingLogger()
    const bus = createAmqpBus(unreachableOptions({ url: 'amqp://guest:secret@127.0.0.1:1', publishTimeoutMs: 600, maxBufferedPublishes: 2 }), log)
    const started = bus.start(() => {})
    const at = Date.now()
    const first = bus.publish(busMessage('a'))
    const second = bus.publish(busMessage('b'))
    await t.rejects(bus.publish(busMessage('c')), { code: 'FST_EVSOCK_BROKER_UNAVAILABLE' }, 'over the buffer: rejected at once')
    t.match(bus.health(), { kind: 'amqp', state: 'connecting', buffered: 2, unconfirmed: 0 })
    await t.rejects(first, { code: 'FST_EVSOCK_BROKER_UNAVAILABLE', message: /within 600 ms/ })
    await t.rejects(second, { code: 'FST_EVSOCK_BROKER_UNAVAILABLE' })
    t.ok(Date.now() - at >= 550, 'not before the deadline')
    await t.rejects(started, { code: 'FST_EVSOCK_BROKER_UNAVAILABLE', message: /127\.0\.0\.1:1/ })
    t.match(bus.health(), { state: 'closed', buffered: 0, lastError: /ECONNREFUSED/ })
    t.ok(entries.some((entry) => entry.level === 40 && entry.msg.includes('attempt failed')), 'failed attempts are logged at warn')
    t.notOk(JSON.stringify(entries).includes('secret'), 'the password never reaches the log')
    await bus.close()
  })

  t.test('close while connecting rejects start and the buffered publishes', async (t) => {
    const { log, entries } = recordingLogger()
    const bus = createAmqpBus(unreachableOptions(), log)
    const started = bus.start(() => {})
    const buffered = bus.publish(busMessage('a'))
    await waitFor(() => entries.some((entry) => entry.msg.includes('attempt failed')), { what: 'a first connection attempt to fail' })
    await bus.close()
    await t.rejects(buffered, { code: 'FST_EVSOCK_CLOSED' })
    await t.rejects(started, { code: 'FST_EVSOCK_CLOSED' })
  })
}
