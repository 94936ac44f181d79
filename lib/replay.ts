import { TopicIndex } from './client/topic-index.js'
import { CONTROL_PREFIX } from './topics.js'
import { OutboundEvent, type EncodeFailed, type Format } from './codec.js'
import { retainedRoom } from './bus/retained-event.js'
import type { BusHistory, BusMessage, HistoryCursor, SkippedMessage } from './bus/types.js'

// One connection's replay (docs/protocol.md section 6): it reads the history
// from a position on, sends what the connection's patterns match, in order,
// no faster than the client acks, until it reaches what the live path has
// seen; then the connection goes back to live events. Every pattern the
// connection holds is in it, each from its own start, so that one ordered
// pass serves them all and no event goes out twice.

/** Messages a replay reads before it lets the event loop turn. */
const READS_PER_TURN = 256

/** What a replay writes to: the connection's outbound stream, as far as the replay needs it. */
export interface ReplayTarget {
  readonly format: Format
  /** An event would be sent at once (the window has room and nothing waits behind it). */
  readonly hasRoom: boolean
  /** Resolves true once it has room, false once the stream stopped. */
  whenRoom (): Promise<boolean>
  /** Sends a replayed event. */
  replayed (event: OutboundEvent): void
  /** The replay read up to `offset` (inclusive) and hands over to live events. */
  caughtUp (offset: number): void
  /** Retention dropped events this replay still had to send; or the history became unreadable. */
  failed (reason: 'truncated' | 'unavailable'): void
}

/** Shared by the replays of one instance. */
export interface ReplayHost {
  readonly history: BusHistory
  readonly slots: ReplaySlots
  readonly encodeFailed: EncodeFailed
}

/** A pattern in the replay: events matching it after `start` are sent. */
interface Start {
  start: number
}

export class Replay {
  readonly #host: ReplayHost
  readonly #target: ReplayTarget
  readonly #starts = new Map<string, Start>()
  readonly #index = new TopicIndex<Start>()
  /** Last offset read (one before where it starts, before the first); reading goes on after it. */
  #position: number
  #sent = 0
  /** Messages read since the replay last let the event loop turn. */
  #readsInTurn = 0
  #state: 'waiting' | 'reading' | 'stopped' = 'waiting'
  /** The slot it holds or waits for; given up while the client's window is full and others wait. */
  #slot: Slot | undefined
  #cursor: HistoryCursor | undefined

  constructor (host: ReplayHost, target: ReplayTarget, from: number) {
    this.#host = host
    this.#target = target
    this.#position = from - 1
  }

  /** Offset the replay has read up to. */
  get position (): number {
    return this.#position
  }

  /** Nothing was sent yet, so it may still start earlier. */
  get rewindable (): boolean {
    return this.#sent === 0 && this.#state !== 'stopped'
  }

  /** The lowest start of its patterns (its position when it has none). */
  get earliestStart (): number {
    let earliest = Infinity
    for (const { start } of this.#starts.values()) earliest = Math.min(earliest, start)
    return earliest === Infinity ? this.#position : earliest
  }

  /** Sends the events matching `pattern` after `start` (and from where the replay reads). */
  add (pattern: string, start: number): void {
    this.remove(pattern)
    const entry = { start }
    this.#starts.set(pattern, entry)
    this.#index.add(pattern, entry)
  }

  remove (pattern: string): void {
    const entry = this.#starts.get(pattern)
    if (entry === undefined) return
    this.#starts.delete(pattern)
    this.#index.remove(pattern, entry)
  }

  /** Reads from `from` instead; only while nothing was sent. */
  rewind (from: number): void {
    if (!this.rewindable) throw new Error('a replay that sent events cannot start earlier')
    this.#position = from - 1
    // Reading had begun: start over from the new place.
    this.#closeCursor()
  }

  #closeCursor (): void {
    this.#cursor?.close()
    this.#cursor = undefined
  }

