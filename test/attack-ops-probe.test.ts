import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import Fastify from 'fastify'
import eventSocket, { type EventSocketReadiness } from '../lib/index.js'
import { MemoryBus } from '../lib/bus/memory.js'
import type { Bus, BusMessage } from '../lib/bus/types.js'
import { loseNextProbe, opsBus, type OpsBus } from './helpers/ops-bus.js'
import { recordLogs, WARN } from './helpers/ops-logs.js'
import { openClient, SECRET, startServer, type TestServer } from './helpers/server.js'
import { within } from './helpers/wait.js'

// Attacks on readiness (lib/probe.ts) on the in-process bus, through a bus
// with a hand on the probes (helpers/ops-bus.ts): checks made while shutdown
// runs, a bus that throws instead of rejecting, storms of concurrent checks,
// and messages under the probe's control keys that no probe of this
// instance sent. The same on the real broker: attack-ops-probe-amqp.test.ts.

const unhandled: unknown[] = []
process.on('unhandledRejection', (reason) => { unhandled.push(reason) })

async function probedServer (t: Test, options: { probeTimeoutMs?: number } = {}): Promise<{ server: TestServer, bus: OpsBus, logs: ReturnType<typeof recordLogs> }> {
  const bus = opsBus(new MemoryBus())
  const logs = recordLogs()
  const server = await startServer(t, { bus, ...options }, undefined, logs.logger)
  return { server, bus, logs }
}

/** `count` concurrent checks, each timed from its call to its settling. */
async function storm (server: TestServer, count: number): Promise<{ promises: Array<Promise<EventSocketReadiness>>, results: EventSocketReadiness[], slowestMs: number }> {
  const started = performance.now()
  let slowestMs = 0
  const promises = Array.from({ length: count }, () => server.app.eventSocket.health({ probe: true }))
  const results = await Promise.all(promises.map(async (promise) => {
    const result = await promise
    slowestMs = Math.max(slowestMs, performance.now() - started)
    return result
  }))
  return { promises, results, slowestMs }
}

const statuses = (results: EventSocketReadiness[]): string[] => [...new Set(results.map((result) => `${result.status}: ${result.reason ?? ''}`))]

t.test('a check made once shutdown has begun resolves down, though it joins a probe sent before; so does that probe\'s first check', async (t) => {
  const { server, bus } = await probedServer(t, { probeTimeoutMs: 5000 })
  bus.setProbes('hold')
  const before = server.app.eventSocket.health({ probe: true })
  let during: Promise<EventSocketReadiness> | undefined
  // The bus is closed after the sockets: shutdown has begun. Its close lets the held probe come back (as the
  // amqp bus's close waits for the confirms in flight), after this check joined it.
  bus.closing.then(() => { during = server.app.eventSocket.health({ probe: true }) }, () => {})
  await within(server.app.close(), { what: 'app.close()' })
  t.equal(during, before, 'the check made during shutdown joined the probe in flight')
  const results = await within(Promise.all([before, during as Promise<EventSocketReadiness>]), { what: 'both checks' })
  t.same(results.map((result) => [result.status, result.reason]), [['down', 'shutting down'], ['down', 'shutting down']],
    'both say shutting down: the probe came back, but the instance is no longer ready')
  t.equal(bus.probes(), 1, 'one probe for both')
})

t.test('a bus whose publish throws synchronously: the check resolves down with its error, and the next one probes again', async (t) => {
  const { server, bus } = await probedServer(t)
  bus.setProbes('throw')
  const result = await within(server.app.eventSocket.health({ probe: true }), { what: 'the check' })
  t.equal(result.status, 'down')
  t.match(result.reason, /publishing the probe failed: thrown synchronously by the test bus/)
  bus.setProbes('pass')
  t.equal((await server.app.eventSocket.health({ probe: true })).status, 'ok', 'ok again once the bus behaves')
  t.equal(bus.probes(), 2)
})

for (const mode of ['pass', 'lose'] as const) {
  t.test(`5,000 concurrent checks, probes that ${mode === 'pass' ? 'come back' : 'never come back'}: one probe, one promise, each settles within probeTimeoutMs`, async (t) => {
    const probeTimeoutMs = 300
    const { server, bus } = await probedServer(t, { probeTimeoutMs })
    bus.setProbes(mode)
    for (let wave = 1; wave <= 3; wave++) {
      const { promises, results, slowestMs } = await storm(server, 5000)
      t.equal(new Set(promises).size, 1, `wave ${wave}: every call got the same promise (nothing kept per call)`)
      t.equal(bus.probes(), wave, `wave ${wave}: one probe published for the whole wave`)
      t.same(statuses(results), [mode === 'pass' ? 'ok: ' : `down: the probe was published but did not come back within ${probeTimeoutMs} ms (stalled consumer or lost binding)`])
      t.ok(slowestMs < probeTimeoutMs + 500, `wave ${wave}: the slowest settled in ${Math.round(slowestMs)} ms`)
    }
  })
}

