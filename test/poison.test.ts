import t from 'tap'
import { createAmqpBus } from '../lib/bus/amqp.js'
import type { BusMessage, Deliver } from '../lib/bus/types.js'
import { OutboundEvent } from '../lib/codec.js'
import type { ResolvedBrokerOptions } from '../lib/options.js'
import { brokerOptions, busMessage, recordingLogger, requireBroker } from './helpers/broker.js'
import { waitFor } from './helpers/wait.js'
import { publishForeign, type Foreign } from './helpers/foreign.js'
import { watchProcess } from './helpers/process.js'
import { openClient, startServer } from './helpers/server.js'

// Poison events: whatever another producer puts on the exchange, and
// whatever one socket does, no event may stop the process or the other sockets.

const nestedJson = (depth: number): string => '['.repeat(depth) + ']'.repeat(depth)

/** Every kind of broken message, as seen by an instance with maxEventBytes 4096 and the default depth of 64. */
const poison: Foreign[] = [
  { what: 'text that is not JSON', routingKey: 'feed.x', body: Buffer.from('not json') },
  { what: 'truncated JSON', routingKey: 'feed.x', body: Buffer.from('{"a":1') },
  { what: 'two JSON values', routingKey: 'feed.x', body: Buffer.from('1 2') },
  { what: 'JSON that would close the frame early', routingKey: 'feed.x', body: Buffer.from('1},"x":{') },
  { what: 'an empty body', routingKey: 'feed.x', body: Buffer.alloc(0) },
  { what: 'invalid UTF-8 inside a JSON string', routingKey: 'feed.x', body: Buffer.from([0x22, 0xff, 0xfe, 0x22]) },
  { what: 'a byte-order mark', routingKey: 'feed.x', body: Buffer.from('\uFEFF{}') },
  { what: 'JSON nested 2000 deep', routingKey: 'feed.x', body: Buffer.from(nestedJson(2000)) },
  { what: 'JSON nested 65 deep', routingKey: 'feed.x', body: Buffer.from(nestedJson(65)) },
  { what: 'a body over maxEventBytes', routingKey: 'feed.x', body: Buffer.from(JSON.stringify('x'.repeat(5000))) },
  { what: 'a routing key with a space', routingKey: 'feed.bad word', body: Buffer.from('1') },
  { what: 'a routing key with an empty word', routingKey: 'feed..x', body: Buffer.from('1') },
  { what: 'a routing key with a non-ASCII word', routingKey: 'feed.é', body: Buffer.from('1') },
  { what: 'no messageId', routingKey: 'feed.x', body: Buffer.from('1'), properties: { messageId: undefined } },
  { what: 'an empty messageId', routingKey: 'feed.x', body: Buffer.from('1'), properties: { messageId: '' } },
  { what: 'a messageId of 200 characters', routingKey: 'feed.x', body: Buffer.from('1'), properties: { messageId: 'i'.repeat(200) } }
]

t.test('an event that cannot be encoded for one format is dropped for that format only, reported once', async (t) => {
  // Past any maxEventDepth: only a bus that skipped the checks could hand the core this.
  const message: BusMessage = { id: 'deep', topic: 'feed.x', time: Date.now(), payload: Buffer.from(nestedJson(5000)) }
  const failures: Array<[string, unknown]> = []
  const event = new OutboundEvent(message, (failed, format, error) => { failures.push([format, error]) })
  t.equal(event.encodes('msgpack'), false, 'no MessagePack frame')
  t.equal(event.encodes('msgpack'), false, 'asked again')
  t.equal(failures.length, 1, 'the failure is reported once')
  t.equal(failures[0]?.[0], 'msgpack')
  t.type(failures[0]?.[1], RangeError)
  t.equal(event.encodes('json'), true, 'the JSON frame is still there')
  t.same(JSON.parse(event.payload('json', 1).toString()).data.length, 1, 'and whole')
})

