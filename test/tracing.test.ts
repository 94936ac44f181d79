import t, { type Test } from 'tap'
import { context, propagation, SpanKind, trace } from '@opentelemetry/api'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-node'
import type { FastifyInstance } from 'fastify'
import { BadOptionError, type Bus, type EventSocketOptions } from '../lib/index.js'
import { MemoryBus } from '../lib/bus/memory.js'
import { requireBroker } from './helpers/broker.js'
import { publishForeign } from './helpers/foreign.js'
import { clusterOptions } from './helpers/instance.js'
import { startServer, TestClient, type Message, type TestServer } from './helpers/server.js'
import { waitFor } from './helpers/wait.js'

// A trace runs from the route handler that publishes to the socket writes of
// the instance that delivers: the app's SDK (registered here as an app
// would, with the W3C propagator) sees the handler's span, the plugin's
// PRODUCER span under it, and the CONSUMER span of the delivery under that.

const exporter = new InMemorySpanExporter()
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
provider.register({ propagator: new W3CTraceContextPropagator() })
t.teardown(async () => {
  await provider.shutdown()
  trace.disable()
  propagation.disable()
  context.disable()
})

const appTracer = trace.getTracer('the app')

/** Adds POST /publish/:topic, whose handler publishes its body inside a span of its own, as an instrumented app's handler runs. */
function publishRoute (app: FastifyInstance): void {
  app.post<{ Params: { topic: string } }>('/publish/:topic', async (request) => {
    return await appTracer.startActiveSpan('handler', async (span) => {
      try {
        return await app.publish(request.params.topic, request.body)
      } finally {
        span.end()
      }
    })
  })
}

async function publishThrough (server: TestServer, topic: string, data: unknown): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${server.port}/publish/${topic}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(data) })
  if (response.status !== 200) throw new Error(`publish route answered ${response.status}: ${await response.text()}`)
  return ((await response.json()) as { id: string }).id
}

/** A client of `server` holding `user.u1.#`. */
async function subscriber (t: Test, server: TestServer): Promise<TestClient> {
  const client = new TestClient(server.url, { token: server.sign({ sub: 'u1' }) })
  t.teardown(() => client.close())
  await client.next((message) => message.op === 'hello')
  client.send({ op: 'sub', id: 1, topic: 'user.u1.#' })
  await client.next((message) => message.op === 'ok' && message.id === 1)
  return client
}

async function eventFor (client: TestClient, id: string): Promise<Message> {
  return await client.next((message) => message.op === 'event' && message.id === id, { timeout: 10_000 })
}

/** The finished span `name`; for the plugin's spans, the one of `topic` (the app's own have no topic). */
async function span (name: string, topic?: string): Promise<ReadableSpan> {
  let found: ReadableSpan | undefined
  const named = (each: ReadableSpan): boolean => each.name === name && (topic === undefined || each.attributes['messaging.destination.name'] === topic)
  await waitFor(() => (found = exporter.getFinishedSpans().find(named)) !== undefined, {
    what: `the span ${name} of ${topic ?? 'the app'}`,
    detail: () => exporter.getFinishedSpans().map((each) => `${each.name} ${String(each.attributes['messaging.destination.name'])}`).join(', ')
  })
  return found as ReadableSpan
}

/** Asserts the chain handler -> PRODUCER -> CONSUMER in one trace, for an event on `topic`. */
async function assertTraced (t: Test, topic: string): Promise<void> {
  const handler = await span('handler')
  const producer = await span('evsock publish', topic)
  const consumer = await span('evsock deliver', topic)
  const traceId = handler.spanContext().traceId
  t.equal(producer.kind, SpanKind.PRODUCER)
  t.equal(consumer.kind, SpanKind.CONSUMER)
  t.equal(producer.spanContext().traceId, traceId, 'the publish span is in the handler\'s trace')
  t.equal(producer.parentSpanContext?.spanId, handler.spanContext().spanId, 'the publish span\'s parent is the handler\'s span')
  t.equal(consumer.spanContext().traceId, traceId, 'the delivery span is in the handler\'s trace')
  t.equal(consumer.parentSpanContext?.spanId, producer.spanContext().spanId, 'the delivery span\'s parent is the publish span')
  t.equal(consumer.attributes['messaging.destination.name'], topic)
}

/** The event frame holds what the protocol says, and no trace context. */
function assertPlainEvent (t: Test, event: Message, data: unknown): void {
  t.same(Object.keys(event).filter((key) => key !== 'pos').sort(), ['data', 'id', 'op', 'seq', 'topic'], 'no trace field reaches the client')
  t.same(event.data, data, 'the data untouched')
}

t.beforeEach(() => { exporter.reset() })

t.test('on the in-process bus the delivery span continues the trace of the route handler that published', async (t) => {
  const server = await startServer(t, {}, publishRoute)
  const client = await subscriber(t, server)
  const data = { n: 1 }
  const id = await publishThrough(server, 'user.u1.order', data)
  assertPlainEvent(t, await eventFor(client, id), data)
  await assertTraced(t, 'user.u1.order')
})

