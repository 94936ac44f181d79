import t from 'tap'
import { busCases } from './helpers/broker.js'
import { openClient, startServer } from './helpers/server.js'
import { roundTrip } from './helpers/wait.js'

// The same client-visible behaviour, on the in-process bus and on RabbitMQ.

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