if (await requireBroker(t)) {
  t.test('foreign messages that are not valid events are dropped and counted; the next event reaches JSON and MessagePack sockets', async (t) => {
    const failures = watchProcess(t)
    const broker = brokerOptions(t)
    const server = await startServer(t, { broker, maxEventBytes: 4096 })
    const json = await openClient(t, server, { format: 'json' })
    const msgpack = await openClient(t, server, { format: 'msgpack' })
    for (const client of [json, msgpack]) t.equal((await client.subscribe('feed.#')).op, 'ok')

    await publishForeign(broker.exchange, [
      ...poison,
      // A well-formed message from another producer is an event like any other.
      { what: 'a valid foreign event', routingKey: 'feed.foreign', body: Buffer.from('{"from":"elsewhere"}'), properties: { messageId: 'foreign-1' } }
    ])
    const { id } = await server.app.publish('feed.sentinel', { n: 1 })
    for (const client of [json, msgpack]) {
      await client.next((m) => m.op === 'event' && m.id === id, { timeout: 10_000 })
      t.same(client.events().map((event) => [event.seq, event.topic, event.id, event.data]), [
        [1, 'feed.foreign', 'foreign-1', { from: 'elsewhere' }],
        [2, 'feed.sentinel', id, { n: 1 }]
      ], `the ${client.format} socket got the valid foreign event and the sentinel, nothing else`)
    }
    t.equal(server.app.eventSocket.stats().eventsDropped, poison.length, 'every poison message was counted')
    t.equal(server.app.eventSocket.stats().eventsIn, 2)
    t.same(failures, [], 'nothing escaped to the process')
  })

  t.test('the amqp bus drops poison messages with a summarized warning and passes $evsock. control messages through', async (t) => {
    const options: ResolvedBrokerOptions = brokerOptions(t)
    const { log, entries } = recordingLogger()
    const bus = createAmqpBus(options, log)
    t.teardown(() => bus.close())
    const received: BusMessage[] = []
    const reasons: string[] = []
    const deliver: Deliver = Object.assign((message: BusMessage) => { received.push(message) }, {
      limits: { maxEventBytes: 4096, maxEventDepth: 64 },
      dropped: (reason: string) => { reasons.push(reason) }
    })
    await bus.start(deliver)
    await bus.bind('feed.#')
    await bus.bind('$evsock.#')

    const flood = Array.from({ length: 200 }, (_, n) => ({ what: `garbage ${n}`, routingKey: 'feed.x', body: Buffer.from(`garbage ${n}`) }))
    await publishForeign(options.exchange, [
      ...flood,
      ...poison,
      { what: 'a control message', routingKey: '$evsock.revoke', body: Buffer.from('{"sub":"u1"}'), properties: { messageId: 'revoke-1' } },
      { what: 'a control message that is not JSON', routingKey: '$evsock.revoke', body: Buffer.from('u1') }
    ])
    const sentinel = busMessage('feed.sentinel')
    await bus.publish(sentinel)
    await waitFor(() => received.some((message) => message.id === sentinel.id), { what: 'the sentinel' })

    t.same(received.map((message) => [message.topic, message.id]), [['$evsock.revoke', 'revoke-1'], ['feed.sentinel', sentinel.id]],
      'the control message (not a topic, yet delivered) and the sentinel, nothing else')
    t.equal(received[0]?.payload.toString(), '{"sub":"u1"}', 'the control message unchanged')
    t.equal(reasons.length, flood.length + poison.length + 1, 'every poison message was reported as dropped')
    t.ok(reasons.every((reason) => typeof reason === 'string' && reason.length > 0), 'each with a reason')
    const warnings = entries.filter((entry) => entry.level === 40 && entry.msg.includes('dropped'))
    t.ok(warnings.length >= 1 && warnings.length <= 2, `a flood of ${reasons.length} poison messages logged ${warnings.length} warnings`)
    t.match(warnings[0], { reason: String, topic: 'feed.x' }, 'the first one says what and why')
  })
}
