import t from 'tap'
import { brokerOptions, requireBroker } from './helpers/broker.js'
import { openClient, startServer } from './helpers/server.js'

// Red-team attacks by a careless app on `publish`, over the real broker: an
// event id is carried as the AMQP messageId, a shortstr of at most 255 bytes.

if (await requireBroker(t)) {
  t.test('an event id of 128 multi-byte characters is refused at publish, and the bus keeps working', async (t) => {
    const server = await startServer(t, { broker: brokerOptions(t) })
    const client = await openClient(t, server)
    t.equal((await client.subscribe('orders.#')).op, 'ok')

    // 128 UTF-16 units, 384 bytes in UTF-8: over the shortstr limit.
    const wide = '€'.repeat(128)
    const outcome = await Promise.race([
      server.app.publish('orders.wide', { n: 1 }, { id: wide }).then(() => 'resolved', (err: Error & { code?: string }) => err.code ?? err.message),
      new Promise((resolve) => setTimeout(() => resolve('neither resolved nor rejected in 5 s'), 5000))
    ])
    t.equal(outcome, 'FST_EVSOCK_BAD_EVENT_ID', 'refused before the broker with the stable code')
    // A lone surrogate has no UTF-8 form: the subscriber would see another id than publish returned.
    await t.rejects(server.app.publish('orders.lone', {}, { id: 'x\ud800' }), { code: 'FST_EVSOCK_BAD_EVENT_ID' })

    const sentinel = await server.app.publish('orders.sentinel', { n: 2 })
    const event = await client.next((message) => message.op === 'event', { timeout: 5000 })
    t.equal(event.id, sentinel.id, 'the next event still arrives, and is the first one')
  })
}
