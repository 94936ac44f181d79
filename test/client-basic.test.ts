import t, { type Test } from 'tap'
import { WebSocket } from 'ws'
import { buildExample, type Example, type ExampleOptions } from '../example/server.js'
import { connect, type ConnectOptions, type EventSocketClient, type ReceivedEvent } from '../lib/client/index.js'
import type { EventSocketClientError } from '../lib/client/errors.js'
import { waitFor } from './helpers/wait.js'

// The client in Node (on `ws`) against a real listening server: the example
// app, which registers the plugin and can be restarted on the same port.

const SECRET = 'client-test-secret-at-least-32-characters'

async function startExample (t: Test, options: Partial<ExampleOptions> = {}): Promise<Example> {
  const example = await buildExample({ port: 0, healthPort: 0, jwtSecret: SECRET, ...options })
  let closed = false
  t.teardown(async () => { if (!closed) await example.close() })
  const close = example.close
  example.close = async () => { closed = true; await close() }
  return example
}

function sign (example: Example, sub: string, expiresIn: string | number = '1h'): string {
  return example.app.jwt.sign({ sub, role: 'user' }, { expiresIn })
}

function start (t: Test, example: Example, options: Partial<ConnectOptions>): EventSocketClient {
  const client = connect({
    url: `ws://127.0.0.1:${example.port}/events`,
    WebSocket,
    reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
    ...options
  })
  t.teardown(() => client.close())
  return client
}

/** Resolves once `condition` holds; rejects after `timeoutMs`, naming `what`. */
async function until (condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  await waitFor(condition, { what, timeoutMs })
}

async function sleep (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms))
}

async function nextError (client: EventSocketClient): Promise<EventSocketClientError> {
  return await new Promise((resolve) => { const off = client.on('error', (error) => { off(); resolve(error) }) })
}

for (const format of ['json', 'msgpack'] as const) {
  t.test(`receives events in ${format} and fans them out to every matching handler`, async (t) => {
    const example = await startExample(t)
    const client = start(t, example, { format, token: sign(example, 'alice') })
    const orders: ReceivedEvent[] = []
    const everything: ReceivedEvent[] = []
    await client.subscribe('orders.*', (event) => { orders.push(event) }).ready
    await client.subscribe('#', (event) => { everything.push(event) }).ready.then(
      () => t.fail('the example must refuse "#" to a plain user'),
      (error: EventSocketClientError) => t.equal(error.serverCode, 'FORBIDDEN')
    )
    await client.subscribe('user.alice.notifications', (event) => { everything.push(event) }).ready
    await client.subscribe('user.alice.*', (event) => { everything.push(event) }).ready

    const published = [await example.app.publish('orders.created', { n: 1, nested: { list: [1, 'two', null] } })]
    published.push(await example.app.publish('orders.created', { n: 2 }))
    await example.app.publish('orders.eu.created', { skipped: true })
    await example.app.publish('user.alice.notifications', { message: 'hi' })
    await until(() => orders.length === 2 && everything.length === 2, 'the events')

    t.same(orders.map((event) => event.id), published.map((result) => result.id))
    t.same(orders.map((event) => event.data), [{ n: 1, nested: { list: [1, 'two', null] } }, { n: 2 }])
    t.equal(orders[0]?.topic, 'orders.created')
    t.same(everything.map((event) => event.topic), ['user.alice.notifications', 'user.alice.notifications'], 'both matching patterns got it')
    t.equal(example.app.eventSocket.stats().eventsOut, 3, 'the server sent each event once on the connection')
  })
}

t.test('unsubscribe stops delivery once the last handler of a pattern leaves', async (t) => {
  const example = await startExample(t)
  const client = start(t, example, { token: sign(example, 'alice') })
  const first: unknown[] = []
  const second: unknown[] = []
  const unsubscribeFirst = client.subscribe('orders.*', (event) => { first.push(event.data) })
  const unsubscribeSecond = client.subscribe('orders.*', (event) => { second.push(event.data) })
  await unsubscribeFirst.ready
  t.equal(example.app.eventSocket.stats().subscriptions, 1, 'one server subscription for two handlers')

  await unsubscribeFirst()
  await example.app.publish('orders.created', 1)
  await until(() => second.length === 1, 'the event for the remaining handler')
  t.same(first, [], 'the removed handler is not called')

  await unsubscribeSecond()
  t.equal(example.app.eventSocket.stats().subscriptions, 0, 'the server confirmed the unsub')
  const sentinel: unknown[] = []
  await client.subscribe('user.alice.notifications', (event) => { sentinel.push(event.data) }).ready
  await example.app.publish('orders.created', 2)
  // Published after: once it is in, orders.created 2 would have been too (one connection, in order).
  await example.app.publish('user.alice.notifications', 'sentinel')
  await until(() => sentinel.length === 1, 'the sentinel event')
  t.same(second, [1])
  t.equal(example.app.eventSocket.stats().eventsOut, 2, 'the server sent event 1 and the sentinel, not event 2')
})

