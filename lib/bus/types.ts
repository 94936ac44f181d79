import type { EventLimits } from '../publish.js'

// The seam between `publish` and the instances' sockets, and a public
// contract: `bus` (EventSocketOptions) takes any object implementing `Bus`.
// The plugin ships `memory` (in-process, one instance) and `amqp` (RabbitMQ,
// many instances); `fastify-event-socket/bus-contract` exports the suite that
// holds every implementation, theirs and yours, to the rules written here.

/** One event as it travels between instances. */
export interface BusMessage {
  /** Unique id assigned by `publish`. */
  id: string
  /**
   * Concrete topic (no wildcards), or a control key under `$evsock.` (the
   * plugin's own messages between instances, such as `$evsock.revoke`).
   */
  topic: string
  /** Epoch milliseconds at publish. */
  time: number
  /** The event's `data`, encoded once as UTF-8 JSON at publish; carried untouched. */
  payload: Buffer
  /**
   * Where the message sits in the bus's history (`Bus.history`): set by a bus
   * that keeps one on every message it delivers or reads back, absent
   * otherwise. Offsets are integers that increase in the history's one total
   * order, the same on every instance.
   */
  offset?: number
  /**
   * The publisher's trace context (W3C Trace Context), set by `publish` when
   * tracing is on (README, "Tracing"). A bus carries it with the message
   * if it can (the built-in buses do); one that leaves it out delivers the
   * message all the same, and its delivery starts a trace of its own.
   */
  trace?: TraceContext
}

/** The W3C Trace Context fields of a message: `traceparent`, and `tracestate` when the publisher's context has one. */
export interface TraceContext {
  traceparent: string
  tracestate?: string
}

// W3C Trace Context's bounds: a tracestate longer than 512 characters may be
// dropped; a traceparent is 55 today, and 256 leaves room for later versions.
const MAX_TRACEPARENT = 256
const MAX_TRACESTATE = 512

/**
 * The trace context in two fields anyone may have written (AMQP headers of a
 * foreign message, a bus of the app's own): strings within the bounds, or
 * nothing. What the propagator cannot parse is ignored there.
 */
export function traceContext (traceparent: unknown, tracestate: unknown): TraceContext | undefined {
  if (typeof traceparent !== 'string' || traceparent.length > MAX_TRACEPARENT) return undefined
  return typeof tracestate === 'string' && tracestate.length <= MAX_TRACESTATE ? { traceparent, tracestate } : { traceparent }
}

/**
 * A bus's retained history of published messages (docs/protocol.md section
 * 6): one totally ordered log, shared by every instance, that live delivery
 * and replay both read. Optional: a bus without it cannot serve the
 * `history` option.
 */
export interface BusHistory {
  /**
   * Offset of the newest message this instance's live path has taken from
   * the log, whether or not a bound pattern matched it (-1 before the
   * first). Every message `deliver` is given afterwards has a greater offset,
   * and the live path hands them over in offset order.
   */
  readonly head: number
  /**
   * Offset of the oldest message still retained (head + 1 when the log is
   * empty). Retention only moves it forward. Rejects with
   * `FST_EVSOCK_BROKER_UNAVAILABLE` when the log cannot be asked in time.
   */
  oldest (): Promise<number>
  /**
   * Whether the message at `offset` (or, where there is none, the first
   * after it) can still be read: `oldest() <= offset`, or answered without
   * asking the log when the bus keeps recent messages itself. Rejects as
   * `oldest` does.
   */
  retains (offset: number): Promise<boolean>
  /** Reads the retained messages from offset `from` on, in offset order, each with its `offset`. */
  read (from: number): HistoryCursor
  /** The client-facing position of `offset`: an opaque string. */
  format (offset: number): string
  /** The offset of a position this history issued, or undefined for any other string. */
  parse (pos: string): number | undefined
}

/**
 * A message of the history that is not an event (a foreign publisher's,
 * dropped by the live path too). A cursor hands it out instead of skipping
 * it, so that its reader's place moves past it: a reader that only saw
 * events would take the hole for retention's, and one whose history ends
 * with such a message would wait for the next event to reach the end.
 */
export interface SkippedMessage {
  readonly offset: number
  /** Why it is not an event. */
  readonly skipped: string
}

/** One reader of the history, paced by its caller. */
export interface HistoryCursor {
  /**
   * The next message (from `from` on; the first may be later than `from`
   * when retention dropped what was there), or what stands at its offset
   * when it is not an event. Waits while the log holds nothing more.
   * Rejects with `FST_EVSOCK_BROKER_UNAVAILABLE` when the log became
   * unreadable, `FST_EVSOCK_CLOSED` after `close`. One call at a time.
   */
  next (): Promise<BusMessage | SkippedMessage>
  /** Releases the reader; a pending `next` rejects with `FST_EVSOCK_CLOSED`. Idempotent. */
  close (): void
}

