import type { EventLimits } from '../publish.js'

// The seam between `publish` and the instances' sockets. Two implementations:
// `memory` (in-process, one instance) and `amqp` (RabbitMQ, many instances).
// Both must behave the same to a client; test/bus-contract.test.ts holds them to it.

/** One event as it travels between instances. */
export interface BusMessage {
  /** Unique id assigned by `publish`. */
  id: string
  /** Concrete topic (no wildcards); the AMQP routing key. */
  topic: string
  /** Epoch milliseconds at publish. */
  time: number
  /** The event's `data`, encoded once as UTF-8 JSON at publish. */
  payload: Buffer
}

export type BusState = 'up' | 'connecting' | 'down' | 'closed'

export interface BusHealth {
  kind: 'memory' | 'amqp'
  state: BusState
  /** Publishes waiting for the broker to come back (amqp only). */
  buffered: number
  /** Publishes sent and not yet confirmed (amqp only). */
  unconfirmed: number
  /** The broker blocks this instance's publishing connection (a resource alarm); delivery goes on (amqp only). */
  blocked?: boolean
  /** Last connection error message, if any. */
  lastError?: string
}

/** Called for every message routed to this instance. Enqueueing is synchronous, so the bus may ack once it returns. */
export interface Deliver {
  (message: BusMessage): void
  /** What a message from outside this process (the broker) must meet to be delivered; without it, the default limits. */
  readonly limits?: EventLimits
  /** Told of each message from outside that was dropped as malformed (the bus has logged it). */
  readonly dropped?: (reason: string) => void
}

export interface Bus {
  readonly kind: 'memory' | 'amqp'
  /** Connects and starts consuming; `deliver` receives every message matching a bound pattern. */
  start (deliver: Deliver): Promise<void>
  /** Resolves once the message is durably accepted (broker confirm); rejects with a typed error otherwise. */
  publish (message: BusMessage): Promise<void>
  /**
   * Routes messages whose topic matches `pattern` to this instance. Called once per pattern (reference counting is the caller's).
   * Resolves only once the routing is in place; rejects with FST_EVSOCK_BROKER_UNAVAILABLE when it could not be made in time.
   */
  bind (pattern: string): Promise<void>
  /** Stops routing `pattern` to this instance. */
  unbind (pattern: string): Promise<void>
  health (): BusHealth
  /** Stops consuming, waits for outstanding confirms, releases every resource. */
  close (): Promise<void>
}