t.test('acks are batched and the window is respected', async (t) => {
  const window = 8
  const example = await startExample(t, { eventSocket: { window } })
  const wire = { acks: [] as number[], received: 0, maxInFlight: 0 }
  // `ws` with the frames counted on both sides.
  class CountingWebSocket extends WebSocket {
    constructor (url: string, protocols: string[]) {
      super(url, protocols)
      this.addEventListener('message', (event) => {
        const message = JSON.parse(String(event.data)) as { op: string, seq?: number }
        if (message.op !== 'event' || message.seq === undefined) return
        wire.received = message.seq
        wire.maxInFlight = Math.max(wire.maxInFlight, message.seq - (wire.acks.at(-1) ?? 0))
      })
    }

    override send (data: string): void {
      const message = JSON.parse(data) as { op: string, seq?: number }
      if (message.op === 'ack' && message.seq !== undefined) wire.acks.push(message.seq)
      super.send(data)
    }
  }
  const client = start(t, example, { token: sign(example, 'alice'), WebSocket: CountingWebSocket, ackDelayMs: 30 })
  const seen: number[] = []
  // Async handlers: the window, not the handlers' speed, bounds what is in flight.
  await client.subscribe('orders.*', async (event) => {
    await sleep(1)
    seen.push(event.data as number)
  }).ready

  const count = 40
  await Promise.all(Array.from({ length: count }, (_, n) => example.app.publish('orders.created', n)))
  await until(() => seen.length === count && wire.acks.at(-1) === count, 'every event processed and acked')

  t.same(seen, Array.from({ length: count }, (_, n) => n), 'in order, none lost')
  t.ok(wire.maxInFlight <= window, `never more than the window in flight (max ${wire.maxInFlight})`)
  t.ok(wire.acks.length <= count / 2, `acks are batched: ${wire.acks.length} acks for ${count} events`)
  t.ok(wire.acks.length >= count / window, 'an ack at least every window')
  t.same([...wire.acks].sort((a, b) => a - b), wire.acks, 'cumulative acks only grow')

  // Below half the window, the idle delay acks the tail.
  const before = wire.acks.length
  await example.app.publish('orders.created', count)
  await until(() => wire.acks.at(-1) === count + 1, 'the idle ack')
  t.equal(wire.acks.length, before + 1)
})

t.test('after a server restart it reconnects, resubscribes and receives the next events', async (t) => {
  const first = await startExample(t)
  let attempts = 0
  class CountingWebSocket extends WebSocket {
    constructor (url: string, protocols: string[]) {
      super(url, protocols)
      attempts++
    }
  }
  const client = start(t, first, { format: 'msgpack', token: sign(first, 'alice'), WebSocket: CountingWebSocket })
  const states: string[] = []
  const closes: number[] = []
  client.on('state', (state) => { states.push(state) })
  client.on('disconnect', ({ code }) => { closes.push(code) })
  const received: unknown[] = []
  await client.subscribe('orders.*', (event) => { received.push(event.data) }).ready
  await client.subscribe('user.alice.notifications', (event) => { received.push(event.data) }).ready
  await first.app.publish('orders.created', 'before')
  await until(() => received.length === 1, 'the first event')

  await first.close()
  await until(() => client.state === 'reconnecting', 'the client to notice')
  const attemptsBefore = attempts
  await until(() => attempts >= attemptsBefore + 2, 'two refused attempts while the port is closed')
  const second = await startExample(t, { port: first.port })
  await until(() => second.app.eventSocket.stats().subscriptions === 2, 'both patterns resubscribed')
  await second.app.publish('orders.created', 'after')
  await second.app.publish('user.alice.notifications', 'private')
  await until(() => received.length === 3, 'the events after the restart')

  t.same(received, ['before', 'after', 'private'])
  t.same(closes, [1001], 'the server said it was going away')
  t.equal(states.at(-1), 'open')
  t.ok(states.includes('reconnecting'))
})

t.test('a token refresh keeps the socket open past the first token\'s expiry', async (t) => {
  const example = await startExample(t, { eventSocket: { expiryNoticeMs: 1000 } })
  let tokens = 0
  const client = start(t, example, {
    getToken: () => {
      tokens++
      return sign(example, 'alice', '2s')
    }
  })
  const hellos: Array<{ session: string, expiresAt: number | null }> = []
  const closes: number[] = []
  client.on('open', (hello) => { hellos.push(hello) })
  client.on('disconnect', ({ code }) => { closes.push(code) })
  const received: unknown[] = []
  await client.subscribe('orders.*', (event) => { received.push(event.data) }).ready
  const firstExpiry = hellos[0]?.expiresAt ?? 0

  // Time is what is tested: the first token's expiry must pass, with two refreshes on the way.
  await until(() => tokens >= 3 && Date.now() > firstExpiry + 200, 'two refreshes and the first token\'s expiry', 8000)
  await example.app.publish('orders.created', 'still here')
  await until(() => received.length === 1, 'the event after the first expiry')
  t.same(closes, [], 'never closed')
  t.equal(hellos.length, 1, 'one session throughout')
  t.ok(tokens >= 3, `fetched a token ${tokens} times`)
})

