import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import type { EventSocketOptions, EventSocketReadiness } from '../lib/index.js'
import { createAmqpBus } from '../lib/bus/amqp.js'
import { resolveOptions } from '../lib/options.js'
import { startAmqpProxy } from './helpers/amqp-proxy.js'
import { recordingLogger, requireBroker } from './helpers/broker.js'
import { publishForeign, type Foreign } from './helpers/foreign.js'
import { clusterOptions } from './helpers/instance.js'
import { loseNextProbe, opsBus, type OpsBus } from './helpers/ops-bus.js'
import { recordLogs, WARN, type RecordedLogs } from './helpers/ops-logs.js'
import { openClient, SECRET, startServer, type TestClient, type TestServer } from './helpers/server.js'
import { waitFor, within } from './helpers/wait.js'

// Attacks on readiness (lib/probe.ts) on the real broker: messages put on the
// exchange under the probes' control keys by a producer that is not this
// plugin, other instances' probes brought in by a client's `#`, and storms
// of concurrent checks while the broker is reachable, unreachable, and while
// the app closes. The in-process side: attack-ops-probe.test.ts.

const unhandled: unknown[] = []
process.on('unhandledRejection', (reason) => { unhandled.push(reason) })

/** A server whose amqp bus has a hand on its probes (helpers/ops-bus.ts), logging into `logs`. */
async function probedServer (t: Test, options: EventSocketOptions): Promise<{ server: TestServer, bus: OpsBus, logs: RecordedLogs }> {
  const resolved = resolveOptions({ jwt: { secret: SECRET }, ...options })
  const bus = opsBus(createAmqpBus(resolved.broker, recordingLogger().log, resolved.history))
  const logs = recordLogs()
  const server = await startServer(t, { ...options, broker: undefined, bus }, undefined, logs.logger)
  return { server, bus, logs }
}

/** A client holding `#`, acking everything. */
async function everything (t: Test, server: TestServer): Promise<TestClient> {
  const client = await openClient(t, server, { role: 'admin' })
  client.ackEach()
  t.equal((await client.subscribe('#')).op, 'ok', 'a client holds #')
  return client
}

async function sentinelArrives (client: TestClient, id: string): Promise<void> {
  await client.next((message) => message.op === 'event' && message.id === id, { timeout: 10_000 })
}

const statuses = (results: EventSocketReadiness[]): string[] => [...new Set(results.map((result) => `${result.status}: ${result.reason ?? ''}`))]

for (const history of [false, true]) {
  const mode = `history ${history ? 'on' : 'off'}`

  t.test(`${mode}: another instance's probes, brought in by a client's #, reach no client and log no warning`, async (t) => {
    if (!await requireBroker(t)) return
    const options = clusterOptions(t, { history, probeTimeoutMs: 5000 })
    const prober = await startServer(t, options)
    const logs = recordLogs()
    const watcher = await startServer(t, options, undefined, logs.logger)
    const client = await everything(t, watcher)
    for (let i = 0; i < 3; i++) t.equal((await prober.app.eventSocket.health({ probe: true })).status, 'ok', `the other instance's probe ${i + 1} came back`)
    // Published after the probes, from the same instance: once it is in, the probes reached the watcher too.
    const { id } = await prober.app.publish('orders.sentinel', 'sentinel')
    await sentinelArrives(client, id)
    t.same(client.events().map((event) => event.topic), ['orders.sentinel'], 'the client got the sentinel only')
    t.same(logs.at(WARN).map((entry) => `${entry.msg} ${String(entry.topic)}`), [], 'the watcher warned of nothing')
  })

  t.test(`${mode}: foreign messages under the probe keys never turn readiness ok, reach no client, and the next real probe does`, async (t) => {
    if (!await requireBroker(t)) return
    const options = clusterOptions(t, { history, probeTimeoutMs: 4000 })
    const exchange = options.broker?.exchange as string
    const { server, bus, logs } = await probedServer(t, options)
    const client = await everything(t, server)
    const { key, oldId, currentId, check } = await loseNextProbe(server.app.eventSocket, bus)
    const json = Buffer.from('{}')
    const on = (routingKey: string, what: string, body = json, properties?: Foreign['properties']): Foreign => ({ what, routingKey, body, properties })
    const forged: Foreign[] = [
      on(key, 'a random id'),
      on(key, 'a replayed old probe id', json, { messageId: oldId }),
      on(key, 'no messageId', json, { messageId: undefined }),
      on(key, 'a messageId over 128 characters', json, { messageId: 'x'.repeat(200) }),
      on(key, 'a body that is not JSON', Buffer.from('not json')),
      on(key, 'a body that is not UTF-8', Buffer.from([0xff, 0xfe, 0xfd])),
      on(key, 'a body over maxEventBytes', Buffer.from(JSON.stringify('x'.repeat(300 * 1024)))),
      on(key, 'garbage trace headers', json, { headers: { traceparent: 7, tracestate: Buffer.alloc(1024) } }),
      // The probe in flight's own id (which an outsider could not know) under keys that are not this instance's.
      on('$evsock.probe.0123456789abcdef', 'another instance\'s key', json, { messageId: currentId }),
      on(`${key}.x`, 'a key one word longer', json, { messageId: currentId }),
      on(key.toUpperCase(), 'the key upper-cased (not a control key: an invalid topic)', json, { messageId: currentId }),
      on('$evsock.probe', 'the bare prefix', json, { messageId: currentId }),
      ...Array.from({ length: 500 }, (_, i) => on(key, `flood ${i}`))
    ]
    const sentinel = randomUUID()
    await publishForeign(exchange, [...forged, { what: 'sentinel', routingKey: 'orders.sentinel', body: Buffer.from('"sentinel"'), properties: { messageId: sentinel } }])
    await sentinelArrives(client, sentinel)
    const result = await within(check, { what: 'the check', timeoutMs: 10_000 })
    t.equal(result.status, 'down', 'still down: none of them was the probe in flight')
    t.match(result.reason, /did not come back within 4000 ms/)
    t.same(client.events().map((event) => event.topic), ['orders.sentinel'], 'the client on # got the sentinel only')
    // Logged once, then summarized: the first one under the probes' prefix would take the place of the bare prefix's.
    t.same(logs.at(WARN, /invalid control message/).map((entry) => entry.topic), ['$evsock.probe'],
      'the only control-message warning is the bare prefix\'s, a key no instance uses')
    t.equal(server.app.eventSocket.stats().eventsIn, 1, 'only the sentinel counted as an event')
    bus.setProbes('pass')
    t.equal((await server.app.eventSocket.health({ probe: true })).status, 'ok', 'the next real probe turns it ok')
  })
}

