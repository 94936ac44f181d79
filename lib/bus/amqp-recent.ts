import type { ConsumeMessage } from 'amqplib'
import { ClosedError } from '../errors.js'
import type { EventLimits } from '../publish.js'
import { QueueWindow } from '../queue-window.js'
import { fromDelivery, streamOffset } from './amqp-message.js'
import { makeRoom, type EventRoom } from './retained-event.js'
import type { BusMessage, HistoryCursor, SkippedMessage } from './types.js'

// The newest part of the history stream, as this instance's live consumer
// took it, kept in memory (bounded by bytes). Replays read it instead of the
// stream when it covers their start: a client resuming after a deploy or a
// network blip asks for seconds-old events, and a thousand of them at once
// would otherwise each open a consumer on the broker and read the same
// chunks over the network, starving live delivery on both sides.

interface Taken {
  readonly offset: number
  readonly delivery: ConsumeMessage
  /** The message once checked (or why it is not an event): checked once, however many replays read it. */
  checked?: BusMessage | string
  /** Bytes counted against the bound: the delivery's, and those of the frames its replays encoded (retained-event.ts). */
  bytes: number
  /** Made with `checked`, for an event. */
  room?: EventRoom
}

export class RecentMessages {
  readonly #maxBytes: number
  /** Taken messages in offset order, each under its sequence number. */
  readonly #entries = new QueueWindow<Taken>()
  #bytes = 0

  constructor (maxBytes: number) {
    this.#maxBytes = maxBytes
  }

  /** Offset of the oldest message kept, or undefined while none is. */
  get firstOffset (): number | undefined {
    return this.#entries.oldest?.offset
  }

  /** The live consumer took `delivery` (every message of the stream, in order, wanted or not). */
  append (delivery: ConsumeMessage): void {
    const offset = streamOffset(delivery)
    if (offset === undefined) return
    const taken: Taken = { offset, delivery, bytes: bytesOf(delivery) }
    this.#entries.push(taken)
    this.#bytes += taken.bytes
    this.#trim()
  }

  /** Drops the oldest messages while the bytes counted are over the bound; the newest stays. */
  #trim (): void {
    while (this.#bytes > this.#maxBytes && this.#entries.length > 1) {
      const oldest = this.#entries.shift() as Taken
      this.#bytes -= oldest.bytes
      oldest.room?.drop()
    }
  }

  /** Checks a taken message once, and makes the room for its replays' encoded event (retained-event.ts). */
  checked (taken: Taken, limits: EventLimits): BusMessage | string {
    if (taken.checked !== undefined) return taken.checked
    const message = taken.checked = fromDelivery(taken.delivery, limits)
    if (typeof message === 'string') return message
    message.offset = taken.offset
    taken.room = makeRoom(message, (bytes) => {
      taken.bytes += bytes
      this.#bytes += bytes
      // At once, not at the next append: replays after a quiet spell would
      // otherwise hold every kept message's frames (about twice its body)
      // over the bound until something is published. A replay whose next
      // message goes reads on from the stream.
      this.#trim()
    })
    return message
  }

  /** Whether a read from `from` can start here: the oldest kept is at or before it. */
  covers (from: number): boolean {
    const first = this.firstOffset
    return first !== undefined && from >= first
  }

  /** Sequence number of the first message kept at or after `offset` (the end when there is none yet). */
  seqOf (offset: number): number {
    return this.#entries.search((taken) => taken.offset < offset)
  }

  at (seq: number): Taken | undefined {
    return this.#entries.at(seq)
  }
}

function bytesOf (delivery: ConsumeMessage): number {
  // The body, and about what amqplib keeps per message besides it.
  return delivery.content.length + 512
}

/**
 * A history cursor over the recent messages; once they do not hold its next
 * message (it fell behind what is kept, or read all there is), it goes on
 * from the stream itself, through `fallBack`, which also waits for what is
 * published next and fails as stream cursors do while the broker is away.
 */
export class RecentCursor implements HistoryCursor {
  readonly #recent: RecentMessages
  readonly #limits: EventLimits
  readonly #fallBack: (from: number) => HistoryCursor
  readonly #onClose: (cursor: RecentCursor) => void
  #seq: number
  /** Offset of the last message handed out or skipped. */
  #last: number
  #stream: HistoryCursor | undefined
  #closed = false

  constructor (recent: RecentMessages, from: number, limits: EventLimits, fallBack: (from: number) => HistoryCursor, onClose: (cursor: RecentCursor) => void) {
    this.#recent = recent
    this.#limits = limits
    this.#fallBack = fallBack
    this.#onClose = onClose
    this.#seq = recent.seqOf(from)
    this.#last = from - 1
  }

  async next (): Promise<BusMessage | SkippedMessage> {
    for (;;) {
      if (this.#closed) throw new ClosedError()
      if (this.#stream !== undefined) return await this.#stream.next()
      const taken = this.#recent.at(this.#seq)
      if (taken === undefined) {
        this.#stream = this.#fallBack(this.#last + 1)
        continue
      }
      this.#seq++
      this.#last = taken.offset
      const message = this.#recent.checked(taken, this.#limits)
      return typeof message === 'string' ? { offset: taken.offset, skipped: message } : message
    }
  }

  close (): void {
    if (this.#closed) return
    this.#closed = true
    this.#stream?.close()
    this.#onClose(this)
  }
}