for (const history of [true, false]) {
  t.test(`on RabbitMQ (history ${history ? 'on' : 'off'}) the instance that delivers continues the trace of the one that published`, async (t) => {
    if (!await requireBroker(t)) return
    const options = clusterOptions(t, { history })
    const publisher = await startServer(t, options, publishRoute)
    const deliverer = await startServer(t, options)
    const client = await subscriber(t, deliverer)
    const data = { n: 2 }
    const id = await publishThrough(publisher, 'user.u1.order', data)
    assertPlainEvent(t, await eventFor(client, id), data)
    await assertTraced(t, 'user.u1.order')
  })
}

t.test('foreign messages with garbage trace headers are delivered as usual, each in a trace of its own', async (t) => {
  if (!await requireBroker(t)) return
  const options = clusterOptions(t, { history: false })
  const server = await startServer(t, options)
  const client = await subscriber(t, server)
  const garbage: Array<Record<string, unknown>> = [
    { traceparent: 'not a traceparent', tracestate: 'a=b' },
    { traceparent: 42, tracestate: Buffer.from('x') },
    { traceparent: `00-${'1'.repeat(32)}-${'2'.repeat(16)}-01${'x'.repeat(10_000)}` },
    // Well formed, but the all-zero trace id is invalid.
    { traceparent: `00-${'0'.repeat(32)}-${'0'.repeat(16)}-01` },
    { traceparent: '' }
  ]
  const topics = garbage.map((_, i) => `user.u1.foreign${i}`)
  await publishForeign(options.broker?.exchange as string, [...garbage.map((headers, i) => ({
    what: `garbage ${i}`, routingKey: topics[i] as string, body: Buffer.from(JSON.stringify({ i })), properties: { headers }
  })), { what: 'sentinel', routingKey: 'user.u1.sentinel', body: Buffer.from('{}') }])
  await client.next((message) => message.op === 'event' && message.topic === 'user.u1.sentinel', { timeout: 10_000 })
  const events = client.messages.filter((message) => message.op === 'event')
  t.same(events.map((event) => event.topic), [...topics, 'user.u1.sentinel'], 'every message delivered, in order')
  events.slice(0, -1).forEach((event, i) => { assertPlainEvent(t, event, { i }) })
  const traceIds = new Set<string>()
  for (const topic of topics) {
    const delivery = await span('evsock deliver', topic)
    t.equal(delivery.parentSpanContext, undefined, `${topic}: no parent`)
    traceIds.add(delivery.spanContext().traceId)
  }
  t.equal(traceIds.size, topics.length, 'each in a new trace')
})

t.test('a bus that does not carry the trace context delivers all the same, in a trace of its own', async (t) => {
  // As a third-party bus written before `trace` existed: it copies the fields it knows.
  const inner = new MemoryBus()
  const forgetful: Bus = {
    kind: 'forgetful',
    start: async (deliver) => { await inner.start(deliver) },
    publish: async ({ id, topic, time, payload }) => { await inner.publish({ id, topic, time, payload }) },
    bind: async (pattern) => { await inner.bind(pattern) },
    unbind: async (pattern) => { await inner.unbind(pattern) },
    health: () => ({ ...inner.health(), kind: 'forgetful' }),
    close: async () => { await inner.close() }
  }
  const server = await startServer(t, { bus: forgetful }, publishRoute)
  const client = await subscriber(t, server)
  const id = await publishThrough(server, 'user.u1.plain', { n: 3 })
  assertPlainEvent(t, await eventFor(client, id), { n: 3 })
  const delivery = await span('evsock deliver', 'user.u1.plain')
  t.equal(delivery.parentSpanContext, undefined, 'no parent')
  t.not(delivery.spanContext().traceId, (await span('handler')).spanContext().traceId)
})

t.test('tracing: false carries no trace context and makes no span', async (t) => {
  const seen: unknown[] = []
  const inner = new MemoryBus()
  const server = await startServer(t, { tracing: false, bus: Object.assign(inner, { publish: wrapPublish(inner, seen) }) }, publishRoute)
  const client = await subscriber(t, server)
  const id = await publishThrough(server, 'user.u1.off', { n: 4 })
  assertPlainEvent(t, await eventFor(client, id), { n: 4 })
  await span('handler')
  t.same(exporter.getFinishedSpans().map((each) => each.name), ['handler'], 'only the app\'s own span')
  t.same(seen, [undefined], 'the bus was given no trace context')
})

function wrapPublish (bus: MemoryBus, seen: unknown[]): Bus['publish'] {
  const publish = bus.publish.bind(bus)
  return async (message) => {
    seen.push(message.trace)
    await publish(message)
  }
}

t.test('tracing must be a boolean', async (t) => {
  await t.rejects(startServer(t, { tracing: 'yes' } as unknown as EventSocketOptions), new BadOptionError('tracing', 'must be true or false'))
})
