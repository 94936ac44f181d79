import t, { type Test } from 'tap'
import { context, propagation, trace } from '@opentelemetry/api'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor, type ReadableSpan, type SpanProcessor } from '@opentelemetry/sdk-trace-node'
import { MemoryBus } from '../lib/bus/memory.js'
import type { TraceContext } from '../lib/bus/types.js'
import { requireBroker } from './helpers/broker.js'
import { publishForeign } from './helpers/foreign.js'
import { clusterOptions } from './helpers/instance.js'
import { opsBus } from './helpers/ops-bus.js'
import { futureTraceparent, TRACE_ID, traceCases, VALID_PARENT, type TraceCase } from './helpers/ops-trace-cases.js'
import { scrape } from './helpers/prom-text.js'
import { openClient, startServer } from './helpers/server.js'
import { waitFor } from './helpers/wait.js'
import { gc } from './helpers/gc.js'

// Attacks on tracing (lib/tracing.ts) with @opentelemetry/api installed and
// an SDK registered (W3C propagator): foreign AMQP messages whose trace
// headers sit at, just under and over their bounds, are of every other AMQP
// type, or are invalid. Each is delivered in order, in one span that ends,
// with the four documented attributes and nothing else, continuing the
// sender's trace only when its traceparent is valid and within bounds.
// Without an SDK, and without the package: attack-ops-tracing-bare.test.ts.

const exporter = new InMemorySpanExporter()
let started = 0
let ended = 0
const counting: SpanProcessor = {
  onStart: () => { started++ },
  onEnd: () => { ended++ },
  forceFlush: async () => {},
  shutdown: async () => {}
}
const provider = new NodeTracerProvider({ spanProcessors: [counting, new SimpleSpanProcessor(exporter)] })
provider.register({ propagator: new W3CTraceContextPropagator() })
t.teardown(async () => {
  await provider.shutdown()
  for (const api of [trace, propagation, context]) api.disable()
})

const ATTRIBUTES = ['messaging.destination.name', 'messaging.message.id', 'messaging.operation.type', 'messaging.system']

function assertSpan (t: Test, span: ReadableSpan, expected: TraceCase): void {
  t.same(Object.keys(span.attributes).sort(), ATTRIBUTES, `${expected.what}: the four attributes only`)
  t.equal(span.parentSpanContext?.traceId, expected.parent, `${expected.what}: ${expected.parent === undefined ? 'a trace of its own' : 'continues the sender\'s trace'}`)
  const state = span.spanContext().traceState?.serialize()
  t.equal(state, expected.tracestate, `${expected.what}: ${expected.tracestate === undefined ? 'no tracestate' : 'its tracestate'}`)
  t.ok((state ?? '').length <= 512, `${expected.what}: the tracestate kept is within 512 characters`)
}

for (const history of [false, true]) {
  t.test(`history ${history ? 'on' : 'off'}: foreign trace headers at and past their bounds, of every type: each delivered in order, in one span that ends`, async (t) => {
    if (!await requireBroker(t)) return
    exporter.reset()
    const options = clusterOptions(t, { history })
    const server = await startServer(t, options)
    const client = await openClient(t, server)
    client.ackEach()
    await client.subscribe('trace.#')
    const startedBefore = started
    const cases = traceCases()
    await publishForeign(options.broker?.exchange as string, [
      ...cases.map((each, i) => ({ what: each.what, routingKey: `trace.case${i}`, body: Buffer.from(JSON.stringify({ i })), properties: { headers: each.headers } })),
      { what: 'sentinel', routingKey: 'trace.sentinel', body: Buffer.from('{}') }
    ])
    await client.next((message) => message.op === 'event' && message.topic === 'trace.sentinel', { timeout: 10_000 })
    t.same(client.events().map((event) => event.topic), [...cases.map((_, i) => `trace.case${i}`), 'trace.sentinel'], 'every message delivered, in order')
    await waitFor(() => ended === started, { what: 'every span started to end', detail: () => `${started - ended} open` })
    t.equal(started - startedBefore, cases.length + 1, 'one span per message, none more')
    const spans = exporter.getFinishedSpans()
    cases.forEach((expected, i) => {
      const span = spans.find((each) => each.attributes['messaging.destination.name'] === `trace.case${i}`)
      if (span === undefined) t.fail(`${expected.what}: no span`)
      else assertSpan(t, span, expected)
    })
  })
}

/** The heap in use once everything unreachable is collected. */
function heapAfterGc (): number {
  gc()
  gc()
  return process.memoryUsage().heapUsed
}

