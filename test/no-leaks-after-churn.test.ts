import t from 'tap'
import { churn } from './helpers/churn.js'
import { delay, startServer, type TestServer } from './helpers/server.js'
import { waitFor } from './helpers/wait.js'
import { gc } from './helpers/gc.js'

// Leaks: connections opened, subscribed and closed in a loop must
// leave heap, handles, subscriptions and bound patterns where they were, and
// never trip a listener-leak warning.

const CONNECTIONS = Number(process.env.LEAK_CONNECTIONS ?? 10_000)
const PARALLEL = 50
/** Heap growth tolerated over the whole loop, after a full collection: about 400 bytes per connection at 10,000. */
const HEAP_BOUND = 4 * 1024 * 1024

async function settledHeap (): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc()
    // Not a wait for anything: turns of the event loop, so that what the collection freed (weak callbacks, closed handles) is let go too.
    await delay(20)
  }
  return process.memoryUsage().heapUsed
}

/** Resource types and counts of this process, without the ones tap itself holds steady. */
function handles (): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const type of process.getActiveResourcesInfo()) counts[type] = (counts[type] ?? 0) + 1
  return counts
}

async function loop (server: TestServer, token: string, from: number, count: number): Promise<void> {
  await churn(server, token, { from, count, parallel: PARALLEL, patterns: (n) => [`leak.c${n}.#`, 'leak.shared.*'] })
  await waitFor(() => server.app.eventSocket.stats().connections === 0, {
    what: 'every churned connection released',
    detail: () => `${server.app.eventSocket.stats().connections} still open`
  })
}

t.test(`${CONNECTIONS} connections opened, subscribed and closed leave heap, handles and patterns at the baseline`, async (t) => {
  const warnings: Error[] = []
  const onWarning = (warning: Error): void => { warnings.push(warning) }
  process.on('warning', onWarning)
  t.teardown(() => { process.off('warning', onWarning) })

  const server = await startServer(t, { handshakesPerMinute: 0 })
  const token = server.sign({ sub: 'leaker', role: 'admin' })
  // Warm up: JIT, pools and caches reach their steady size first.
  await loop(server, token, 0, 500)
  const heapBefore = await settledHeap()
  const handlesBefore = handles()

  const started = Date.now()
  await loop(server, token, 500, CONNECTIONS)
  const seconds = (Date.now() - started) / 1000
  t.comment(`${CONNECTIONS} cycles in ${seconds.toFixed(1)} s (${Math.round(CONNECTIONS / seconds)}/s)`)

  const heapAfter = await settledHeap()
  const stats = server.app.eventSocket.stats()
  t.equal(stats.connections, 0)
  t.equal(stats.subscriptions, 0)
  t.equal(stats.patterns, 0, 'no pattern stays bound')
  t.equal(server.app.websocketServer.clients.size, 0, 'ws keeps no client')
  const growth = heapAfter - heapBefore
  t.comment(`heap ${(heapBefore / 1048576).toFixed(1)} MiB -> ${(heapAfter / 1048576).toFixed(1)} MiB`)
  t.ok(growth < HEAP_BOUND, `heap grew by ${(growth / 1048576).toFixed(2)} MiB (bound ${HEAP_BOUND / 1048576} MiB)`)
  // Sockets close asynchronously: wait (bounded) for the last ones, then compare.
  await waitFor(() => JSON.stringify(handles()) === JSON.stringify(handlesBefore), {
    what: 'the handles to return to the baseline',
    timeoutMs: 2000,
    detail: () => `${JSON.stringify(handles())}, before ${JSON.stringify(handlesBefore)}`
  }).catch(() => {}) // reported by the assertion below
  t.same(handles(), handlesBefore, 'the same handles as before the loop')
  t.same(warnings.map((w) => `${w.name}: ${w.message}`), [], 'no warning (MaxListenersExceededWarning or other)')
})
