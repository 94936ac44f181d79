import t from 'tap'
import { MemoryBus } from '../lib/bus/memory.js'
import type { Bus } from '../lib/bus/types.js'
import { requireBroker } from './helpers/broker.js'
import { clusterOptions } from './helpers/instance.js'
import { openClient, startServer } from './helpers/server.js'

// `health({ probe: true })`: readiness that proves delivery (lib/probe.ts),
// on the in-process bus and on a bus that loses or refuses the probe. The
// real broker's stalls are in readiness-amqp.test.ts.

const PROBE_KEY = /^\$evsock\.probe\.[0-9a-f]{16}$/

/** The in-process bus with a hand on the probes: counts them, and can lose or refuse them. */
function probeControlledBus (): { bus: Bus, probes: () => number, set: (mode: 'pass' | 'lose' | 'refuse') => void } {
  const inner = new MemoryBus()
  let probes = 0
  let mode: 'pass' | 'lose' | 'refuse' = 'pass'
  const bus: Bus = {
    kind: 'probe-controlled',
    start: (deliver) => inner.start(deliver),
    publish: async (message) => {
      if (PROBE_KEY.test(message.topic)) {
        probes++
        if (mode === 'lose') return
        if (mode === 'refuse') throw new Error('refused by the test')
      }
      await inner.publish(message)
    },
    bind: (pattern) => inner.bind(pattern),
    unbind: (pattern) => inner.unbind(pattern),
    health: () => inner.health(),
    close: () => inner.close()
  }
  return { bus, probes: () => probes, set: (next) => { mode = next } }
}

t.test('the probe comes back on the in-process bus: ok with its round trip time, while health() stays synchronous', async (t) => {
  for (const history of [false, true]) {
    const server = await startServer(t, { history })
    const liveness = server.app.eventSocket.health()
    t.notOk(liveness instanceof Promise, `history ${String(history)}: health() answers at once, without a probe`)
    t.equal(liveness.status, 'ok')
    t.notOk(server.app.eventSocket.health({ probe: false }) instanceof Promise, 'so does health({ probe: false })')
    const readiness = await server.app.eventSocket.health({ probe: true })
    t.equal(readiness.status, 'ok', `history ${String(history)}: ready`)
    t.equal(typeof readiness.probeMs, 'number', 'with the probe\'s round trip time')
    t.equal(readiness.reason, undefined, 'and no reason')
    t.equal(readiness.broker.kind, 'memory')
  }
})

t.test('concurrent readiness checks share one probe in flight', async (t) => {
  const { bus, probes } = probeControlledBus()
  const server = await startServer(t, { bus })
  const checks = [1, 2, 3].map(() => server.app.eventSocket.health({ probe: true }))
  t.equal(checks[0], checks[1], 'the second check joins the first one\'s probe')
  t.equal(checks[0], checks[2], 'and so does the third')
  const results = await Promise.all(checks)
  t.ok(results.every((result) => result.status === 'ok'), 'all ready')
  t.equal(probes(), 1, 'one probe published for three checks')
  await server.app.eventSocket.health({ probe: true })
  t.equal(probes(), 2, 'a check after it settled sends a probe of its own')
})

t.test('a probe that does not come back turns readiness down with a reason, and the next one that does turns it ok', async (t) => {
  const { bus, set } = probeControlledBus()
  const server = await startServer(t, { bus, probeTimeoutMs: 100 })
  set('lose')
  const lost = await server.app.eventSocket.health({ probe: true })
  t.equal(lost.status, 'down', 'down when the bus took the probe but never delivered it')
  t.match(lost.reason, /did not come back within 100 ms/, 'saying so')
  t.equal(lost.probeMs, undefined, 'with no round trip time')
  t.equal(server.app.eventSocket.health().status, 'ok', 'liveness is not affected')
  set('refuse')
  const refused = await server.app.eventSocket.health({ probe: true })
  t.equal(refused.status, 'down', 'down when the bus refuses the probe')
  t.match(refused.reason, /publishing the probe failed: refused by the test/, 'with the bus\'s error')
  set('pass')
  const back = await server.app.eventSocket.health({ probe: true })
  t.equal(back.status, 'ok', 'ok again once probes come back')
})

t.test('readiness is down once shutdown has begun', async (t) => {
  const server = await startServer(t)
  await server.app.close()
  const readiness = await server.app.eventSocket.health({ probe: true })
  t.equal(readiness.status, 'down')
  t.equal(readiness.reason, 'shutting down')
})

t.test('probeTimeoutMs must be a positive integer', async (t) => {
  for (const probeTimeoutMs of [0, -1, 1.5, '1000']) {
    await t.rejects(startServer(t, { probeTimeoutMs: probeTimeoutMs as number }), { code: 'FST_EVSOCK_BAD_OPTION', message: /probeTimeoutMs/ }, `refuses ${JSON.stringify(probeTimeoutMs)}`)
  }
})

const buses = [
  { name: 'memory', options: (history: boolean) => ({ history }), available: async () => true },
  // clusterOptions: its own exchange, and the history stream deleted with it.
  { name: 'amqp', options: (history: boolean, t: Parameters<typeof clusterOptions>[0]) => clusterOptions(t, { history }), available: requireBroker }
]

for (const bus of buses) {
  for (const history of [false, true]) {
    t.test(`${bus.name}, history ${history ? 'on' : 'off'}: probes never reach a client subscribed to #`, async (t) => {
      if (!await bus.available(t)) return
      const server = await startServer(t, { ...bus.options(history, t), probeTimeoutMs: 5000 })
      const client = await openClient(t, server, { role: 'admin' })
      client.ackEach()
      t.equal((await client.subscribe('#')).op, 'ok')
      for (let i = 0; i < 3; i++) {
        t.equal((await server.app.eventSocket.health({ probe: true })).status, 'ok', `probe ${i + 1} came back`)
      }
      // Published after the probes: once it is in, a probe sent to the client would be too.
      await server.app.publish('orders.sentinel', 'sentinel')
      await client.next((message) => message.op === 'event' && message.topic === 'orders.sentinel', { timeout: 5000 })
      t.same(client.events().map((event) => event.topic), ['orders.sentinel'], 'the client got the sentinel and nothing else')
    })
  }
}
