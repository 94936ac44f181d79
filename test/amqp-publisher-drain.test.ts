import t, { type Test } from 'tap'
import { EventEmitter } from 'node:events'
import type { ConfirmChannel } from 'amqplib'
import { ConfirmPublisher } from '../lib/bus/amqp-publisher.js'
import type { BusMessage } from '../lib/bus/types.js'
import { waitFor } from './helpers/wait.js'

// The publisher's flow control against amqplib's channel, with a channel
// that behaves as amqplib's does at its surface: publish() returns false
// when its write buffer is full, and confirms arrive later through the
// callback. This is a test of the publisher's own logic, not of RabbitMQ
// (test/amqp-fault.test.ts and the bus contract run that on the broker).

/** A confirm channel whose publish() returns what `writable` says, and keeps each confirm callback. */
class FakeChannel extends EventEmitter {
  writable = true
  readonly sent: Array<{ topic: string, confirm: (error: unknown) => void }> = []

  publish (_exchange: string, topic: string, _content: Buffer, _options: unknown, confirm: (error: unknown) => void): boolean {
    this.sent.push({ topic, confirm })
    return this.writable
  }

  /** The broker acks every publish not yet confirmed. */
  ackAll (): void {
    for (const each of this.sent.splice(0)) each.confirm(null)
  }
}

const message = (topic: string): BusMessage => ({ topic, id: topic, payload: Buffer.from('{}'), time: 0 }) as unknown as BusMessage

/** A publisher attached to a fresh fake channel; closed when the test ends. */
function attached (t: Test): { channel: FakeChannel, publishing: ConfirmPublisher } {
  const channel = new FakeChannel()
  const publishing = new ConfirmPublisher({ exchange: 'x', timeoutMs: 5_000, maxBuffered: 100 })
  publishing.attach(channel as unknown as ConfirmChannel)
  t.teardown(() => publishing.close())
  return { channel, publishing }
}

t.test('a full buffer holds later publishes until every publish sent is confirmed, even when amqplib never says drain', async (t) => {
  const { channel, publishing } = attached(t)
  channel.writable = false
  const first = publishing.publish(message('a.1'))
  const held = [publishing.publish(message('a.2')), publishing.publish(message('a.3'))]
  t.same(channel.sent.map((each) => each.topic), ['a.1'], 'after a false from publish(), the next publishes wait')
  t.equal(publishing.buffered, 2)

  // The broker confirms a.1: nothing is left in amqplib's buffer, and no 'drain' comes.
  channel.writable = true
  channel.ackAll()
  await first
  await waitFor(() => channel.sent.length === 2, { what: 'the held publishes to be sent once a.1 was confirmed', timeoutMs: 2_000, detail: () => `sent ${channel.sent.map((each) => each.topic).join(', ')}` })
  t.same(channel.sent.map((each) => each.topic), ['a.2', 'a.3'], 'in call order')
  channel.ackAll()
  await Promise.all(held)
  t.equal(publishing.buffered, 0)
})

t.test('while publishes sent are unconfirmed, a full buffer still waits (for the drain, or the last confirm)', async (t) => {
  const { channel, publishing } = attached(t)
  const sent = [publishing.publish(message('b.1'))]
  channel.writable = false
  sent.push(publishing.publish(message('b.2')))
  const held = publishing.publish(message('b.3'))
  // b.1 is confirmed, b.2 is not: the buffer may still be full.
  channel.sent.shift()?.confirm(null)
  await sent[0]
  t.same(channel.sent.map((each) => each.topic), ['b.2'], 'b.3 still waits while b.2 is unconfirmed')
  t.equal(publishing.buffered, 1)
  // amqplib's drain sends it as before.
  channel.writable = true
  channel.emit('drain')
  t.same(channel.sent.map((each) => each.topic), ['b.2', 'b.3'])
  channel.ackAll()
  await Promise.all([...sent, held])
})

t.test('a nack settles its publish as refused and still lets the held ones go', async (t) => {
  const { channel, publishing } = attached(t)
  channel.writable = false
  const nacked = publishing.publish(message('c.1'))
  const held = publishing.publish(message('c.2'))
  channel.writable = true
  channel.sent.shift()?.confirm(new Error('nack'))
  await t.rejects(nacked, { code: 'FST_EVSOCK_PUBLISH_NACKED' })
  t.same(channel.sent.map((each) => each.topic), ['c.2'])
  channel.ackAll()
  await held
})
