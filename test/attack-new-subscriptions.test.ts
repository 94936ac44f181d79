import t from 'tap'
import { openClient, startServer, type TestClient, type TestServer } from './helpers/server.js'
import { waitFor } from './helpers/wait.js'

// Red-team attack on the per-subscriber patterns as an array (lib/subscriptions.ts:
// includes / indexOf / splice, bounded by maxSubscriptions): one client at
// maxSubscriptions 10,000 subscribes and unsubscribes every pattern as fast as
// it can while another client's event latency is sampled with sentinels.

const PATTERNS = 10_000
/** A sentinel's round trip (publish to delivery) for the bystander, while the attack runs, must stay under this. */
const MAX_LATENCY_MS = 250

/** Publishes sentinels to `bystander` one after the other until `stop()`; the worst round trip, and how many. */
function sampleLatency (server: TestServer, tag: string, bystander: TestClient): { stop: () => Promise<{ worst: number, samples: number }> } {
  const state = { running: true }
  let worst = 0
  let samples = 0
  const loop = (async () => {
    while (state.running) {
      const n = samples
      const began = performance.now()
      await server.app.publish('lat.probe', { tag, n })
      await bystander.next((message) => message.op === 'event' && message.data?.tag === tag && message.data?.n === n, { timeout: 10_000 })
      worst = Math.max(worst, performance.now() - began)
      samples++
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  })()
  return {
    stop: async () => {
      state.running = false
      await loop
      return { worst, samples }
    }
  }
}

t.test(`${PATTERNS} patterns subscribed then unsubscribed in a rush: every answer ok, a bystander's latency stays low`, async (t) => {
  const server = await startServer(t, { maxSubscriptions: PATTERNS, rateLimit: 1_000_000, rateBurst: 1_000_000 })
  const attacker = await openClient(t, server, { sub: 'attacker' })
  const bystander = await openClient(t, server, { sub: 'bystander' })
  await bystander.subscribe('lat.probe')
  const sampler = sampleLatency(server, 'warm-up', bystander)

  const okCount = (from: number): number => attacker.messages.slice(from).filter((message) => message.op === 'ok').length
  const rush = async (op: 'sub' | 'unsub', order: number[]): Promise<number> => {
    const from = attacker.messages.length
    const began = performance.now()
    for (const i of order) attacker.send({ op, id: 1_000_000 + i, topic: `rush.${i}.*` })
    await waitFor(() => okCount(from) === order.length, {
      what: `${order.length} ${op} answers`,
      timeoutMs: 60_000,
      detail: () => `${okCount(from)} ok, first other: ${JSON.stringify(attacker.messages.slice(from).find((message) => message.op !== 'ok'))}`
    })
    return performance.now() - began
  }
  const ascending = Array.from({ length: PATTERNS }, (_, i) => i)
  // The control: as many requests, each an unsub of a pattern never held (an empty array to search), to tell the
  // cost of the array from that of 10,000 requests (both ends run in this process, so the sends count too).
  const control = sampleLatency(server, 'control', bystander)
  await sampler.stop()
  const controlMs = await rush('unsub', ascending)
  const baseline = await control.stop()
  const attack = sampleLatency(server, 'attack', bystander)
  const subMs = await rush('sub', ascending)
  // One more is over the bound.
  const over = await attacker.subscribe('rush.over.*')
  t.equal(over.op, 'error', `the ${PATTERNS + 1}th pattern is refused (${String(over.code)})`)
  // Unsubscribed from the last: indexOf scans the whole array each time.
  const unsubMs = await rush('unsub', [...ascending].reverse())
  const { worst, samples } = await attack.stop()
  t.comment(`control: ${PATTERNS} unsubs of nothing in ${controlMs.toFixed(0)} ms, bystander worst ${baseline.worst.toFixed(1)} ms over ${baseline.samples}`)
  t.comment(`${PATTERNS} subs in ${subMs.toFixed(0)} ms (${(subMs * 1000 / PATTERNS).toFixed(1)} µs each), ${PATTERNS} unsubs (last first) in ${unsubMs.toFixed(0)} ms; bystander: ${samples} sentinels, worst ${worst.toFixed(1)} ms`)
  t.ok(samples > 0, 'the bystander was sampled during the attack')
  t.ok(worst < Math.max(MAX_LATENCY_MS, 2 * baseline.worst), `the bystander's worst latency ${worst.toFixed(1)} ms < max(${MAX_LATENCY_MS}, 2 x the control's ${baseline.worst.toFixed(1)}) ms`)

  // Nothing left: an event on a pattern once held does not reach the attacker, proved by a sentinel after it.
  await attacker.subscribe('after.sentinel')
  await server.app.publish('rush.7.x', { stale: true })
  await server.app.publish('after.sentinel', { sentinel: true })
  await attacker.next((message) => message.op === 'event' && message.topic === 'after.sentinel', { timeout: 5000 })
  t.notOk(attacker.events().some((message) => message.topic === 'rush.7.x'), 'no event on an unsubscribed pattern')
})