  /** Takes a slot (waiting for one when all are taken), then reads. */
  start (): void {
    if (this.#state !== 'waiting') return
    this.#state = 'reading'
    this.#run().catch(() => { this.#fail('unavailable') })
  }

  stop (): void {
    this.#state = 'stopped'
    this.#cursor?.close()
    this.#slot?.release()
    this.#slot = undefined
  }

  async #run (): Promise<void> {
    const { history, slots } = this.#host
    while (this.#state === 'reading') {
      if (this.#slot === undefined) {
        const slot = this.#slot = slots.acquire()
        await slot.taken
        if (this.#state !== 'reading') return
      }
      if (!this.#target.hasRoom) {
        // The client has its window full: the slot goes to others meanwhile,
        // so that clients that stop acking cannot hold every slot; and while
        // others wait, so does the reader, so that the log's readers (stream
        // consumers, and their files on the broker) stay within the cap.
        if (slots.waiting > 0) this.#closeCursor()
        this.#slot.release()
        this.#slot = undefined
        if (!await this.#target.whenRoom()) return this.stop()
        continue
      }
      // Caught up already (an idle history, or one read by an earlier pass).
      if (this.#position >= history.head) return this.#done()
      // Reads resolve in microtasks while the history has data: a long scan
      // of events the client does not want would hold every other socket's
      // writes, heartbeats and answers until its end.
      if (++this.#readsInTurn >= READS_PER_TURN) {
        this.#readsInTurn = 0
        await new Promise((resolve) => setImmediate(resolve))
        continue
      }
      const message = await this.#read()
      if (message === undefined || this.#state !== 'reading') continue
      const offset = message.offset as number
      // A gap: retention dropped what was there, unless the log's offsets are not contiguous (RabbitMQ's).
      if (offset > this.#position + 1 && !await history.retains(this.#position + 1)) return this.#fail('truncated')
      this.#position = offset
      if (!('skipped' in message) && this.#wanted(message)) this.#send(message)
      if (offset >= history.head) return this.#done()
    }
  }

  /** The next message after the position, or undefined when the replay was rewound or stopped meanwhile. */
  async #read (): Promise<BusMessage | SkippedMessage | undefined> {
    const cursor = this.#cursor ??= this.#host.history.read(this.#position + 1)
    let message: BusMessage | SkippedMessage
    try {
      message = await cursor.next()
    } catch (err) {
      if (this.#cursor !== cursor || this.#state !== 'reading') return undefined
      throw err
    }
    if (this.#cursor !== cursor || (message.offset as number) <= this.#position) return undefined
    return message
  }

  #wanted (message: BusMessage): boolean {
    // The plugin's own messages between instances travel the history too; `#` matches them, no client may see them.
    if (message.topic.startsWith(CONTROL_PREFIX)) return false
    let wanted = false
    const offset = message.offset as number
    this.#index.match(message.topic, (entry) => { if (offset > entry.start) wanted = true })
    return wanted
  }

  #send (message: BusMessage): void {
    const { encodeFailed, history } = this.#host
    const make = (encoded?: (bytes: number) => void): OutboundEvent => new OutboundEvent(message, encodeFailed, history.format(message.offset as number), encoded)
    // A message the history keeps in memory shares one event, frames and all, with every replay of it; one read from the broker's stream has none.
    const event = retainedRoom(message)?.event(make) ?? make()
    if (!event.encodes(this.#target.format)) return
    this.#sent++
    this.#target.replayed(event)
  }

  #done (): void {
    const position = this.#position
    this.stop()
    this.#target.caughtUp(position)
  }

  #fail (reason: 'truncated' | 'unavailable'): void {
    if (this.#state === 'stopped') return
    this.stop()
    this.#target.failed(reason)
  }
}

/** One replay's place in the cap: taken once `taken` resolves; `release` gives it back, or leaves the queue. */
export interface Slot {
  readonly taken: Promise<void>
  release (): void
}

/** The cap on replays reading at once on an instance (`history.maxReplays`); the rest wait in arrival order. */
export class ReplaySlots {
  readonly #max: number
  #free: number
  readonly #waiting = new Set<() => void>()

  constructor (max: number) {
    this.#max = max
    this.#free = max
  }

  /** Replays holding a slot: reading, or about to. */
  get reading (): number {
    return this.#max - this.#free
  }

  /** Replays waiting for a slot. */
  get waiting (): number {
    return this.#waiting.size
  }

  acquire (): Slot {
    let held = false
    let done = false
    let grant: () => void = () => {}
    const taken = new Promise<void>((resolve) => {
      grant = () => {
        held = true
        resolve()
      }
    })
    if (this.#free > 0) {
      this.#free--
      grant()
    } else {
      this.#waiting.add(grant)
    }
    return {
      taken,
      release: () => {
        if (done) return
        done = true
        if (held) this.#handOn()
        else this.#waiting.delete(grant)
      }
    }
  }

  #handOn (): void {
    const next = this.#waiting.values().next()
    if (next.done === true) {
      this.#free++
      return
    }
    this.#waiting.delete(next.value)
    next.value()
  }
}
