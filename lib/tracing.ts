import type { Attributes, Span, Tracer } from '@opentelemetry/api'
import type { FastifyBaseLogger } from 'fastify'
import { CONTROL_PREFIX } from './topics.js'
import { traceContext, type BusMessage, type Deliver, type TraceContext } from './bus/types.js'
import type { FlushQueue, Flushable } from './flush-queue.js'

// Trace context from the route handler that publishes to the socket writes
// on every instance that delivers (README, "Tracing"). Only the global API of
// @opentelemetry/api is used: the app's SDK picks the propagator, sampler and
// exporter. The package is an optional peer, loaded here by a dynamic import
// at registration and never otherwise, so that an app without it loads
// nothing and its hot path is untouched (the plugin then starts the bus with
// the hub's own `deliver` and publishes straight to the bus). The types
// imported above are erased: no declaration this module exports names them.

type Api = typeof import('@opentelemetry/api')

/** Spans around the two ends of the bus. */
export interface Tracing {
  /** Publishes `message` inside a PRODUCER span, with that span's context in `message.trace`. */
  publish (message: BusMessage, send: (message: BusMessage) => Promise<void>): Promise<void>
  /**
   * `deliver`, with a CONSUMER span per event whose parent is the context the
   * event carries; the span ends once this turn's socket writes are done.
   */
  traced (deliver: Deliver, flushes: FlushQueue): Deliver
}

/** The tracing of this instance, or undefined when the app has not installed @opentelemetry/api. */
export async function loadTracing (busKind: string, log: FastifyBaseLogger): Promise<Tracing | undefined> {
  let api: Api
  try {
    api = await import('@opentelemetry/api')
  } catch (err) {
    log.debug({ err }, 'event socket: @opentelemetry/api is not installed; no trace context is carried')
    return undefined
  }
  return new OpenTelemetryTracing(api, busKind)
}

const TRACER_NAME = 'fastify-event-socket'

class OpenTelemetryTracing implements Tracing {
  readonly #api: Api
  readonly #tracer: Tracer
  /** The semantic conventions' name of the transport. */
  readonly #system: string

  constructor (api: Api, busKind: string) {
    this.#api = api
    // A proxy until the app registers its provider, whenever it does.
    this.#tracer = api.trace.getTracer(TRACER_NAME)
    this.#system = busKind === 'amqp' ? 'rabbitmq' : busKind
  }

  async publish (message: BusMessage, send: (message: BusMessage) => Promise<void>): Promise<void> {
    const { context, propagation, trace, SpanKind, SpanStatusCode } = this.#api
    const span = this.#tracer.startSpan('evsock publish', { kind: SpanKind.PRODUCER, attributes: this.#attributes(message, 'send') })
    const carrier: Partial<TraceContext> = {}
    propagation.inject(trace.setSpan(context.active(), span), carrier)
    const { traceparent, tracestate } = carrier
    // Nothing injected: no SDK, or a propagator other than W3C Trace Context's.
    if (typeof traceparent === 'string') message.trace = typeof tracestate === 'string' ? { traceparent, tracestate } : { traceparent }
    try {
      await send(message)
    } catch (err) {
      span.recordException(err as Error)
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message })
      throw err
    } finally {
      span.end()
    }
  }

  traced (deliver: Deliver, flushes: FlushQueue): Deliver {
    const traced = (message: BusMessage): void => {
      // The plugin's own messages between instances are no one's trace.
      if (message.topic.startsWith(CONTROL_PREFIX)) {
        deliver(message)
        return
      }
      const span = this.#delivery(message)
      try {
        deliver(message)
      } finally {
        // Behind every stream this event was written to in this turn: they scheduled their flush when it was pushed.
        // A span nobody records (no SDK registered, or not sampled) ends as a no-op: no flush work per event for it.
        // Nothing due this turn (no receiver, every window full): nothing to wait for, and the span must not
        // make the queue look `scheduled`, which metrics read as socket writes this turn.
        if (span.isRecording()) {
          if (flushes.scheduled) flushes.schedule(new SpanEnd(span))
          else span.end()
        }
      }
    }
    return Object.assign(traced, { limits: deliver.limits, dropped: deliver.dropped })
  }

  #delivery (message: BusMessage): Span {
    const { propagation, ROOT_CONTEXT, SpanKind } = this.#api
    // From the root, not the active context: the parent is the publisher's, whatever ran before on this instance.
    let parent = ROOT_CONTEXT
    const carrier = message.trace === undefined ? undefined : carrierOf(message.trace)
    if (carrier !== undefined) {
      try {
        parent = propagation.extract(ROOT_CONTEXT, carrier)
      } catch {
        // Anyone may publish to the exchange: a propagator that throws on a foreign header leaves the span without a parent.
      }
    }
    return this.#tracer.startSpan('evsock deliver', { kind: SpanKind.CONSUMER, attributes: this.#attributes(message, 'process') }, parent)
  }

  #attributes (message: BusMessage, operation: 'send' | 'process'): Attributes {
    return {
      'messaging.system': this.#system,
      'messaging.operation.type': operation,
      'messaging.destination.name': message.topic,
      'messaging.message.id': message.id
    }
  }
}

/**
 * The part of a message's `trace` the propagator is given: strings within
 * the bounds, whatever the bus. A bus of the app's own may hand over what any
 * publisher wrote, and the propagator keeps a tracestate whole in the
 * delivery span's context for as long as the span is kept (a megabyte each).
 */
function carrierOf (trace: unknown): TraceContext | undefined {
  try {
    const { traceparent, tracestate } = trace as Record<keyof TraceContext, unknown>
    return traceContext(traceparent, tracestate)
  } catch {
    // null, or a getter that throws.
    return undefined
  }
}

/** Ends a delivery span when the flush queue gets to it, after the streams written before it. */
class SpanEnd implements Flushable {
  readonly #span: Span

  constructor (span: Span) {
    this.#span = span
  }

  flush (): void {
    this.#span.end()
  }

  flushFailed (): void {
    // Only `end` ran, and threw: the SDK's own fault, which the other streams' writes must not share.
  }
}
