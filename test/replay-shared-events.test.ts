import t from 'tap'
import type { ConsumeMessage } from 'amqplib'
import { RecentMessages } from '../lib/bus/amqp-recent.js'
import { MemoryHistory } from '../lib/bus/memory-history.js'
import type { BusMessage } from '../lib/bus/types.js'
import { recentHistory, replayAll, streamDelivery } from './helpers/replays.js'

// Live delivery encodes an event once per format for all its sockets; so
// must replays of a message the history keeps in memory (the in-process
// history, the RabbitMQ history's recent messages): every replay of it gets
// the one OutboundEvent, whose frames are encoded once. The recent
// messages, bounded for memory alone, count those frames; the in-process
// history, whose bound is the retention clients resume within, does not.

/** Message `n`, of the same size for every n below 100. */
function message (n: number): BusMessage {
  const key = String(n).padStart(2, '0')
  return { id: `id-${key}`, topic: `t.${key}`, time: Date.now(), payload: Buffer.from(JSON.stringify({ key, text: 'x'.repeat(40) })) }
}

const limits = (maxBytes: number): { maxAgeMs: number, maxBytes: number, maxReplays: number } => ({ maxAgeMs: 60_000, maxBytes, maxReplays: 4 })

t.test('replays of the in-process history share one event per message, encoded once per format', async (t) => {
  const history = new MemoryHistory(limits(1 << 20))
  for (let n = 0; n < 5; n++) history.append(message(n))
  const first = await replayAll(history, 'json')
  const second = await replayAll(history, 'json')
  const third = await replayAll(history, 'msgpack')
  t.equal(first.length, 5, 'every event replayed')
  t.ok(first.every((event, i) => event === second[i] && event === third[i]), 'the second and third replays were sent the first one\'s events, not new ones')
  t.same(third.map((event) => event.pos), [0, 1, 2, 3, 4].map((offset) => history.format(offset)), 'each with its position')
})

t.test('the in-process history retains as many events after replays as before: its maxBytes is the retention, not counting frames', async (t) => {
  // Room for exactly 10 messages of their own bytes; their JSON frames are larger than the messages themselves.
  const { payload, topic, id } = message(0)
  const bytes = payload.length + topic.length + id.length
  const plain = new MemoryHistory(limits(bytes * 10))
  const replayed = new MemoryHistory(limits(bytes * 10))
  for (const history of [plain, replayed]) for (let n = 0; n < 10; n++) history.append(message(n))
  await replayAll(replayed, 'json')
  await replayAll(replayed, 'msgpack')
  for (const history of [plain, replayed]) history.append(message(10))
  t.equal(await plain.oldest(), 1, 'one message made room for the next')
  t.equal(await replayed.oldest(), 1, 'the same after replays encoded every message in both formats')
})

/** Message `offset` as the RabbitMQ history's live consumer takes it. */
function delivery (offset: number): ConsumeMessage {
  return streamDelivery(offset, message(offset))
}

t.test('replays of the RabbitMQ history\'s recent messages share one event per message', async (t) => {
  const recent = new RecentMessages(1 << 20)
  const deliveries = Array.from({ length: 5 }, (_, offset) => delivery(offset))
  for (const each of deliveries) recent.append(each)
  const history = recentHistory(recent, deliveries)
  const first = await replayAll(history, 'msgpack')
  const second = await replayAll(history, 'json')
  t.equal(first.length, 5, 'every event replayed')
  t.ok(first.every((event, i) => event === second[i]), 'the second replay was sent the first one\'s events, not new ones')
})

t.test('the frames a replay encoded count in the recent messages\' bytes: fewer are kept after', async (t) => {
  // Room for 10 deliveries as counted (body and 512 bytes each), not for their frames besides.
  const bytes = delivery(0).content.length + 512
  const plain = new RecentMessages(bytes * 10)
  const replayed = new RecentMessages(bytes * 10)
  const deliveries = Array.from({ length: 10 }, (_, offset) => delivery(offset))
  for (const recent of [plain, replayed]) for (const each of deliveries) recent.append(each)
  // Every replay after the first reads what the first one's frames pushed out of memory from the stream.
  await replayAll(recentHistory(replayed, deliveries), 'json')
  await replayAll(recentHistory(replayed, deliveries), 'msgpack')
  for (const recent of [plain, replayed]) recent.append(delivery(10))
  t.equal(plain.firstOffset, 1, 'without replays, one message made room for the next')
  t.ok((replayed.firstOffset ?? 0) > 1, `after replays encoded every message twice, their frames pushed more out (first ${String(replayed.firstOffset)})`)
})
