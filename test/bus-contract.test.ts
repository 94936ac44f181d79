import t from 'tap'
import Fastify from 'fastify'
import { busContract, type ContractTest } from '../lib/bus/contract.js'
import { MemoryBus } from '../lib/bus/memory.js'
import { createAmqpBus } from '../lib/bus/amqp.js'
import eventSocket from '../lib/index.js'
import type { Bus } from '../lib/bus/types.js'
import type { ResolvedHistoryOptions } from '../lib/options.js'
import { brokerOptions, busCases, recordingLogger, requireBroker, withChannel } from './helpers/broker.js'
import { redisBusFactory, requireRedis, RedisBus } from './helpers/redis-bus.js'
import { openClient, SECRET, startServer } from './helpers/server.js'
import { roundTrip } from './helpers/wait.js'

// The exported bus contract, run against the three implementations at hand;
// then the same client-visible behaviour, through the plugin, on each bus.

const history: ResolvedHistoryOptions = { maxAgeMs: 3_600_000, maxBytes: 64 * 1024 * 1024, maxReplays: 16 }

t.test('the bus contract', async (t) => {
  t.test('memory', async (t) => {
    busContract((name, fn) => t.test(name, fn), { createBus: () => new MemoryBus(recordingLogger().log), singleInstance: true })
  })

  t.test('amqp (RabbitMQ)', async (t) => {
    if (!await requireBroker(t)) return
    const options = brokerOptions(t)
    busContract((name, fn) => t.test(name, fn), { createBus: () => createAmqpBus(options, recordingLogger().log) })
  })

  t.test('amqp (RabbitMQ) with history: the stream', async (t) => {
    if (!await requireBroker(t)) return
    const options = brokerOptions(t)
    // The stream outlives every bus (it is shared and durable): the test removes it.
    t.teardown(() => withChannel(options.url as string, (channel) => channel.deleteQueue(`${options.exchange}.history`)))
    busContract((name, fn) => t.test(name, fn), { createBus: (given) => createAmqpBus(options, recordingLogger().log, given), history })
  })

  // NOTE for the lead: this runs by itself once lib/bus/memory.ts keeps a
  // history (MemoryBus(log, history).history defined); until then it says so.
  t.test('memory with history', async (t) => {
    if ((new MemoryBus(undefined, history) as Bus).history === undefined) {
      t.plan(0, 'MEMORY BUS HAS NO HISTORY YET: the history contract is not run on it')
      return
    }
    busContract((name, fn) => t.test(name, fn), { createBus: (given) => new MemoryBus(recordingLogger().log, given), singleInstance: true, history })
  })

  t.test('redis (test-only, filters locally)', async (t) => {
    if (!await requireRedis(t)) return
    busContract((name, fn) => t.test(name, fn), { createBus: redisBusFactory() })
  })

  t.test('takes node:test-style test functions too (no test object to bind)', async () => {
    const names: string[] = []
    const nodeStyle: ContractTest = (name) => { names.push(name) }
    busContract(nodeStyle, { createBus: () => new MemoryBus(), singleInstance: true })
    t.ok(names.length >= 8, `${names.length} tests registered`)
  })
})

t.test('the bus option', async (t) => {
  t.test('the plugin runs on a user bus: events reach sockets and health names its kind', async (t) => {
    if (!await requireRedis(t)) return
    const bus = redisBusFactory()()
    const server = await startServer(t, { bus })
    const client = await openClient(t, server)
    t.equal((await client.subscribe('orders.*')).op, 'ok')
    await server.app.publish('orders.other.x', 0)
    await server.app.publish('orders.created', { n: 1 })
    await client.next((m) => m.op === 'event', { timeout: 5000 })
    t.same(client.events().map((e) => [e.topic, e.data]), [['orders.created', { n: 1 }]])
    t.match(server.app.eventSocket.health(), { status: 'ok', broker: { kind: 'redis', state: 'up' } })
    await server.app.eventSocket.revoke('someone')
    t.pass('revoke travels over the user bus')
  })

  t.test('bus and broker together are refused with FST_EVSOCK_BAD_OPTION', async (t) => {
    for (const broker of [{ url: 'amqp://127.0.0.1' }, {}]) {
      const app = Fastify()
      t.teardown(() => app.close())
      await t.rejects(async () => await app.register(eventSocket, { jwt: { secret: SECRET }, bus: new MemoryBus(), broker }), { code: 'FST_EVSOCK_BAD_OPTION', message: /bus/ })
    }
  })

  t.test('an object that is not a bus is refused, naming what is missing', async (t) => {
    const close = async (): Promise<void> => {}
    const withoutClose = { kind: 'x', start: close, publish: close, bind: close, unbind: close, health: () => ({ kind: 'x', state: 'up' as const, buffered: 0, unconfirmed: 0 }) }
    for (const [bus, why] of [[withoutClose, /close\(\)/], [{ ...withoutClose, close, kind: '' }, /kind/], [null, /object/]] as const) {
      const app = Fastify()
      t.teardown(() => app.close())
      await t.rejects(async () => await app.register(eventSocket, { jwt: { secret: SECRET }, bus: bus as never }), { code: 'FST_EVSOCK_BAD_OPTION', message: why })
    }
  })

  t.test('the plugin starts the user bus and closes it on app.close', async (t) => {
    if (!await requireRedis(t)) return
    const bus = redisBusFactory()()
    const server = await startServer(t, { bus })
    t.equal(bus.health().state, 'up')
    await server.app.close()
    t.equal(bus.health().state, 'closed')
    t.type(bus, RedisBus)
  })
})