export type BusState = 'up' | 'connecting' | 'down' | 'closed'

export interface BusHealth {
  /** The bus's `kind`. */
  kind: string
  state: BusState
  /** Publishes waiting for the transport to come back (0 for a bus that never buffers). */
  buffered: number
  /** Publishes sent and not yet confirmed (0 for a bus without confirms). */
  unconfirmed: number
  /** The broker blocks this instance's publishing connection (a resource alarm); delivery goes on (amqp only). */
  blocked?: boolean
  /** Times the transport came back up after it was lost (amqp only; absent for a bus that never reconnects). */
  reconnects?: number
  /** Last connection error message, if any. */
  lastError?: string
}

/**
 * The plugin's delivery callback, passed to `start`. It enqueues
 * synchronously (the message is in the plugin's hands when it returns, so a
 * bus may ack it then) and does not throw; should it throw anyway, the bus
 * must neither crash nor stall: it logs, treats the message as delivered (no
 * redelivery, which would loop) and goes on with the next one. It never
 * rejects a publish: a publish's outcome does not depend on delivery.
 */
export interface Deliver {
  (message: BusMessage): void
  /**
   * What a message from outside this process (a broker anyone may publish
   * to) must meet to be delivered; without it, the default limits. A bus that
   * carries only what this plugin's `publish` produced may ignore it.
   */
  readonly limits?: EventLimits
  /** To be told of each message from outside that the bus dropped as malformed (after logging it). */
  readonly dropped?: (reason: string) => void
}

/**
 * How events travel between instances. Every instance of an app has its own
 * bus object connected to the same transport. The plugin calls `start` once,
 * then `publish`, `bind`, `unbind` and `health` in any interleaving (binds of
 * different patterns run concurrently; the plugin never overlaps two
 * operations on one pattern), then `close` once at shutdown.
 */
export interface Bus {
  /** Names the implementation in `health().broker.kind` and logs (`'memory'`, `'amqp'`, or your own). */
  readonly kind: string
  /**
   * Connects and starts delivering to `deliver`. Resolves once `publish` and
   * `bind` can be used; a rejection fails the plugin's registration.
   */
  start (deliver: Deliver): Promise<void>
  /**
   * Routes `message` to every instance (this one included: the plugin has no
   * local shortcut) whose bus has a bound pattern matching `message.topic`,
   * exactly once each. Resolves once the transport has accepted it for all of
   * them (for RabbitMQ, the publisher confirm); rejects with a typed error
   * (`FST_EVSOCK_BROKER_UNAVAILABLE`, `FST_EVSOCK_PUBLISH_NACKED`,
   * `FST_EVSOCK_CLOSED` after `close`) otherwise, and never resolves without
   * having it. Messages published by one instance reach each instance in
   * the order of the `publish` calls, even when the caller did not wait for
   * one before the next.
   */
  publish (message: BusMessage): Promise<void>
  /**
   * Routes to this instance the messages whose topic matches `pattern`: a
   * canonical pattern (docs/protocol.md section 3) of words, `*` (one word)
   * and `#` (zero or more words), or a control key under `$evsock.` that must
   * be carried like any topic. Called once per pattern while it is wanted
   * (reference counting is the caller's). Resolving means the routing is in
   * place: every message published after that, on any instance, whose topic
   * matches reaches `deliver`. Only matching messages do: a bus whose
   * transport routes more widely (a broker key coarser than the pattern)
   * filters the rest out before `deliver`. Rejects with
   * `FST_EVSOCK_BROKER_UNAVAILABLE` when the routing could not be made in
   * time, `FST_EVSOCK_CLOSED` after `close`.
   */
  bind (pattern: string): Promise<void>
  /**
   * Stops routing `pattern` to this instance; messages matching only it are
   * no longer delivered once it resolves. May resolve before the transport
   * catches up (while disconnected), as long as nothing matching only
   * `pattern` reaches `deliver` afterwards. Resolves (does nothing) after `close`.
   */
  unbind (pattern: string): Promise<void>
  /**
   * The retained history, on a bus that keeps one (both built-in buses do
   * when the `history` option is on). With it, every message given to
   * `deliver` carries its `offset`, and `bind` routes from the log, so that
   * nothing published after it resolves is missed, outages included.
   */
  readonly history?: BusHistory
  /** Synchronous and cheap: called on every health check and stats read. */
  health (): BusHealth
  /**
   * Stops delivering, waits for outstanding confirms, releases every resource
   * (timers, sockets), so that the process can exit. Idempotent; afterwards
   * `health().state` is `'closed'`.
   */
  close (): Promise<void>
}
