import { Replay, type ReplayHost, type ReplayTarget } from './replay.js'
import type { OutboundEvent } from './codec.js'
import type { OutboundStream } from './outbound.js'

// One connection's place in the history (history on; docs/protocol.md
// section 6). Everything it is sent, live or replayed, goes out in strictly
// increasing offset order, so one number, the last offset sent, tells what
// the client has and keeps the seam between replay and live exact. While a
// replay runs, live events are left to it: it reads them from the history
// in their turn.

/** How long a `since` may be ahead of what this instance has seen (its live path lags the others' a little). */
const AHEAD_WAIT_MS = 5000
const AHEAD_POLL_MS = 20

/** The answer to one `sub` (`ok` fields), or why its `since` is refused. */
export interface Resumed { recovered?: boolean, pos?: string }

/** What a subscription in progress has to be finished or abandoned with. */
export interface Resuming {
  /** After the subscription is in place: the `ok` fields. Rejects when the history cannot be asked. */
  finish (): Promise<Resumed>
  /** The subscription failed: the pattern takes no part in the replay. */
  abandon (): void
}

export interface ResumeConnection {
  readonly stream: OutboundStream
  readonly format: ReplayTarget['format']
  /** A replay cannot go on (the client is to resume again). */
  failed: ReplayTarget['failed']
  /** Patterns the connection holds (the one being subscribed included, once it is in place). */
  patterns (): string[]
}

export class Resume {
  readonly #host: ReplayHost
  readonly #connection: ResumeConnection
  /** Offset of the last event sent (pushed to the stream), replayed or live. */
  #lastOffset = -1
  #replay: Replay | undefined

  constructor (host: ReplayHost, connection: ResumeConnection) {
    this.#host = host
    this.#connection = connection
  }

  /** Offset of the last event the client acknowledged, for a 4008's reason; undefined before any. */
  get ackedPos (): string | undefined {
    const offset = this.#connection.stream.ackedOffset
    return offset < 0 ? undefined : this.#host.history.format(offset)
  }

  /** A live event for this connection: sent unless a replay will read it, or it was sent already. */
  live (event: OutboundEvent): void {
    if (this.#replay !== undefined || event.offset <= this.#lastOffset) return
    this.#lastOffset = event.offset
    this.#connection.stream.push(event)
  }

  /**
   * Before `pattern` is put in place for the connection: checks `since` and,
   * when events after it are to be replayed, stops live delivery to the
   * connection at once (the replay reads those events instead), so that none
   * slips past between now and the `ok`.
   */
  async subscribing (pattern: string, since: string | undefined): Promise<Resuming | { refused: string }> {
    const { history } = this.#host
    if (since === undefined) {
      this.#replay?.add(pattern, history.head)
      return { finish: async () => this.#positionAnswer({}), abandon: () => this.#replay?.remove(pattern) }
    }
    const offset = history.parse(since)
    if (offset === undefined) return { refused: 'since is not a position of this server\'s history' }
    if (offset > history.head && !await this.#headReaches(offset)) {
      return { refused: 'since is ahead of every event this server has seen' }
    }
    return this.#resumeFrom(pattern, offset)
  }

  /** The connection's requests are all answered: a replay they set up may begin (it joins every `sub` of a burst). */
  requestsIdle (): void {
    this.#replay?.start()
  }

  /** The connection no longer holds `pattern`. */
  unsubscribed (pattern: string): void {
    this.#replay?.remove(pattern)
  }

  stop (): void {
    this.#replay?.stop()
    this.#replay = undefined
  }

  #resumeFrom (pattern: string, since: number): Resuming {
    const { history } = this.#host
    const replay = this.#replay
    if (replay !== undefined) {
      if (since >= replay.position) {
        replay.add(pattern, since)
        return this.#joined(pattern, true)
      }
      if (!replay.rewindable) {
        replay.add(pattern, replay.position)
        return this.#joined(pattern, false)
      }
      // Nothing sent yet: the whole replay starts from the older position.
      replay.rewind(since + 1)
      replay.add(pattern, since)
      return this.#checked(pattern, since, replay)
    }
    // Events after `since` went out already: going back would break the order.
    if (since < this.#lastOffset) return this.#joined(pattern, false)
    if (since >= history.head) {
      this.#lastOffset = since
      return this.#joined(pattern, true)
    }
    const started = new Replay(this.#host, this.#target(), since + 1)
    this.#replay = started
    // Live up to now: whatever of theirs the live path took by `head` was sent, so they go on from there.
    for (const held of this.#connection.patterns()) started.add(held, history.head)
    started.add(pattern, since)
    return this.#checked(pattern, since, started)
  }

  /** A replay from `since`, once retention is known to still hold the event after it. */
  #checked (pattern: string, since: number, replay: Replay): Resuming {
    // Live events are left to the replay from here on; should `since` be gone, it reads from here instead.
    const here = this.#host.history.head
    return {
      finish: async () => {
        if (await this.#host.history.oldest() <= since + 1) return { recovered: true }
        // Gone: this pattern is live from here on; the others keep their starts.
        replay.add(pattern, Math.max(here, replay.position))
        if (replay.rewindable) replay.rewind(replay.earliestStart + 1)
        return { recovered: false }
      },
      abandon: () => { replay.remove(pattern) }
    }
  }

  #joined (pattern: string, recovered: boolean): Resuming {
    return {
      finish: async () => this.#positionAnswer({ recovered }),
      abandon: () => { this.#replay?.remove(pattern) }
    }
  }

  /** Adds the `pos` a client may resume from, when everything up to it is on its way. */
  #positionAnswer (answer: { recovered?: boolean }): Resumed {
    const offset = Math.max(this.#lastOffset, this.#host.history.head)
    if (this.#replay !== undefined || !this.#connection.stream.idle || offset < 0) return answer
    return { ...answer, pos: this.#host.history.format(offset) }
  }

  #target (): ReplayTarget {
    const connection = this.#connection
    const { stream } = connection
    return {
      format: connection.format,
      get hasRoom () { return stream.hasRoom },
      whenRoom: () => stream.whenRoom(),
      failed: (reason) => {
        this.#replay = undefined
        connection.failed(reason)
      },
      replayed: (event) => {
        this.#lastOffset = event.offset
        stream.push(event)
      },
      caughtUp: (offset) => {
        this.#replay = undefined
        if (offset > this.#lastOffset) this.#lastOffset = offset
      }
    }
  }

  /** Waits, bounded, for this instance's live path to reach `offset` (another instance issued it a moment ago). */
  async #headReaches (offset: number): Promise<boolean> {
    const until = Date.now() + AHEAD_WAIT_MS
    while (this.#host.history.head < offset) {
      if (Date.now() >= until) return false
      await new Promise((resolve) => setTimeout(resolve, AHEAD_POLL_MS))
    }
    return true
  }
}
