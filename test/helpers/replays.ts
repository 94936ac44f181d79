import type { ConsumeMessage } from 'amqplib'
import { RecentCursor, type RecentMessages } from '../../lib/bus/amqp-recent.js'
import type { BusHistory, BusMessage, HistoryCursor } from '../../lib/bus/types.js'
import type { Format, OutboundEvent } from '../../lib/codec.js'
import { defaultEventLimits } from '../../lib/publish.js'
import { Replay, ReplaySlots, type ReplayTarget } from '../../lib/replay.js'
import { within } from './wait.js'

// Replays driven without sockets, over a history the test builds, for the
// unit tests of what replays share (test/replay-shared-events.test.ts,
// test/attack-history-shared.test.ts).

/** `message` as the RabbitMQ history's live consumer takes it from the stream, at `offset`. */
export function streamDelivery (offset: number, { id, topic, time, payload }: BusMessage): ConsumeMessage {
  return {
    content: payload,
    fields: { routingKey: topic },
    properties: { messageId: id, timestamp: Math.floor(time / 1000), headers: { 'x-stream-offset': offset } }
  } as unknown as ConsumeMessage
}

/** A cursor over `deliveries` as the broker's stream hands them out: a fresh message per read, sharing nothing. */
function streamOf (deliveries: ConsumeMessage[], from: number): HistoryCursor {
  let next = from
  return {
    next: async (): Promise<BusMessage> => {
      const found = deliveries[next]
      if (found === undefined) throw new Error(`read past the stream's end (${next})`)
      next++
      return { id: found.properties.messageId as string, topic: found.fields.routingKey, time: Date.now(), payload: found.content, offset: next - 1 }
    },
    close: () => {}
  }
}

/** The RabbitMQ history as replays see it: its recent messages, then the stream (`deliveries`, every one from offset 0). */
export function recentHistory (recent: RecentMessages, deliveries: ConsumeMessage[]): BusHistory {
  const stream = (from: number): HistoryCursor => streamOf(deliveries, from)
  return {
    head: deliveries.length - 1,
    oldest: async () => 0,
    retains: async () => true,
    read: (from) => recent.covers(from) ? new RecentCursor(recent, from, defaultEventLimits, stream, () => {}) : stream(from),
    format: (offset) => String(offset),
    parse: (pos) => Number(pos)
  }
}

/**
 * Replays every event of `history` from offset `from` into one connection of
 * `format`, each frame body encoded as the framer does; resolves with the
 * events it was sent.
 */
export async function replayAll (history: BusHistory, format: Format, { from = 0, encodeFailed = () => {} }: { from?: number, encodeFailed?: () => void } = {}): Promise<OutboundEvent[]> {
  const sent: OutboundEvent[] = []
  const done = new Promise<void>((resolve, reject) => {
    const target: ReplayTarget = {
      format,
      hasRoom: true,
      whenRoom: async () => true,
      replayed: (event) => {
        event.payload(format, sent.length + 1)
        sent.push(event)
      },
      caughtUp: () => { resolve() },
      failed: (reason) => { reject(new Error(`the replay failed: ${reason}`)) }
    }
    const replay = new Replay({ history, slots: new ReplaySlots(16), encodeFailed }, target, from)
    replay.add('#', from - 1)
    replay.start()
  })
  await within(done, { what: `a ${format} replay to catch up` })
  return sent
}