t.test('5,000 checks started while app.close() runs all settle, down once shutdown has begun', async (t) => {
  const { server, bus } = await probedServer(t, { probeTimeoutMs: 300 })
  bus.setProbes('lose')
  const early = storm(server, 2500)
  const closing = server.app.close()
  const late = storm(server, 2500)
  await within(closing, { what: 'app.close()' })
  const after = await storm(server, 10)
  const [first, second] = await within(Promise.all([early, late]), { what: 'the storms' })
  t.ok(bus.probes() <= 1, 'at most the one probe sent before shutdown')
  for (const [name, wave] of [['during', second], ['after', after]] as const) {
    t.same(statuses(wave.results), ['down: shutting down'], `the checks ${name} app.close() say shutting down`)
  }
  t.ok(first.results.every((result) => result.status === 'down'), 'those started just before it are down too')
})

t.test('messages under the probe\'s control keys that this instance\'s probe did not send: readiness stays down, no client sees them, no warning', async (t) => {
  const { server, bus, logs } = await probedServer(t, { probeTimeoutMs: 300 })
  const client = await openClient(t, server)
  client.ackEach()
  t.equal((await client.subscribe('#')).op, 'ok')
  const { key, oldId, currentId, check } = await loseNextProbe(server.app.eventSocket, bus)
  const otherKey = '$evsock.probe.0123456789abcdef'
  const forged = (topic: string, id: string, payload: Buffer): BusMessage => ({ id, topic, time: Date.now(), payload })
  const forgeries = [
    forged(key, randomUUID(), Buffer.from('{}')),
    forged(key, oldId, Buffer.from('{}')),
    forged(key, oldId.toUpperCase(), Buffer.from('{}')),
    forged(key, '', Buffer.from('{}')),
    forged(key, 'x'.repeat(10_000), Buffer.from('not json')),
    forged(key, randomUUID(), Buffer.alloc(1 << 20, 0xff)),
    // The probe in flight's own id, under keys that are not this instance's.
    forged(otherKey, currentId, Buffer.from('{}')),
    forged(`${key}.x`, currentId, Buffer.from('{}')),
    forged('$evsock.probe', currentId, Buffer.from('{}'))
  ]
  for (const message of forgeries) bus.inject(message)
  for (let i = 0; i < 1000; i++) bus.inject(forged(key, randomUUID(), Buffer.from('{}')))
  const result = await within(check, { what: 'the check' })
  t.equal(result.status, 'down', 'still down: none of them is the probe in flight')
  t.match(result.reason, /did not come back within 300 ms/)
  // Another instance's probes are what a `#` binding brings in on RabbitMQ: no warning each time.
  for (let i = 0; i < 3; i++) bus.inject(forged(otherKey, randomUUID(), Buffer.from('{}')))
  const { id } = await server.app.publish('orders.sentinel', 'sentinel')
  await client.next((message) => message.op === 'event' && message.id === id, { timeout: 5000 })
  t.same(client.events().map((event) => event.topic), ['orders.sentinel'], 'the client on # got the sentinel and nothing else')
  t.same(logs.at(WARN).map((entry) => [entry.msg, entry.topic]), [
    // Not under the probes' prefix: a control key nobody uses, which is worth a (summarized) warning.
    ['event socket: dropped an invalid control message', '$evsock.probe'],
    ['event socket: readiness probe failed; not ready', undefined]
  ], 'no warning for the forged probes or the other instance\'s probes')
  bus.setProbes('pass')
  t.equal((await server.app.eventSocket.health({ probe: true })).status, 'ok', 'ok again once probes come back')
  t.same(server.app.eventSocket.stats().eventsIn, 1, 'none of them counted as an event')
})

// Last: the tests above are done, and any rejection they left would have been reported by now.
t.test('a registration that fails after the bus started (a control key not bound) closes the bus', async (t) => {
  const inner = new MemoryBus()
  let closed = 0
  const refusing: Bus = {
    kind: 'refusing',
    start: (deliver) => inner.start(deliver),
    publish: (message) => inner.publish(message),
    bind: async (pattern) => { if (pattern.startsWith('$evsock.')) throw new Error('bind refused'); await inner.bind(pattern) },
    unbind: (pattern) => inner.unbind(pattern),
    health: () => inner.health(),
    close: async () => { closed++; await inner.close() }
  }
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await t.rejects(async () => { await app.register(eventSocket, { jwt: { secret: SECRET }, bus: refusing }) }, /bind refused/)
  t.equal(closed, 1, 'the bus it had started was closed')
})

t.test('a bus whose start fails is closed too (it may have opened connections before failing)', async (t) => {
  let closed = 0
  const failing: Bus = {
    kind: 'failing',
    start: async () => { throw new Error('start refused') },
    publish: async () => {},
    bind: async () => {},
    unbind: async () => {},
    health: () => ({ kind: 'failing', state: 'down', buffered: 0, unconfirmed: 0 }),
    close: async () => { closed++ }
  }
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await t.rejects(async () => { await app.register(eventSocket, { jwt: { secret: SECRET }, bus: failing }) }, /start refused/)
  t.equal(closed, 1, 'closed once')
})

t.test('no promise of the attacks above was left rejected unhandled', async (t) => {
  await new Promise((resolve) => setImmediate(resolve))
  t.same(unhandled, [])
})