for (const bus of busCases) {
  t.test(`${bus.name} bus`, async (t) => {
    if (!await bus.available(t)) return

    t.test('matching events arrive exactly once, in publish order, on both formats', async (t) => {
      const server = await startServer(t, bus.options(t))
      const json = await openClient(t, server, { format: 'json' })
      const msgpack = await openClient(t, server, { format: 'msgpack' })
      for (const client of [json, msgpack]) {
        t.equal((await client.subscribe('orders.*')).op, 'ok')
        t.equal((await client.subscribe('orders.#')).op, 'ok')
      }
      const ids: string[] = []
      for (let i = 0; i < 20; i++) ids.push((await server.app.publish(i % 2 === 0 ? 'orders.created' : 'orders.eu.created', { i })).id)
      // The sentinel, published last: a duplicate of any earlier event would have come before it.
      ids.push((await server.app.publish('orders.end', 'end')).id)
      for (const client of [json, msgpack]) {
        await client.next((m) => m.op === 'event' && m.topic === 'orders.end', { timeout: 5000 })
        const events = client.events()
        t.same(events.map((e) => e.id), ids, `${client.format}: every event once, in order`)
        t.same(events.map((e) => e.seq), Array.from({ length: 21 }, (_, i) => i + 1))
        t.same(events[1]?.data, { i: 1 })
      }
    })

    t.test('an instance receives from the bus only the events its sockets subscribe to', async (t) => {
      const server = await startServer(t, bus.options(t))
      const client = await openClient(t, server)
      await client.subscribe('wanted.*')
      await server.app.publish('unwanted.one', 1)
      await server.app.publish('wanted.one', 2)
      await server.app.publish('unwanted.two', 3)
      // The sentinel: the bus delivers to an instance in publish order, so unwanted.two, had it come, came before.
      await server.app.publish('wanted.end', 'end')
      await client.next((m) => m.op === 'event' && m.data === 'end', { timeout: 5000 })
      t.equal(server.app.eventSocket.stats().eventsIn, 2, 'only wanted.one and the sentinel reached the instance')
      t.same(client.events().map((e) => e.data), [2, 'end'])
    })

    t.test('unsubscribing the last subscriber of a pattern stops its delivery to the instance', async (t) => {
      const server = await startServer(t, bus.options(t))
      const a = await openClient(t, server, { sub: 'a' })
      const b = await openClient(t, server, { sub: 'b' })
      await a.subscribe('x.*')
      await b.subscribe('x.*')
      a.send({ op: 'unsub', id: 500, topic: 'x.*' })
      await a.next((m) => m.id === 500)
      await server.app.publish('x.one', 1)
      await b.next((m) => m.op === 'event')
      b.send({ op: 'unsub', id: 501, topic: 'x.*' })
      await b.next((m) => m.id === 501)
      // The ok of an unsub does not wait for the unbind; the ok of a first
      // sub waits for its bind, and the bus runs bindings one at a time in
      // order (one channel on RabbitMQ), so once y.* is bound x.* is unbound.
      for (const client of [a, b]) t.equal((await client.subscribe('y.*')).op, 'ok')
      await server.app.publish('x.two', 2)
      await server.app.publish('y.end', 'end')
      for (const client of [a, b]) await client.next((m) => m.op === 'event' && m.data === 'end', { timeout: 5000 })
      t.same(a.events().map((e) => e.data), ['end'])
      t.same(b.events().map((e) => e.data), [1, 'end'])
      t.equal(server.app.eventSocket.stats().eventsIn, 2, 'x.two was not routed here, the sentinel was')
    })

    t.test('the ack window holds the same way', async (t) => {
      const server = await startServer(t, { ...bus.options(t), window: 3 })
      const client = await openClient(t, server)
      await client.subscribe('w.*')
      for (let i = 1; i <= 6; i++) await server.app.publish('w.e', i)
      await client.next(() => client.events().length === 3, { timeout: 5000 })
      // No event passes a full window, so a request's answer is the sentinel.
      await roundTrip(client)
      t.equal(client.events().length, 3)
      t.equal(server.app.eventSocket.stats().pending, 3)
      client.send({ op: 'ack', seq: 3 })
      await client.next(() => client.events().length === 6, { timeout: 5000 })
      t.same(client.events().map((e) => e.data), [1, 2, 3, 4, 5, 6])
    })

    t.test('health reports the bus', async (t) => {
      const server = await startServer(t, bus.options(t))
      t.match(server.app.eventSocket.health(), { status: 'ok', broker: { kind: bus.name, state: 'up' } })
    })
  })
}
