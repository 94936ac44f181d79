import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { bindingsOf, brokerOptions, requireBroker, type Binding } from './helpers/broker.js'
import { churn } from './helpers/churn.js'
import { delay, openClient, startServer, type Message, type TestServer } from './helpers/server.js'
import { waitFor } from './helpers/wait.js'
import { seededRandom } from './helpers/seeded-random.js'

// Storms and churn on the real RabbitMQ:
// inbound-rate-limits and no-leaks-after-churn prove the topic index stays bounded and
// empties (stats().patterns); these count what the broker itself holds. Each
// test has an exchange of its own (brokerOptions), so the bindings listed for
// it are exactly this test's server's.

const sorted = (keys: Iterable<string>): string[] => [...keys].sort()

/**
 * Polls the broker until `exchange` has exactly the routing keys `expected`
 * (unbinds are asynchronous), then asserts it: on a timeout the assertion
 * fails with what the broker still holds. Unbinds normally land well
 * within a second; the timeout only bounds how long a failure takes.
 */
async function brokerSettles (t: Test, exchange: string, expected: string[], what: string, timeoutMs = 8000): Promise<{ found: Binding[], settled: boolean }> {
  const want = JSON.stringify(sorted(expected))
  let found: Binding[] = []
  try {
    await waitFor(async () => {
      found = await bindingsOf(exchange)
      return JSON.stringify(sorted(found.map((b) => b.key))) === want
    }, { what, timeoutMs, intervalMs: 100 })
  } catch {
    // Reported by the assertion below, with the bindings left over.
  }
  return { found, settled: t.same(sorted(found.map((b) => b.key)), sorted(expected), what) }
}

/** Samples the exchange's binding count in the background until stopped; one call at a time. */
function sampler (exchange: string, pauseMs = 150): { samples: number[], stop: () => Promise<void> } {
  const samples: number[] = []
  const stop = new AbortController()
  const running = (async () => {
    while (!stop.signal.aborted) {
      samples.push((await bindingsOf(exchange)).length)
      // Pacing between samples, not a wait: rabbitmqctl is slow and the broker shared.
      await delay(pauseMs)
    }
  })()
  return { samples, stop: async () => { stop.abort(); await running } }
}

