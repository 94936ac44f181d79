import { performance } from 'node:perf_hooks'
import type { FastifyError, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import type { Counter, Histogram, Registry } from 'prom-client'
import { BadOptionError } from './errors.js'
import type { Bus, BusMessage, BusState } from './bus/types.js'
import type { EventSocketStats } from './hub.js'
import type { MetricsRegistry, ResolvedMetricsOptions } from './metrics-options.js'

// Prometheus metrics (docs/metrics.md) with prom-client, an optional peer
// dependency loaded only when the `metrics` option is on. The places where
// things happen call the methods of `Metrics`, one line each; what the hub
// and the bus already count (connections, pending, broker state) is read when
// the registry is scraped. Nothing here is exported in terms of prom-client's
// types, so that the plugin's declarations compile without it.

/** The content type of `app.eventSocket.metrics()`'s text: Prometheus text format 0.0.4, prom-client's. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

/** What a scrape reads: the hub's `stats()`, broker health included. */
export interface MetricsSource {
  stats (): EventSocketStats
}

type OnError = (request: FastifyRequest, reply: FastifyReply, error: FastifyError, done: HookHandlerDoneFunction) => void

/** The instrumentation points; absent (undefined) when metrics are off. */
export interface Metrics {
  /** Hooks of the plugin's route: its `onError` counts refused handshakes. */
  readonly routeHooks: { onError: OnError }
  /** Starts reading gauges from the hub once it exists. */
  watch (source: MetricsSource): void
  /** `bus.publish(message)`, timed from the call to the confirm. */
  timedPublish (bus: Bus, message: BusMessage): Promise<void>
  published (): void
  /** An event came from the bus; returns the time it came, for `fannedOut`. */
  received (): number
  /** The event received at `at` was handed to its subscribers; `flushing`: some socket has frames to write this turn. */
  fannedOut (at: number, flushing: boolean): void
  /** The flush queue wrote this turn's frames. */
  readonly flushed: () => void
  /** Event frames were written to one socket. */
  written (count: number): void
  dropped (cause: DropCause, count?: number): void
  /** A connection's window filled: an event waits behind it. */
  stalled (): void
  /** A connection is closed with 4008; `discarded` events waited behind its window. */
  slowConsumer (discarded: number): void
  text (): Promise<string>
  /** Takes the metrics out of an app's registry (the plugin's own is simply dropped). */
  close (): void
}

const DROP_CAUSES = ['malformed', 'unencodable', 'slow_consumer'] as const
export type DropCause = typeof DROP_CAUSES[number]

type PromClient = typeof import('prom-client')

/**
 * Loads prom-client, or fails registration saying to install it. `load` is the import, replaceable in tests;
 * typed `unknown` so that these declarations name nothing of prom-client (an app without it compiles them).
 */
export async function loadPromClient (load: () => Promise<unknown> = () => import('prom-client')): Promise<unknown> {
  try {
    return await load()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw err
    throw new BadOptionError('metrics', `needs the prom-client package, which is not installed: npm install prom-client (${(err as Error).message})`)
  }
}

export async function createMetrics (options: ResolvedMetricsOptions): Promise<Metrics> {
  const client = await loadPromClient() as PromClient
  const registry = (options.registry ?? new client.Registry()) as Registry
  // prom-client's own error ("A metric with the name ... has already been registered") would not say why.
  if (registry.getSingleMetric(PROBE_NAME) !== undefined) {
    throw new BadOptionError('metrics.registry', 'already holds the evsock_ metrics of another instance of this plugin; give each instance a registry of its own, or none')
  }
  return new PromMetrics(client, registry, options.registry)
}

const PROBE_NAME = 'evsock_connections'
const BUS_STATES: readonly BusState[] = ['up', 'connecting', 'down', 'closed']
// Seconds. A confirm takes a round trip to RabbitMQ and its fsync when the queue is durable.
const CONFIRM_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
// From the bus's hand-over to the end of the turn's writes: mostly the fan-out's own work.
const DELIVERY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]

class PromMetrics implements Metrics {
  readonly #registry: Registry
  readonly #appRegistry: MetricsRegistry | undefined
  readonly #names: string[] = []
  #source: MetricsSource | undefined
  readonly #published: Counter
  readonly #received: Counter
  readonly #dropped: Counter<'cause'>
  readonly #stalls: Counter
  readonly #slowCloses: Counter
  readonly #refused: Counter<'code' | 'status'>
  readonly #confirms: Histogram
  readonly #delivery: Histogram
  /** Frames written since the last scrape: one socket write is too frequent for a prom-client call (each allocates). */
  #written = 0
  /** Receipt times of the events whose frames this turn's flush writes. */
  readonly #awaitingFlush: number[] = []