t.test('a bus of the app\'s own that hands over any `trace` a publisher wrote: delivery goes on, one span each, and no span keeps more than the bounds', async (t) => {
  exporter.reset()
  const bus = opsBus(new MemoryBus())
  const server = await startServer(t, { bus })
  const client = await openClient(t, server)
  client.ackEach()
  await client.subscribe('trace.#')
  const throwing = { get traceparent (): string { throw new Error('a getter that throws') } }
  const shapes: unknown[] = [null, 'a string', 42, [], [VALID_PARENT], { traceparent: [VALID_PARENT, 'x'] }, { traceparent: VALID_PARENT, tracestate: ['a=b', 'c=d'] },
    { traceparent: { toString: () => VALID_PARENT } }, throwing, new Proxy({}, { get: () => { throw new Error('a proxy that throws') } }), { traceparent: futureTraceparent(1 << 20) }]
  const startedBefore = started
  shapes.forEach((shape, i) => { bus.inject({ id: `shape-${i}`, topic: `trace.shape${i}`, time: Date.now(), payload: Buffer.from('{}'), trace: shape as TraceContext }) })
  const { id } = await server.app.publish('trace.sentinel', {})
  await client.next((message) => message.id === id, { timeout: 5000 })
  t.same(client.events().map((event) => event.id), [...shapes.map((_, i) => `shape-${i}`), id], 'every one delivered, in order')
  await waitFor(() => ended === started, { what: 'every span started to end', detail: () => `${started - ended} open` })
  t.equal(started - startedBefore, shapes.length + 2, 'one span per message, and the sentinel\'s two')

  // Each a tracestate of 1 MiB of its own, as a bus parsing each message from the wire would hand over.
  const before = heapAfterGc()
  const count = 64
  for (let i = 0; i < count; i++) {
    const tracestate = Buffer.alloc(1 << 20, `k${i}=v,`).toString()
    bus.inject({ id: `big-${i}`, topic: 'trace.big', time: Date.now(), payload: Buffer.from('{}'), trace: { traceparent: VALID_PARENT, tracestate } })
  }
  await waitFor(() => ended === started, { what: 'the spans of the big ones to end' })
  const retained = heapAfterGc() - before
  const spans = exporter.getFinishedSpans().filter((span) => span.attributes['messaging.destination.name'] === 'trace.big')
  t.equal(spans.length, count, 'their spans are finished, and kept by the exporter')
  t.ok(spans.every((span) => span.parentSpanContext?.traceId === TRACE_ID), 'each continues the sender\'s trace')
  t.ok(retained < 16 * (1 << 20), `the finished spans keep ${Math.round(retained / (1 << 20))} MiB, not a MiB of tracestate each`)
})

t.test('with metrics on, delivery spans do not make evsock_delivery_seconds time events that no socket wrote in their turn; those spans end too', async (t) => {
  const server = await startServer(t, { metrics: true, window: 1 })
  const client = await openClient(t, server)
  await client.subscribe('full.#')
  await server.app.publish('full.x', 1)
  await client.next((message) => message.op === 'event')
  const before = await scrape(server.app)
  // The window is full: these three wait behind it, and no socket writes anything in their turn.
  await Promise.all([2, 3, 4].map((n) => server.app.publish('full.x', n)))
  // Observations are made when the turn's flush runs (a setImmediate queued by the deliveries): this one runs after it.
  await new Promise((resolve) => setImmediate(resolve))
  const after = await scrape(server.app)
  t.equal(after.value('evsock_pending_events'), 3, 'the three wait behind the window')
  t.equal(after.value('evsock_delivery_seconds_count') - before.value('evsock_delivery_seconds_count'), 0, 'none of them is timed (docs/metrics.md), whatever the tracing')
  await waitFor(() => ended === started, { what: 'every span started to end', detail: () => `${started - ended} open` })
  t.pass('their spans ended')
})

t.test('a route handler publishing in the context of a client\'s own trace headers (12 KB of tracestate): the event carries at most 512 characters of it, and the trace goes on', async (t) => {
  if (!await requireBroker(t)) return
  exporter.reset()
  const options = clusterOptions(t, { history: false })
  const server = await startServer(t, options, (app) => {
    // What an app's HTTP instrumentation does with every request's headers: the client's values, whatever they are.
    app.post('/publish', async (request) => await context.with(propagation.extract(context.active(), request.headers), async () => await app.publish('trace.client', request.body)))
  })
  const client = await openClient(t, server)
  client.ackEach()
  await client.subscribe('trace.#')
  const tracestate = Array.from({ length: 3000 }, (_, i) => `m${i % 10}=v`).join(',')
  const response = await fetch(`http://127.0.0.1:${server.port}/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', traceparent: VALID_PARENT, tracestate },
    body: JSON.stringify({ n: 1 })
  })
  t.equal(response.status, 200, 'the publish succeeded')
  const { id } = await response.json() as { id: string }
  await client.next((message) => message.id === id, { timeout: 10_000 })
  await waitFor(() => ended === started, { what: 'every span started to end' })
  const deliver = exporter.getFinishedSpans().find((span) => span.name === 'evsock deliver' && span.attributes['messaging.message.id'] === id)
  t.equal(deliver?.spanContext().traceId, TRACE_ID, 'the delivery continues the client\'s trace')
  t.ok((deliver?.spanContext().traceState?.serialize() ?? '').length <= 512, 'with at most 512 characters of its tracestate')
})