t.test('5,000 concurrent checks on the broker: one probe each wave; while it is unreachable, none published and all down at once', async (t) => {
  if (!await requireBroker(t)) return
  const proxy = await startAmqpProxy(t)
  const options = clusterOptions(t, { history: false, probeTimeoutMs: 1000 })
  const { server, bus } = await probedServer(t, { ...options, broker: { ...options.broker, url: proxy.url } })
  const storm = async (count: number): Promise<{ results: EventSocketReadiness[], slowestMs: number, promises: number }> => {
    const started = performance.now()
    const promises = Array.from({ length: count }, () => server.app.eventSocket.health({ probe: true }))
    const results = await within(Promise.all(promises), { what: `${count} checks`, timeoutMs: 10_000 })
    return { results, slowestMs: performance.now() - started, promises: new Set(promises).size }
  }
  for (let wave = 1; wave <= 3; wave++) {
    const { results, slowestMs, promises } = await storm(5000)
    t.equal(promises, 1, `wave ${wave}: one promise for every call`)
    t.equal(bus.probes(), wave, `wave ${wave}: one probe`)
    t.same(statuses(results).map((status) => status.slice(0, 3)), ['ok:'], `wave ${wave}: ready`)
    t.ok(slowestMs < 1000 + 1000, `wave ${wave}: settled in ${Math.round(slowestMs)} ms`)
  }
  proxy.refuse(true)
  proxy.cutAll()
  await waitFor(() => server.app.eventSocket.health().broker.state !== 'up', { what: 'the bus to see its connections drop' })
  const { results, slowestMs } = await storm(5000)
  t.equal(bus.probes(), 3, 'no probe published during the outage')
  t.ok(results.every((result) => result.status === 'down' && /^broker (down|connecting)/.test(result.reason ?? '')), `all down, naming the broker's state: ${statuses(results).join(' | ')}`)
  t.ok(slowestMs < 1000, `settled at once (${Math.round(slowestMs)} ms)`)
  proxy.refuse(false)
  await waitFor(async () => (await server.app.eventSocket.health({ probe: true })).status === 'ok', { what: 'readiness after the outage', timeoutMs: 15_000, intervalMs: 100 })
  t.pass('ready again after the outage')
})

t.test('5,000 checks while app.close() runs on the broker: all settle within probeTimeoutMs, down once shutdown has begun', async (t) => {
  if (!await requireBroker(t)) return
  const { server, bus } = await probedServer(t, clusterOptions(t, { history: false, probeTimeoutMs: 1000 }))
  await everything(t, server)
  bus.setProbes('hold')
  const started = performance.now()
  const before = Array.from({ length: 2500 }, () => server.app.eventSocket.health({ probe: true }))
  const closing = server.app.close()
  const during = Array.from({ length: 2500 }, () => server.app.eventSocket.health({ probe: true }))
  const results = await within(Promise.all([...before, ...during]), { what: 'the checks', timeoutMs: 10_000 })
  t.ok(performance.now() - started < 1000 + 1000, 'all settled within probeTimeoutMs and some slack')
  t.same(statuses(results), ['down: shutting down'], 'all say shutting down')
  await within(closing, { what: 'app.close()', timeoutMs: 10_000 })
  t.same(statuses(await Promise.all([1, 2, 3].map(() => server.app.eventSocket.health({ probe: true })))), ['down: shutting down'], 'and so do the checks after it')
})

t.test('no promise of the attacks above was left rejected unhandled', async (t) => {
  await new Promise((resolve) => setImmediate(resolve))
  t.same(unhandled, [])
})
