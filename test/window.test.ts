import t from 'tap'
import { openClient, startServer } from './helpers/server.js'
import { roundTrip, waitFor } from './helpers/wait.js'

t.test('a client that never acks receives exactly `window` events, and more after it acks', async (t) => {
  const server = await startServer(t, { window: 4 })
  const client = await openClient(t, server)
  await client.subscribe('w.*')
  for (let i = 1; i <= 10; i++) await server.app.publish('w.e', i)
  await client.next(() => client.events().length === 4)
  // No event passes a full window, so a request's answer is the sentinel: a fifth event would have come before it.
  await roundTrip(client)
  t.same(client.events().map((e) => e.seq), [1, 2, 3, 4], 'stops at the window')
  t.equal(server.app.eventSocket.stats().pending, 6)
  client.send({ op: 'ack', seq: 2 })
  await client.next(() => client.events().length === 6)
  await roundTrip(client)
  t.equal(client.events().length, 6, 'two acked, two more sent')
  client.send({ op: 'ack', seq: 6 })
  await client.next(() => client.events().length === 10)
  t.same(client.events().map((e) => e.data), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'in order, none lost')
  t.equal(server.app.eventSocket.stats().pending, 0)
})

t.test('an ack below the last ack is ignored; an ack above the last sent seq is BAD_ACK', async (t) => {
  const server = await startServer(t, { window: 2 })
  const client = await openClient(t, server)
  await client.subscribe('w.*')
  for (let i = 1; i <= 4; i++) await server.app.publish('w.e', i)
  await client.next(() => client.events().length === 2)
  client.send({ op: 'ack', seq: 2 })
  await client.next(() => client.events().length === 4)
  client.send({ op: 'ack', seq: 1 })
  client.send({ op: 'ack', seq: 5 })
  // Acks carry no id: the round trip after both proves the stale one's answer, had there been one, is in.
  await roundTrip(client)
  t.same(client.messages.filter((m) => m.op === 'error').map((m) => m.code), ['BAD_ACK'], 'one BAD_ACK, for seq 5; the stale ack got no answer')
})

t.test('a pending queue overflowing by count closes the slow consumer with 4008, and others keep receiving', async (t) => {
  const server = await startServer(t, { window: 2, maxPendingEvents: 5 })
  const slow = await openClient(t, server, { sub: 'slow' })
  const healthy = await openClient(t, server, { sub: 'healthy' })
  await slow.subscribe('w.*')
  await healthy.subscribe('w.*')
  healthy.ackEach()
  // Two at a time, letting the healthy client catch up and ack between bursts.
  for (let i = 1; i <= 8; i += 2) {
    await server.app.publish('w.e', i)
    await server.app.publish('w.e', i + 1)
    await healthy.next(() => healthy.events().length === i + 1)
  }
  const { code, reason } = await slow.closed
  t.equal(code, 4008)
  t.equal(reason, 'slow consumer')
  await healthy.next(() => healthy.events().length === 8)
  t.equal(server.app.eventSocket.stats().slowConsumerCloses, 1)
  await waitFor(() => server.app.eventSocket.stats().connections === 1, { what: 'the slow connection to be released' })
  t.pass('the slow connection is released')
})

t.test('a pending queue overflowing by bytes closes with 4008', async (t) => {
  const server = await startServer(t, { window: 1, maxPendingBytes: 3000 })
  const client = await openClient(t, server)
  await client.subscribe('w.*')
  for (let i = 0; i < 5; i++) await server.app.publish('w.e', 'x'.repeat(1000))
  t.equal((await client.closed).code, 4008)
})