t.test('after close 4001 it fetches a token again and reconnects', async (t) => {
  const example = await startExample(t, { eventSocket: { expiryNoticeMs: 500 } })
  let calls = 0
  // Slower than the notice: the first token expires before its replacement arrives.
  const client = start(t, example, {
    getToken: async () => {
      if (calls++ > 0) await sleep(1200)
      return sign(example, 'alice', '2s')
    }
  })
  const closes: number[] = []
  client.on('disconnect', ({ code }) => { closes.push(code) })
  const received: unknown[] = []
  await client.subscribe('orders.*', (event) => { received.push(event.data) }).ready
  await until(() => closes.length === 1, 'the expiry close', 5000)
  t.same(closes, [4001])
  await until(() => client.state === 'open' && example.app.eventSocket.stats().subscriptions === 1, 'the reconnect', 5000)
  await example.app.publish('orders.created', 'renewed')
  await until(() => received.length === 1, 'an event on the new connection')
  t.ok(calls >= 3, 'the token was fetched again for the reconnect')
})

t.test('a failing handler is reported and does not stall the stream', async (t) => {
  const example = await startExample(t, { eventSocket: { window: 2 } })
  const client = start(t, example, { token: sign(example, 'alice') })
  const errors: EventSocketClientError[] = []
  client.on('error', (error) => { errors.push(error) })
  const received: unknown[] = []
  await client.subscribe('orders.*', async (event) => {
    received.push(event.data)
    if (event.data === 0) throw new Error('boom')
  }).ready
  await client.subscribe('orders.#', (event) => { if (event.data === 1) throw new Error('sync boom') }).ready
  for (let n = 0; n < 6; n++) await example.app.publish('orders.created', n)
  await until(() => received.length === 6 && errors.length >= 2, 'every event despite the failures, and both failures reported')
  t.same(errors.map((error) => [error.code, error.topic, (error.cause as Error).message]).sort(), [
    ['EVSOCK_HANDLER_FAILED', 'orders.created', 'sync boom'],
    ['EVSOCK_HANDLER_FAILED', 'orders.created', 'boom']
  ].sort())
})

t.test('a 401 at handshake surfaces as a typed error', async (t) => {
  const example = await startExample(t)
  const forged = connect({ url: `ws://127.0.0.1:${example.port}/events`, WebSocket, token: 'not.a.jwt' })
  const error = await nextError(forged)
  t.equal(error.code, 'EVSOCK_UNAUTHORIZED')
  t.equal(error.status, 401)
  t.equal(forged.state, 'closed', 'a static token cannot be fixed: no retry')
  t.throws(() => forged.subscribe('orders.*', () => {}), { code: 'EVSOCK_CLOSED' })

  let calls = 0
  const expired = start(t, example, {
    token: sign(example, 'alice', -10),
    getToken: () => { calls++; return sign(example, 'alice', -10) }
  })
  const ready = expired.subscribe('orders.*', () => {}).ready
  t.equal((await nextError(expired)).code, 'EVSOCK_UNAUTHORIZED', 'a fresh token refused too is final')
  t.equal(calls, 1, 'the stale token was replaced once before giving up')
  await t.rejects(ready, { code: 'EVSOCK_UNAUTHORIZED' }, 'pending subscriptions learn it too')

  const recovering = start(t, example, { token: sign(example, 'alice', -10), getToken: () => sign(example, 'alice') })
  await recovering.subscribe('orders.*', () => {}).ready
  t.equal(recovering.state, 'open', 'an expired first token is replaced by getToken')
})

t.test('a refusal no retry can fix (403 origin) is final', async (t) => {
  const example = await startExample(t, { eventSocket: { origins: ['https://shop.example'], allowMissingOrigin: false } })
  const client = start(t, example, { token: sign(example, 'alice'), getToken: () => sign(example, 'alice') })
  const error = await nextError(client)
  t.equal(error.code, 'EVSOCK_HANDSHAKE_REFUSED')
  t.equal(error.status, 403)
  t.equal(client.state, 'closed')
})

t.test('close() ends the client for good', async (t) => {
  const example = await startExample(t)
  const client = start(t, example, { token: sign(example, 'alice') })
  const ready = client.subscribe('orders.*', () => {}).ready
  await ready
  await client.close()
  t.equal(client.state, 'closed')
  await until(() => example.app.eventSocket.stats().connections === 0, 'the server to see the close')
  t.throws(() => client.subscribe('orders.*', () => {}), { code: 'EVSOCK_CLOSED' })
})
