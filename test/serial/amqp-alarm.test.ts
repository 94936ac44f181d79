import { randomUUID } from 'node:crypto'
import t from 'tap'
import { connect } from 'amqplib'
import type { ConsumeMessage } from 'amqplib'
import { brokerOptions, brokerUrl, memoryAlarm, requireBroker, startBus, busMessage, withChannel } from '../helpers/broker.js'
import { waitFor } from '../helpers/wait.js'
import { openClient, startServer, type Message, type TestServer } from '../helpers/server.js'

// A real RabbitMQ memory alarm (the watermark set to almost nothing, then
// back). While the broker blocks publishers: publishes wait, then resolve
// once it clears or reject at their deadline; the consuming connection goes
// on delivering to the sockets, acking, binding and unbinding.
//
// Serial: an alarm blocks every publisher on the broker, so this file must
// not run while other broker tests publish. package.json's tap config lists
// test/serial under `serial`: tap runs such a file alone, after the parallel
// files queued before it finished and before any other starts (and .ci/run's
// single `tap` run still counts it). Other people's runs on a shared broker
// are not covered by that: the alarm window is kept to a few seconds.
//
// Events that must reach the instance *during* the alarm cannot be published
// (every publisher is blocked). They are parked beforehand, unacked, in a
// test queue whose dead-letter exchange is the plugin's exchange, and
// rejected during the alarm: the broker dead-letters them (no publisher
// involved) with their own routing keys into the instance's queue.

const up = (server: TestServer): boolean => server.app.eventSocket.health().broker.state === 'up'

if (await requireBroker(t)) {
  t.test('a memory alarm blocks publishing only: delivery, acks, bind and unbind go on; publishes wait or time out', async (t) => {
    const broker = brokerOptions(t, { publishTimeoutMs: 30_000 })
    const publishing = await startServer(t, { broker })
    // prefetch below the events parked: with acks unread (a blocked connection is not read), delivery would stop at 5.
    const subscribing = await startServer(t, { broker: { ...broker, prefetch: 5 } })
    const client = await openClient(t, subscribing)
    client.ackEach()
    for (const pattern of ['alarm.#', 'gone.*']) t.equal((await client.subscribe(pattern)).op, 'ok', `subscribed to ${pattern}`)
    const request = async (message: { op: string, id: number, topic: string }): Promise<Message> => {
      client.send(message)
      return await client.next((answer) => answer.id === message.id && (answer.op === 'ok' || answer.op === 'error'), { timeout: 10_000 })
    }
    const hurried = await startBus(t, { ...broker, publishTimeoutMs: 1000 })

    // Parked events, routed into the parking queue under their own keys, which dead-lettering keeps.
    const parking = `evsock.test.parking.${randomUUID()}`
    t.teardown(() => withChannel(brokerUrl, async (channel) => {
      await channel.deleteQueue(parking)
      await channel.deleteExchange(parking)
    }))
    const parked = [...Array.from({ length: 20 }, (_, n) => `alarm.parked.${n}`), 'gone.x', 'later.x', 'alarm.end']
    const holder = await connect(brokerUrl)
    t.teardown(() => holder.close().catch(() => {}))
    const holding = await holder.createConfirmChannel()
    await holding.assertExchange(parking, 'topic', { durable: false })
    await holding.assertQueue(parking, { durable: false, deadLetterExchange: broker.exchange })
    await holding.bindQueue(parking, parking, '#')
    for (const key of parked) holding.publish(parking, key, Buffer.from('{}'), { messageId: `${key}.${randomUUID()}`, contentType: 'application/json' })
    await holding.waitForConfirms()
    await holding.prefetch(parked.length)
    const held: ConsumeMessage[] = []
    await holding.consume(parking, (message) => { if (message !== null) held.push(message) })
    await waitFor(() => held.length === parked.length, { what: 'the parked messages held' })

    const clear = await memoryAlarm(t)
    // Publishes made during the alarm: each instance's publishing connection is then blocked (the broker blocks a connection when it publishes).
    const waiting = publishing.app.publish('alarm.waited', { during: 'alarm' })
    const fromSubscriber = subscribing.app.publish('alarm.waited', { during: 'alarm', from: 'subscriber' })
    const late = hurried.bus.publish(busMessage('alarm.late'))
    await waitFor(() => publishing.app.eventSocket.health().broker.blocked === true && subscribing.app.eventSocket.health().broker.blocked === true,
      { what: 'the broker to block the publishing connections', timeoutMs: 15_000 })
    await t.rejects(late, { code: 'FST_EVSOCK_BROKER_UNAVAILABLE' }, 'a publish past its deadline rejects with the typed error')
    let settled = false
    waiting.then(() => { settled = true }, () => { settled = true })

    // Bind and unbind on the consuming connection. The bus runs them in order, so the sub's ok means the unbind before it was done too.
    t.equal((await request({ op: 'unsub', id: 901, topic: 'gone.*' })).op, 'ok', 'unsub answered during the alarm')
    t.equal((await request({ op: 'sub', id: 902, topic: 'later.*' })).op, 'ok', 'sub answered during the alarm, once bound')
    for (const message of held) holding.nack(message, false, false)
    await client.next((message) => message.op === 'event' && message.topic === 'alarm.end', { timeout: 10_000 })
    t.same(client.events().map((event) => event.topic), parked.filter((key) => key !== 'gone.x'),
      'events reaching the instance during the alarm are delivered, past prefetch: acks go through; the unbound pattern is not routed')
    t.notOk(settled, 'a publish made during the alarm is still waiting')
    t.ok(up(publishing) && up(subscribing), 'the alarm is not an outage: both instances stay up')

    await clear()
    await waiting
    await fromSubscriber
    await client.next((message) => message.op === 'event' && message.topic === 'alarm.waited' && message.data.from === 'subscriber', { timeout: 10_000 })
    t.equal(client.events().filter((event) => event.topic === 'alarm.waited').length, 2, 'the publishes that waited resolve once the alarm clears, and are delivered')
    await waitFor(() => publishing.app.eventSocket.health().broker.blocked === false, { what: 'unblocked reported' })
  })
}