  constructor (client: PromClient, registry: Registry, appRegistry: MetricsRegistry | undefined) {
    this.#registry = registry
    this.#appRegistry = appRegistry
    const registers = [registry]
    // prom-client calls `collect` with the metric as `this`: the hub is reached through this closure.
    const source = (): MetricsSource | undefined => this.#source
    const counter = <L extends string = never>(name: string, help: string, labelNames: L[] = [], collect?: (this: Counter<L>) => void): Counter<L> =>
      this.#named(name, () => new client.Counter<L>({ name, help, labelNames, registers, ...(collect === undefined ? {} : { collect }) }))
    const gauge = (name: string, help: string, read: (stats: EventSocketStats) => number): void => {
      this.#named(name, () => new client.Gauge({ name, help, registers, collect () { const stats = source()?.stats(); this.set(stats === undefined ? 0 : read(stats)) } }))
    }
    const histogram = (name: string, help: string, buckets: number[]): Histogram =>
      this.#named(name, () => new client.Histogram({ name, help, buckets, registers }))

    gauge(PROBE_NAME, 'Open WebSocket connections.', (stats) => stats.connections)
    gauge('evsock_subscriptions', 'Subscriptions held, summed over connections.', (stats) => stats.subscriptions)
    gauge('evsock_pending_events', 'Events waiting behind full ack windows, summed over connections.', (stats) => stats.pending)
    gauge('evsock_broker_buffered_publishes', 'Publishes waiting in the outage buffer for the broker to come back.', (stats) => stats.broker.buffered)
    this.#refused = counter('evsock_handshakes_refused_total', 'WebSocket handshakes refused before the upgrade, by error code and HTTP status.', ['code', 'status'])
    this.#published = counter('evsock_events_published_total', 'Events this instance published (the bus accepted them).')
    this.#received = counter('evsock_events_received_total', 'Events the bus delivered to this instance.')
    const written = (): number => { const count = this.#written; this.#written = 0; return count }
    counter('evsock_events_delivered_total', 'Event frames written to sockets.', [], function () { this.inc(written()) })
    this.#dropped = counter('evsock_events_dropped_total', 'Events dropped, by cause: malformed (a bus message that is not an event), unencodable (per format), slow_consumer (queued behind the window of a connection closed with 4008).', ['cause'])
    this.#stalls = counter('evsock_window_stalls_total', 'Times a connection\'s ack window filled, so that an event had to wait behind it.')
    this.#slowCloses = counter('evsock_slow_consumer_closes_total', 'Connections closed with 4008 (slow consumer).')
    for (const cause of DROP_CAUSES) this.#dropped.inc({ cause }, 0)
    let reconnects = 0
    counter('evsock_broker_reconnects_total', 'Times the bus came back up after its connection was lost.', [], function () {
      const now = source()?.stats().broker.reconnects ?? reconnects
      this.inc(now - reconnects)
      reconnects = now
    })
    this.#named('evsock_broker_state', (name) => new client.Gauge<'state'>({
      name,
      help: 'The bus\'s state: 1 for the current one (up, connecting, down, closed), 0 for the others.',
      labelNames: ['state'],
      registers,
      collect () {
        const state = source()?.stats().broker.state
        for (const each of BUS_STATES) this.set({ state: each }, each === state ? 1 : 0)
      }
    }))
    this.#confirms = histogram('evsock_publish_confirm_seconds', 'From a publish handed to the bus to its confirm (RabbitMQ: the publisher confirm), for publishes that resolved.', CONFIRM_BUCKETS)
    this.#delivery = histogram('evsock_delivery_seconds', 'From the bus handing this instance an event to the end of the turn that wrote its frames to every socket with window room.', DELIVERY_BUCKETS)
  }

  /** Every metric is made through here, so that `close` can take each out of the app's registry. */
  #named<M> (name: string, make: (name: string) => M): M {
    this.#names.push(name)
    return make(name)
  }

  readonly routeHooks = {
    onError: (request: FastifyRequest, reply: FastifyReply, error: FastifyError, done: HookHandlerDoneFunction): void => {
      // Only upgrade requests are handshakes; a plain GET of the path gets 426 and is not counted.
      if (request.ws) {
        const code = typeof error.code === 'string' && error.code.startsWith('FST_') ? error.code : 'other'
        this.#refused.inc({ code, status: String(error.statusCode ?? 500) })
      }
      done()
    }
  }

  watch (source: MetricsSource): void {
    this.#source = source
  }

  async timedPublish (bus: Bus, message: BusMessage): Promise<void> {
    const start = performance.now()
    await bus.publish(message)
    this.#confirms.observe((performance.now() - start) / 1000)
  }

  published (): void {
    this.#published.inc()
  }

  received (): number {
    this.#received.inc()
    return performance.now()
  }

  fannedOut (at: number, flushing: boolean): void {
    // Nothing to write this turn (no receiver, or every one behind a full window): no socket write to time.
    if (flushing) this.#awaitingFlush.push(at)
  }

  readonly flushed = (): void => {
    const waiting = this.#awaitingFlush
    if (waiting.length === 0) return
    const now = performance.now()
    for (const at of waiting) this.#delivery.observe((now - at) / 1000)
    waiting.length = 0
  }

  written (count: number): void {
    this.#written += count
  }

  dropped (cause: DropCause, count = 1): void {
    this.#dropped.inc({ cause }, count)
  }

  stalled (): void {
    this.#stalls.inc()
  }

  slowConsumer (discarded: number): void {
    this.#slowCloses.inc()
    if (discarded > 0) this.dropped('slow_consumer', discarded)
  }

  text (): Promise<string> {
    return this.#registry.metrics()
  }

  close (): void {
    if (this.#appRegistry === undefined) return
    for (const name of this.#names) this.#appRegistry.removeSingleMetric(name)
  }
}