if (await requireBroker(t)) {
  t.test('a subscribe/unsubscribe storm keeps the broker\'s bindings within maxSubscriptions + 1 and leaves only the quiet client\'s', async (t) => {
    const MAX = 20
    const broker = brokerOptions(t)
    // The rate limit is raised so that the storm really runs; the default one is tested below.
    const server = await startServer(t, { broker, rateLimit: 100_000, rateBurst: 100_000, maxSubscriptions: MAX })
    const quiet = await openClient(t, server, { sub: 'quiet' })
    const stormer = await openClient(t, server, { sub: 'storm' })
    t.equal((await quiet.subscribe('quiet.*')).op, 'ok')
    const [quietBinding] = (await brokerSettles(t, broker.exchange, ['quiet.*'], 'before the storm: the quiet client\'s pattern alone')).found

    // 150 distinct patterns of several shapes, and a model of what the server must answer.
    const pool = Array.from({ length: 150 }, (_, i) => [`storm.p${i}.#`, `storm.*.p${i}`, `storm.p${i}`][i % 3] as string)
    const seed = Number(process.env.STORM_SEED ?? 0x5eed)
    const rand = seededRandom(seed)
    const pick = (): string => pool[Math.floor(rand() * pool.length)] as string
    const held = new Set<string>()
    const expected = new Map<number, string>() // id -> 'ok' | error code
    let id = 1_000_000
    const sub = (pattern: string): void => {
      const answer = held.has(pattern) || held.size < MAX ? 'ok' : 'TOO_MANY_SUBSCRIPTIONS'
      if (answer === 'ok') held.add(pattern)
      expected.set(++id, answer)
      stormer.send({ op: 'sub', id, topic: pattern })
    }
    const unsub = (pattern: string): void => {
      held.delete(pattern)
      expected.set(++id, 'ok')
      stormer.send({ op: 'unsub', id, topic: pattern })
    }
    const answered = async (): Promise<void> => {
      const last = id
      await stormer.next((m) => m.id === last, { timeout: 10_000 })
    }

    const background = sampler(broker.exchange)
    const checkpoints: number[] = []
    let midStorm = 0
    for (let chunk = 0; chunk < 4; chunk++) {
      // Random requests in pipelined batches of 50: subs and unsubs of any
      // pattern in any order, repeats, unsubs of patterns never held, subs past
      // the cap. At least 200, and on until one whole background sample fell
      // inside this phase, so that the broker is also seen mid-storm.
      const samplesBefore = background.samples.length
      for (let n = 0; n < 200 || (background.samples.length < samplesBefore + 2 && n < 5000);) {
        for (const end = n + 50; n < end; n++) {
          if (rand() < 0.55) sub(pick())
          else unsub(held.size > 0 && rand() < 0.7 ? [...held][Math.floor(rand() * held.size)] as string : pick())
        }
        await answered()
      }
      midStorm += background.samples.length - samplesBefore - 1
      // Then 30 subs of patterns not held: the cap is reached, the rest refused.
      for (const pattern of pool.filter((p) => !held.has(p)).slice(chunk * 30, chunk * 30 + 30)) sub(pattern)
      await answered()
      t.equal(held.size, MAX, `chunk ${chunk}: the model is at the cap`)
      const { found, settled } = await brokerSettles(t, broker.exchange, [...held, 'quiet.*'], `chunk ${chunk}: the broker holds exactly the held patterns and the quiet one`)
      checkpoints.push(found.length)
      t.ok(found.every((b) => b.queue === quietBinding?.queue), 'all bound to the instance\'s one queue')
      if (!settled) break // the next checkpoints would only time out the same way
    }
    // Out of order: every pattern of the pool unsubscribed, held or not, shuffled, some twice.
    const shuffled = [...pool, ...pool.slice(0, 40)].sort(() => rand() - 0.5)
    for (const pattern of shuffled) unsub(pattern)
    await answered()
    await background.stop()

    const answers = new Map<number, string>()
    for (const m of stormer.messages as Message[]) {
      if (typeof m.id === 'number' && (m.op === 'ok' || m.op === 'error')) answers.set(m.id, m.op === 'ok' ? 'ok' : String(m.code))
    }
    t.same(answers, expected, `every one of ${expected.size} requests answered as the model says (seed ${seed})`)
    const refused = [...expected.values()].filter((a) => a !== 'ok').length
    t.ok(refused >= 4 * 10, `the cap was hit (${refused} subs refused)`)

    const samples = [...background.samples, ...checkpoints]
    t.comment(`broker binding counts sampled during the storm: ${samples.join(' ')}`)
    t.ok(midStorm >= checkpoints.length, `${midStorm} background samples fell wholly inside the random phases`)
    t.ok(Math.max(...samples) <= MAX + 1, `never more than maxSubscriptions + 1 = ${MAX + 1} bindings (max ${Math.max(...samples)})`)

    await brokerSettles(t, broker.exchange, ['quiet.*'], 'after the storm: only the quiet client\'s pattern is bound')
    t.equal(server.app.eventSocket.stats().patterns, 1)

    // Nothing routes a storm topic here any more; the quiet pattern still
    // delivers. quiet.x, published after, is the sentinel on both sockets:
    // the instance's queue and each connection keep publish order.
    t.equal((await stormer.subscribe('quiet.*')).op, 'ok')
    const eventsIn = server.app.eventSocket.stats().eventsIn
    await server.app.publish('storm.p0.x', 'nobody')
    await server.app.publish('quiet.x', 'still here')
    t.equal((await quiet.next((m) => m.op === 'event')).data, 'still here', 'the quiet client still gets its events')
    await stormer.next((m) => m.op === 'event', { timeout: 5000 })
    t.equal(server.app.eventSocket.stats().eventsIn, eventsIn + 1, 'the broker routed only the quiet event to this instance')
    t.same(stormer.events().map((e) => e.data), ['still here'], 'the stormer got no storm event')
  })

  t.test('with the default rate limit a storm is closed with 4029 and its bindings are released on the broker', async (t) => {
    const broker = brokerOptions(t)
    const server = await startServer(t, { broker })
    const quiet = await openClient(t, server, { sub: 'quiet' })
    const stormer = await openClient(t, server, { sub: 'storm' })
    t.equal((await quiet.subscribe('quiet.*')).op, 'ok')
    // A few patterns bound at a polite pace first, so that the close has bindings to release.
    const polite = Array.from({ length: 10 }, (_, i) => `s.p${i}.#`)
    for (const pattern of polite) t.equal((await stormer.subscribe(pattern)).op, 'ok')
    await brokerSettles(t, broker.exchange, [...polite, 'quiet.*'], 'before the storm: the stormer\'s ten patterns and the quiet one')
    for (let i = 0; i < 1000 && stormer.ws.readyState === WebSocket.OPEN; i++) stormer.send({ op: 'sub', id: i, topic: `s.p${i % 90}.#` })
    t.equal((await stormer.closed).code, 4029)
    await waitFor(() => server.app.eventSocket.stats().connections === 1, { what: 'the stormer gone' })
    await brokerSettles(t, broker.exchange, ['quiet.*'], 'only the quiet client\'s pattern stays bound')
    t.equal(server.app.eventSocket.stats().patterns, 1)
    await server.app.publish('quiet.x', 'still here')
    t.equal((await quiet.next((m) => m.op === 'event')).data, 'still here')
  })

  const CHURN = 200
  const PARALLEL = 20

  const cycles = (server: TestServer, token: string, from: number, count: number): Promise<void> =>
    churn(server, token, { from, count, parallel: PARALLEL, patterns: (n) => [`user.${n}.#`, 'shared.*'] })

  t.test(`${2 * CHURN} connections opened, subscribed and closed leave the broker's bindings at the baseline`, async (t) => {
    const broker = brokerOptions(t)
    const server = await startServer(t, { broker, handshakesPerMinute: 0 })
    const token = server.sign({ sub: 'churner', role: 'admin' })
    await brokerSettles(t, broker.exchange, [], 'baseline: nothing bound')

    // Each live connection holds at most its own pattern, and a worker's
    // next connection binds only after its last one's unbind (one ordered
    // channel): at most two user patterns per worker, plus the shared one.
    const bound = 2 * PARALLEL + 1
    const during = sampler(broker.exchange, 50)
    await cycles(server, token, 0, CHURN)
    await waitFor(() => server.app.eventSocket.stats().connections === 0, { what: 'every churned connection released' })
    await during.stop()
    t.comment(`broker binding counts sampled during the churn: ${during.samples.join(' ')}`)
    t.ok(during.samples.length >= 1, `sampled ${during.samples.length} times`)
    t.ok(Math.max(...during.samples) <= bound, `bindings stayed bounded during the churn (max ${Math.max(...during.samples)}, bound ${bound})`)
    await brokerSettles(t, broker.exchange, [], `after ${CHURN} connections: no user pattern and no shared pattern bound`)
    t.equal(server.app.eventSocket.stats().patterns, 0)

    // Again while one connection holds the shared pattern: it stays bound until that last subscriber leaves.
    const holder = await openClient(t, server, { sub: 'holder' })
    t.equal((await holder.subscribe('shared.*')).op, 'ok')
    await cycles(server, token, CHURN, CHURN)
    await waitFor(() => server.app.eventSocket.stats().connections === 1, { what: 'every churned connection released' })
    await brokerSettles(t, broker.exchange, ['shared.*'], 'with a holder left: only the shared pattern is bound')
    t.equal(server.app.eventSocket.stats().patterns, 1)

    holder.ws.terminate()
    await waitFor(() => server.app.eventSocket.stats().connections === 0, { what: 'the holder released' })
    await brokerSettles(t, broker.exchange, [], 'the shared pattern is unbound when its last subscriber left')
    const stats = server.app.eventSocket.stats()
    t.equal(stats.patterns, 0, 'no pattern in the index')
    t.equal(stats.subscriptions, 0)
  })
}
